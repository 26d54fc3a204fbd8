#include "chat_routes.h"

#include <algorithm>
#include <charconv>

#include "ascii.h"
#include "form.h"
#include "json.h"
#include "message.h"
#include "room_name.h"
#include "sse.h"
#include "utf8.h"

namespace sse {
namespace {

constexpr size_t kDefaultListLimit = 100;
// Frame bytes one resuming stream's backfills may take (all of them together: a quarter of
// --history-memory, counting those being read at their most).
constexpr uint64_t kMaxBackfillBytes = 4 << 20;

std::optional<uint64_t> parse_u64(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// What GET /events asks for: ?room=a&room=b (none: general), ?user=name, ?lastEventId=N.
struct StreamQuery {
  std::vector<std::string> rooms;
  std::string user;
  std::optional<std::string> last_event_id;
};

// The reason a stream's query is refused (400), or nullopt with `out` filled. `user` is checked
// only when it is believed (`names_from_tokens` false).
std::optional<std::string> parse_stream_query(std::string_view query, size_t max_rooms,
                                              bool names_from_tokens, StreamQuery& out) {
  auto pairs = form::parse(query);
  if (!pairs) return "malformed query string";
  for (auto& [key, value] : *pairs) {
    if (key == "room") {
      if (auto err = room_name_error(value)) return *err;
      if (std::find(out.rooms.begin(), out.rooms.end(), value) == out.rooms.end())
        out.rooms.push_back(std::move(value));
    } else if (key == "user") {
      // An empty name is no name: a page that builds ?user=${name} before anyone typed one must
      // not get the 400 that makes an EventSource give up for good.
      if (names_from_tokens || utf8::trim(value).empty()) continue;
      if (auto err = check_user(value)) return *err;
      out.user = std::move(value);
    } else if (key == "lastEventId") {
      out.last_event_id = std::move(value);
    }
  }
  if (out.rooms.size() > max_rooms)
    return "a stream may read at most " + std::to_string(max_rooms) + " rooms";
  if (out.rooms.empty()) out.rooms.emplace_back(kDefaultRoom);
  return std::nullopt;
}

// Where a stream resumes: after the Last-Event-ID header, else ?lastEventId=; nullopt: live only.
std::optional<uint64_t> resume_point(const Request& req, StreamQuery& query) {
  if (req.has_last_event_id) query.last_event_id = req.last_event_id;
  if (query.last_event_id) query.last_event_id = ascii::trim_ows(*query.last_event_id);
  if (!req.has_last_event_id && (!query.last_event_id || query.last_event_id->empty()))
    return std::nullopt;
  // An id this server never issued is treated as unknown: the client gets a reset, not silence.
  return parse_u64(*query.last_event_id).value_or(UINT64_MAX);
}

// Below storage's first id, but neither 0 (nothing read yet) nor the id just before it: given by
// a data set storage no longer has, so as unknown as an id that never was.
std::optional<uint64_t> known_or_unknown(std::optional<uint64_t> id, uint64_t first_id) {
  if (id && *id > 0 && *id + 1 < first_id) return UINT64_MAX;
  return id;
}

// The id a stream refused for now comes back with: where it is, or its rooms' newest message. One
// that is no id (unknown, UINT64_MAX) is said back as the client sent it, which it keeps anyway
// (its reset comes when admitted), never as an id this server made up; unless an id: line cannot
// carry it (then none).
std::string refused_resume_id(std::optional<uint64_t> last_id, uint64_t newest,
                              const std::optional<std::string>& sent) {
  if (!last_id) return std::to_string(newest);
  if (*last_id != UINT64_MAX) return std::to_string(*last_id);
  if (!sent || sent->find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) return {};
  return *sent;
}

// A listing's parameter given twice: which one counts is anybody's guess (a proxy in front may
// have checked the other), so it is refused with the name of the parameter.
std::optional<std::string> repeated_parameter(const form::Pairs& pairs,
                                              std::initializer_list<std::string_view> keys) {
  for (std::string_view key : keys)
    if (std::count_if(pairs.begin(), pairs.end(), [key](auto& p) { return p.first == key; }) > 1)
      return std::string(key) + " is given more than once";
  return std::nullopt;
}

const std::string kBadLimit = "limit must be a whole number of at least 1 (at most " +
                              std::to_string(kMaxListLimit) + " are listed)";

// The `limit` of a listing: 1..kMaxListLimit (larger is capped), kDefaultListLimit when absent.
std::optional<size_t> parse_limit(const std::optional<std::string>& value) {
  if (!value) return kDefaultListLimit;
  auto n = parse_u64(*value);
  // A whole number too large for 64 bits is still a whole number of at least 1.
  bool huge = !n && !value->empty() &&
              value->find_first_not_of("0123456789") == std::string::npos &&
              value->find_first_not_of('0') != std::string::npos;
  if (huge) return kMaxListLimit;
  if (!n || *n == 0) return std::nullopt;
  return std::min<uint64_t>(*n, kMaxListLimit);
}

// A JSON array of the messages in `frames`, as slices of those very frames (nothing copied), at
// most kMaxHistoryPageBytes of them (but at least one): the oldest of them when a client pages on
// with the last id it got (`newest` false), else the newest.
http::Response history_page(const std::vector<FrameRef>& frames, bool newest) {
  static const FrameRef open("["), separator(","), close("]");
  auto json_of = [](const FrameRef& frame) { return frame_json(*frame.get()); };
  size_t begin = newest ? frames.size() : 0, end = begin, bytes = 0;
  auto fits = [&](const FrameRef& frame) {
    return bytes == 0 || bytes + json_of(frame).size() <= kMaxHistoryPageBytes;
  };
  if (newest) {
    for (; begin > 0 && fits(frames[begin - 1]); --begin)
      bytes += json_of(frames[begin - 1]).size() + 1;
  } else {
    for (; end < frames.size() && fits(frames[end]); ++end)
      bytes += json_of(frames[end]).size() + 1;
  }
  http::Response r;
  r.headers.emplace_back("Cache-Control", "no-store");
  r.parts.push_back({open, 0, 1});
  for (size_t i = begin; i < end; ++i) {
    std::string_view json = json_of(frames[i]);
    if (i > begin) r.parts.push_back({separator, 0, 1});
    size_t at = static_cast<size_t>(json.data() - frames[i]->data());
    r.parts.push_back({frames[i], at, at + json.size()});
  }
  r.parts.push_back({close, 0, 1});
  return r;
}

void add_security_headers(http::Response& r) {
  r.headers.emplace_back("Content-Security-Policy", "default-src 'self'");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
}

http::Response text_response(int status, std::string body) {
  http::Response r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body);
  return r;
}

// The answer to a POST: 201 {"id":N} when new, 200 when its nonce was seen before, 503 when
// storage cannot take it (never a 201 for a message that is not stored).
http::Response publish_answer(const PublishResult& result) {
  using Status = PublishResult::Status;
  if (result.status == Status::Unavailable) {
    return http::retry_later(
        503, "the message could not be stored (" + result.reason + "); try again later", 2);
  }
  http::Response r;
  r.status = result.status == Status::Created ? 201 : 200;
  r.body = "{\"id\":" + std::to_string(result.id) + "}";
  return r;
}

// 422 (as draft-ietf-httpapi-idempotency-key-header says): the nonce is taken by another message.
http::Response nonce_reused(uint64_t id) {
  return http::error(422, "this nonce was already used for another message (id " +
                              std::to_string(id) + "); use a new nonce for a new message");
}

// 403: a valid token that does not cover what is asked.
http::Response forbidden(std::string_view reason) {
  http::Response r = http::error(403, reason);
  r.headers.emplace_back("WWW-Authenticate",
                         R"(Bearer realm="sse-chat", error="insufficient_scope")");
  return r;
}

constexpr std::string_view kSignInNeeded =
    "sign-in needed: send a token (Authorization: Bearer, or the sse_chat_token cookie)";

void append_patterns(std::string& out, const RoomPatterns& patterns) {
  out += '[';
  for (const std::string& p : patterns.list()) {
    if (out.back() != '[') out += ',';
    json::append_string(out, p);
  }
  out += ']';
}

// What a static path that has no file to send gets.
http::Response static_miss(StaticFiles::Miss miss, const Request& req) {
  switch (miss) {
    case StaticFiles::Miss::Directory: {
      // As a web server does: the page's relative links need the trailing slash.
      http::Response r;
      r.status = 301;
      std::string location = req.path + "/" + (req.query.empty() ? "" : "?" + req.query);
      r.content_type = "text/plain; charset=utf-8";
      r.body = "moved to " + location + "\n";
      r.headers.emplace_back("X-Content-Type-Options", "nosniff");
      r.headers.emplace_back("Location", std::move(location));
      return r;
    }
    case StaticFiles::Miss::TooLarge:
      return http::error(500, "file too large to serve: over 64 MiB");
    case StaticFiles::Miss::NoRoom:
      return http::retry_later(503, "the static file cache is full: try again", 1);
    case StaticFiles::Miss::Busy:
      return http::retry_later(503, "the server cannot open files for now: try again", 1);
    case StaticFiles::Miss::NotFound:
      break;
  }
  return http::error(404, "no such page: " + req.path);
}

}  // namespace

ChatRoutes::ChatRoutes(Broker& broker, Hub& hub, const Access& access, HttpPolicy& policy,
                       Metrics& metrics, StaticFiles& static_files, size_t max_rooms_per_stream,
                       std::function<size_t()> open_connections, Reactor& reactor)
    : broker_(broker),
      hub_(hub),
      access_(access),
      policy_(policy),
      metrics_(metrics),
      static_files_(static_files),
      max_rooms_per_stream_(max_rooms_per_stream),
      open_connections_(std::move(open_connections)),
      reactor_(reactor),
      started_ms_(reactor.now_ms()) {}

void ChatRoutes::handle_request(Connection& conn, Request& req) {
  policy_.identify(conn, req);
  const std::string& path = req.path;
  if (path == "*") return describe_server(conn, req);
  if (path == "/events") return route_events(conn, req);
  if (path == "/messages") return route_messages(conn, req);
  bool get_or_head = req.method == Method::Get || req.method == Method::Head;
  if (!get_or_head) return refuse_method(conn, req);
  if (path == "/rooms") return list_rooms(conn, req);
  if (path == "/me") return serve_me(conn, req);
  if (path == "/healthz") return serve_health(conn, req);
  if (path == "/metrics") return serve_metrics(conn, req);
  serve_static(conn, req);
}

// Its client is the request's own (behind a proxy, from its forwarding headers), not the one of a
// request before it on the same connection.
void ChatRoutes::on_rejected(const Connection& conn, const Request* req, int status, size_t bytes) {
  if (!req) return policy_.log_access(conn.peer(), "-", "-", status, bytes);
  policy_.log_access(policy_.client_of(conn, *req), req->method_name, req->path, status, bytes);
}

void ChatRoutes::on_closed(Connection& conn) {
  policy_.on_closed(conn);
  if (conn.waiting_ticket != 0) waiting_.erase(conn.waiting_ticket);
  conn.waiting_ticket = 0;
}

Authentication ChatRoutes::authenticate(const Request& req) const {
  return access_.authenticate(req.authorization, req.cookie, wall_clock_ms() / 1000);
}

std::optional<http::Response> ChatRoutes::check_read(const Authentication& auth,
                                                     const std::vector<std::string>& rooms) {
  if (auth.kind == Authentication::Invalid) {
    metrics_.count_rejected("unauthorized");
    return http::unauthorized(auth.reason, true);
  }
  for (const std::string& room : rooms) {
    if (access_.may_read(auth.who(), room)) continue;
    if (!auth.who()) {
      metrics_.count_rejected("unauthorized");
      return http::unauthorized(std::string(kSignInNeeded) + " to read room " + room, false);
    }
    metrics_.count_rejected("forbidden");
    return forbidden("your token does not allow reading room " + room);
  }
  return std::nullopt;
}

uint64_t ChatRoutes::hold(Connection& conn) {
  conn.hold();
  return track(conn);
}

uint64_t ChatRoutes::track(Connection& conn) {
  uint64_t ticket = next_ticket_++;
  waiting_[ticket] = &conn;
  conn.waiting_ticket = ticket;
  return ticket;
}

Connection* ChatRoutes::take_held(uint64_t ticket) {
  auto it = waiting_.find(ticket);
  if (it == waiting_.end()) return nullptr;  // the client went away meanwhile
  Connection* conn = it->second;
  waiting_.erase(it);
  conn->waiting_ticket = 0;
  return conn->closed() ? nullptr : conn;  // closed in this batch, freed after it
}

void ChatRoutes::finish(uint64_t ticket, const ReplyContext& ctx, http::Response r) {
  Connection* conn = take_held(ticket);
  if (!conn) return;
  policy_.reply(*conn, ctx, std::move(r));
  conn->release();
}

void ChatRoutes::route_events(Connection& conn, Request& req) {
  if (!(req.method == Method::Get || req.method == Method::Head))
    return policy_.method_not_allowed(conn, req, "GET, HEAD");
  StreamQuery query;
  size_t max_rooms = std::min(max_rooms_per_stream_, hub_.max_rooms());
  if (auto error = parse_stream_query(req.query, max_rooms, access_.enabled(), query)) {
    metrics_.count_rejected("invalid_stream");
    return policy_.reply(conn, req, http::error(400, *error));
  }
  Authentication auth = authenticate(req);
  if (auto refusal = check_read(auth, query.rooms))
    return policy_.reply(conn, req, std::move(*refusal));
  // With tokens on, a reader's name is its token's, never what the query says.
  if (const Identity* who = auth.who()) query.user = who->name;
  if (req.method == Method::Head) {  // the stream's head, through the same reply path as any
    http::Response head = http::stream_head(req.http10);
    head.keep_alive = true;  // said, as the stream says it (unless the connection closes)
    return policy_.reply(conn, req, std::move(head));
  }
  // Draining, or a node still reading what Redis keeps: an EventSource reconnects (here later,
  // or elsewhere) on a closed connection, where any answer but 200 would make it give up.
  if (policy_.draining()) return conn.close("draining");
  if (!broker_.warm()) return conn.close("warming up");
  std::optional<uint64_t> last_id = known_or_unknown(resume_point(req, query), broker_.first_id());
  uint64_t newest = hub_.newest_of(query.rooms);
  std::string resume_id = refused_resume_id(last_id, newest, query.last_event_id);
  // Only who may post to every room it reads may make rooms at the cost of others' kept
  // messages (as posting does); a reader, with a token or without, only where that forgets none.
  bool may_forget_kept =
      policy_.has_publish_token(req) &&
      std::all_of(query.rooms.begin(), query.rooms.end(),
                  [&](const std::string& r) { return access_.may_post(auth.who(), r); });
  if (!hub_.can_open(query.rooms, may_forget_kept)) {
    metrics_.count_rejected("too_many_rooms");
    // Either every room is read, or only rooms that keep messages are free, and this reader may
    // not forget those.
    std::string why = hub_.can_open(query.rooms, true)
                          ? "too many rooms keep messages; a new one is made only by who may post"
                          : "too many rooms are being read";
    return policy_.refuse_stream(conn, req, {std::move(why), 5}, resume_id);
  }
  // Rooms whose messages from before what memory keeps are read from shared storage first.
  std::vector<std::pair<std::string, uint64_t>> short_rooms;
  if (last_id && broker_.keeps_more_than_memory())
    short_rooms = hub_.rooms_short_of(query.rooms, *last_id);
  if (!short_rooms.empty() && !backfill_has_room()) {
    metrics_.count_rejected("backfill_busy");
    return policy_.refuse_stream(conn, req, {"too many streams are catching up", 5}, resume_id);
  }
  if (auto refusal = policy_.admit_stream(conn, query.rooms))
    return policy_.refuse_stream(conn, req, *refusal, resume_id);
  policy_.open_stream(conn, req, last_id ? std::nullopt : std::optional(newest));
  if (const Identity* who = auth.who()) {  // a stream never outlives its token
    int64_t left_ms = std::max<int64_t>(0, who->expires_s * 1000 - wall_clock_ms());
    conn.expire_at(reactor_.now_ms() + left_ms, who->key_id);
  }
  if (!short_rooms.empty()) {
    PendingResume resume;
    resume.rooms = std::move(query.rooms);
    resume.user = std::move(query.user);
    resume.may_forget_kept = may_forget_kept;
    resume.last_id = *last_id;
    return subscribe_after_backfill(conn, std::move(resume), short_rooms);
  }
  (void)conn.subscribe(hub_, query.rooms, std::move(query.user), last_id);  // can_open held
}

uint64_t ChatRoutes::backfill_budget() const {
  return hub_.options().history_bytes / 4;
}

// What one stream's backfills may take: kMaxBackfillBytes, or all of a small budget.
uint64_t ChatRoutes::backfill_share() const {
  return std::min(kMaxBackfillBytes, backfill_budget());
}

bool ChatRoutes::backfill_has_room() const {
  return hub_.backfill_bytes() + backfill_reserved_ + backfill_share() <= backfill_budget();
}

// The stream is open (so its EventSource is too), its rooms are joined once storage has answered
// for every room memory falls short of; meanwhile it has heartbeats only.
void ChatRoutes::subscribe_after_backfill(
    Connection& conn, PendingResume resume,
    const std::vector<std::pair<std::string, uint64_t>>& short_rooms) {
  auto pending = std::make_shared<PendingResume>(std::move(resume));
  pending->share = backfill_share();
  backfill_reserved_ += pending->share;
  pending->ticket = track(conn);
  pending->room_bytes = pending->share / short_rooms.size();
  pending->room_messages = std::max<size_t>(kMaxListLimit, hub_.options().history_per_room);
  BackfillReads reads;
  for (const auto& [room, through] : short_rooms) {
    pending->backfills.push_back({room, pending->last_id, {}, true, false});
    reads.emplace_back(pending->backfills.size() - 1, through);
  }
  read_backfills(pending, reads);
}

namespace {

bool all_answered(const std::vector<Backfill>& backfills) {
  return std::all_of(backfills.begin(), backfills.end(),
                     [](const Backfill& b) { return b.answered; });
}

size_t bytes_of(const Backfill& b) {
  size_t bytes = 0;
  for (const KeptFrame& m : b.messages) bytes += m.frame->size();
  return bytes;
}

}  // namespace

// Reads storage for the rooms of `reads` (an index into the backfills, and how far), each from
// where its backfill ends (the stream's last id, at first) within what its share has left.
void ChatRoutes::read_backfills(const std::shared_ptr<PendingResume>& pending,
                                const BackfillReads& reads) {
  pending->waiting = reads.size();
  for (const auto& read : reads) {
    size_t i = read.first;  // a name of its own: clang 14 captures no structured binding
    const Backfill& b = pending->backfills[i];
    bool first_read = !b.answered;
    size_t bytes = first_read ? 0 : bytes_of(b);
    size_t count = first_read ? 0 : b.messages.size();
    broker_.read_backfill(b.room, b.through, read.second, pending->room_messages - count,
                          pending->room_bytes - bytes,
                          [this, pending, i, first_read](Backfill more) {
                            Backfill& fill = pending->backfills[i];
                            if (first_read) {
                              fill = std::move(more);
                            } else {
                              fill.read_on(std::move(more));
                            }
                            if (--pending->waiting == 0) join_when_read(pending);
                          });
  }
}

// A busy room drops its oldest while storage is read: memory may no longer join up with what
// was read. Then the rooms that fell behind are read on from there, a few rounds at most (each
// only what memory dropped during the last), before the stream joins (the hub resets any room
// that still falls short).
void ChatRoutes::join_when_read(const std::shared_ptr<PendingResume>& pending) {
  BackfillReads behind;
  auto waiting = waiting_.find(pending->ticket);
  bool will_join = waiting != waiting_.end() && !waiting->second->finishing() &&
                   all_answered(pending->backfills);
  if (++pending->rounds <= kBackfillRounds && will_join) {
    for (size_t i = 0; i < pending->backfills.size(); ++i) {
      const Backfill& b = pending->backfills[i];
      if (!b.answered || b.messages.size() >= pending->room_messages ||
          bytes_of(b) >= pending->room_bytes)
        continue;
      auto still_short = hub_.rooms_short_of({b.room}, b.through);
      if (!still_short.empty()) behind.emplace_back(i, still_short[0].second);
    }
  }
  if (!behind.empty()) return read_backfills(pending, behind);
  backfill_reserved_ -= pending->share;
  subscribe_backfilled(*pending);
}

// Storage that could not answer now closes the stream before it says anything: its EventSource
// comes back with the same Last-Event-ID after its retry time, rather than skip what storage has.
void ChatRoutes::subscribe_backfilled(PendingResume& pending) {
  Connection* conn = take_held(pending.ticket);
  if (!conn || !conn->is_stream() || conn->finishing()) return;  // gone, expired or draining
  bool answered = all_answered(pending.backfills);
  bool may_open = hub_.can_open(pending.rooms, pending.may_forget_kept);
  // Else the stream ends once its head is out (drain: as at shutdown).
  if (!answered || !may_open ||
      !conn->subscribe(hub_, pending.rooms, std::move(pending.user), pending.last_id,
                       std::move(pending.backfills)))
    conn->drain();
}

void ChatRoutes::route_messages(Connection& conn, Request& req) {
  if (req.method == Method::Post) return post_message(conn, req);
  if (req.method == Method::Get || req.method == Method::Head) return list_messages(conn, req);
  policy_.method_not_allowed(conn, req, "GET, HEAD, POST");
}

// What refuses a POST /messages from its headers alone: no token where one is needed (401),
// another site or no publish token (403, 401), a body neither JSON nor a form (415).
std::optional<http::Response> ChatRoutes::refuse_post(const Connection& conn, const Request& req,
                                                      const Authentication& auth) {
  if (access_.enabled() && !auth.who()) {
    metrics_.count_rejected("unauthorized");
    bool presented = auth.kind == Authentication::Invalid;
    return http::unauthorized(presented ? auth.reason : kSignInNeeded, presented);
  }
  if (auto refusal = policy_.check_sender(conn, req)) return refusal;
  if (auto unsupported = unsupported_media_type(req.content_type)) {
    metrics_.count_rejected("unsupported_media_type");
    return http::error(unsupported->status, unsupported->reason);
  }
  return std::nullopt;
}

// RFC 9110 10.1.1: a client that waits for 100 Continue is refused before it sends the body.
bool ChatRoutes::refuse_before_body(Connection& conn, Request& req) {
  bool posts_message = req.path == "/messages" && req.method == Method::Post;
  if (!posts_message && req.method != Method::Get && req.method != Method::Head) {
    // No other route takes a body (405, 404, a preflight): answered now, without it.
    req.keep_alive = false;  // the body it would have sent is never read
    handle_request(conn, req);
    return true;
  }
  if (!posts_message) return false;
  policy_.identify(conn, req);
  auto refusal = refuse_post(conn, req, authenticate(req));
  if (!refusal) return false;
  refusal->close = true;  // the body it would have sent is never read
  policy_.reply(conn, req, std::move(*refusal));
  return true;
}

void ChatRoutes::post_message(Connection& conn, Request& req) {
  Authentication auth = authenticate(req);
  const Identity* who = auth.who();
  if (auto refusal = refuse_post(conn, req, auth)) return policy_.reply(conn, req, *refusal);
  // The room may come in the query string too (POST /messages?room=team-a), as it does to read.
  std::optional<std::string> query_room;
  if (!req.query.empty()) {
    auto pairs = form::parse(req.query);
    auto repeated = pairs ? repeated_parameter(*pairs, {"room"}) : std::nullopt;
    if (!pairs || repeated) {
      metrics_.count_rejected("invalid_message");
      return policy_.reply(conn, req,
                           http::error(400, repeated.value_or("malformed query string")));
    }
    query_room = form::query_value(*pairs, "room");
  }
  if (auto refusal = policy_.take_post_budget(conn, who ? who->subject : std::string_view{}))
    return policy_.reply(conn, req, *refusal);
  PostResult decoded =
      decode_post(req.content_type, req.body,
                  who ? std::optional<std::string_view>(who->name) : std::nullopt, query_room);
  if (auto* rejection = std::get_if<Rejection>(&decoded)) {
    metrics_.count_rejected(rejection->status == 415 ? "unsupported_media_type"
                                                     : "invalid_message");
    return policy_.reply(conn, req, http::error(rejection->status, rejection->reason));
  }
  ChatInput& input = std::get<ChatInput>(decoded);
  if (!access_.may_post(who, input.room)) {
    metrics_.count_rejected("forbidden");
    return policy_.reply(conn, req,
                         forbidden("your token does not allow posting to room " + input.room));
  }
  if (!hub_.can_open({input.room})) {
    metrics_.count_rejected("too_many_rooms");
    return policy_.reply(conn, req,
                         http::retry_later(503, "too many rooms are in use; try again later", 5));
  }
  uint64_t ticket = hold(conn);
  // A retry must be the same message: what the nonce's first POST said, to check it against.
  std::optional<std::pair<std::string, std::string>> sent;
  if (!input.nonce.empty()) sent.emplace(input.room, input.text);
  broker_.publish({std::move(input.room), std::move(input.user), std::move(input.text),
                   std::move(input.nonce), who ? who->subject : std::string()},
                  [this, ticket, sent = std::move(sent),
                   ctx = policy_.context_of(req)](const PublishResult& result) {
                    if (result.status == PublishResult::Status::Unavailable)
                      metrics_.count_rejected("storage_unavailable");
                    if (sent && result.status == PublishResult::Status::Duplicate)
                      return answer_retry(ticket, ctx, sent->first, sent->second, result);
                    finish(ticket, ctx, publish_answer(result));
                  });
}

namespace {
// Whether `frame` is a message whose text is `text`.
bool says(const Frame& frame, const std::string& text) {
  std::string said = ",\"text\":";
  json::append_string(said, text);
  said += ",\"ts\":";
  return frame_json(frame).find(said) != std::string_view::npos;
}
}  // namespace

// A nonce's retry got the id its first POST was given: 422 when that message is surely not
// `text` in `room`, so that a client reusing a nonce for another message learns it instead of
// the message being lost behind a 200. Judged from what this node keeps; when it no longer keeps
// (or never saw) the message, from the room's history in storage (with Redis, its stream there
// may reach further back); a message nobody can show counts as the same.
void ChatRoutes::answer_retry(uint64_t ticket, const ReplyContext& ctx, const std::string& room,
                              const std::string& text, const PublishResult& result) {
  auto answer = [this, ticket, ctx, result](bool other) {
    if (other) metrics_.count_rejected("nonce_reused");
    finish(ticket, ctx, other ? nonce_reused(result.id) : publish_answer(result));
  };
  Hub::KeptLookup kept = hub_.kept_message(room, result.id);
  // A room that keeps the ids around it and not this one: another room's message.
  if (kept.known) return answer(!kept.frame || !says(*kept.frame->get(), text));
  PageRange only{result.id - 1, result.id + 1, 1};
  broker_.read_history(room, only, [answer, text](std::vector<FrameRef> page) {
    answer(!page.empty() && !says(*page.front().get(), text));
  });
}

void ChatRoutes::list_messages(Connection& conn, Request& req) {
  auto pairs = form::parse(req.query);
  if (!pairs) return policy_.reply(conn, req, http::error(400, "malformed query string"));
  if (auto repeated = repeated_parameter(*pairs, {"room", "since", "before", "limit"}))
    return policy_.reply(conn, req, http::error(400, *repeated));
  PageRange range;
  std::optional<std::string> limit_value;
  std::string room(kDefaultRoom);
  for (auto& [key, value] : *pairs) {
    if (key == "since" || key == "before") {
      auto id = parse_u64(value);
      if (!id || (key == "before" && *id == 0))
        return policy_.reply(
            conn, req,
            http::error(400, key + (key == "before" ? " must be a message id of at least 1"
                                                    : " must be a message id (a whole number)")));
      (key == "since" ? range.after : range.before) = id;
    } else if (key == "limit") {
      limit_value = std::move(value);
    } else if (key == "room") {
      if (auto err = room_name_error(value))
        return policy_.reply(conn, req, http::error(400, *err));
      room = std::move(value);
    }
  }
  auto limit = parse_limit(limit_value);
  if (!limit) return policy_.reply(conn, req, http::error(400, kBadLimit));
  range.limit = *limit;
  if (auto refusal = check_read(authenticate(req), {room}))
    return policy_.reply(conn, req, std::move(*refusal));
  uint64_t ticket = hold(conn);
  range.wanted = [this, ticket] { return waiting_.count(ticket) > 0; };
  bool newest = !range.after;
  broker_.read_history(
      std::move(room), range,
      [this, ticket, newest, ctx = policy_.context_of(req)](std::vector<FrameRef> frames) {
        finish(ticket, ctx, history_page(frames, newest));
      });
}

// [{"room":"team-a","online":2,"last_id":57,"messages":40},…], most recently active
// first: a room list for a page, never longer than kMaxListLimit.
void ChatRoutes::list_rooms(Connection& conn, Request& req) {
  auto pairs = form::parse(req.query);
  if (!pairs) return policy_.reply(conn, req, http::error(400, "malformed query string"));
  if (auto repeated = repeated_parameter(*pairs, {"limit"}))
    return policy_.reply(conn, req, http::error(400, *repeated));
  auto limit = parse_limit(form::query_value(*pairs, "limit"));
  if (!limit) return policy_.reply(conn, req, http::error(400, kBadLimit));
  Authentication auth = authenticate(req);
  if (auth.kind == Authentication::Invalid) {
    metrics_.count_rejected("unauthorized");
    return policy_.reply(conn, req, http::unauthorized(auth.reason, true));
  }
  auto readable = [&](const Room& room) { return access_.may_read(auth.who(), room.name()); };
  http::Response r;
  r.headers.emplace_back("Cache-Control", "no-store");
  r.body = "[";
  for (const Room* room : hub_.rooms_by_activity(*limit, readable)) {
    if (r.body.size() > 1) r.body += ',';
    r.body += "{\"room\":";
    json::append_string(r.body, room->name());
    r.body += ",\"online\":";
    json::append_uint(r.body, room->online());
    r.body += ",\"last_id\":";
    json::append_uint(r.body, room->last_id());
    r.body += ",\"messages\":";
    json::append_uint(r.body, room->history().size());
    r.body += '}';
  }
  r.body += ']';
  policy_.reply(conn, req, std::move(r));
}

// {"auth":false} with tokens off; else who the token names and where it may read and post:
// {"auth":true,"sub":..,"name":..,"rooms":[..],"read":[..],"public":[..],"exp":N}, or 401 (the
// reason, and the rooms anyone may read) when there is no valid token.
void ChatRoutes::serve_me(Connection& conn, Request& req) {
  http::Response r;
  r.headers.emplace_back("Cache-Control", "no-store");
  if (!access_.enabled()) {
    r.body = R"({"auth":false)";
    append_stream_limit(r.body);
    r.body += '}';
    return policy_.reply(conn, req, std::move(r));
  }
  Authentication auth = authenticate(req);
  const Identity* who = auth.who();
  if (!who) {
    bool presented = auth.kind == Authentication::Invalid;
    r = http::unauthorized(presented ? auth.reason : kSignInNeeded, presented);
    r.body.pop_back();  // {"error":".."} gains the public rooms
    r.body += ",\"public\":";
    append_patterns(r.body, access_.public_rooms());
    append_stream_limit(r.body);
    r.body += '}';
    return policy_.reply(conn, req, std::move(r));
  }
  r.body = R"({"auth":true,"sub":)";
  json::append_string(r.body, who->subject);
  r.body += ",\"name\":";
  json::append_string(r.body, who->name);
  r.body += ",\"rooms\":";
  append_patterns(r.body, who->rooms);
  r.body += ",\"read\":";
  append_patterns(r.body, who->read);
  r.body += ",\"public\":";
  append_patterns(r.body, access_.public_rooms());
  r.body += ",\"exp\":";
  json::append_uint(r.body, static_cast<uint64_t>(std::max<int64_t>(who->expires_s, 0)));
  append_stream_limit(r.body);
  r.body += '}';
  policy_.reply(conn, req, std::move(r));
}

// The most rooms one stream may read here, for the page: it joins no more than its stream can
// carry.
void ChatRoutes::append_stream_limit(std::string& body) const {
  body += ",\"max_rooms_per_stream\":";
  json::append_uint(body, std::min(max_rooms_per_stream_, hub_.max_rooms()));
}

void ChatRoutes::serve_health(Connection& conn, Request& req) {
  if (policy_.draining()) return policy_.reply(conn, req, text_response(503, "draining\n"));
  if (auto why = broker_.unavailable())
    return policy_.reply(conn, req, text_response(503, "storage failing: " + *why + "\n"));
  policy_.reply(conn, req, text_response(200, "ok\n"));
}

// OPTIONS *: the methods the server knows at all.
void ChatRoutes::describe_server(Connection& conn, Request& req) {
  http::Response r;
  r.status = 204;
  r.headers.emplace_back("Allow", "GET, HEAD, POST, OPTIONS");
  policy_.reply(conn, req, std::move(r));
}

// Any method but GET and HEAD: 405 where there is something to GET, 404 where nothing is.
void ChatRoutes::refuse_method(Connection& conn, Request& req) {
  static constexpr std::string_view kReadOnly[] = {"/rooms", "/me", "/healthz", "/metrics"};
  bool exists =
      std::find(std::begin(kReadOnly), std::end(kReadOnly), req.path) != std::end(kReadOnly) ||
      static_files_.exists(req.path);
  if (!exists) return policy_.reply(conn, req, http::error(404, "no such page: " + req.path));
  policy_.method_not_allowed(conn, req, "GET, HEAD");
}

void ChatRoutes::serve_static(Connection& conn, Request& req) {
  StaticFiles::Lookup found = static_files_.load(req.path);
  if (auto* miss = std::get_if<StaticFiles::Miss>(&found))
    return policy_.reply(conn, req, static_miss(*miss, req));
  StaticFile& file = std::get<StaticFile>(found);
  http::Response r;
  // no-cache: a browser asks each time, and a copy it has is confirmed with a 304.
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.headers.emplace_back("ETag", file.etag);
  r.headers.emplace_back("Last-Modified", http::imf_fixdate(file.modified));
  if (file.not_modified(req.if_none_match, req.if_modified_since)) {
    r.status = 304;
    return policy_.reply(conn, req, std::move(r));
  }
  r.content_type = file.content_type;
  size_t size = file.body->size();
  if (size > 0) r.parts.push_back({std::move(file.body), 0, size, file.shared});
  add_security_headers(r);
  policy_.reply(conn, req, std::move(r));
}

void ChatRoutes::serve_metrics(Connection& conn, Request& req) {
  BrokerStats broker = broker_.stats();
  MetricsSnapshot s{};
  s.open_connections = open_connections_();
  s.sse_clients = hub_.stream_count();
  s.messages = hub_.stats().messages;
  s.deliveries = hub_.stats().deliveries;
  s.resets = hub_.stats().resets;
  s.last_message_id = broker.last_id;
  s.history_size = hub_.kept_messages();
  s.history_bytes = hub_.kept_bytes();
  s.rooms = hub_.room_count();
  s.rooms_forgotten = hub_.stats().rooms_forgotten;
  s.journal_bytes = broker.storage_bytes;
  s.storage_ok = !broker_.unavailable().has_value();
  if (broker.redis) s.redis = broker;
  s.uptime_seconds = static_cast<double>(reactor_.now_ms() - started_ms_) / 1000.0;
  http::Response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = render_metrics(metrics_, s);
  policy_.reply(conn, req, std::move(r));
}

}  // namespace sse
