// Routes requests, owns the room, the connections and the writer set (connections with queued
// output, flushed once per loop iteration), and applies the limits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "client_limits.h"
#include "config.h"
#include "connection.h"
#include "journal.h"
#include "metrics.h"
#include "reactor.h"
#include "room.h"
#include "static_files.h"

namespace sse {

class Server {
 public:
  Server(Reactor& reactor, const Config& config);
  ~Server();

  // Opens the journal (rebuilding history), binds the listener (or adopts `inherited_fd`).
  bool start(std::string& error, int inherited_fd = -1);
  std::string address() const { return address_; }

  // Connection callbacks.
  void handle_request(Connection& conn, Request& req);
  void mark_dirty(Connection& conn);
  void schedule_reap(Connection& conn);
  void count_slow_consumer() { ++metrics_.slow_consumers; }

  // SIGTERM: stop accepting, flush what subscribers have, close streams, then stop the reactor.
  void begin_shutdown();
  bool draining() const { return draining_; }

  const Config& config() const { return config_; }
  const HttpLimits& http_limits() const { return http_limits_; }
  Reactor& reactor() { return reactor_; }
  Metrics& metrics() { return metrics_; }
  Room& room() { return room_; }

 private:
  class Listener;
  class DurableWatcher;

  void accept_ready();
  bool after_dispatch();
  void flush_writers();
  void reap_closed();
  void every_second();
  void resume_accepting();
  void send_heartbeats();
  void on_durable();
  void finish_shutdown_if_done();

  void route_events(Connection& conn, Request& req);
  void route_messages(Connection& conn, Request& req);
  void post_message(Connection& conn, Request& req);
  void list_messages(Connection& conn, Request& req);
  void serve_static(Connection& conn, Request& req);
  void serve_metrics(Connection& conn, Request& req);
  void method_not_allowed(Connection& conn, Request& req, std::string_view allow);
  // What an answer needs to know of the request it answers, kept while a POST waits for the disk.
  struct ReplyContext {
    std::string method;
    std::string path;
    bool keep_alive;
    bool head;
    bool cors;  // the request came from the --cors-origin
  };
  ReplyContext context_of(const Request& req) const;
  void reply(Connection& conn, const Request& req, http::Response r);
  void reply(Connection& conn, const ReplyContext& ctx, http::Response r);
  void log_access(const net::IpAddress& client, std::string_view method, std::string_view path,
                  int status, size_t bytes);
  std::optional<http::Response> check_post_policy(Connection& conn, const Request& req);
  uint32_t retry_with_jitter();
  std::vector<JournalRecord> journal_window();

  Reactor& reactor_;
  Config config_;
  HttpLimits http_limits_;
  Room room_;
  StaticFiles static_files_;
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<DurableWatcher> durable_watcher_;
  std::string address_;
  Metrics metrics_;
  ClientLimits limits_;

  Connection* connections_ = nullptr;  // intrusive list of every open connection
  size_t connection_count_ = 0;
  size_t max_connections_ = 0;
  std::vector<Connection*> dirty_;
  std::vector<Connection*> flushing_;
  std::vector<Connection*> closed_;

  // POSTs whose record is written but not yet on disk (--fsync always).
  struct PendingPost {
    uint64_t seq;
    uint64_t id;
    FrameRef frame;
    std::string nonce_key;
    Connection* conn;  // nulled if the client goes away first
    ReplyContext context;
  };
  std::vector<PendingPost> pending_posts_;
  uint64_t next_id_ = 1;  // ids are assigned here, ahead of the room while POSTs wait for disk

  FrameRef ping_frame_;
  FrameRef stream_head_;
  uint64_t last_presence_ = UINT64_MAX;
  bool draining_ = false;
  bool accept_paused_ = false;
  uint64_t ticks_ = 0;
  int64_t drain_deadline_ms_ = 0;
  int64_t started_ms_ = 0;
  uint64_t rng_state_;
};

}  // namespace sse
