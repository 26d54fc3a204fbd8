#include "server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "form.h"
#include "json.h"
#include "log.h"
#include "message.h"
#include "sse.h"

namespace sse {
namespace {

constexpr size_t kFdReserve = 32;  // descriptors kept for the journal, timers, logs
constexpr size_t kDefaultListLimit = 100;
constexpr size_t kMaxListLimit = 1000;

std::optional<uint64_t> parse_u64(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

bool constant_time_equals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

// "http://host:port" -> "host:port"
std::string_view origin_authority(std::string_view origin) {
  size_t scheme = origin.find("://");
  return scheme == std::string_view::npos ? std::string_view{} : origin.substr(scheme + 3);
}

std::vector<Cidr> parse_trusted(const std::vector<std::string>& texts) {
  std::vector<Cidr> out;
  for (const std::string& text : texts)
    if (auto cidr = parse_cidr(text)) out.push_back(*cidr);
  return out;
}

// {"id":N}: the answer to a POST, 201 when it was new, 200 when its nonce was seen before.
http::Response id_answer(int status, uint64_t id) {
  http::Response r;
  r.status = status;
  r.body = "{\"id\":" + std::to_string(id) + "}";
  return r;
}

void add_security_headers(http::Response& r) {
  r.headers.emplace_back("Content-Security-Policy", "default-src 'self'");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
}

}  // namespace

class Server::Listener final : public EventHandler {
 public:
  Listener(Server& server, int fd) : server_(server), fd_(fd) {}
  ~Listener() override { ::close(fd_); }
  void on_event(uint32_t) override { server_.accept_ready(); }
  int fd() const { return fd_; }

 private:
  Server& server_;
  int fd_;
};

class Server::DurableWatcher final : public EventHandler {
 public:
  explicit DurableWatcher(Server& server) : server_(server) {}
  void on_event(uint32_t) override { server_.on_durable(); }

