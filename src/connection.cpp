#include "connection.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include "log.h"
#include "sse.h"

namespace sse {
namespace {

// One read buffer for every connection: the loop is single-threaded and the parser copies what
// it keeps, so no connection holds a read buffer of its own.
char g_read_buffer[64 * 1024];

constexpr size_t kMaxIov = 256;
constexpr size_t kFlushBudgetBytes = 256 * 1024;  // per connection per loop iteration
// Reading pipelined requests pauses while this much output waits, so a client that asks and never
// reads holds at most one more answer.
constexpr size_t kPipelineDepth = 16;  // slices queued
constexpr size_t kPipelinePauseBytes = 64 * 1024;
// Slices one answer may need beyond the stream queue: a history page is "[", then a slice and a
// separator per message (at most kMaxListLimit), then "]".
constexpr size_t kAnswerSlices = 2 * kMaxListLimit + 16;
constexpr size_t kHttpReadBytes = 16 * 1024;  // read per call while parsing requests
// A lingering close reads what the peer still sends for at most kLingerIdleMs of silence and
// kLingerMaxMs in all (nginx's lingering_timeout and lingering_time), however it trickles.
constexpr int64_t kLingerIdleMs = 2000;
constexpr int64_t kLingerMaxMs = 5000;
constexpr size_t kMaxPendingInput = 64 * 1024;  // unparsed pipelined bytes kept per connection
// An EventSource sends nothing once its stream is open: past this, a peer that keeps sending is
// not reading a stream, and costs the loop a read per packet for as long as it likes.
constexpr uint64_t kMaxStreamInput = 64 * 1024;

}  // namespace

Connection::Connection(ConnectionHost& host, int fd, const net::IpAddress& peer)
    : host_(host),
      fd_(fd),
      peer_(peer),
      parser_(std::make_unique<RequestParser>(host.settings().http)),
      out_(host.settings().queue_frames + kAnswerSlices) {
  client_ip = peer;
  last_activity_ms_ = host_.now_ms();
  last_write_ms_ = last_progress_ms_ = last_activity_ms_;
  update_interest();
}

Connection::~Connection() {
  if (fd_ < 0) return;
  // Closed with output the client did not take: a plain close would leave it, and the socket, in
  // the kernel for minutes (FIN-WAIT behind a full window), outside every limit of ours. A reset
  // frees them now, as nginx's reset_timedout_connection does.
  if (reset_on_close_) {
    linger reset{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  }
  ::close(fd_);
}

void Connection::on_event(uint32_t events) {
  if (events & EPOLLIN) {
    on_readable();
  } else if (events & EPOLLRDHUP) {
    // The peer half-closed while reading is paused: what it sent stays in the kernel until
    // parsing resumes (reading it now would only grow our buffer); stop watching for this.
    rdhup_seen_ = true;
    update_interest();
  }
  if (!closed() && (events & EPOLLOUT)) flush();
}

void Connection::on_readable() {
  // Small reads while parsing: what a paused pipeline leaves unparsed stays small too.
  size_t want = state_ == State::Http ? kHttpReadBytes : sizeof g_read_buffer;
  ssize_t n = ::read(fd_, g_read_buffer, want);
  if (n == 0) {
    // A client may half-close after its last requests: answer every one of them (those queued,
    // held or not parsed yet), then close.
    if (state_ == State::Http && (!out_.empty() || held_ || !pending_input_.empty())) {
      peer_eof_ = true;
      if (out_.empty() && !held_) resume_parsing();
      finish_if_peer_done();
      return update_interest();
    }
    return close("peer closed");
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    return close("read error");
  }
  int64_t now = host_.now_ms();
  bool was_stream = state_ == State::Stream;
  if (state_ == State::Lingering) last_activity_ms_ = now;
  if (state_ == State::Http && !finishing_) {
    if (!parser_->mid_request()) request_started_ms_ = now;
    if (!pending_input_.empty() || held_) {
      // Reading is paused (EPOLLIN off), but an error or hang-up wakes us as readable: keep what
      // it sent, within a bound.
      if (pending_input_.size() + static_cast<size_t>(n) > kMaxPendingInput)
        return close("too much pipelined input");
      pending_input_.append(g_read_buffer, static_cast<size_t>(n));
    } else {
      feed(g_read_buffer, static_cast<size_t>(n));
    }
  }
  // A stream or a lingering connection discards what the peer sends (lingering has a deadline).
  if (was_stream) count_stream_input(static_cast<size_t>(n));
}

// What a stream's peer sent after its request, which nothing reads: bounded.
void Connection::count_stream_input(size_t bytes) {
  if ((stream_input_ += bytes) > kMaxStreamInput) close("stream peer sends too much");
}

void Connection::feed(const char* data, size_t len) {
  while (len > 0 && state_ == State::Http && !finishing_ && !held_) {
    RequestParser::Result r = parser_->feed(data, len);
    data += r.consumed;
    len -= r.consumed;
    if (r.event == RequestParser::Event::Error)
      return reject_and_close(parser_->error_status(), parser_->error_reason());
    if (r.event == RequestParser::Event::NeedMore) {
      if (parser_->wants_continue()) return ask_for_body();
      return;
    }
    host_.handle_request(*this, parser_->request());
    if (state_ == State::Stream) return count_stream_input(len);  // sent after the request
    if (state_ != State::Http) return;  // closed: the rest is not ours to parse
    parser_->next_request();
    // The keep-alive clock restarts when a request completes, not on any byte: bare CRLFs between
    // requests (which llhttp skips) must not keep an idle connection open forever.
    request_started_ms_ = last_activity_ms_ = host_.now_ms();
    served_ = true;
    if (held_ || output_is_full()) {
      pending_input_.assign(data, len);
      update_interest();
      return;
    }
  }
  update_interest();
}

// Sends 100 Continue, or the answer that refuses the request now: the body it would have sent
// is never read, so the connection closes after that answer.
void Connection::ask_for_body() {
  parser_->mark_continue_sent();
  if (!host_.refuse_before_body(*this, parser_->request())) send_bytes(http::kContinue);
}

void Connection::respond(const http::Response& r) {
  size_t slices = 1 + (r.head_only ? 0 : r.parts.size());
  if (out_.free_slots() < slices) return close("output queue full");
  send_bytes(http::serialize(r));
  if (!r.head_only)
    for (const http::Response::Part& part : r.parts)
      enqueue(part.frame, part.begin, part.end, !part.shared);
  if (r.close) finish_after_flush();
}

// Whether `bytes` more stay within --max-queued-bytes (answers and stream frames alike).
bool Connection::fits_bytes(size_t bytes) const {
  return out_.pending_bytes() + bytes <= host_.settings().max_queued_bytes;
}

bool Connection::output_is_full() const {
  return out_.size() >= kPipelineDepth || out_.pending_bytes() >= kPipelinePauseBytes;
}

// Answers a request the server cannot even route (malformed, too large, too slow) and closes.
void Connection::reject_and_close(int status, std::string_view reason) {
  host_.metrics().count_rejection(status);
  host_.metrics().count_response(status);
  http::Response r = http::error(status, reason);
  r.close = true;
  // A page of the allowed origin learns why (413 for a body over --max-body, say) instead of
  // seeing a network error, when the headers that say where it comes from were read.
  const std::string& cors = host_.settings().cors_origin;
  http::cors_headers(r, cors, !cors.empty() && parser_ && parser_->request().origin == cors);
  // The request, when its head was read and checked whole (else its fields are partial).
  const Request* req = parser_ ? &parser_->request() : nullptr;
  bool whole = req && !req->method_name.empty() && !req->path.empty();
  host_.on_rejected(*this, whole ? req : nullptr, status, r.body.size());
  respond(r);
}

void Connection::send_bytes(std::string_view bytes) {
  FrameRef frame(bytes);
  enqueue(frame, 0, frame->size());
}

void Connection::enqueue(const FrameRef& frame, size_t begin, size_t end, bool counted) {
  if (closed()) return;
  if ((counted && !fits_bytes(end - begin)) || !out_.push(frame, begin, end))
    return close("output queue full");
  host_.mark_dirty(*this);
}

// Replay and presence take frames only while half the byte budget is free, so catching up is
// paced by the socket and never pushes a stream over --max-queued-bytes; live messages may use the
// other half.
size_t Connection::free_slots() const {
  if (finishing_) return 0;  // a stream that is ending takes no more (its last chunk is queued)
  if (out_.pending_bytes() >= host_.settings().max_queued_bytes / 2) return 0;
  size_t limit = host_.settings().queue_frames;
  return out_.size() >= limit ? 0 : limit - out_.size();
}

bool Connection::deliver(const FrameRef& frame) {
  if (state_ != State::Stream || finishing_) return true;  // ending: nothing more to send
  // Past its token's exp a stream takes nothing more; the next timeout check ends it.
  if (expires_at_ms_ != 0 && host_.now_ms() >= expires_at_ms_) return true;
  const ConnectionSettings& cfg = host_.settings();
  auto [begin, end] = stream_span(*frame.get());
  if (out_.size() >= cfg.queue_frames || !fits_bytes(end - begin) ||
      !out_.push(frame, begin, end)) {
    ++host_.metrics().slow_consumers;
    close("slow consumer");
    return false;
  }
  host_.mark_dirty(*this);
  return true;
}

std::pair<size_t, size_t> Connection::stream_span(const Frame& frame) const {
  if (chunked_) return {0, frame.size()};
  return event_span(frame);
}

void Connection::send_event(std::string_view event) {
  if (event.empty()) return;  // an empty chunk would end the stream
  FrameRef frame = stream_frame(event);
  auto [begin, end] = stream_span(*frame.get());
  enqueue(frame, begin, end);
}

void Connection::start_stream(std::string_view head, std::string_view opening, bool chunked) {
  state_ = State::Stream;
  chunked_ = chunked;
  parser_.reset();
  pending_input_.clear();
  pending_input_.shrink_to_fit();
  send_bytes(head);
  send_event(opening);
  update_interest();
}

bool Connection::subscribe(Hub& hub, const std::vector<std::string>& rooms, std::string user,
                           std::optional<uint64_t> last_event_id, std::vector<Backfill> backfills) {
  subscription_ = std::make_unique<Subscription>(hub, *this, std::move(user));
  if (hub.subscribe(*subscription_, rooms, last_event_id, std::move(backfills))) return true;
  subscription_.reset();
  return false;
}

void Connection::release() {
  held_ = false;
  if (!pending_input_.empty() && !output_is_full()) resume_parsing();
  finish_if_peer_done();
  update_interest();
}

// The peer half-closed and every request it sent is answered or queued: close after the flush.
void Connection::finish_if_peer_done() {
  if (!peer_eof_ || state_ != State::Http || finishing_ || held_ || !pending_input_.empty()) return;
  finish_after_flush();
  host_.mark_dirty(*this);
}

void Connection::resume_parsing() {
  std::string input = std::move(pending_input_);
  pending_input_.clear();
  feed(input.data(), input.size());
}

void Connection::flush() {
  size_t budget = kFlushBudgetBytes;
  write_rounds(budget);
  finish_flush();
}

size_t Connection::prepare_write(iovec* iov, size_t max_iov) {
  if (closed()) return 0;
  if (state_ == State::Stream && subscription_ && !finishing_) subscription_->refill();
  if (closed()) return 0;
  return out_.fill_iovec(iov, max_iov);
}

void Connection::finish_batched_write(ssize_t result, size_t requested) {
  size_t budget = kFlushBudgetBytes;
  if (apply_write(result, requested, budget)) write_rounds(budget);
  finish_flush();
}

void Connection::write_rounds(size_t& budget) {
  for (;;) {
    iovec iov[kMaxIov];
    size_t n = prepare_write(iov, kMaxIov);
    if (n == 0) return;
    size_t total = 0;
    for (size_t i = 0; i < n; ++i) total += iov[i].iov_len;
    ssize_t written = ::writev(fd_, iov, static_cast<int>(n));
    if (!apply_write(written < 0 ? -errno : written, total, budget)) return;
  }
}

// `result`: bytes written of the `requested`, or -errno. True when more may be written now.
bool Connection::apply_write(ssize_t result, size_t requested, size_t& budget) {
  if (closed()) return false;
  if (result == -EINTR) return true;
  if (result == -EAGAIN) {
    want_write_ = true;
    return false;
  }
  if (result < 0) {
    close("write error");
    return false;
  }
  auto written = static_cast<size_t>(result);
  out_.consume(written);
  host_.metrics().bytes_sent += written;
  last_write_ms_ = host_.now_ms();
  bytes_written_ += written;
  if (written < requested) {
    want_write_ = true;  // the socket buffer is full: wait for EPOLLOUT
    return false;
  }
  if (written >= budget) {
    host_.mark_dirty(*this);  // more next iteration; do not starve the others
    return false;
  }
  budget -= written;
  return true;
}

void Connection::finish_flush() {
  if (closed()) return;
  if (out_.empty()) {
    want_write_ = false;
    out_.shrink_if_empty();
    if (finishing_) {
      begin_linger();
    } else if (!pending_input_.empty() && !held_ && state_ == State::Http) {
      resume_parsing();
      finish_if_peer_done();
    }
  }
  update_interest();
}

void Connection::drain() {
  if (closed() || state_ == State::Lingering) return;
  if (state_ == State::Http) {
    bool in_progress = held_ || parser_->mid_request();
    // A request in progress finishes: the server is draining, so its answer closes the connection.
    if (in_progress) return;
    if (out_.empty()) return close("shutdown");
  }
  finish_after_flush();
  host_.mark_dirty(*this);
}

void Connection::finish_after_flush() {
  if (state_ == State::Stream && chunked_ && !finishing_) send_bytes(kLastChunk);  // a clean end
  finishing_ = true;
  pending_input_.clear();
}

// Half-close and read until the peer closes, so a response sent before unread input (a 413, a
// 400) is not destroyed by a TCP reset, as nginx's lingering close does.
void Connection::begin_linger() {
  if (state_ == State::Lingering || closed()) return;
  if (peer_eof_) return close("done");
  ::shutdown(fd_, SHUT_WR);
  state_ = State::Lingering;
  parser_.reset();
  last_activity_ms_ = linger_started_ms_ = host_.now_ms();
}

void Connection::close(std::string_view why) {
  if (closed()) return;
  state_ = State::Closed;
  close_reason_ = why;
  if (!out_.empty()) reset_on_close_ = true;
  out_.clear();
  host_.schedule_reap(*this);
}

void Connection::check_timeouts(int64_t now_ms) {
  const ConnectionSettings& cfg = host_.settings();
  // Whatever the state: output that the peer has not taken any of for the send timeout means a
  // reader that stopped reading; its queue is freed (an EventSource reconnects and resumes).
  if (!closed() && !client_is_reading(now_ms, cfg.send_timeout_ms)) {
    reset_on_close_ = true;  // what it has not taken may all be in the kernel by now
    return close("send timeout");
  }
  switch (state_) {
    case State::Http: {
      if (held_ || finishing_) return;
      if (parser_->mid_request() && now_ms - request_started_ms_ > cfg.request_timeout_ms) {
        return reject_and_close(408, "request took too long to arrive");
      }
      // A connection that never completed a request gets the request timeout, not keep-alive's.
      int64_t idle_limit = served_ ? cfg.keepalive_timeout_ms : cfg.request_timeout_ms;
      if (!parser_->mid_request() && out_.empty() && now_ms - last_activity_ms_ > idle_limit)
        return close(served_ ? "keep-alive timeout" : "idle before any request");
      return;
    }
    case State::Lingering:
      if (now_ms - last_activity_ms_ > kLingerIdleMs || now_ms - linger_started_ms_ > kLingerMaxMs)
        close("linger timeout");
      return;
    case State::Stream:
      if (expires_at_ms_ != 0 && now_ms >= expires_at_ms_) expire(kExpiredEvent);
      return;
    case State::Closed:
      return;
  }
}

bool Connection::withdraw_token() {
  if (state_ != State::Stream || expires_at_ms_ == 0) return false;
  expire(kKeyWithdrawnEvent);
  return true;
}

void Connection::expire(std::string_view event) {
  expires_at_ms_ = 0;
  if (finishing_) return;  // already ending (a drain): its last chunk is queued
  subscription_.reset();   // nothing more of its rooms; presence sees it leave
  out_.keep_front_only();  // nor what was queued but not sent: the token no longer covers it
  send_event(event);
  finish_after_flush();
  host_.mark_dirty(*this);
}

// Whether the client took any of what was sent within `timeout_ms`, counting what waits in the
// kernel's send buffer too (SIOCOUTQ): a reader that stopped reading in a quiet room has nothing
// queued here, only there. Checked once a second.
bool Connection::client_is_reading(int64_t now_ms, int64_t timeout_ms) {
  uint64_t written = bytes_written_ - written_at_check_;
  int unsent = 0;
  if ((written > 0 || kernel_unsent_ > 0) && ioctl(fd_, SIOCOUTQ, &unsent) != 0) unsent = 0;
  // What the client read since the last check: what we wrote, less what still waits in the kernel.
  int64_t taken = static_cast<int64_t>(written) - (int64_t{unsent} - kernel_unsent_);
  if (taken > 0 || (out_.empty() && unsent == 0)) last_progress_ms_ = now_ms;
  written_at_check_ = bytes_written_;
  kernel_unsent_ = unsent;
  return now_ms - last_progress_ms_ <= timeout_ms;
}

void Connection::update_interest() {
  if (closed()) return;
  // An HTTP connection reads while it may parse: not while a request is held or left unparsed,
  // and not while its unsent answers are over the pipelining bound (however they arrived).
  bool want_read = state_ != State::Http ||
                   (pending_input_.empty() && !held_ && !finishing_ && !output_is_full());
  // While paused we still want to notice a hang-up: EPOLLRDHUP reports it without data (once).
  uint32_t events = 0;
  if (!peer_eof_) {
    if (want_read) events |= EPOLLIN;
    if (!rdhup_seen_) events |= EPOLLRDHUP;
  }
  if (want_write_) events |= uint32_t{EPOLLOUT};
  if (registered_ && events == interest_) return;
  bool ok = registered_ ? host_.reactor().modify(fd_, events, this)
                        : host_.reactor().add(fd_, events, this);
  if (!ok) return close("epoll_ctl failed");
  registered_ = true;
  interest_ = events;
}

}  // namespace sse
