// HTTP policy that every route shares: how an answer goes out (keep-alive and close, HEAD, CORS,
// counters, access log), who the client is (trusted proxies), and what a client may do (same-site
// POSTs, the publish token, rate limits, streams per address). Knows nothing of chat.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "client_limits.h"
#include "config.h"
#include "connection.h"
#include "http_parser.h"
#include "http_response.h"
#include "metrics.h"
#include "reactor.h"

namespace sse {

// What an answer needs to know of the request it answers, kept while the answer is pending.
struct ReplyContext {
  std::string method;
  std::string path;
  bool keep_alive;
  bool http10;
  bool head;
  bool cors;  // the request came from the --cors-origin
};

class HttpPolicy {
 public:
  HttpPolicy(const Config& config, Reactor& reactor, Metrics& metrics);

  // Checks what start-up must refuse (a malformed --trusted-proxy).
  bool validate(std::string& error) const;
  void set_draining() { draining_ = true; }
  bool draining() const { return draining_; }

  // Sets conn.client_ip for this request (the peer, or the forwarded address of a trusted proxy).
  void identify(Connection& conn, const Request& req) const;

  ReplyContext context_of(const Request& req) const;
  // Every answer goes out here: close and HEAD rules, CORS, counters, access log.
  void reply(Connection& conn, const ReplyContext& ctx, http::Response r);
  void reply(Connection& conn, const Request& req, http::Response r);
  void method_not_allowed(Connection& conn, const Request& req, std::string_view allow);

  // Whether the request carries --publish-token when one is set (else true).
  bool has_publish_token(const Request& req) const;
  // Why this POST's sender may not post (403 another site, 401 no publish token), or nullopt;
  // spends nothing, so it may be asked before the body is read.
  std::optional<http::Response> check_sender(const Connection& conn, const Request& req) const;
  // The 429 when this POST is over its sender's rate, or nullopt with one POST spent. The rate
  // counts per `subject` (a valid token's) when there is one, else per client address.
  std::optional<http::Response> take_post_budget(Connection& conn, std::string_view subject);
  // Why this stream may not open now, or nullopt; on success the connection holds one of its
  // address's stream slots until on_closed(). A refused attempt spends nothing.
  struct StreamRefusal {
    std::string reason;
    uint32_t retry_after_s;
  };
  // `rooms`: what the stream reads (an address's streams read at most --max-room-reads-per-ip
  // distinct rooms).
  std::optional<StreamRefusal> admit_stream(Connection& conn,
                                            const std::vector<std::string>& rooms);
  // Answers a refused stream so that its client comes back by itself: an EventSource (it sends
  // Accept: text/event-stream, and gives up for good on any status but 200) gets a 200 that only
  // sets `retry:` and `id:` (`resume_id`: so that it comes back with that Last-Event-ID and
  // misses nothing posted meanwhile; empty: no `id:`) with an `event: refused` saying why, and
  // ends; any other client a 429 with Retry-After.
  void refuse_stream(Connection& conn, const Request& req, const StreamRefusal& refusal,
                     std::string_view resume_id);
  // The stream cap per address (--max-streams-per-ip auto) once one address's share of the
  // connections is known.
  void set_address_share(uint32_t share);
  bool trusted_proxy(const net::IpAddress& peer) const { return limits_.trusted(peer); }
  // Starts `conn`'s stream with the response head (chunked for HTTP/1.1, CORS headers) and the
  // retry field; counted and logged. `fresh_from`: a stream that resumes from nowhere starts after
  // this id, and says so (id:).
  void open_stream(Connection& conn, const Request& req, std::optional<uint64_t> fresh_from);

  void on_closed(Connection& conn);
  // Forgets rate buckets that have refilled.
  void prune();
  // Who sent `req`: its peer, or behind a trusted proxy the client its headers name.
  net::IpAddress client_of(const Connection& conn, const Request& req) const {
    return limits_.client_ip(conn.peer(), req.forwarded_for, req.forwarded);
  }
  // One access-log line (when there is an access log).
  void log_access(const net::IpAddress& client, std::string_view method, std::string_view path,
                  int status, size_t bytes);

 private:
  uint32_t retry_with_jitter();

  const Config& config_;
  Reactor& reactor_;
  Metrics& metrics_;
  ClientLimits limits_;
  bool draining_ = false;
  uint64_t rng_state_;
};

}  // namespace sse
