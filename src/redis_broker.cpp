#include "redis_broker.h"

#include <hiredis/hiredis.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <ctime>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <unordered_map>

#include "log.h"
#include "redis_scripts.h"
#include "room_name.h"
#include "sse.h"

namespace sse {
namespace {

constexpr std::string_view kBlockMs = "5000";    // a blocking read's longest wait
constexpr std::string_view kReadCount = "1000";  // entries per read at most
constexpr int64_t kFirstRetryMs = 500;
constexpr int64_t kMaxRetryMs = 30000;
constexpr int64_t kPresenceRefreshMs = 10000;  // a node's entries are written again this often
constexpr int64_t kPresenceTtlMs = 30000;      // and count this long after (a node that died)
constexpr std::string_view kPresenceLogLength = "10000";
constexpr size_t kRecentEntries = 65536;  // log entries remembered to judge others' losses: 1 MiB
constexpr size_t kMaxUnjudgedLosses = 100;
// A clock reading whose round trip took longer than this (or than twice the one in use) is not
// used: Redis was stalled or busy, so the reading is far less exact than the one kept.
constexpr int64_t kClockRoundTripUs = 50000;
constexpr std::string_view kOutOfMemory =
    "Redis is out of memory: past its maxmemory, it refuses writes";

std::string_view text_of(const redisReply* r) {
  return r && r->str ? std::string_view(r->str, r->len) : std::string_view{};
}

// The value of `field` in an entry's flat [field, value, …] array.
std::string_view field_of(const redisReply* fields, std::string_view field) {
  if (!fields || fields->type != REDIS_REPLY_ARRAY) return {};
  for (size_t i = 0; i + 1 < fields->elements; i += 2)
    if (text_of(fields->element[i]) == field) return text_of(fields->element[i + 1]);
  return {};
}

// The number `text` starts with: "42" -> 42, and an entry id "42-0" -> 42 (the log's entry ids
// are the message ids); 0 when it starts with none.
uint64_t number_of(std::string_view text) {
  uint64_t n = 0;
  std::from_chars(text.data(), text.data() + text.size(), n);
  return n;
}

// A reply handler for a GET of a counter ({p}:since, {p}:dropped): its value into `owner`'s
// `field` (which stays 0 on an error or a missing key), unless the broker is gone.
template <class Owner>
RedisLink::ReplyFn number_into(std::shared_ptr<Owner> owner, uint64_t Owner::*field,
                               std::shared_ptr<bool> alive) {
  return [owner = std::move(owner), field, alive = std::move(alive)](redisReply* r) {
    if (*alive && r && r->type != REDIS_REPLY_ERROR) (*owner).*field = number_of(text_of(r));
  };
}

// An entry of a stream reply: [id, [field, value, …]].
struct Entry {
  uint64_t id = 0;
  uint64_t prev = 0;
  std::string_view room;
  std::string_view json;
};

// The id of a stream entry ([id, fields]); 0 when it is not one.
uint64_t id_of(const redisReply* entry) {
  if (!entry || entry->type != REDIS_REPLY_ARRAY || entry->elements < 1) return 0;
  return number_of(text_of(entry->element[0]));
}

std::optional<Entry> entry_of(const redisReply* entry) {
  if (!entry || entry->type != REDIS_REPLY_ARRAY || entry->elements < 2) return std::nullopt;
  Entry e;
  e.id = id_of(entry);
  e.prev = number_of(field_of(entry->element[1], "prev"));
  e.room = field_of(entry->element[1], "room");
  e.json = field_of(entry->element[1], "json");
  // A JSON object on one line, or it is not one of ours (a line break would end the SSE event);
  // and the entry before it comes before it.
  bool one_line = e.json.find_first_of("\r\n") == std::string_view::npos;
  if (e.id == 0 || !e.json.starts_with('{') || !one_line || e.prev >= e.id) return std::nullopt;
  return e;
}

// The host's address, looked up once at start: hiredis would look it up on the loop, blocking it,
// at every reconnect.
bool resolve_host(RedisEndpoint& endpoint, std::string& error) {
  if (!endpoint.unix_path.empty()) return true;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(endpoint.host.c_str(), nullptr, &hints, &found); rc != 0) {
    error = "cannot resolve the Redis host " + endpoint.host + ": " + gai_strerror(rc);
    return false;
  }
  char host[NI_MAXHOST];
  int rc =
      getnameinfo(found->ai_addr, found->ai_addrlen, host, sizeof host, nullptr, 0, NI_NUMERICHOST);
  freeaddrinfo(found);
  if (rc != 0) {
    error = std::string("cannot resolve the Redis host: ") + gai_strerror(rc);
    return false;
  }
  endpoint.host = host;
  return true;
}

PublishResult unavailable_result(std::string why) {
  return {PublishResult::Status::Unavailable, 0, std::move(why)};
}

// Redis past its maxmemory (noeviction) refusing a write: "OOM command not allowed …".
bool out_of_memory_error(const redisReply* r) {
  // Redis 7 passes the error code through a script; earlier versions wrap it in an ERR.
  return r && r->type == REDIS_REPLY_ERROR &&
         (text_of(r).starts_with("OOM ") ||
          text_of(r).find("OOM command not allowed") != std::string_view::npos);
}

// Redis refusing every command for now: another client's script runs long ("BUSY Redis is busy
// running a script…"; not BUSYKEY or BUSYGROUP), or it is reading its data set ("LOADING …").
bool refuses_for_now(const redisReply* r) {
  return r && r->type == REDIS_REPLY_ERROR &&
         (text_of(r).starts_with("BUSY ") || text_of(r).starts_with("LOADING "));
}

// 64 bits from the kernel's random source.
uint64_t random_u64() {
  std::random_device source;
  return (uint64_t{source()} << 32) ^ source();
}

}  // namespace

RedisBroker::RedisBroker(Reactor& reactor, CommitSink& sink, RedisBrokerOptions options)
    : reactor_(reactor),
      sink_(sink),
      options_(std::move(options)),
      rng_(random_u64() | 1),
      cmd_(reactor),
      feed_(reactor) {
  // Random, not from the clock or the pid: nodes started in the same millisecond (in containers,
  // all pid 1) must not share one presence entry.
  char id[17];
  std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(random_u64()));
  node_id_ = id;
  cmd_.on_up = [this] {
    cmd_backoff_ = {};
    presence_refresh_ms_ = 0;  // what changed while Redis was away, written at the next tick
    probe_clock();
    load_script();
    maybe_warm();
  };
  feed_.on_up = [this] {
    feed_backoff_ = {};
    find_start();
  };
  cmd_.on_down = [this](const std::string& why) { link_down(cmd_, cmd_backoff_, why); };
  feed_.on_down = [this](const std::string& why) {
    reading_ = false;
    link_down(feed_, feed_backoff_, why);
  };
}

RedisBroker::~RedisBroker() {
  *alive_ = false;  // replies that the closing links hand back find nobody to answer
  cmd_.close();
  feed_.close();
}

bool RedisBroker::start(std::string& error) {
  if (options_.nonce_ttl_s == 0) {
    error = "the nonce TTL must be at least a second";
    return false;
  }
  if (!redis_scripts::is_key_prefix(options_.prefix)) {
    error = "--redis-prefix must be a name without braces";
    return false;
  }
  if (!options_.url.empty()) {
    auto endpoint = parse_redis_url(options_.url, error);
    if (!endpoint || !resolve_host(*endpoint, error)) return false;
    options_.endpoint = std::move(*endpoint);
  }
  connect(cmd_, cmd_backoff_);
  connect(feed_, feed_backoff_);
  return true;
}

void RedisBroker::connect(RedisLink& link, Backoff& backoff) {
  std::string error;
  if (!link.connect(options_.endpoint, error)) link_down(link, backoff, error);
}

