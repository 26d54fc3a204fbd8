// Wires the parts together and runs what is timed: the Broker (commit path and storage), the Hub
// (rooms: kept history, subscriptions, presence), the ConnectionRegistry (sockets and the writer
// set), the HttpPolicy and the ChatRoutes; presence, heartbeats, the once-a-second tick and
// shutdown.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "access.h"
#include "broker.h"
#include "chat_routes.h"
#include "config.h"
#include "connection_registry.h"
#include "heap_trim.h"
#include "http_policy.h"
#include "hub.h"
#include "metrics.h"
#include "reactor.h"
#include "static_files.h"

namespace sse {

class Server {
 public:
  Server(Reactor& reactor, const Config& config);
  ~Server();

  // What the configuration alone decides (values, key files, how options combine): false with
  // `error` when it could never run as given, before anything is loaded or bound.
  bool configure(std::string& error, bool listener_inherited = false);
  // Loads storage (rebuilding history), binds the listener (or adopts `inherited_fd`). Calls
  // configure() first unless it ran.
  bool start(std::string& error, int inherited_fd = -1);
  // Runs once the server takes connections: at once, or for a node on Redis once it is warm (or
  // has waited for that as long as it does). Set before start().
  std::function<void()> on_ready;
  const std::string& address() const { return address_; }
  bool sends_batched() const { return registry_.sends_batched(); }

  // SIGTERM: stop accepting, answer requests in progress, flush what subscribers have, close
  // streams, then stop the reactor.
  void begin_shutdown();
  // SIGHUP: reads the token key files again.
  void reload_keys();

 private:
  bool after_dispatch();
  void log_connection_limits(size_t max_connections, uint32_t per_ip) const;
  void stop_holding();
  void every_second();
  void send_heartbeats();
  void finish_shutdown_if_done();

  Reactor& reactor_;
  Config config_;
  Metrics metrics_;
  Hub hub_;
  std::unique_ptr<Broker> broker_;
  Access access_;
  HttpPolicy policy_;
  StaticFiles static_files_;
  ChatRoutes routes_;
  ConnectionRegistry registry_;  // last: its connections hold subscriptions to hub_
  std::string address_;
  FrameRef ping_frame_;
  HeapTrim heap_trim_;
  uint64_t ticks_ = 0;
  static constexpr int64_t kHoldUntilWarmMs = 5000;
  int64_t hold_until_ms_ = 0;  // connections wait in the backlog until the broker is warm, or then
  bool configured_ = false;
  bool draining_ = false;
  bool listener_inherited_ = false;  // systemd's (socket activation): left open for the next one
  int64_t drain_deadline_ms_ = 0;
};

}  // namespace sse
