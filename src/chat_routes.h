// The chat's routes: GET /events (streams of one or more rooms), POST and GET /messages (through
// the Broker), GET /rooms, /healthz, /metrics and the static page. Answers that come later (the
// broker's) find their connection by ticket, so a client that went away meanwhile is simply
// skipped.
#pragma once

#include <cstdint>
#include <functional>
#include <unordered_map>

#include "access.h"
#include "broker.h"
#include "connection_registry.h"
#include "http_policy.h"
#include "hub.h"
#include "metrics.h"
#include "static_files.h"

namespace sse {

class ChatRoutes final : public RequestHandler {
 public:
  ChatRoutes(Broker& broker, Hub& hub, const Access& access, HttpPolicy& policy, Metrics& metrics,
             StaticFiles& static_files, size_t max_rooms_per_stream,
             std::function<size_t()> open_connections, Reactor& reactor);

  void handle_request(Connection& conn, Request& req) override;
  bool refuse_before_body(Connection& conn, Request& req) override;
  void on_rejected(const Connection& conn, const Request* req, int status, size_t bytes) override;
  void on_closed(Connection& conn) override;

  // Requests still waiting for the broker's answer.
  size_t waiting() const { return waiting_.size(); }

 private:
  void route_events(Connection& conn, Request& req);
  // A stream's rooms, joined once storage answered for those memory falls short of.
  struct PendingResume {
    std::vector<std::string> rooms;
    std::string user;
    bool may_forget_kept = true;  // as when it was admitted (Hub::can_open)
    uint64_t last_id = 0;
    uint64_t ticket = 0;
    uint64_t share = 0;     // bytes reserved for its reads
    size_t room_bytes = 0;  // what each room's backfill may take
    size_t room_messages = 0;
    std::vector<Backfill> backfills;  // one per room memory fell short of
    size_t waiting = 0;               // answers still to come
    int rounds = 0;                   // of reading on after memory dropped more meanwhile
  };
  // At most this many rounds of reading on (each only what memory dropped during the last).
  static constexpr int kBackfillRounds = 4;
  using BackfillReads = std::vector<std::pair<size_t, uint64_t>>;  // backfill index, through
  void subscribe_after_backfill(Connection& conn, PendingResume resume,
                                const std::vector<std::pair<std::string, uint64_t>>& short_rooms);
  void read_backfills(const std::shared_ptr<PendingResume>& pending, const BackfillReads& reads);
  void join_when_read(const std::shared_ptr<PendingResume>& pending);
  void subscribe_backfilled(PendingResume& pending);
  uint64_t backfill_budget() const;
  uint64_t backfill_share() const;
  bool backfill_has_room() const;
  void route_messages(Connection& conn, Request& req);
  void post_message(Connection& conn, Request& req);
  std::optional<http::Response> refuse_post(const Connection& conn, const Request& req,
                                            const Authentication& auth);
  void answer_retry(uint64_t ticket, const ReplyContext& ctx, const std::string& room,
                    const std::string& text, const PublishResult& result);
  void list_messages(Connection& conn, Request& req);
  void list_rooms(Connection& conn, Request& req);
  void serve_health(Connection& conn, Request& req);
  void serve_static(Connection& conn, Request& req);
  void describe_server(Connection& conn, Request& req);
  void refuse_method(Connection& conn, Request& req);
  void serve_metrics(Connection& conn, Request& req);
  void serve_me(Connection& conn, Request& req);
  void append_stream_limit(std::string& body) const;

  // The request's token, checked now.
  Authentication authenticate(const Request& req) const;
  // 401 or 403 when `auth` may not read every one of `rooms`, else nullopt.
  std::optional<http::Response> check_read(const Authentication& auth,
                                           const std::vector<std::string>& rooms);

  // Holds `conn` until finish(ticket, …) answers it.
  uint64_t hold(Connection& conn);
  void finish(uint64_t ticket, const ReplyContext& ctx, http::Response r);
  // Finds `conn` by a ticket later (a stream waiting for storage), nullptr once it went away.
  uint64_t track(Connection& conn);
  // The connection of `ticket`, no longer tracked; nullptr when it went away meanwhile.
  Connection* take_held(uint64_t ticket);

  Broker& broker_;
  Hub& hub_;
  const Access& access_;
  HttpPolicy& policy_;
  Metrics& metrics_;
  StaticFiles& static_files_;
  size_t max_rooms_per_stream_;
  std::function<size_t()> open_connections_;
  Reactor& reactor_;
  int64_t started_ms_;
  std::unordered_map<uint64_t, Connection*> waiting_;
  uint64_t backfill_reserved_ = 0;  // bytes backfills being read may take
  uint64_t next_ticket_ = 1;
};

}  // namespace sse