// The next attempt after a jittered, doubling delay (0.5 s up to 30 s), so nodes that lost Redis
// together do not all come back in the same instant.
void RedisBroker::link_down(RedisLink& link, Backoff& backoff, const std::string& why) {
  if (why != last_logged_error_) log::warn("Redis unavailable", "reason", why);
  last_logged_error_ = why;
  ++reconnects_;
  last_error_ = "Redis unavailable: " + why;
  if (&link == &cmd_) {
    script_sha_.clear();
    clock_known_ = false;
  }
  backoff.delay_ms = std::min(kMaxRetryMs, std::max(kFirstRetryMs, backoff.delay_ms * 2));
  rng_ ^= rng_ << 13;
  rng_ ^= rng_ >> 7;
  rng_ ^= rng_ << 17;
  backoff.next_ms = reactor_.now_ms() + backoff.delay_ms / 2 +
                    static_cast<int64_t>(rng_ % static_cast<uint64_t>(backoff.delay_ms / 2 + 1));
}

void RedisBroker::tick() {
  int64_t now = monotonic_ms();
  // A link that is open but stuck (a paused or wedged Redis) is found by its oldest command; one
  // still connecting by its AUTH or SELECT, queued when the attempt began (a connect or handshake
  // that a partition swallowed would otherwise wait for the kernel's TCP timeout, many minutes).
  if (cmd_.active() && cmd_.oldest_wait_ms(now) > kDeadlineMs) {
    cmd_.close();  // the POSTs waiting on it get 503
    link_down(cmd_, cmd_backoff_, "no answer for 5 s");
  }
  if (feed_.active() && feed_.oldest_wait_ms(now) > kDeadlineMs + 5000) {  // XREAD blocks 5 s
    feed_.close();
    reading_ = false;
    link_down(feed_, feed_backoff_, "the log read got no answer");
  }
  if (cmd_.up() && cmd_.waiting() == 0) probe_clock();  // and a liveness probe
  probe_memory();
  probe_refusal();
  retry_setup();
  maybe_warm();
  read_feed();  // after a fill that could not run
  learn_first_id();
  tell_losses();
  read_losses();
  poll_presence();
  if (!cmd_.active() && reactor_.now_ms() >= cmd_backoff_.next_ms) connect(cmd_, cmd_backoff_);
  if (!feed_.active() && reactor_.now_ms() >= feed_backoff_.next_ms) connect(feed_, feed_backoff_);
}

std::optional<std::string> RedisBroker::not_ready() const {
  if (cmd_.up() && feed_.up() && warmed_ && !script_sha_.empty() && clock_known_)
    return std::nullopt;
  if (auto why = refusal()) return why;
  if (cmd_.up() && feed_.up() && !warmed_) return std::string("warming up from Redis");
  return last_error_.empty() ? std::string("connecting to Redis") : last_error_;
}

// A BUSY or LOADING reply that came lately, and nothing taken since.
std::optional<std::string> RedisBroker::refusal() const {
  if (refused_at_ms_ < 0 || reactor_.now_ms() - refused_at_ms_ > kRefusalMemoryMs)
    return std::nullopt;
  return "Redis refuses commands for now (" + refusing_ + "); nothing was stored";
}

// POSTs still go to Redis while it is out of memory: the first one it stores says it is not.
std::optional<std::string> RedisBroker::unavailable() const {
  if (auto why = not_ready()) return why;
  if (auto why = stuck()) return why;
  if (auto why = refusal()) return why;
  if (out_of_memory_) return std::string(kOutOfMemory);
  return std::nullopt;
}

// Redis has left a command unanswered for a while: it may be stuck (the link is dropped once it
// has been for kDeadlineMs); POSTs are refused, and /healthz says so, from now.
std::optional<std::string> RedisBroker::stuck() const {
  if (cmd_.oldest_wait_ms(monotonic_ms()) > kStaleAfterMs)
    return std::string("Redis has not answered for over 3 s");
  return std::nullopt;
}