 private:
  Server& server_;
};

Server::Server(Reactor& reactor, const Config& config)
    : reactor_(reactor),
      config_(config),
      room_(config.history),
      static_files_(config.static_dir),
      limits_(config.post_rate, config.post_burst, config.subscribe_rate, config.subscribe_burst,
              config.max_streams_per_ip, parse_trusted(config.trusted_proxies)),
      ping_frame_(kPingComment) {
  http_limits_.max_body = config.max_body;
  rng_state_ = static_cast<uint64_t>(wall_clock_ms()) * 0x9E3779B97F4A7C15ull | 1;
  started_ms_ = reactor.now_ms();
}

Server::~Server() {
  while (connections_) {
    Connection* c = connections_;
    connections_ = c->next;
    delete c;
  }
}

bool Server::start(std::string& error, int inherited_fd) {
  for (const std::string& text : config_.trusted_proxies) {
    if (!parse_cidr(text)) {
      error = "bad --trusted-proxy: " + text;
      return false;
    }
  }
  if (config_.journal) {
    JournalLoad load;
    journal_ = Journal::open(
        config_.data_dir, config_.fsync, config_.journal_max_bytes,
        [this](JournalRecord&& r) {
          room_.restore(r.id, message_frame(r.id, r.json), std::move(r.nonce_key));
        },
        load, error);
    if (!journal_) return false;
    for (const std::string& w : load.warnings) log::warn(w, "data_dir", config_.data_dir);
    log::info("journal loaded", "records", load.records, "last_id", load.last_id, "data_dir",
              config_.data_dir);
    if (journal_->durable_fd() >= 0) {
      durable_watcher_ = std::make_unique<DurableWatcher>(*this);
      reactor_.add(journal_->durable_fd(), EPOLLIN, durable_watcher_.get());
    }
  }
  next_id_ = room_.next_id();

  int fd = inherited_fd;
  if (fd < 0) {
    auto endpoint = net::parse_endpoint(config_.listen);
    if (!endpoint) {
      error = "bad --listen address: " + config_.listen;
      return false;
    }
    fd = net::listen_tcp(*endpoint, error);
    if (fd < 0) return false;
  } else {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  listener_ = std::make_unique<Listener>(*this, fd);
  reactor_.add(fd, EPOLLIN, listener_.get());
  address_ = net::local_address(fd);

  long fd_limit = net::raise_fd_limit();
  max_connections_ =
      config_.max_connections != 0
          ? config_.max_connections
          : static_cast<size_t>(std::max<long>(fd_limit - static_cast<long>(kFdReserve), 16));

  reactor_.after_dispatch([this] { return after_dispatch(); });
  reactor_.every(std::chrono::seconds(1), [this] { every_second(); });
  reactor_.every(std::chrono::seconds(config_.heartbeat_s), [this] { send_heartbeats(); });
  reactor_.on_iteration = [this](int64_t us) { metrics_.observe_loop_busy(us); };
  return true;
}

void Server::accept_ready() {
  for (int i = 0; i < 128; ++i) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    int fd = accept4(listener_->fd(), reinterpret_cast<sockaddr*>(&addr), &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: stop accepting for this round (the listener stays level-triggered,
        // so a closed connection lets the next accept through); count it, do not spin.
        metrics_.count_rejected("fd_exhausted");
        reactor_.modify(listener_->fd(), 0, listener_.get());
        accept_paused_ = true;
      }
      return;
    }
    if (connection_count_ >= max_connections_) {
      // Closing without an answer lets an EventSource retry on its own; a status would end it.
      metrics_.count_rejected("max_connections");
      ::close(fd);
      continue;
    }
    net::set_nodelay(fd);
    auto* conn = new Connection(*this, fd, net::ip_of(addr));
    conn->next = connections_;
    if (connections_) connections_->prev = conn;
    connections_ = conn;
    ++connection_count_;
    ++metrics_.connections_accepted;
  }
}

void Server::mark_dirty(Connection& conn) {
  if (conn.queued_for_flush || conn.closed()) return;
  conn.queued_for_flush = true;
  dirty_.push_back(&conn);
}

void Server::schedule_reap(Connection& conn) {
  closed_.push_back(&conn);
}

bool Server::after_dispatch() {
  flush_writers();
  reap_closed();
  if (draining_) finish_shutdown_if_done();
  return !dirty_.empty();
}

void Server::flush_writers() {
  flushing_.swap(dirty_);
  for (Connection* conn : flushing_) {
    conn->queued_for_flush = false;
    conn->flush();
  }
  flushing_.clear();
}

void Server::reap_closed() {
  if (closed_.empty()) return;
  std::erase_if(dirty_, [](Connection* c) {
    if (!c->closed()) return false;
    c->queued_for_flush = false;
    return true;
  });
  for (Connection* conn : closed_) {
    if (conn->room()) conn->room()->unsubscribe(*conn);
    if (conn->counted_stream) limits_.streams.release(conn->client_ip);
    for (PendingPost& p : pending_posts_)
      if (p.conn == conn) p.conn = nullptr;
    if (conn->prev)
      conn->prev->next = conn->next;
    else
      connections_ = conn->next;
    if (conn->next) conn->next->prev = conn->prev;
    --connection_count_;
    log::debug("connection closed", "peer", conn->peer().to_string(), "reason",
               conn->close_reason());
    delete conn;
  }
  closed_.clear();
  resume_accepting();
}

void Server::resume_accepting() {
  if (!accept_paused_ || draining_) return;
  accept_paused_ = false;
  reactor_.modify(listener_->fd(), EPOLLIN, listener_.get());
}

void Server::every_second() {
  int64_t now = reactor_.now_ms();
  for (Connection* c = connections_; c; c = c->next) c->check_timeouts(now);
  uint64_t online = room_.subscriber_count();
  if (online != last_presence_) {
    last_presence_ = online;
    room_.broadcast_extra(FrameRef(presence_event(online)));
  }
  if (++ticks_ % 10 == 0) {
    limits_.posts.prune(now);
    limits_.subscribes.prune(now);
  }
  resume_accepting();  // after EMFILE: try again each second, even if no connection closed
}

void Server::send_heartbeats() {
  int64_t now = reactor_.now_ms();
  int64_t idle_ms = int64_t{config_.heartbeat_s} * 1000 - 100;
  for (Connection* c = connections_; c; c = c->next)
    if (c->is_stream() && now - c->last_write_ms() >= idle_ms && c->free_slots() > 1)
      (void)c->deliver(ping_frame_);
}

uint32_t Server::retry_with_jitter() {
  // xorshift: spread reconnects over retry .. retry * 1.5 so a restart is not a stampede.
  rng_state_ ^= rng_state_ << 13;
  rng_state_ ^= rng_state_ >> 7;
  rng_state_ ^= rng_state_ << 17;
  uint32_t spread = config_.retry_ms / 2 + 1;
  return config_.retry_ms + static_cast<uint32_t>(rng_state_ % spread);
}

Server::ReplyContext Server::context_of(const Request& req) const {
  return {req.method_name, req.path, req.keep_alive, req.method == Method::Head,
          !config_.cors_origin.empty() && req.origin == config_.cors_origin};
}

void Server::reply(Connection& conn, const Request& req, http::Response r) {
  reply(conn, context_of(req), std::move(r));
}

// Every answer the router gives goes out here: close and HEAD rules, CORS, metrics, access log.
void Server::reply(Connection& conn, const ReplyContext& ctx, http::Response r) {
  if (!ctx.keep_alive || draining_) r.close = true;
  if (ctx.head) r.head_only = true;
  if (ctx.cors) {
    r.headers.emplace_back("Access-Control-Allow-Origin", config_.cors_origin);
    r.headers.emplace_back("Access-Control-Allow-Credentials", "true");
    r.headers.emplace_back("Vary", "Origin");
  }
  metrics_.count_response(r.status);
  log_access(conn.client_ip, ctx.method, ctx.path, r.status, r.body.size());
  conn.respond(r);
}

void Server::log_access(const net::IpAddress& client, std::string_view method,
                        std::string_view path, int status, size_t bytes) {
  if (!log::access_enabled()) return;
  std::string line = "client=" + client.to_string() + " method=" + std::string(method) +
                     " path=" + log::quote(path) + " status=" + std::to_string(status) +
                     " bytes=" + std::to_string(bytes);
  log::access(line);
}

void Server::method_not_allowed(Connection& conn, Request& req, std::string_view allow) {
  http::Response r = http::error(
      405, "method " + req.method_name + " is not allowed here; use " + std::string(allow));
  r.headers.emplace_back("Allow", std::string(allow));
  reply(conn, req, std::move(r));
}

void Server::handle_request(Connection& conn, Request& req) {
  conn.client_ip = limits_.client_ip(conn.peer(), req.forwarded_for, req.forwarded);
  const std::string& path = req.path;
  bool get_or_head = req.method == Method::Get || req.method == Method::Head;
  if (req.method_name == "OPTIONS" && !config_.cors_origin.empty() &&
      req.origin == config_.cors_origin) {
    http::Response r;
    r.status = 204;
    r.headers.emplace_back("Access-Control-Allow-Methods", "GET, POST");
    r.headers.emplace_back("Access-Control-Allow-Headers",
                           "Content-Type, Authorization, Last-Event-ID");
    r.headers.emplace_back("Access-Control-Max-Age", "600");
    return reply(conn, req, std::move(r));
  }
  if (path == "/events") return route_events(conn, req);
  if (path == "/messages") return route_messages(conn, req);
  if (path == "/healthz") {
    if (!get_or_head) return method_not_allowed(conn, req, "GET, HEAD");
    http::Response r;
    r.status = draining_ ? 503 : 200;
    r.content_type = "text/plain; charset=utf-8";
    r.body = draining_ ? "draining\n" : "ok\n";
    return reply(conn, req, std::move(r));
  }
  if (path == "/metrics") {
    if (!get_or_head) return method_not_allowed(conn, req, "GET, HEAD");
    return serve_metrics(conn, req);
  }
  if (!get_or_head) return method_not_allowed(conn, req, "GET, HEAD");
  serve_static(conn, req);
}

void Server::route_events(Connection& conn, Request& req) {
  if (!(req.method == Method::Get || req.method == Method::Head))
    return method_not_allowed(conn, req, "GET, HEAD");
  if (req.method == Method::Head) {
    metrics_.count_response(200);
    conn.send_bytes(http::kStreamHead);
    if (!req.keep_alive) conn.finish_after_flush();
    return;
  }
  if (draining_) return conn.close("draining");  // the EventSource reconnects to the next instance
  uint32_t retry_after = 0;
  if (!limits_.subscribes.take(conn.client_ip, reactor_.now_ms(), retry_after)) {
    metrics_.count_rejected("subscribe_rate");
    http::Response r = http::error(429, "too many new streams from your address; retry later");
    r.headers.emplace_back("Retry-After", std::to_string(retry_after));
    return reply(conn, req, std::move(r));
  }
  if (!limits_.streams.acquire(conn.client_ip)) {
    metrics_.count_rejected("streams_per_ip");
    return reply(conn, req, http::error(429, "too many open streams from your address"));
  }
  conn.counted_stream = true;
  std::optional<uint64_t> last_id;
  std::string query_id;
  if (req.has_last_event_id) {
    query_id = req.last_event_id;
  } else if (auto q = form::query_value(req.query, "lastEventId")) {
    query_id = *q;
  }
  if (req.has_last_event_id || !query_id.empty()) {
    // An id this server never issued is treated as unknown: the client gets a reset, not silence.
    last_id = parse_u64(query_id).value_or(UINT64_MAX);
  }
  std::string opening(http::kStreamHead);
  if (!config_.cors_origin.empty() && req.origin == config_.cors_origin) {
    opening.insert(opening.size() - 2,
                   "Access-Control-Allow-Origin: " + config_.cors_origin +
                       "\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n");
  }
  opening += retry_event(retry_with_jitter());
  metrics_.count_response(200);
  log_access(conn.client_ip, req.method_name, req.path, 200, 0);
  conn.start_stream(room_, last_id, opening);
}

void Server::route_messages(Connection& conn, Request& req) {
  if (req.method == Method::Post) return post_message(conn, req);
  if (req.method == Method::Get || req.method == Method::Head) return list_messages(conn, req);
  method_not_allowed(conn, req, "GET, HEAD, POST");
}

std::optional<http::Response> Server::check_post_policy(Connection& conn, const Request& req) {
  if (!req.origin.empty() && req.origin != config_.cors_origin &&
      origin_authority(req.origin) != req.host) {
    metrics_.count_rejected("cross_origin");
    return http::error(403, "posting from another site is not allowed");
  }
  if (!config_.publish_token.empty()) {
    std::string_view auth = req.authorization;
    if (!auth.starts_with("Bearer ") ||
        !constant_time_equals(auth.substr(7), config_.publish_token)) {
      metrics_.count_rejected("unauthorized");
      http::Response r = http::error(401, "a valid publish token is required");
      r.headers.emplace_back("WWW-Authenticate", "Bearer");
      return r;
    }
  }
  uint32_t retry_after = 0;
  if (!limits_.posts.take(conn.client_ip, reactor_.now_ms(), retry_after)) {
    metrics_.count_rejected("post_rate");
    http::Response r = http::error(429, "you are sending messages too fast; wait a moment");
    r.headers.emplace_back("Retry-After", std::to_string(retry_after));
    return r;
  }
  return std::nullopt;
}

void Server::post_message(Connection& conn, Request& req) {
  if (auto refusal = check_post_policy(conn, req)) return reply(conn, req, std::move(*refusal));
  PostResult decoded = decode_post(req.content_type, req.body);
  if (auto* rejection = std::get_if<Rejection>(&decoded)) {
    metrics_.count_rejected(rejection->status == 415 ? "unsupported_media_type"
                                                     : "invalid_message");
    return reply(conn, req, http::error(rejection->status, rejection->reason));
  }
  ChatInput& input = std::get<ChatInput>(decoded);
  std::string nonce_key = input.nonce.empty() ? std::string() : input.user + '\x1f' + input.nonce;
  if (!nonce_key.empty()) {
    if (auto id = room_.find_nonce(nonce_key)) {
      return reply(conn, req, id_answer(200, *id));  // already posted, nothing new
    }
  }
  uint64_t id = next_id_;
  std::string json = message_json({id, input.user, input.text, wall_clock_ms()});
  FrameRef frame = message_frame(id, json);
  if (journal_) {
    uint64_t seq = 0;
    if (!journal_->append({id, nonce_key, json}, seq)) {
      log::error("journal write failed; message refused", "id", id);
      return reply(conn, req, http::error(503, "the message could not be stored; try again"));
    }
    ++next_id_;
    if (journal_->policy() == FsyncPolicy::Always) {
      // Acknowledge and broadcast only once the record is on disk.
      pending_posts_.push_back(
          {seq, id, std::move(frame), std::move(nonce_key), &conn, context_of(req)});
      conn.hold();
      return;
    }
  } else {
    ++next_id_;
  }
  room_.publish(id, std::move(frame), std::move(nonce_key));
  reply(conn, req, id_answer(201, id));
  if (journal_) journal_->compact_if_needed([this] { return journal_window(); });
}

std::vector<JournalRecord> Server::journal_window() {
  std::vector<JournalRecord> window;
  window.reserve(room_.history().size() + pending_posts_.size());
  for (size_t i = 0; i < room_.history().size(); ++i) {
    const Room::Entry& e = room_.history()[i];
    window.push_back({e.id, room_.nonce_at(i), std::string(frame_json(*e.frame.get()))});
  }
  for (const PendingPost& p : pending_posts_)
    window.push_back({p.id, p.nonce_key, std::string(frame_json(*p.frame.get()))});
  return window;
}

void Server::on_durable() {
  uint64_t durable = journal_->durable_seq();
  size_t done = 0;
  for (; done < pending_posts_.size() && pending_posts_[done].seq <= durable; ++done) {
    PendingPost& p = pending_posts_[done];
    room_.publish(p.id, std::move(p.frame), std::move(p.nonce_key));
    if (!p.conn) continue;
    reply(*p.conn, p.context, id_answer(201, p.id));
    p.conn->release();
  }
  pending_posts_.erase(pending_posts_.begin(), pending_posts_.begin() + static_cast<long>(done));
  if (done > 0) journal_->compact_if_needed([this] { return journal_window(); });
}

void Server::list_messages(Connection& conn, Request& req) {
  auto pairs = form::parse(req.query);
  if (!pairs) return reply(conn, req, http::error(400, "malformed query string"));
  std::optional<uint64_t> since;
  size_t limit = kDefaultListLimit;
  for (auto& [key, value] : *pairs) {
    if (key == "since") {
      since = parse_u64(value);
      if (!since)
        return reply(conn, req, http::error(400, "since must be a message id (a whole number)"));
    } else if (key == "limit") {
      auto n = parse_u64(value);
      if (!n || *n == 0)
        return reply(conn, req, http::error(400, "limit must be a whole number from 1 to 1000"));
      limit = std::min<uint64_t>(*n, kMaxListLimit);
    }
  }
  const auto& history = room_.history();
  // With since: the first `limit` messages after it (paging forward). Without: the newest `limit`.
  size_t begin =
      since ? room_.position_of(*since + 1) : history.size() - std::min(limit, history.size());
  size_t end = std::min(history.size(), begin + limit);
  http::Response r;
  r.body = "[";
  for (size_t i = begin; i < end; ++i) {
    if (i != begin) r.body += ',';
    r.body += frame_json(*history[i].frame.get());
  }
  r.body += "]";
  r.headers.emplace_back("Cache-Control", "no-store");
  reply(conn, req, std::move(r));
}

void Server::serve_static(Connection& conn, Request& req) {
  auto file = static_files_.load(req.path);
  if (!file) return reply(conn, req, http::error(404, "no such page: " + req.path));
  http::Response r;
  r.content_type = file->content_type;
  r.body = std::move(file->body);
  r.headers.emplace_back("Cache-Control", "no-cache");
  add_security_headers(r);
  reply(conn, req, std::move(r));
}

void Server::serve_metrics(Connection& conn, Request& req) {
  MetricsSnapshot s{};
  s.open_connections = connection_count_;
  s.sse_clients = room_.subscriber_count();
  s.messages = room_.stats().messages;
  s.deliveries = room_.stats().deliveries;
  s.resets = room_.stats().resets;
  s.last_message_id = room_.next_id() - 1;
  s.history_size = room_.history().size();
  s.journal_bytes = journal_ ? journal_->size_bytes() : 0;
  s.uptime_seconds = static_cast<double>(reactor_.now_ms() - started_ms_) / 1000.0;
  http::Response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = render_metrics(metrics_, s);
  reply(conn, req, std::move(r));
}

void Server::begin_shutdown() {
  if (draining_) return;
  draining_ = true;
  drain_deadline_ms_ = reactor_.now_ms() + int64_t{config_.shutdown_timeout_s} * 1000;
  log::info("shutting down", "connections", connection_count_, "subscribers",
            room_.subscriber_count());
  reactor_.remove(listener_->fd());
  for (Connection* c = connections_; c; c = c->next) c->drain();
  finish_shutdown_if_done();
}

void Server::finish_shutdown_if_done() {
  bool streams_left = false;
  for (Connection* c = connections_; c && !streams_left; c = c->next)
    streams_left = c->state() != Connection::State::Lingering;
  if ((streams_left || !pending_posts_.empty()) && reactor_.now_ms() < drain_deadline_ms_) return;
  reactor_.stop();
}

}  // namespace sse
