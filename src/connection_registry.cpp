#include "connection_registry.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "log.h"
#include "net.h"

namespace sse {
namespace {
constexpr int kSendBufferBytes = 64 * 1024;  // the kernel makes it 128 KiB
}  // namespace

class ConnectionRegistry::Listener final : public EventHandler {
 public:
  Listener(ConnectionRegistry& registry, int fd) : registry_(registry), fd_(fd) {}
  ~Listener() override { ::close(fd_); }
  void on_event(uint32_t) override { registry_.accept_ready(); }
  int fd() const { return fd_; }

 private:
  ConnectionRegistry& registry_;
  int fd_;
};

ConnectionRegistry::ConnectionRegistry(Reactor& reactor, Metrics& metrics,
                                       ConnectionSettings settings, RequestHandler& handler)
    : reactor_(reactor),
      metrics_(metrics),
      settings_(std::move(settings)),
      handler_(handler),
      batch_(settings_.batch_sends) {}

ConnectionRegistry::~ConnectionRegistry() {
  while (head_) {
    Connection* c = head_;
    head_ = c->next;
    delete c;
  }
}

void ConnectionRegistry::listen(int listen_fd, size_t max_connections) {
  max_connections_ = max_connections;
  listener_ = std::make_unique<Listener>(*this, listen_fd);
  reactor_.add(listen_fd, EPOLLIN, listener_.get());
  accepting_ = true;
}

void ConnectionRegistry::limit_per_peer(uint32_t max,
                                        std::function<bool(const net::IpAddress&)> exempt) {
  per_peer_.set_max(max);
  peer_exempt_ = std::move(exempt);
}

bool ConnectionRegistry::counts_per_peer(const net::IpAddress& peer) const {
  return !peer_exempt_ || !peer_exempt_(peer);
}

void ConnectionRegistry::accept_ready() {
  if (!accepting_) return;  // draining: an event from before it started, in the same batch
  for (int i = 0; i < 128; ++i) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    int fd = accept4(listener_->fd(), reinterpret_cast<sockaddr*>(&addr), &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: stop accepting until a connection closes or a second passes;
        // count it, do not spin.
        metrics_.count_rejected("fd_exhausted");
        log_fd_exhausted();
        reactor_.modify(listener_->fd(), 0, listener_.get());
        accept_paused_ = true;
      }
      return;
    }
    // Closing without an answer lets an EventSource retry on its own; a status would end it.
    if (count_ >= max_connections_) {
      metrics_.count_rejected("max_connections");
      ::close(fd);
      continue;
    }
    net::IpAddress peer = net::ip_of(addr);
    if (counts_per_peer(peer) && !per_peer_.acquire(peer)) {
      metrics_.count_rejected("connections_per_ip");
      ::close(fd);
      continue;
    }
    net::set_nodelay(fd);
    // Autotuning would let each client that stops reading soak up megabytes of kernel memory, and
    // the loop's time to copy them there; a fixed buffer caps both (a chat stream never needs
    // more).
    net::set_send_buffer(fd, kSendBufferBytes);
    auto* conn = new Connection(*this, fd, peer);
    conn->next = head_;
    if (head_) head_->prev = conn;
    head_ = conn;
    ++count_;
    high_water_ = std::max(high_water_, count_);
    ++metrics_.connections_accepted;
  }
}

void ConnectionRegistry::handle_request(Connection& conn, Request& req) {
  handler_.handle_request(conn, req);
}

bool ConnectionRegistry::refuse_before_body(Connection& conn, Request& req) {
  return handler_.refuse_before_body(conn, req);
}

void ConnectionRegistry::mark_dirty(Connection& conn) {
  if (conn.queued_for_flush || conn.closed()) return;
  conn.queued_for_flush = true;
  dirty_.push_back(&conn);
}

void ConnectionRegistry::schedule_reap(Connection& conn) {
  closed_.push_back(&conn);
}

bool ConnectionRegistry::after_dispatch() {
  flush_writers();
  reap_closed();
  return !dirty_.empty();
}

void ConnectionRegistry::flush_writers() {
  flushing_.swap(dirty_);
  // One connection gains nothing from a batch; a broadcast's many do. The ring may be dropped
  // during a batch (the kernel refused it): what is left then goes out with writev.
  size_t from = 0;
  while (flushing_.size() - from > 1 && batch_.available()) {
    size_t to = std::min(flushing_.size(), from + BatchWriter::kMaxSends);
    flush_batch(from, to);
    from = to;
  }
  for (; from < flushing_.size(); ++from) {
    flushing_[from]->queued_for_flush = false;
    flushing_[from]->flush();
  }
  flushing_.clear();
}