// Where Redis's clock stands against ours: publish deadlines are stated on Redis's clock, so no
// two machines' clocks need to agree.
void RedisBroker::probe_clock() {
  int64_t sent_us = monotonic_us();
  cmd_.command({"TIME"}, [this, sent_us, alive = alive_](redisReply* r) {
    // Answered during LOADING too: it says nothing of whether Redis takes commands again.
    if (!*alive || note_refusal(r) || !r || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
      return;
    int64_t redis_us = static_cast<int64_t>(number_of(text_of(r->element[0]))) * 1000000 +
                       static_cast<int64_t>(number_of(text_of(r->element[1])));
    take_clock_reading(redis_us, sent_us, monotonic_us());
  });
}

// Redis read its clock at some moment of the round trip, the answer's arrival at the latest: the
// offset that assumes the latest can only be low, so a deadline stated with it comes early, never
// late. A slow answer (Redis stalled) says little about when Redis read its clock: it does not
// replace a reading that came back fast.
void RedisBroker::take_clock_reading(int64_t redis_us, int64_t sent_us, int64_t received_us) {
  int64_t round_trip = received_us - sent_us;
  if (clock_known_ && round_trip > std::max(kClockRoundTripUs, 2 * clock_round_trip_us_)) return;
  clock_offset_us_ = redis_us - received_us;
  clock_round_trip_us_ = round_trip;
  clock_known_ = true;
  note_if_back();
}

// A publish script Redis runs later than this (on its clock) stores nothing: kStaleAfterMs after
// now, or a little earlier (the offset errs low), never later, so a POST the node gave up on
// (503 "nothing was stored", kStaleAfterMs + 1 s after it was sent) cannot be stored afterwards.
std::string RedisBroker::publish_deadline() const {
  assert(clock_known_);
  return std::to_string(monotonic_us() + clock_offset_us_ + kStaleAfterMs * 1000);
}

// Redis past its maxmemory refuses every write (noeviction): logged once, and /healthz says so
// until a write goes through again.
void RedisBroker::note_memory(bool full, std::string_view error) {
  if (full == out_of_memory_) return;
  out_of_memory_ = full;
  if (full)
    log::warn("Redis is out of memory: POSTs are refused until it takes writes again", "error",
              error);
  else
    log::info("Redis takes writes again");
}

// While Redis is out of memory, each tick: a write command that changes nothing (SETRANGE of ""
// never creates a key nor alters one), which Redis refuses with OOM as it refuses a publish, so
// the node learns that memory was freed even when no POST comes.
void RedisBroker::probe_memory() {
  if (!out_of_memory_ || probing_memory_ || !cmd_.up()) return;
  // A command that could not be sent leaves the flag clear: the next tick tries again.
  probing_memory_ = cmd_.command({"SETRANGE", key("memory-probe"), "0", ""},
                                 [this, alive = alive_](redisReply* r) {
                                   if (!*alive) return;
                                   probing_memory_ = false;
                                   // Only a write that went through says memory is back; another
                                   // error says nothing of it.
                                   if (r && r->type != REDIS_REPLY_ERROR) note_memory(false, {});
                                 });
}

// While Redis refuses commands, each tick: a read it refuses as it refuses a publish, so the node
// learns when it takes them again (and /healthz says so) even when no POST comes.
void RedisBroker::probe_refusal() {
  if (refused_at_ms_ < 0 || probing_refusal_ || !cmd_.up()) return;
  probing_refusal_ = cmd_.command({"EXISTS", key("since")}, [this, alive = alive_](redisReply* r) {
    if (!*alive) return;
    probing_refusal_ = false;
    if (!note_refusal(r) && r && r->type != REDIS_REPLY_ERROR) refused_at_ms_ = -1;
  });
}

// Once both links are up again (and the node warm), the next outage is logged again.
void RedisBroker::note_if_back() {
  if (last_error_.empty() || not_ready()) return;
  log::info("Redis available again");
  last_error_.clear();
  last_logged_error_.clear();
}

void RedisBroker::load_script() {
  loading_script_ = cmd_.command({"SCRIPT", "LOAD", redis_scripts::kPublish},
                                 [this, alive = alive_](redisReply* r) {
                                   if (!*alive) return;
                                   loading_script_ = false;
                                   note_refusal(r);
                                   if (!r || r->type != REDIS_REPLY_STRING) return;
                                   script_sha_ = std::string(text_of(r));
                                   note_if_back();
                                 });
}

// The steps a link takes once when it comes up, each tick again while one was refused (Redis
// answers LOADING to everything until it has read its data set after a restart).
void RedisBroker::retry_setup() {
  if (cmd_.up() && script_sha_.empty() && !loading_script_) load_script();
  if (feed_.up() && !have_start_ && !finding_start_) find_start();
}

// A reply that refuses every command for now: noted (logged once a streak), so that /healthz and
// POSTs say so until Redis takes commands again. False for any other reply.
bool RedisBroker::note_refusal(redisReply* r) {
  if (!refuses_for_now(r)) return false;
  std::string_view error = text_of(r);
  int64_t now = reactor_.now_ms();
  std::string_view kind = error.substr(0, error.find(' '));
  if (kind != refusal_logged_kind_ || now - refusal_logged_ms_ > 60000) {
    log::warn("Redis refuses commands for now: POSTs are refused", "error", error);
    refusal_logged_ms_ = now;
    refusal_logged_kind_ = std::string(kind);
  }
  refusing_ = std::string(error.substr(0, 200));
  refused_at_ms_ = now;
  return true;
}

// The feed starts where the log ends now (what came before, the warm-up reads from the rooms'
// streams), and after a reconnect goes on from the last id it delivered.
void RedisBroker::find_start() {
  if (have_start_) {
    maybe_warm();
    note_if_back();
    return read_feed();
  }
  finding_start_ = feed_.command({"XREVRANGE", key("log"), "+", "-", "COUNT", "1"},
                                 [this, alive = alive_](redisReply* r) {
                                   if (!*alive) return;
                                   finding_start_ = false;
                                   note_refusal(r);
                                   if (!r || r->type != REDIS_REPLY_ARRAY) return;
                                   if (r->elements > 0) last_seen_ = id_of(r->element[0]);
                                   have_start_ = true;
                                   maybe_warm();
                                 });
}

// What warming up has gathered: every warmed room's newest messages up to the feed's start.
struct RedisBroker::Warmup {
  bool refused = false;  // a read got an error (Redis still loading, say): warm up again later
  struct Message {
    uint64_t id;
    const std::string* room;  // in room_names
    FrameRef frame;
    bool newest;  // its room's
  };
  uint64_t since = 0;                // the data set's first id (0: none yet)
  uint64_t dropped = 0;              // the newest id of a room Redis dropped
  std::string losses_from = "0-0";   // the newest entry of {p}:losses
  uint64_t lost_after = UINT64_MAX;  // the span the losses recorded there cover
  uint64_t lost_through = 0;
  size_t rooms = 0;                    // rooms read
  std::deque<std::string> room_names;  // one per room read (messages point here)

  // The hub keeps the newest messages of all rooms that fit its byte bound, the globally oldest
  // dropped first. Warming up reads room after room, not in id order, but once the messages held
  // from some id on pass the bound, the hub would drop that id and every older one, whenever
  // they are read: they are left behind at once, so it holds about the bound, not every room's
  // --history. Two kinds are handed over all the same, and the hub drops them as it would have:
  // each room's newest (the hub keeps a room whose messages it dropped), and the newest message
  // left behind (with what is held it passes the bound, so the hub also drops all that is older).
  std::map<uint64_t, Message> held;
  uint64_t held_bytes = 0;
  std::optional<Message> last_left_behind;
  std::vector<Message> newest_left_behind;
  std::unordered_map<const std::string*, uint64_t> floors;  // rooms whose oldest messages are gone

  const std::string* add_room(const std::string& room) { return &room_names.emplace_back(room); }

  void raise_floor(const std::string* room, uint64_t through) {
    uint64_t& floor = floors[room];
    floor = std::max(floor, through);
  }

  void hold(Message message, uint64_t bound) {
    if (last_left_behind && message.id < last_left_behind->id)
      return leave_behind(std::move(message));
    held_bytes += kept_cost(message.frame);
    held.emplace(message.id, std::move(message));
    while (held_bytes > bound && !held.empty()) {
      auto oldest = held.begin();
      held_bytes -= kept_cost(oldest->second.frame);
      leave_behind(std::move(oldest->second));
      held.erase(oldest);
    }
  }

  void leave_behind(Message message) {
    if (!message.newest) raise_floor(message.room, message.id);
    if (last_left_behind && message.id < last_left_behind->id) {
      if (message.newest) newest_left_behind.push_back(std::move(message));
      return;
    }
    if (last_left_behind && last_left_behind->newest)
      newest_left_behind.push_back(std::move(*last_left_behind));
    last_left_behind = std::move(message);
  }

  std::vector<Message> take_in_id_order() {
    std::vector<Message> all = std::move(newest_left_behind);
    all.reserve(all.size() + held.size() + 1);
    if (last_left_behind) all.push_back(std::move(*last_left_behind));
    for (auto& [id, message] : held) all.push_back(std::move(message));
    held.clear();
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return all;
  }
};

// Room reads under way: what is left to send, and what waits for an answer.
struct RedisBroker::RoomReads {
  RangeFor range;
  EachRoom each;
  std::function<void()> done;
  std::function<void()> failed;
  std::vector<std::string> rooms;
  size_t next = 0;       // the next room to ask for
  size_t in_flight = 0;  // asked for, not answered
  bool over = false;     // done() or failed() was called
};

// Lists rooms with `list` (a command answering room names), then reads each with `range(room)` on
// the command link, kRoomReadWindow at a time: `each(room, entries)` for every answer, then
// `done()` after the last. When any answer is missing (the link went), `failed()` instead, once,
// and nothing more. A window, not every room at once: the link's deadline counts from its oldest
// unanswered command, and 10,000 rooms of 1,000 messages take Redis far longer than that to send.
void RedisBroker::read_rooms(std::vector<std::string> list, RangeFor range, EachRoom each,
                             std::function<void()> done, std::function<void()> failed) {
  auto reads = std::make_shared<RoomReads>();
  reads->range = std::move(range);
  reads->each = std::move(each);
  reads->done = std::move(done);
  reads->failed = std::move(failed);
  std::vector<std::string_view> argv(list.begin(), list.end());
  bool sent = cmd_.command(argv, [this, reads, alive = alive_](redisReply* r) {
    if (!*alive) return;
    if (!r || r->type != REDIS_REPLY_ARRAY) return fail_room_reads(*reads);
    for (size_t i = 0; i < r->elements; ++i) {
      std::string room(text_of(r->element[i]));
      if (!room_name_error(room)) reads->rooms.push_back(std::move(room));
    }
    send_room_reads(reads);
  });
  if (!sent) fail_room_reads(*reads);
}

void RedisBroker::send_room_reads(const std::shared_ptr<RoomReads>& reads) {
  while (!reads->over && reads->in_flight < kRoomReadWindow && reads->next < reads->rooms.size()) {
    const std::string& room = reads->rooms[reads->next++];
    std::vector<std::string> args = reads->range(room);
    ++reads->in_flight;
    bool sent = cmd_.command(std::vector<std::string_view>(args.begin(), args.end()),
                             [this, reads, room, alive = alive_](redisReply* e) {
                               if (!*alive || reads->over) return;
                               if (!e || e->type != REDIS_REPLY_ARRAY)
                                 return fail_room_reads(*reads);
                               reads->each(room, e);
                               --reads->in_flight;
                               send_room_reads(reads);
                             });
    if (!sent) return fail_room_reads(*reads);
  }
  if (!reads->over && reads->in_flight == 0 && reads->next == reads->rooms.size()) {
    reads->over = true;
    reads->done();
  }
}

void RedisBroker::fail_room_reads(RoomReads& reads) {
  if (reads.over) return;
  reads.over = true;
  reads.failed();
}

// Once per process, before streams open: the newest `history_per_room` messages of the most
// recently active `max_rooms` rooms, up to where the feed starts, as the journal's restore does.
// Read a window of rooms at a time on the command link; memory: at most max_rooms ×
// history_per_room messages, which the hub then bounds.
void RedisBroker::maybe_warm() {
  if (!have_start_ || warmed_ || warming_ || !cmd_.up()) return;
  warming_ = true;
  auto warm = std::make_shared<Warmup>();
  // When the link went, so do the reads below, and the warm-up is tried again.
  auto counter = [warm](uint64_t Warmup::*field) {
    return [warm, field](redisReply* r) {
      if (refuses_for_now(r)) warm->refused = true;
      if (r && r->type != REDIS_REPLY_ERROR) (*warm).*field = number_of(text_of(r));
    };
  };
  cmd_.command({"GET", key("since")}, counter(&Warmup::since));
  cmd_.command({"GET", key("dropped")}, counter(&Warmup::dropped));
  // Losses told of before: a resume from within one must hear of it here too, though this node
  // never read what was lost (the newest kMaxUnjudgedLosses; those told of from now on are read
  // as they come).
  cmd_.command({"XREVRANGE", key("losses"), "+", "-", "COUNT", std::to_string(kMaxUnjudgedLosses)},
               [warm](redisReply* r) {
                 if (refuses_for_now(r)) warm->refused = true;
                 if (!r || r->type != REDIS_REPLY_ARRAY) return;
                 for (size_t i = 0; i < r->elements; ++i) {
                   const redisReply* e = r->element[i];
                   if (e->type != REDIS_REPLY_ARRAY || e->elements < 2) continue;
                   if (warm->losses_from == "0-0") warm->losses_from = text_of(e->element[0]);
                   warm->lost_after =
                       std::min(warm->lost_after, number_of(field_of(e->element[1], "after")));
                   warm->lost_through =
                       std::max(warm->lost_through, number_of(field_of(e->element[1], "through")));
                 }
               });
  std::string upto = std::to_string(last_seen_) + "-0";
  std::string history = std::to_string(options_.history_per_room);
  auto range = [this, upto, history](const std::string& room) {
    return std::vector<std::string>{"XREVRANGE", key("room:" + room), upto, "-", "COUNT", history};
  };
  auto each = [this, warm](const std::string& room, redisReply* e) {
    ++warm->rooms;
    const std::string* name = warm->add_room(room);
    uint64_t before_oldest = 0;  // the prev of the oldest read: gone from memory
    bool newest = true;
    for (size_t k = 0; k < e->elements; ++k)  // newest first
      if (auto entry = entry_of(e->element[k])) {
        warm->hold({entry->id, name, message_frame(entry->id, entry->json), newest},
                   options_.history_bytes);
        newest = false;
        before_oldest = entry->prev;
      }
    // Also when Redis kept fewer than --history (a node with a shorter one trimmed the stream).
    if (before_oldest > 0) warm->raise_floor(name, before_oldest);
  };
  read_rooms(
      {"ZREVRANGE", key("rooms"), "0", std::to_string(options_.max_rooms - 1)}, range, each,
      [this, warm] {
        if (!warm->refused) return finish_warmup(*warm);
        warming_ = false;  // the next tick tries again
      },
      [this] { warming_ = false; });
}

void RedisBroker::finish_warmup(Warmup& warm) {
  std::vector<Warmup::Message> messages = warm.take_in_id_order();
  // Ids below the data set's first may have been a lost data set's, but only a recorded loss says
  // so: without one, every room starts clean (a resume from 0 replays all, with no reset), and a
  // resume from such an id is one this data set never gave (ChatRoutes resets it everywhere).
  first_id_ = warm.since;
  losses_known_ = warm.losses_from != "0-0";
  // Within a recorded loss (Redis restored from an older AOF, say), ids were given that Redis no
  // longer has: a resume from there gets a reset, as on the nodes that read them (from its last
  // one too: that client shows it; the floor is one past, as theirs is past it).
  uint64_t lost_through = warm.lost_through > 0 ? std::min(warm.lost_through + 1, last_seen_) : 0;
  if (lost_through > 0) {
    lost_after_ = std::min(lost_after_, warm.lost_after);
    lost_through_ = std::max(lost_through_, lost_through);
  }
  sink_.restore_base(last_seen_,
                     std::max(lost_through, losses_known_ && warm.since > 0 ? warm.since - 1 : 0));
  for (const auto& m : messages) sink_.on_committed(m.id, *m.room, m.frame, true);
  for (const auto& [room, through] : warm.floors) sink_.restore_floor(*room, through);
  // Redis may keep rooms beyond the most active max_rooms read here.
  if (warm.rooms >= options_.max_rooms) sink_.not_restored_through(last_seen_);
  // Rooms Redis dropped may have had messages up to this.
  if (warm.dropped > 0) sink_.not_restored_through(std::min(warm.dropped, last_seen_));
  sink_.restored();
  losses_read_ = warm.losses_from;
  log::info("warmed up from Redis", "messages", messages.size(), "last_id", last_seen_);
  warming_ = false;
  warmed_ = true;
  note_if_back();
  read_feed();
}

void RedisBroker::read_feed() {
  if (reading_ || filling_ || !warmed_ || !feed_.up()) return;
  std::string from = std::to_string(last_seen_) + "-0";
  reading_ =
      feed_.command({"XREAD", "COUNT", kReadCount, "BLOCK", kBlockMs, "STREAMS", key("log"), from},
                    [this, alive = alive_](redisReply* r) {
                      if (!*alive) return;  // the broker is going
                      reading_ = false;
                      if (!r)
                        return;  // the link went down: find_start() reads again from last_seen_
                      if (r->type == REDIS_REPLY_ERROR) {  // tick() tries again, not a busy loop
                        if (!note_refusal(r))
                          log::warn("reading the Redis log failed", "error", text_of(r));
                        return;
                      }
                      // At a gap, the fill reads on when it is done (or tick(), if it could not
                      // start).
                      if (deliver_entries(r)) read_feed();
                    });
}

// XREAD's answer: [[log, [[id, [room, R, json, J, prev, P]], …]]], or nil when the wait ran out.
bool RedisBroker::deliver_entries(redisReply* r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) return true;
  const redisReply* stream = r->element[0];
  if (stream->type != REDIS_REPLY_ARRAY || stream->elements < 2) return true;
  const redisReply* entries = stream->element[1];
  for (size_t i = 0; i < entries->elements; ++i) {
    const redisReply* raw = entries->element[i];
    uint64_t id = id_of(raw);
    if (id <= last_seen_) continue;  // never twice, never backwards
    auto entry = entry_of(raw);
    if (!entry || room_name_error(entry->room)) {  // read, but not a message of ours
      log::warn("skipping a malformed entry of the Redis log", "id", id);
      last_seen_ = id;
      continue;
    }
    if (entry->prev > last_seen_) {  // trimmed before it was read
      fill_gap(entry->prev);
      return false;
    }
    if (entry->prev < last_seen_) {
      ++data_losses_;
      losses_known_ = true;
      lost_after_ = std::min(lost_after_, entry->prev);
      // Acknowledged messages this node had not read yet may be gone too, in any room.
      lost_through_ = std::max(lost_through_, entry->id - 1);
      log::warn("the Redis log starts over below what this node read: Redis lost data", "last_read",
                last_seen_, "next", entry->id);
      sink_.lose_everywhere_through(entry->id - 1, {});
      if (untold_losses_.size() < kMaxUnjudgedLosses)
        untold_losses_.emplace_back(entry->prev, last_seen_);
      tell_losses();
    }
    // A node that started on an empty data set learns its first id from its first entry.
    if (first_id_ == 0 && last_seen_ == 0 && entry->prev == 0) first_id_ = entry->id;
    last_seen_ = entry->id;
    remember_read(entry->prev, entry->id);
    sink_.on_committed(entry->id, entry->room, message_frame(entry->id, entry->json), false);
  }
  return true;
}

