#include "server.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "local_broker.h"
#include "log.h"
#include "net.h"
#include "redis_broker.h"
#include "redis_link.h"
#include "sse.h"

namespace sse {
namespace {

constexpr size_t kFdReserve = 32;  // descriptors kept for the journal, timers, logs

// What the fd limit allows, raised as far as it goes: past it, connections would take the
// descriptors the journal, static files and Redis need, and POSTs would fail for everyone.
size_t connection_cap(size_t asked) {
  long fd_limit = net::raise_fd_limit();
  // At least one, however low the limit: never more than leave storage its reserve.
  auto allowed = static_cast<size_t>(std::max<long>(fd_limit - static_cast<long>(kFdReserve), 1));
  if (asked == 0) return allowed;
  if (asked > allowed)
    log::warn(
        "--max-connections is over what the open-file limit allows: lowered (raise the limit, "
        "e.g. LimitNOFILE=, to allow more)",
        "asked", asked, "using", allowed, "fd_limit", fd_limit);
  return std::min(asked, allowed);
}

ConnectionSettings connection_settings(const Config& config) {
  ConnectionSettings s;
  s.http.max_body = config.max_body;
  s.queue_frames = config.client_queue;
  s.max_queued_bytes = config.max_queued_bytes;
  s.request_timeout_ms = int64_t{config.request_timeout_s} * 1000;
  s.keepalive_timeout_ms = int64_t{config.keepalive_timeout_s} * 1000;
  s.send_timeout_ms = int64_t{config.send_timeout_s} * 1000;
  s.batch_sends = config.io_uring;
  s.cors_origin = config.cors_origin;
  return s;
}

// The Redis broker with --redis, else the local journal. A bad URL is reported by start().
std::unique_ptr<Broker> make_broker(Reactor& reactor, CommitSink& sink, const Config& config) {
  if (config.redis.empty())
    return std::make_unique<LocalBroker>(reactor, sink, local_broker_options(config));
  RedisBrokerOptions o;
  o.url = config.redis;
  o.prefix = config.redis_prefix;
  o.history_per_room = config.history;
  o.max_rooms = config.max_rooms;
  o.history_bytes = config.history_memory;
  return std::make_unique<RedisBroker>(reactor, sink, std::move(o));
}

HubOptions hub_options(const Config& config) {
  HubOptions o;
  o.history_per_room = config.history;
  o.history_bytes = config.history_memory;
  o.max_rooms = config.max_rooms;
  // Nodes sharing Redis: a stream may come with an id another node gave while this one was behind
  // (ids there are Redis's clock in microseconds: an hour of it).
  if (!config.redis.empty()) o.ids_ahead_allowed = 3'600'000'000;
  return o;
}

}  // namespace

Server::Server(Reactor& reactor, const Config& config)
    : reactor_(reactor),
      config_(config),
      hub_(hub_options(config)),
      broker_(make_broker(reactor, hub_, config)),
      policy_(config_, reactor, metrics_),
      static_files_(config.static_dir, config.max_queued_bytes),
      routes_(
          *broker_, hub_, access_, policy_, metrics_, static_files_, config.max_rooms_per_stream,
          [this] { return registry_.size(); }, reactor),
      registry_(reactor, metrics_, connection_settings(config), routes_),
      ping_frame_(stream_frame(kPingComment)) {}

Server::~Server() = default;

bool Server::configure(std::string& error, bool listener_inherited) {
  if (!policy_.validate(error) || !access_.configure(config_, error)) return false;
  if (!listener_inherited && !net::parse_endpoint(config_.listen)) {
    error = "bad --listen address: " + config_.listen +
            " (expected IP:PORT, [IPv6]:PORT, localhost:PORT or :PORT)";
    return false;
  }
  if (config_.redis.empty() && config_.journal && config_.data_dir.empty()) {
    error = "--data-dir is empty (leave it out for ./data, or use --no-journal)";
    return false;
  }
  if (config_.redis.empty() && config_.reuse_port) {
    error = "--reuse-port needs --redis: nodes sharing a port would each keep a chat of their own";
    return false;
  }
  if (!config_.redis.empty() && !parse_redis_url(config_.redis, error)) return false;
  configured_ = true;
  return true;
}

bool Server::start(std::string& error, int inherited_fd) {
  if (!configured_ && !configure(error, inherited_fd >= 0)) return false;
  hub_.on_forgotten = [this](std::string_view room, uint64_t through) {
    broker_->room_forgotten(room, through);
  };
  hub_.on_presence = [this](std::string_view room, uint64_t online,
                            const std::vector<std::string_view>& names) {
    broker_->presence_changed(room, online, names);
  };
  if (!broker_->start(error)) return false;
  release_free_heap();  // reading the journal back took memory that running does not keep
  int fd = inherited_fd;
  listener_inherited_ = inherited_fd >= 0;
  if (fd < 0) {
    fd = net::listen_tcp(*net::parse_endpoint(config_.listen), error, config_.reuse_port);
    if (fd < 0) return false;
  } else {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  address_ = net::local_address(fd);
  if (address_.starts_with("unix:") && !policy_.trusted_proxy(net::IpAddress{}))
    log::warn(
        "on a Unix socket every client counts as one address for the per-IP limits; "
        "--trusted-proxy unix believes the proxy's X-Forwarded-For");
  size_t max_connections = connection_cap(config_.max_connections);
  registry_.listen(fd, max_connections);
  // A node on Redis takes connections once warm: until then it could only refuse POSTs (503) and
  // close streams, which a balancer would have sent to a node that is up (with --reuse-port they
  // only wait). Not for long, though: when Redis does not answer, its 503s say so.
  if (!broker_->warm()) {
    registry_.hold_accepting();
    hold_until_ms_ = reactor_.now_ms() + kHoldUntilWarmMs;
  } else if (on_ready) {
    on_ready();
  }
  // One address's share: at most this many of its connections, and of its streams (auto).
  auto share = static_cast<uint32_t>(std::max<size_t>(1, max_connections / 4));
  uint32_t per_ip = config_.max_connections_per_ip.value_or(share);
  registry_.limit_per_peer(
      per_ip, [this](const net::IpAddress& peer) { return policy_.trusted_proxy(peer); });
  policy_.set_address_share(share);
  log_connection_limits(max_connections, per_ip);

  reactor_.after_dispatch([this] { return after_dispatch(); });
  if (!reactor_.every(std::chrono::seconds(1), [this] { every_second(); })) {
    error = std::string("cannot make the one-second timer: ") + strerror(errno);
    return false;
  }
  reactor_.on_iteration = [this](int64_t us) { metrics_.observe_loop_busy(us); };
  return true;
}

// What the open-file limit made of the defaults: an office behind one NAT address needs a few
// connections per person (the stream, the page's requests), which a low limit does not leave.
void Server::log_connection_limits(size_t max_connections, uint32_t per_ip) const {
  log::info("connection limits", "max_connections", max_connections, "per_ip",
            per_ip == 0 ? std::string("unlimited") : std::to_string(per_ip));
  constexpr uint32_t kOfficeConnections = 1000;  // 200 people, each with a page's few
  if (!config_.max_connections_per_ip && config_.max_connections == 0 &&
      per_ip < kOfficeConnections)
    log::warn(
        "the open-file limit leaves one address few connections: an office behind one NAT "
        "address may be refused (raise the limit, e.g. LimitNOFILE=, or set "
        "--max-connections-per-ip)",
        "per_ip", per_ip, "max_connections", max_connections);
}

bool Server::after_dispatch() {
  if (registry_.holding() && (broker_->warm() || reactor_.now_ms() >= hold_until_ms_))
    stop_holding();
  bool work_left = registry_.after_dispatch();
  if (draining_) finish_shutdown_if_done();
  return work_left;
}

void Server::stop_holding() {
  registry_.release_accepting();
  if (draining_) return;
  if (broker_->warm())
    log::info("warm: accepting connections");
  else
    log::warn("accepting connections before Redis answered");
  if (on_ready) on_ready();
}

void Server::every_second() {
  if (draining_) finish_shutdown_if_done();
  registry_.tick();
  broker_->tick();
  hub_.send_presence();
  send_heartbeats();
  if (++ticks_ % 10 == 0) policy_.prune();
  // Asking the allocator walks its free lists: every HeapTrim::kMinTicksBetween seconds only.
  uint64_t free_bytes = ticks_ % HeapTrim::kMinTicksBetween == 0 ? free_heap_bytes() : 0;
  if (heap_trim_.on_tick({registry_.take_high_water(), registry_.size(),
                          hub_.kept_bytes() + hub_.backfill_bytes(), free_bytes}))
    log::info("returned free memory to the system", "connections", registry_.size());
}

// Looked at every second, so a stream's ping comes within half a second of `--heartbeat` after
// what it was sent last (a timer of its own period would leave up to twice that between them).
void Server::send_heartbeats() {
  int64_t now = reactor_.now_ms();
  int64_t idle_ms = int64_t{config_.heartbeat_s} * 1000 - 500;
  registry_.for_each([&](Connection& c) {
    if (c.is_stream() && now - c.last_write_ms() >= idle_ms && c.idle_output() &&
        c.free_slots() > 1)
      (void)c.deliver(ping_frame_);
  });
}

// SIGHUP: the key files are read again. A stream whose token's key is no longer among them ends
// with `event: expired`, as at its token's exp: withdrawing a key withdraws what it signed.
void Server::reload_keys() {
  if (!access_.enabled()) return;
  std::string error;
  if (!access_.reload_keys(config_, error))
    return log::error("token keys not reloaded; the ones in use stay", "error", error);
  size_t ended = 0;
  registry_.for_each([&](Connection& c) {
    if (c.token_key_id() != 0 && !access_.has_key(c.token_key_id()) && c.withdraw_token()) ++ended;
  });
  log::info("token keys reloaded", "keys", access_.key_count(), "streams_ended", ended);
}

void Server::begin_shutdown() {
  if (draining_) return;
  draining_ = true;
  policy_.set_draining();
  drain_deadline_ms_ = reactor_.now_ms() + int64_t{config_.shutdown_timeout_s} * 1000;
  log::info("shutting down", "connections", registry_.size(), "streams", hub_.stream_count());
  registry_.stop_accepting_and_drain(!listener_inherited_);
  broker_->withdraw_presence();
  // The deadline is looked at each tenth of a second: an idle loop would wake only for the next
  // tick, up to a second past --shutdown-timeout.
  if (!reactor_.every(std::chrono::milliseconds(100), [this] { finish_shutdown_if_done(); }))
    log::warn(
        "no timer for the shutdown (out of descriptors): the deadline is looked at each second");
  finish_shutdown_if_done();
}

void Server::finish_shutdown_if_done() {
  bool busy = !registry_.all_finished() || !broker_->idle() || routes_.waiting() > 0;
  if (busy && reactor_.now_ms() < drain_deadline_ms_) return;
  reactor_.stop();
}

}  // namespace sse
