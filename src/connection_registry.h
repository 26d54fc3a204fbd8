// Every open connection: the listener that accepts them, the list that owns them, the writer set
// (connections with queued output, flushed once per loop iteration), reaping after each batch of
// events, and the once-a-second timeouts. Hands complete requests to a RequestHandler; knows
// nothing of routes or chat.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "batch_writer.h"
#include "client_limits.h"
#include "connection.h"
#include "connection_host.h"
#include "log.h"
#include "metrics.h"
#include "reactor.h"

namespace sse {

class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  virtual void handle_request(Connection& conn, Request& req) = 0;
  // A request whose client waits for 100 Continue, its headers read: true when it was refused
  // now (the answer closes the connection), false to have the body sent.
  virtual bool refuse_before_body(Connection&, Request&) { return false; }
  // A request refused before routing (malformed, too large, too slow), for the access log;
  // `req` when its head was read whole (method, path and forwarding headers known), else null.
  virtual void on_rejected(const Connection&, const Request* /*req*/, int /*status*/,
                           size_t /*bytes*/) {}
  // `conn` is about to be freed: drop every reference to it.
  virtual void on_closed(Connection& conn) = 0;
};

class ConnectionRegistry final : public ConnectionHost {
 public:
  ConnectionRegistry(Reactor& reactor, Metrics& metrics, ConnectionSettings settings,
                     RequestHandler& handler);
  ~ConnectionRegistry() override;

  // Accepts on `listen_fd` (non-blocking, owned from now on); at most `max_connections` open.
  void listen(int listen_fd, size_t max_connections);
  // At most `max` connections from one peer address (0: no limit), but none for the peers
  // `exempt` names (trusted proxies, whose connections carry many clients).
  void limit_per_peer(uint32_t max, std::function<bool(const net::IpAddress&)> exempt);

  // ConnectionHost.
  void handle_request(Connection& conn, Request& req) override;
  bool refuse_before_body(Connection& conn, Request& req) override;
  void on_rejected(const Connection& conn, const Request* req, int status, size_t bytes) override {
    handler_.on_rejected(conn, req, status, bytes);
  }
  void mark_dirty(Connection& conn) override;
  void schedule_reap(Connection& conn) override;
  const ConnectionSettings& settings() const override { return settings_; }
  Reactor& reactor() override { return reactor_; }
  int64_t now_ms() const override { return reactor_.now_ms(); }
  Metrics& metrics() override { return metrics_; }

  // After each batch of events: flush the writer set, free closed connections. True when
  // connections still have output for the next iteration.
  bool after_dispatch();
  // Until released, connections wait in the listen backlog, answered once the server is ready (a
  // node still connecting to Redis would only refuse them).
  void hold_accepting();
  void release_accepting();
  bool holding() const { return held_; }
  // About once a second: request and keep-alive timeouts; accepting again after EMFILE.
  void tick();
  void for_each(const std::function<void(Connection&)>& visit);

  // Shutdown: stop accepting (closing the listening socket when `close_listener`), let every
  // connection finish (see Connection::drain()).
  void stop_accepting_and_drain(bool close_listener);
  // Every connection is closed or lingering (only waiting for its peer's FIN).
  bool all_finished() const;
  size_t size() const { return count_; }
  // The most connections open at once since the last call (for HeapTrim's high-water mark).
  size_t take_high_water() {
    size_t peak = high_water_;
    high_water_ = count_;
    return peak;
  }
  // A loop iteration's sends go out in one io_uring submission (else one writev each).
  bool sends_batched() const { return batch_.available(); }

 private:
  class Listener;
  void accept_ready();
  bool counts_per_peer(const net::IpAddress& peer) const;
  void flush_writers();
  void flush_batch(size_t from, size_t to);
  void reap_closed();
  void resume_accepting();
  void log_fd_exhausted();

  Reactor& reactor_;
  Metrics& metrics_;
  ConnectionSettings settings_;
  RequestHandler& handler_;
  std::unique_ptr<Listener> listener_;
  size_t max_connections_ = 0;
  AddressCounts per_peer_{0};
  std::function<bool(const net::IpAddress&)> peer_exempt_;
  bool accept_paused_ = false;
  log::Throttle fd_exhausted_log_{std::chrono::seconds(60)};
  bool held_ = false;
  bool accepting_ = false;

  Connection* head_ = nullptr;  // intrusive list of every open connection
  size_t count_ = 0;
  size_t high_water_ = 0;
  std::vector<Connection*> dirty_;
  std::vector<Connection*> flushing_;
  BatchWriter batch_;
  static constexpr size_t kNothingToSend = ~size_t{0};
  std::vector<size_t> batched_;  // per connection of a batch: its send, or kNothingToSend
  std::vector<Connection*> closed_;
};

}  // namespace sse