// A node that started on an empty data set learns its first id from the entry with prev 0; one
// whose first read was a gap fill never sees that entry, so it asks Redis ({p}:since) instead.
void RedisBroker::learn_first_id() {
  if (first_id_ != 0 || last_seen_ == 0 || asking_first_id_ || !warmed_ || !cmd_.up()) return;
  asking_first_id_ = cmd_.command({"GET", key("since")}, [this, alive = alive_](redisReply* r) {
    if (!*alive) return;
    asking_first_id_ = false;
    if (r && r->type != REDIS_REPLY_ERROR && first_id_ == 0) first_id_ = number_of(text_of(r));
  });
}

// Ids after `after` through `through` were read here and Redis no longer has them: the other nodes
// are told, as one that never read them cannot tell. One at a time, each until Redis took it (a
// tick tries again while the command link is down).
void RedisBroker::tell_losses() {
  if (telling_ || untold_losses_.empty() || !cmd_.up()) return;
  telling_ = true;
  auto [after, through] = untold_losses_.front();
  std::string from = std::to_string(after), to = std::to_string(through);
  cmd_.command({"XADD", key("losses"), "MAXLEN", "~", "1000", "*", "after", from, "through", to},
               [this, alive = alive_](redisReply* r) {
                 if (!*alive) return;
                 telling_ = false;
                 if (!r || r->type == REDIS_REPLY_ERROR) return;
                 untold_losses_.erase(untold_losses_.begin());
                 tell_losses();
               });
}