// Sends for flushing_[from, to) with one system call. Nothing runs between preparing the sends
// and reading their results, so every iovec still points into the frames its connection holds;
// the results are applied only once all are known, as applying one (a pipelined request answered,
// a broadcast) may queue more for, or close, another connection of the batch.
void ConnectionRegistry::flush_batch(size_t from, size_t to) {
  batch_.clear();
  batched_.clear();
  for (size_t i = from; i < to; ++i) {
    Connection* conn = flushing_[i];
    conn->queued_for_flush = false;
    size_t n = conn->prepare_write(batch_.next_iov(), BatchWriter::kMaxIov);
    batched_.push_back(n > 0 ? batch_.size() : kNothingToSend);
    if (n > 0) batch_.add(conn->fd(), n);
  }
  batch_.run();
  for (size_t i = from; i < to; ++i) {
    size_t send = batched_[i - from];
    if (send == kNothingToSend)
      flushing_[i]->finish_flush();
    else
      flushing_[i]->finish_batched_write(batch_.result(send), batch_.bytes(send));
  }
}

void ConnectionRegistry::reap_closed() {
  if (closed_.empty()) return;
  std::erase_if(dirty_, [](Connection* c) {
    if (!c->closed()) return false;
    c->queued_for_flush = false;
    return true;
  });
  for (Connection* conn : closed_) {
    handler_.on_closed(*conn);
    if (conn->prev)
      conn->prev->next = conn->next;
    else
      head_ = conn->next;
    if (conn->next) conn->next->prev = conn->prev;
    --count_;
    if (counts_per_peer(conn->peer())) per_peer_.release(conn->peer());
    log::debug("connection closed", "peer", conn->peer().to_string(), "reason",
               conn->close_reason());
    delete conn;  // its subscriptions leave their rooms
  }
  closed_.clear();
  resume_accepting();
}

void ConnectionRegistry::hold_accepting() {
  if (held_ || !accepting_) return;
  held_ = true;
  reactor_.modify(listener_->fd(), 0, listener_.get());
}

void ConnectionRegistry::release_accepting() {
  if (!held_) return;
  held_ = false;
  if (accepting_ && !accept_paused_) reactor_.modify(listener_->fd(), EPOLLIN, listener_.get());
}

// Once a minute at most: a flood keeps hitting the limit, and the metric counts every time.
void ConnectionRegistry::log_fd_exhausted() {
  if (!fd_exhausted_log_.allow()) return;
  log::warn(
      "out of file descriptors: new connections wait (raise the open-file limit or lower "
      "--max-connections)",
      "open_connections", count_, "times", fd_exhausted_log_.times());
}

void ConnectionRegistry::resume_accepting() {
  if (!accept_paused_ || !accepting_ || held_) return;
  accept_paused_ = false;
  reactor_.modify(listener_->fd(), EPOLLIN, listener_.get());
}

void ConnectionRegistry::tick() {
  int64_t now = reactor_.now_ms();
  for (Connection* c = head_; c; c = c->next) c->check_timeouts(now);
  resume_accepting();  // after EMFILE: try again each second, even if no connection closed
}

void ConnectionRegistry::for_each(const std::function<void(Connection&)>& visit) {
  for (Connection* c = head_; c; c = c->next) visit(*c);
}

void ConnectionRegistry::stop_accepting_and_drain(bool close_listener) {
  if (accepting_ && listener_) reactor_.remove(listener_->fd());
  accepting_ = false;
  // A socket of our own is closed, so that new connections are refused at once (a balancer or
  // an EventSource goes elsewhere, another --reuse-port node takes them) rather than wait
  // unanswered in the backlog until the process exits; one systemd passed on waits for the next
  // instance. After this batch of events: one for the listener may still be in it.
  if (close_listener) reactor_.defer([this] { listener_.reset(); });
  for (Connection* c = head_; c; c = c->next) c->drain();
}

bool ConnectionRegistry::all_finished() const {
  for (Connection* c = head_; c; c = c->next)
    if (c->state() != Connection::State::Lingering && !c->closed()) return false;
  return true;
}

}  // namespace sse
