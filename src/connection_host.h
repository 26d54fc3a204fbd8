// What a Connection needs from whoever owns it, and nothing more: hand over a complete request,
// join the writer set, be freed after the event batch, the limits, the loop (epoll interest and
// the clock) and the counters. The owner is the ConnectionRegistry; unit tests use a fake.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "http_parser.h"
#include "metrics.h"
#include "reactor.h"

namespace sse {

class Connection;

struct ConnectionSettings {
  HttpLimits http;
  size_t queue_frames = 1024;          // stream frames queued before a slow consumer is closed
  size_t max_queued_bytes = 4u << 20;  // bytes queued (responses or frames) before closing
  int64_t request_timeout_ms = 10000;
  int64_t keepalive_timeout_ms = 60000;
  int64_t send_timeout_ms = 30000;  // queued output that makes no progress this long: closed
  bool batch_sends = true;          // one io_uring submission per loop iteration where available
  std::string cors_origin;          // --cors-origin: its pages may read even the early refusals
};

class ConnectionHost {
 public:
  virtual ~ConnectionHost() = default;
  // A complete request, in order; the host answers it now or later (hold() / release()).
  virtual void handle_request(Connection& conn, Request& req) = 0;
  // A request whose client waits for 100 Continue: true when it was refused now (the answer
  // closes the connection), false to have the body sent.
  virtual bool refuse_before_body(Connection&, Request&) { return false; }
  // A request refused before routing (malformed, too large, too slow), for the access log;
  // `req` when its head was read whole (method, path and forwarding headers known), else null.
  virtual void on_rejected(const Connection&, const Request* /*req*/, int /*status*/,
                           size_t /*bytes*/) {}
  // `conn` has output queued: flush it once after this batch of events.
  virtual void mark_dirty(Connection& conn) = 0;
  // `conn` closed itself: free it after this batch of events.
  virtual void schedule_reap(Connection& conn) = 0;
  virtual const ConnectionSettings& settings() const = 0;
  virtual Reactor& reactor() = 0;      // epoll interest
  virtual int64_t now_ms() const = 0;  // the loop's clock
  virtual Metrics& metrics() = 0;
};

}  // namespace sse