// Losses other nodes told of since the last read.
void RedisBroker::read_losses() {
  judge_losses();
  if (losses_read_.empty() || reading_losses_ || !cmd_.up()) return;
  reading_losses_ = true;
  std::string after = "(" + losses_read_;
  cmd_.command({"XRANGE", key("losses"), after, "+", "COUNT", "100"},
               [this, alive = alive_](redisReply* r) {
                 if (!*alive) return;
                 reading_losses_ = false;
                 if (!r || r->type != REDIS_REPLY_ARRAY) return;
                 losses_known_ |= r->elements > 0;
                 for (size_t i = 0; i < r->elements; ++i) {
                   const redisReply* e = r->element[i];
                   if (e->type != REDIS_REPLY_ARRAY || e->elements < 2) continue;
                   losses_read_ = std::string(text_of(e->element[0]));
                   if (unjudged_losses_.size() >= kMaxUnjudgedLosses) continue;
                   unjudged_losses_.emplace_back(number_of(field_of(e->element[1], "after")),
                                                 number_of(field_of(e->element[1], "through")));
                 }
                 judge_losses();
               });
}

// A loss another node found that this node had not read itself, but read past: its streams went
// on without the lost messages, so they hear a reset now.
void RedisBroker::judge_losses() {
  std::erase_if(unjudged_losses_, [this](const std::pair<uint64_t, uint64_t>& loss) {
    auto [after, through] = loss;
    if (through <= lost_through_) return true;  // found here too, or already judged
    std::optional<bool> past = skipped(after, through);
    if (!past) return false;  // nothing read beyond it yet: judged once something is
    if (!*past) return true;
    // Another report of a loss already judged (a node that had read further): the streams had
    // their reset; resumes from before its end get one too.
    bool again = after < lost_through_;
    lost_after_ = std::min(lost_after_, after);
    lost_through_ = std::max(lost_through_, through);
    if (again) {
      sink_.lose_everywhere_through(through, {});
      return true;
    }
    ++data_losses_;
    log::warn("Redis lost messages this node never read (another node read them)", "after", after,
              "through", through);
    sink_.lose_skipped(through);
    return true;
  });
}

void RedisBroker::remember_read(uint64_t prev, uint64_t id) {
  recent_.emplace_back(prev, id);
  if (recent_.size() > kRecentEntries) recent_.pop_front();
}

// Whether this node read an entry whose prev is at or below `after` and whose id is past
// `through`: it was carried over the ids between. Unknown while it has read nothing past
// `through`; when the entry that did is older than those remembered, yes.
std::optional<bool> RedisBroker::skipped(uint64_t after, uint64_t through) const {
  auto past = std::upper_bound(recent_.begin(), recent_.end(), through,
                               [](uint64_t id, const auto& entry) { return id < entry.second; });
  if (past == recent_.end()) return last_seen_ > through ? std::optional(true) : std::nullopt;
  return past == recent_.begin() || past->first <= after;
}

// What filling a gap in the feed has gathered from the rooms' streams.
struct RedisBroker::Fill {
  uint64_t after = 0;    // the last id delivered
  uint64_t through = 0;  // the last id missed
  struct Message {
    uint64_t id;
    std::string room;
    FrameRef frame;
  };
  std::vector<Message> messages;
  std::vector<std::pair<std::string, uint64_t>> holes;  // room -> the newest id it lost
  std::vector<std::string> read;  // rooms whose stream still had entries after `after`
  uint64_t dropped = 0;           // the newest id of a room Redis dropped
};

// The log was trimmed past entries this node had not read (it was away for longer than the log
// is long): reads them from the streams of the rooms active since, in id order, before the feed
// goes on. A room whose own stream was trimmed past them too has a hole: its streams get a reset.
void RedisBroker::fill_gap(uint64_t through) {
  if (!cmd_.up()) return;  // tick() reads the feed again, which finds the gap again
  filling_ = true;
  auto fill = std::make_shared<Fill>();
  fill->after = last_seen_;
  fill->through = through;
  // Every entry of the room after the last id delivered, however many its stream holds (MAXLEN ~
  // keeps at least the history, often more): those of the gap are delivered, and the first one
  // says whether the room's stream still reaches back to the gap (the rest the feed reads).
  std::string from = "(" + std::to_string(last_seen_) + "-0";
  auto range = [this, from](const std::string& room) {
    return std::vector<std::string>{"XRANGE", key("room:" + room), from, "+"};
  };
  auto each = [fill](const std::string& room, redisReply* e) {
    if (e->elements > 0) fill->read.push_back(room);
    bool first = true;
    for (size_t k = 0; k < e->elements; ++k) {
      auto entry = entry_of(e->element[k]);
      if (!entry) continue;
      if (first && entry->prev > fill->after)
        fill->holes.emplace_back(room, std::min(entry->prev, fill->through));
      first = false;
      if (entry->id <= fill->through)
        fill->messages.push_back({entry->id, room, message_frame(entry->id, entry->json)});
    }
  };
  // After the streams: a room dropped meanwhile, its stream gone, is seen dropped here.
  auto then_dropped = [this, fill] {
    bool sent = cmd_.command({"GET", key("dropped")}, [this, fill, alive = alive_](redisReply* r) {
      if (!*alive) return;
      if (!r || r->type == REDIS_REPLY_ERROR) {  // tick() reads the feed again, and fills again
        filling_ = false;
        return;
      }
      fill->dropped = number_of(text_of(r));
      finish_fill(*fill);
    });
    if (!sent) filling_ = false;  // the link went: tick() reads the feed again
  };
  read_rooms({"ZRANGEBYSCORE", key("rooms"), "(" + std::to_string(last_seen_), "+inf"}, range, each,
             then_dropped, [this] { filling_ = false; });
}

