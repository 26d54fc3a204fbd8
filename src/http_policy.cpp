#include "http_policy.h"

#include "access.h"
#include "ascii.h"
#include "log.h"
#include "sse.h"

namespace sse {
namespace {

bool constant_time_equals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

// Whether a page of `origin` (scheme://host[:port]) belongs to the site `host` (a Host header,
// host[:port]) names: the same host, case aside, on the same port, a missing port being the
// origin scheme's default (so Host: chat.example:443 is https://chat.example).
bool same_site(std::string_view origin, std::string_view host) {
  size_t sep = origin.find("://");
  if (sep == std::string_view::npos || host.empty()) return false;  // "null", say
  std::string_view scheme = origin.substr(0, sep);
  std::string_view default_port = ascii::iequals(scheme, "https")  ? "443"
                                  : ascii::iequals(scheme, "http") ? "80"
                                                                   : "";
  auto split = [&](std::string_view authority) {
    size_t colon = authority.rfind(':');
    size_t bracket = authority.rfind(']');  // [v6]:port
    if (colon == std::string_view::npos || (bracket != std::string_view::npos && colon < bracket))
      return std::pair(authority, default_port);
    std::string_view port = authority.substr(colon + 1);  // empty: the default (RFC 3986 6.2.3)
    return std::pair(authority.substr(0, colon), port.empty() ? default_port : port);
  };
  auto [origin_host, origin_port] = split(origin.substr(sep + 3));
  auto [site_host, site_port] = split(host);
  return ascii::iequals(origin_host, site_host) && origin_port == site_port;
}

std::vector<Cidr> parse_trusted(const std::vector<std::string>& texts) {
  std::vector<Cidr> out;
  for (const std::string& text : texts)
    if (auto cidr = parse_cidr(text)) out.push_back(*cidr);
  return out;
}

}  // namespace

HttpPolicy::HttpPolicy(const Config& config, Reactor& reactor, Metrics& metrics)
    : config_(config),
      reactor_(reactor),
      metrics_(metrics),
      limits_(config.post_rate, config.post_burst, config.subscribe_rate, config.subscribe_burst,
              config.max_streams_per_ip.value_or(0), parse_trusted(config.trusted_proxies)) {
  size_t auto_room_reads = std::max(config.max_rooms / 4, config.max_rooms_per_stream);
  limits_.room_reads.set_max(config.max_room_reads_per_ip.value_or(
      static_cast<uint32_t>(std::min<size_t>(auto_room_reads, UINT32_MAX))));
  rng_state_ = static_cast<uint64_t>(wall_clock_ms()) * 0x9E3779B97F4A7C15ull | 1;
}

bool HttpPolicy::validate(std::string& error) const {
  for (const std::string& text : config_.trusted_proxies) {
    if (!parse_cidr(text)) {
      error = "bad --trusted-proxy: " + text;
      return false;
    }
  }
  return true;
}

void HttpPolicy::identify(Connection& conn, const Request& req) const {
  conn.client_ip = client_of(conn, req);
}

ReplyContext HttpPolicy::context_of(const Request& req) const {
  return {req.method_name,
          req.path,
          req.keep_alive,
          req.http10,
          req.method == Method::Head,
          !config_.cors_origin.empty() && req.origin == config_.cors_origin};
}

void HttpPolicy::reply(Connection& conn, const Request& req, http::Response r) {
  reply(conn, context_of(req), std::move(r));
}

void HttpPolicy::reply(Connection& conn, const ReplyContext& ctx, http::Response r) {
  if (!ctx.keep_alive || draining_) r.close = true;
  r.keep_alive = (r.keep_alive || ctx.http10) && !r.close;
  if (ctx.head) r.head_only = true;
  http::cors_headers(r, config_.cors_origin, ctx.cors);
  metrics_.count_response(r.status);
  log_access(conn.client_ip, ctx.method, ctx.path, r.status,
             r.head_only ? 0 : http::content_length(r));
  conn.respond(r);
}

void HttpPolicy::log_access(const net::IpAddress& client, std::string_view method,
                            std::string_view path, int status, size_t bytes) {
  if (!log::access_enabled()) return;
  std::string line = "client=" + client.to_string() + " method=" + std::string(method) +
                     " path=" + log::quote(path) + " status=" + std::to_string(status) +
                     " bytes=" + std::to_string(bytes);
  log::access(line);
}

// Every resource also answers OPTIONS (RFC 9110 9.3.7): with its methods, which is what a 405
// names too; from --cors-origin that is the CORS preflight, allowing those methods there.
void HttpPolicy::method_not_allowed(Connection& conn, const Request& req, std::string_view allow) {
  std::string methods = std::string(allow) + ", OPTIONS";
  http::Response r;
  if (req.method_name == "OPTIONS") {
    r.status = 204;
    if (!config_.cors_origin.empty() && req.origin == config_.cors_origin) {
      r.headers.emplace_back("Access-Control-Allow-Methods", allow);
      r.headers.emplace_back("Access-Control-Allow-Headers",
                             "Content-Type, Authorization, Last-Event-ID");
      r.headers.emplace_back("Access-Control-Max-Age", "600");
    }
  } else
    r = http::error(405, "method " + req.method_name + " is not allowed here; use " + methods);
  r.headers.emplace_back("Allow", methods);
  reply(conn, req, std::move(r));
}

bool HttpPolicy::has_publish_token(const Request& req) const {
  if (config_.publish_token.empty()) return true;
  auto token = bearer_token(req.authorization);
  return token && constant_time_equals(*token, config_.publish_token);
}

std::optional<http::Response> HttpPolicy::check_sender(const Connection& conn,
                                                       const Request& req) const {
  // Behind a trusted proxy that rewrote Host, the site is the one it says it forwarded.
  bool proxied = !req.forwarded_host.empty() && limits_.trusted(conn.peer());
  std::string_view site = proxied ? std::string_view(req.forwarded_host) : req.host;
  if (!req.origin.empty() && req.origin != config_.cors_origin && !same_site(req.origin, site)) {
    metrics_.count_rejected("cross_origin");
    return http::error(403, "posting from another site is not allowed");
  }
  if (!has_publish_token(req)) {
    metrics_.count_rejected("unauthorized");
    auto token = bearer_token(req.authorization);
    return http::unauthorized("a valid publish token is required", token && !token->empty());
  }
  return std::nullopt;
}

std::optional<http::Response> HttpPolicy::take_post_budget(Connection& conn,
                                                           std::string_view subject) {
  uint32_t retry_after = 0;
  bool taken = subject.empty() ? limits_.posts.take(conn.client_ip, reactor_.now_ms(), retry_after)
                               : limits_.subject_posts.take(std::string(subject), reactor_.now_ms(),
                                                            retry_after);
  if (!taken) {
    metrics_.count_rejected("post_rate");
    return http::retry_later(429, "you are sending messages too fast; wait a moment", retry_after);
  }
  return std::nullopt;
}

std::optional<HttpPolicy::StreamRefusal> HttpPolicy::admit_stream(
    Connection& conn, const std::vector<std::string>& room_names) {
  std::vector<std::string> rooms;
  if (limits_.room_reads.limited()) rooms = room_names;
  constexpr uint32_t kRetryWhenFullS = 10;
  if (!limits_.streams.acquire(conn.client_ip)) {
    metrics_.count_rejected("streams_per_ip");
    return StreamRefusal{"too many open streams from your address", kRetryWhenFullS};
  }
  // So that one address cannot hold every room open (--max-rooms), forgetting the others.
  if (!limits_.room_reads.acquire(conn.client_ip, rooms)) {
    limits_.streams.release(conn.client_ip);
    metrics_.count_rejected("room_reads_per_ip");
    return StreamRefusal{"too many rooms are read from your address", kRetryWhenFullS};
  }
  uint32_t retry_after = 0;
  if (!limits_.subscribes.take(conn.client_ip, reactor_.now_ms(), retry_after)) {
    limits_.streams.release(conn.client_ip);
    limits_.room_reads.release(conn.client_ip, rooms);
    metrics_.count_rejected("subscribe_rate");
    return StreamRefusal{"too many new streams from your address", retry_after};
  }
  conn.counted_stream = true;
  conn.counted_rooms = std::move(rooms);
  return std::nullopt;
}

void HttpPolicy::refuse_stream(Connection& conn, const Request& req, const StreamRefusal& refusal,
                               std::string_view resume_id) {
  if (!ascii::icontains(req.accept, "text/event-stream"))
    return reply(conn, req,
                 http::retry_later(429, refusal.reason + "; retry later", refusal.retry_after_s));
  http::Response r;
  r.content_type = "text/event-stream";
  r.unframed_body = true;
  r.close = true;
  r.headers.emplace_back("Cache-Control", "no-cache");
  // Jittered, so the refused do not all come back in the same instant.
  uint32_t retry_ms = refusal.retry_after_s * 1000 + retry_with_jitter() % 1000;
  r.body = refused_event(refusal.reason, retry_ms, resume_id);
  reply(conn, req, std::move(r));
}

void HttpPolicy::set_address_share(uint32_t share) {
  if (!config_.max_streams_per_ip) limits_.streams.set_max(share);
}

void HttpPolicy::open_stream(Connection& conn, const Request& req,
                             std::optional<uint64_t> fresh_from) {
  http::Response r = http::stream_head(req.http10);
  // The client's own choice said back; HTTP/1.0's stream ends only when the connection does.
  r.keep_alive = req.keep_alive && !req.http10;
  r.close = !r.keep_alive;
  http::cors_headers(r, config_.cors_origin, context_of(req).cors);
  std::string head = http::serialize(r);
  std::string opening = fresh_from ? opening_event(retry_with_jitter(), *fresh_from)
                                   : retry_line(retry_with_jitter());
  metrics_.count_response(200);
  log_access(conn.client_ip, req.method_name, req.path, 200, 0);
  conn.start_stream(head, opening, !req.http10);  // last: the request goes with the parser
}

uint32_t HttpPolicy::retry_with_jitter() {
  // xorshift: spread reconnects over retry .. retry * 1.5 so a restart is not a stampede.
  rng_state_ ^= rng_state_ << 13;
  rng_state_ ^= rng_state_ >> 7;
  rng_state_ ^= rng_state_ << 17;
  uint32_t spread = config_.retry_ms / 2 + 1;
  return config_.retry_ms + static_cast<uint32_t>(rng_state_ % spread);
}

void HttpPolicy::on_closed(Connection& conn) {
  if (conn.counted_stream) limits_.streams.release(conn.client_ip);
  limits_.room_reads.release(conn.client_ip, conn.counted_rooms);
  conn.counted_stream = false;
  conn.counted_rooms.clear();
}

void HttpPolicy::prune() {
  int64_t now = reactor_.now_ms();
  limits_.posts.prune(now);
  limits_.subject_posts.prune(now);
  limits_.subscribes.prune(now);
}

}  // namespace sse