void RedisBroker::finish_fill(Fill& fill) {
  std::sort(fill.messages.begin(), fill.messages.end(),
            [](const auto& a, const auto& b) { return a.id < b.id; });
  // Before the messages, as the streams stand where the gap began: one that reads such a room and
  // another would otherwise be past the lost ids with the other room's messages, and never hear.
  for (const auto& [room, through] : fill.holes) sink_.lose_through(room, through);
  // Rooms Redis dropped (with their streams) may have had messages in the gap: which ones is not
  // known, so every room but those read gets a reset for them.
  if (fill.dropped > fill.after)
    sink_.lose_everywhere_through(std::min(fill.dropped, fill.through), fill.read);
  for (const auto& m : fill.messages) sink_.on_committed(m.id, m.room, m.frame, false);
  log::warn(
      "the Redis log was trimmed past entries this node had not read; filled them from the "
      "rooms' streams",
      "after", fill.after, "through", fill.through, "filled", fill.messages.size(),
      "rooms_with_holes", fill.holes.size());
  ++gaps_filled_;
  last_seen_ = std::max(last_seen_, fill.through);
  remember_read(fill.after, fill.through);  // read past what the fill could not find too
  filling_ = false;
  read_feed();
}

void RedisBroker::presence_changed(std::string_view room_name, uint64_t online,
                                   const std::vector<std::string_view>& names) {
  if (presence_withdrawn_) return;
  std::string room(room_name);
  auto it = presence_.find(room);
  // Sorted: every node's first names hold the first overall.
  LocalPresence now{online, {names.begin(), names.begin() + shown_presence_names(names)}};
  if (it != presence_.end() && it->second.online == now.online && it->second.names == now.names)
    return;  // another node's change marked the room: nothing of ours changed
  if (it == presence_.end() && online == 0) return;
  presence_[room] = std::move(now);
  write_presence(room, true);
}

void RedisBroker::withdraw_presence() {
  presence_withdrawn_ = true;
  for (auto& [room, mine] : presence_) {
    mine = LocalPresence{};
    write_presence(room, true);
  }
  presence_.clear();
}

// This node's entry in the room's hash (removed when it has no readers left), then the hash read
// back: a node that just got its first reader of a room learns of the others' at once.
void RedisBroker::write_presence(const std::string& room, bool announce) {
  if (!cmd_.up()) return;  // written again at the next refresh
  const LocalPresence& mine = presence_[room];
  std::string hash = key("presence:" + room);
  if (mine.online == 0) {
    // A leave is kept until Redis has it (a link that goes down first, even one that still looked
    // up, loses it): the next refresh writes it again.
    cmd_.command({"HDEL", hash, node_id_}, [this, room, alive = alive_](redisReply* r) {
      if (!*alive || !r || r->type == REDIS_REPLY_ERROR) return;
      if (auto it = presence_.find(room); it != presence_.end() && it->second.online == 0)
        presence_.erase(it);
    });
  } else {
    std::string expires = std::to_string(wall_clock_ms() + kPresenceTtlMs);
    std::string value = expires + "\n" + std::to_string(mine.online);
    for (const std::string& name : mine.names) value += "\n" + name;
    cmd_.command({"HSET", hash, node_id_, value}, [](redisReply*) {});
    cmd_.command({"PEXPIRE", hash, std::to_string(kPresenceTtlMs * 2)}, [](redisReply*) {});
    cmd_.command({"ZADD", key("presence-rooms"), "GT", expires, room}, [](redisReply*) {});
    cmd_.command({"PEXPIRE", key("presence-rooms"), std::to_string(kPresenceTtlMs * 2)},
                 [](redisReply*) {});
  }
  if (announce)
    cmd_.command(
        {"XADD", key("presence-log"), "MAXLEN", "~", kPresenceLogLength, "*", "room", room},
        [](redisReply*) {});
  if (mine.online > 0) read_presence(room);
}

// Sums the other nodes' live entries of the room's hash into the hub's remote presence.
void RedisBroker::read_presence(const std::string& room) {
  cmd_.command({"HGETALL", key("presence:" + room)}, [this, room, alive = alive_](redisReply* r) {
    if (!*alive || !r || r->type != REDIS_REPLY_ARRAY) return;
    uint64_t online = 0;
    std::vector<std::string> names;
    int64_t now = wall_clock_ms();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
      if (text_of(r->element[i]) == node_id_) continue;
      std::string_view value = text_of(r->element[i + 1]);
      size_t first = value.find('\n');
      if (first == std::string_view::npos) continue;
      if (static_cast<int64_t>(number_of(value.substr(0, first))) < now) continue;  // gone
      value.remove_prefix(first + 1);
      size_t second = value.find('\n');
      online += number_of(value.substr(0, second));
      while (second != std::string_view::npos) {
        value.remove_prefix(second + 1);
        second = value.find('\n');
        names.emplace_back(value.substr(0, second));
      }
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    // Counted only while it can be read again at each refresh, else a dead node's readers would
    // stay counted.
    if (online > 0 && (remote_rooms_.contains(room) || remote_rooms_.size() < options_.max_rooms)) {
      remote_rooms_.insert(room);
    } else {
      remote_rooms_.erase(room);
      online = 0;
      names.clear();
    }
    sink_.set_remote_presence(room, online, std::move(names));
  });
}

// Each tick, best effort (it waits while POSTs fill the link): the rooms whose presence another
// node changed, read again; a slice of the rooms where others had readers, read again, so that
// every kPresenceRefreshMs all of them are (entries of a node that died expire); every
// kPresenceRefreshMs, this node's entries written again.
void RedisBroker::poll_presence() {
  if (!cmd_.up() || !warmed_ || presence_reading_ || cmd_.waiting() > kMaxWaiting / 4) return;
  if (presence_cursor_.empty()) return start_presence();
  if (reactor_.now_ms() >= presence_refresh_ms_) refresh_presence();
  for (size_t n = 0; n < presence_reread_slice_ && !presence_rereads_.empty(); ++n) {
    if (!presence_.contains(presence_rereads_.back())) read_presence(presence_rereads_.back());
    presence_rereads_.pop_back();
  }
  read_presence_log();
}

void RedisBroker::refresh_presence() {
  presence_refresh_ms_ = reactor_.now_ms() + kPresenceRefreshMs;
  for (const auto& [room, mine] : presence_) write_presence(room, mine.online == 0);
  presence_rereads_.assign(remote_rooms_.begin(), remote_rooms_.end());
  presence_reread_slice_ = presence_rereads_.size() / (kPresenceRefreshMs / 1000 - 1) + 1;
  cmd_.command({"ZREMRANGEBYSCORE", key("presence-rooms"), "-inf",
                std::to_string(wall_clock_ms() - kPresenceTtlMs)},
               [](redisReply*) {});
}

void RedisBroker::read_presence_log() {
  presence_reading_ =
      cmd_.command({"XREAD", "COUNT", "1000", "STREAMS", key("presence-log"), presence_cursor_},
                   [this, alive = alive_](redisReply* r) {
                     if (!*alive) return;
                     presence_reading_ = false;
                     if (!r || r->type != REDIS_REPLY_ARRAY || r->elements == 0) return;
                     const redisReply* entries = r->element[0]->element[1];
                     std::vector<std::string> changed;
                     for (size_t i = 0; i < entries->elements; ++i) {
                       const redisReply* entry = entries->element[i];
                       presence_cursor_ = std::string(text_of(entry->element[0]));
                       changed.emplace_back(field_of(entry->element[1], "room"));
                     }
                     std::sort(changed.begin(), changed.end());
                     changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
                     read_presence_of(changed);
                   });
}

// Once warm: the log's end (what changes from now on), then the rooms any node has live entries
// in (at most max_rooms, the latest to expire first) read once, rather than the whole log.
void RedisBroker::start_presence() {
  cmd_.command({"XREVRANGE", key("presence-log"), "+", "-", "COUNT", "1"},
               [this, alive = alive_](redisReply* r) {
                 if (!*alive || !r || r->type != REDIS_REPLY_ARRAY) return;  // link dropped
                 presence_cursor_ =
                     r->elements > 0 ? std::string(text_of(r->element[0]->element[0])) : "0-0";
               });
  presence_reading_ =
      cmd_.command({"ZRANGE", key("presence-rooms"), "+inf", std::to_string(wall_clock_ms()),
                    "BYSCORE", "REV", "LIMIT", "0", std::to_string(options_.max_rooms)},
                   [this, alive = alive_](redisReply* r) {
                     if (!*alive) return;
                     presence_reading_ = false;
                     if (!r || r->type != REDIS_REPLY_ARRAY) return;
                     std::vector<std::string> rooms;
                     for (size_t i = 0; i < r->elements; ++i)
                       rooms.emplace_back(text_of(r->element[i]));
                     read_presence_of(rooms);
                   });
}

void RedisBroker::read_presence_of(const std::vector<std::string>& rooms) {
  for (const std::string& room : rooms)
    if (!room_name_error(room)) read_presence(room);
}

BrokerStats RedisBroker::stats() const {
  BrokerStats s;
  s.last_id = last_seen_;
  s.redis = true;
  s.redis_up = !not_ready();
  s.redis_reconnects = reconnects_;
  s.gaps_filled = gaps_filled_;
  s.data_losses = data_losses_;
  return s;
}

void RedisBroker::publish(Draft draft, PublishDone done) {
  std::optional<std::string> why = not_ready();
  if (!why && cmd_.waiting() >= kMaxWaiting) why = "Redis is behind; try again later";
  if (!why) why = stuck();  // not another command for a Redis that may be stuck
  if (why)
    return reactor_.defer([done = std::move(done), why = *why] { done(unavailable_result(why)); });
  // The id is Redis's to give: the JSON carries a slot for it ({"id":%ID%,…}).
  std::string json = message_json({0, draft.room, draft.user, draft.text, wall_clock_ms()});
  assert(json.starts_with("{\"id\":0,"));
  json.replace(6, 1, "%ID%");
  auto args = std::make_shared<std::vector<std::string>>(
      std::vector<std::string>{"10",
                               key("seq"),
                               key("log"),
                               key("room:" + draft.room),
                               key("nonce:" + draft.nonce_key()),
                               key("rooms"),
                               key("since"),
                               key("history"),
                               key("max-rooms"),
                               key("dropped"),
                               key("presence-rooms"),
                               draft.room,
                               std::to_string(std::max(last_seen_, last_given_)),
                               json,
                               std::to_string(options_.history_per_room),
                               std::to_string(options_.log_length),
                               std::to_string(options_.nonce_ttl_s),
                               draft.nonce.empty() ? "0" : "1",
                               publish_deadline(),
                               std::to_string(options_.max_rooms),
                               key("room:")});
  eval_publish(std::move(args), true, std::move(done));
}

// EVALSHA, or EVAL with the script itself once Redis said it no longer has it (a SCRIPT FLUSH,
// a restart); answers `done` from Redis's reply only, so a 201 always means stored.
void RedisBroker::eval_publish(std::shared_ptr<std::vector<std::string>> args, bool by_sha,
                               PublishDone done) {
  std::vector<std::string_view> argv = {
      by_sha ? "EVALSHA" : "EVAL",
      by_sha ? std::string_view(script_sha_) : redis_scripts::kPublish};
  for (const std::string& a : *args) argv.emplace_back(a);
  auto on_reply = [this, alive = alive_, args, by_sha, done](redisReply* r) {
    if (!*alive) return;  // the broker is going
    if (r && r->type == REDIS_REPLY_ERROR && by_sha && text_of(r).starts_with("NOSCRIPT")) {
      load_script();
      return eval_publish(args, false, done);
    }
    done(publish_result(r));
  };
  if (!cmd_.command(argv, std::move(on_reply)))
    reactor_.defer([done] { done(unavailable_result("Redis unavailable")); });
}

// What the publish script's reply (nullptr: the link went first) means for the POST.
PublishResult RedisBroker::publish_result(redisReply* r) {
  // Sent, and the link went: Redis may have run it and lost only the answer (stopped or killed
  // right after), which no node can know. Past the script's deadline it can no longer run, so a
  // retry with the same nonce finds out which.
  if (!r)
    return unavailable_result(
        "Redis did not answer; it may have stored the message: retry with the same nonce");
  // Past maxmemory, Redis refuses a script's first write command and no later one (Redis 7,
  // scriptVerifyOOM): the script checks everything before its first write, so it stored nothing.
  if (out_of_memory_error(r)) {
    note_memory(true, text_of(r));
    return unavailable_result(std::string(kOutOfMemory) + "; nothing was stored");
  }
  // Refused before the script ran.
  if (note_refusal(r)) return unavailable_result(*refusal());
  // Another error from inside the script (odd data under our keys) may come after it wrote:
  // Redis does not undo a script's writes.
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
    return unavailable_result("Redis refused it (" +
                              std::string(r->type == REDIS_REPLY_ERROR ? text_of(r) : "?") +
                              "); it may have stored the message: retry with the same nonce");
  if (r->element[1]->integer == 2)
    return unavailable_result("Redis was stuck for over 3 s; nothing was stored");
  auto id = static_cast<uint64_t>(r->element[0]->integer);
  last_given_ = std::max(last_given_, id);
  if (r->element[1]->integer != 1) return {PublishResult::Status::Duplicate, id, {}};
  note_memory(false, {});  // it wrote
  refused_at_ms_ = -1;
  return {PublishResult::Status::Created, id, {}};
}

// A walk through a room's stream in Redis from one bound toward the other, kPagePart entries a
// command at most, so that no reply is large however much is asked for.
struct RedisBroker::StreamPager {
  std::string stream;
  std::string near, far;  // XRANGE bounds: the next part starts at `near`
  bool newest_first = false;
  std::function<size_t()> room_left;        // messages the reader can still take
  std::function<bool(const Entry&)> take;   // false: the reader is full
  std::function<void(bool answered)> done;  // answered false: Redis did not answer
};

// The next part, from where the last one ended. Done when the reader is full or the range ends.
void RedisBroker::read_stream_part(std::shared_ptr<StreamPager> pager) {
  size_t want = std::min(kPagePart, pager->room_left());
  auto on_reply = [this, pager, want, alive = alive_](redisReply* r) {
    if (!*alive) return;  // the broker is going
    if (!r || r->type != REDIS_REPLY_ARRAY) return pager->done(false);
    bool moved = false;
    bool more = true;
    for (size_t i = 0; i < r->elements && more; ++i) {
      // The next part starts past this entry, even one that is not a message of ours (foreign
      // data under the prefix): skipped, never read again.
      const redisReply* raw = r->element[i];
      if (raw && raw->type == REDIS_REPLY_ARRAY && raw->elements >= 1 &&
          !text_of(raw->element[0]).empty()) {
        pager->near = "(" + std::string(text_of(raw->element[0]));
        moved = true;
      }
      if (auto entry = entry_of(raw)) more = pager->take(*entry);
    }
    if (!more || !moved || r->elements < want || pager->room_left() == 0) return pager->done(true);
    read_stream_part(pager);
  };
  std::string_view verb = pager->newest_first ? "XREVRANGE" : "XRANGE";
  if (!cmd_.up() ||
      !cmd_.command({verb, pager->stream, pager->near, pager->far, "COUNT", std::to_string(want)},
                    std::move(on_reply)))
    reactor_.defer([pager, alive = alive_] {
      if (*alive) pager->done(false);
    });
}

// One history page being read from Redis.
struct RedisBroker::PageRead {
  std::string room;
  PageRange range;
  HistoryDone done;
  std::vector<FrameRef> read;  // in the order read: newest first for a newest page
  size_t bytes = 0;
};

// Pages the room's stream in Redis; while Redis cannot answer, the node's memory (the window
// every node keeps) answers instead.
void RedisBroker::read_history(std::string room, PageRange range, HistoryDone done) {
  auto read = std::make_shared<PageRead>();
  read->room = std::move(room);
  read->range = range;
  read->done = std::move(done);
  if (pages_reading_ >= kPagesAtOnce) return pages_waiting_.push_back(std::move(read));
  start_page(std::move(read));
}

// A page is done at its limit, at a page's worth of bytes (the answer holds no more), or where
// the stream ends.
void RedisBroker::start_page(std::shared_ptr<PageRead> read) {
  ++pages_reading_;
  if (read->range.wanted && !read->range.wanted()) {
    // Deferred: a run of such pages must not finish one another down the stack.
    return reactor_.defer([this, read, alive = alive_] {
      if (*alive) finish_page(*read, {});
    });
  }
  auto pager = std::make_shared<StreamPager>();
  const PageRange& range = read->range;
  pager->stream = key("room:" + read->room);
  // Exclusive ends ("(<id>-0"): entry ids are the message ids.
  std::string from = range.after ? "(" + std::to_string(*range.after) + "-0" : "-";
  std::string to = range.before ? "(" + std::to_string(*range.before) + "-0" : "+";
  pager->newest_first = !range.after;
  pager->near = pager->newest_first ? to : from;
  pager->far = pager->newest_first ? from : to;
  pager->room_left = [read] { return read->range.limit - read->read.size(); };
  pager->take = [read](const Entry& entry) {
    read->read.push_back(message_frame(entry.id, entry.json));
    read->bytes += entry.json.size();
    return read->bytes < kMaxHistoryPageBytes;
  };
  pager->done = [this, read](bool answered) {
    if (!answered) return finish_page(*read, sink_.kept_page(read->room, read->range));
    if (!read->range.after) std::reverse(read->read.begin(), read->read.end());
    finish_page(*read, std::move(read->read));
  };
  read_stream_part(std::move(pager));
}

void RedisBroker::finish_page(PageRead& read, std::vector<FrameRef> frames) {
  --pages_reading_;
  HistoryDone done = std::move(read.done);
  if (!pages_waiting_.empty()) {
    std::shared_ptr<PageRead> next = std::move(pages_waiting_.front());
    pages_waiting_.pop_front();
    start_page(std::move(next));
  }
  done(std::move(frames));
}

// What a resume's read of one room from Redis has gathered so far.
struct RedisBroker::BackfillRead {
  Backfill fill;  // messages newest first until finish_backfill()
  std::string stream;
  std::string after_bound;  // "(<after>-0": the range's exclusive start
  uint64_t after = 0;
  size_t limit = 0;
  size_t max_bytes = 0;
  size_t bytes = 0;
  bool cut = false;       // stopped at max_bytes
  bool answered = false;  // the data set's first id and the first entry were read
  bool lost_in_range = false;
  uint64_t since = 0;
  uint64_t dropped = 0;  // the newest id of a room Redis dropped
  bool listed = false;   // the room is in {p}:rooms: not dropped
  std::optional<Entry> first;
  BackfillDone done;
};

// Commands one after the other on the link: the data set's first id (what came before it is
// gone), the room's first entry after `after` (its prev says whether anything before it is gone),
// then the newest entries in (after, through], a part at a time (so a reply stays small), until
// `limit` or `max_bytes`. They reach back to `after` when the data set does and the oldest of them
// is that first entry (or there are none and the first entry, if any, comes after `through`).
void RedisBroker::read_backfill(std::string room, uint64_t after, uint64_t through, size_t limit,
                                size_t max_bytes, BackfillDone done) {
  auto read = std::make_shared<BackfillRead>();
  read->fill = {std::move(room), through, {}, false};
  read->stream = key("room:" + read->fill.room);
  read->after_bound = "(" + std::to_string(after) + "-0";
  read->after = after;
  read->limit = limit;
  read->max_bytes = max_bytes;
  // What this node read and Redis lost since may have been in the range: Redis cannot say.
  read->lost_in_range = after < lost_through_ && through > lost_after_;
  read->done = std::move(done);
  auto on_first = [read, alive = alive_](redisReply* r) {
    if (!*alive || !r || r->type != REDIS_REPLY_ARRAY) return;
    read->answered = true;
    if (r->elements > 0) read->first = entry_of(r->element[0]);
  };
  auto on_listed = [read, alive = alive_](redisReply* r) {
    if (*alive && r) read->listed = r->type != REDIS_REPLY_NIL && r->type != REDIS_REPLY_ERROR;
  };
  // In this order, so that a room dropped between the reads is seen dropped by the later ones.
  bool sent =
      cmd_.up() &&
      cmd_.command({"GET", key("since")}, number_into(read, &BackfillRead::since, alive_)) &&
      cmd_.command({"XRANGE", read->stream, read->after_bound, "+", "COUNT", "1"},
                   std::move(on_first)) &&
      cmd_.command({"ZSCORE", key("rooms"), read->fill.room}, std::move(on_listed)) &&
      cmd_.command({"GET", key("dropped")}, number_into(read, &BackfillRead::dropped, alive_));
  if (!sent) return reactor_.defer([read] { read->done(std::move(read->fill)); });
  auto pager = std::make_shared<StreamPager>();
  pager->stream = read->stream;
  pager->near = std::to_string(through) + "-0";
  pager->far = read->after_bound;
  pager->newest_first = true;
  pager->room_left = [read] { return read->limit - read->fill.messages.size(); };
  pager->take = [read](const Entry& entry) {
    FrameRef frame = message_frame(entry.id, entry.json);
    read->bytes += frame->size();
    read->cut = read->bytes > read->max_bytes;
    if (!read->cut) read->fill.messages.push_back({entry.id, std::move(frame)});
    return !read->cut;
  };
  pager->done = [this, read](bool answered) {
    if (!answered || !read->answered) return read->done(std::move(read->fill));
    finish_backfill(*read);
  };
  read_stream_part(std::move(pager));
}

void RedisBroker::finish_backfill(BackfillRead& read) {
  Backfill& fill = read.fill;
  std::reverse(fill.messages.begin(), fill.messages.end());
  // Redis lost messages this node had read in the range: what comes before that hole is of no use
  // to the reset, which says that nothing after its oldest is missing.
  if (read.lost_in_range)
    std::erase_if(fill.messages, [&](const KeptFrame& m) { return m.id <= lost_through_; });
  const std::optional<Entry>& first = read.first;
  // From 0 the data set reaches back to the start unless a loss was recorded (as warming up says).
  // No data set at all reaches back only for a node that has read nothing: after ids it read,
  // Redis lost everything (FLUSHALL), though no entry has told it yet.
  bool data_set_reaches = read.since == 0
                              ? last_seen_ == 0
                              : read.after + 1 >= read.since || (read.after == 0 && !losses_known_);
  // Without an entry after `after`, a room Redis dropped may have had some.
  bool from_start = first ? first->prev <= read.after : read.listed || read.after >= read.dropped;
  bool none_missing = fill.messages.empty() ? !first || first->id > fill.through
                                            : first && fill.messages.front().id == first->id;
  fill.complete =
      !read.cut && !read.lost_in_range && data_set_reaches && from_start && none_missing;
  fill.answered = true;
  read.done(std::move(fill));
}

}  // namespace sse
