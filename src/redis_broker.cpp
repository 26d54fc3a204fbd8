#include "redis_broker.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cassert>
#include <charconv>

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

std::string_view text_of(const redisReply* r) {
  return r && r->str ? std::string_view(r->str, r->len) : std::string_view{};
}

// "42-0" -> 42 (the log's entry ids are the message ids); 0 when it is not one.
uint64_t entry_id(std::string_view id) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), n);
  return ec == std::errc{} && end != id.data() ? n : 0;
}

// The value of `field` in an entry's flat [field, value, …] array.
std::string_view field_of(const redisReply* fields, std::string_view field) {
  if (!fields || fields->type != REDIS_REPLY_ARRAY) return {};
  for (size_t i = 0; i + 1 < fields->elements; i += 2)
    if (text_of(fields->element[i]) == field) return text_of(fields->element[i + 1]);
  return {};
}

PublishResult unavailable_result(std::string why) {
  return {PublishResult::Status::Unavailable, 0, std::move(why)};
}

}  // namespace

RedisBroker::RedisBroker(Reactor& reactor, CommitSink& sink, RedisBrokerOptions options)
    : reactor_(reactor),
      sink_(sink),
      options_(std::move(options)),
      rng_(static_cast<uint64_t>(wall_clock_ms()) * 0x9E3779B97F4A7C15ull | 1),
      cmd_(reactor),
      feed_(reactor) {
  cmd_.on_up = [this] {
    cmd_backoff_ = {};
    load_script();
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
  if (last_error_.empty()) log::warn("Redis unavailable", "reason", why);
  last_error_ = "Redis unavailable: " + why;
  if (&link == &cmd_) script_sha_.clear();
  backoff.delay_ms = std::min(kMaxRetryMs, std::max(kFirstRetryMs, backoff.delay_ms * 2));
  rng_ ^= rng_ << 13;
  rng_ ^= rng_ >> 7;
  rng_ ^= rng_ << 17;
  backoff.next_ms = reactor_.now_ms() + backoff.delay_ms / 2 +
                    static_cast<int64_t>(rng_ % static_cast<uint64_t>(backoff.delay_ms / 2 + 1));
}

void RedisBroker::tick() {
  int64_t now = monotonic_ms();
  // A link that is open but stuck (a paused or wedged Redis) is found by its oldest command.
  if (cmd_.up() && cmd_.oldest_wait_ms(now) > kDeadlineMs) {
    cmd_.close();  // the POSTs waiting on it get 503
    link_down(cmd_, cmd_backoff_, "no answer for 5 s");
  }
  if (feed_.up() && feed_.oldest_wait_ms(now) > kDeadlineMs + 5000) {  // XREAD blocks 5 s itself
    feed_.close();
    reading_ = false;
    link_down(feed_, feed_backoff_, "the log read got no answer");
  }
  if (cmd_.up() && cmd_.waiting() == 0) cmd_.command({"PING"}, [](redisReply*) {});
  if (!cmd_.active() && reactor_.now_ms() >= cmd_backoff_.next_ms) connect(cmd_, cmd_backoff_);
  if (!feed_.active() && reactor_.now_ms() >= feed_backoff_.next_ms) connect(feed_, feed_backoff_);
}

std::optional<std::string> RedisBroker::unavailable() const {
  if (cmd_.up() && feed_.up() && feed_started_ && !script_sha_.empty()) return std::nullopt;
  return last_error_.empty() ? std::string("connecting to Redis") : last_error_;
}

void RedisBroker::load_script() {
  cmd_.command({"SCRIPT", "LOAD", redis_scripts::kPublish}, [this](redisReply* r) {
    if (!r || r->type != REDIS_REPLY_STRING) return;
    script_sha_ = std::string(text_of(r));
    if (!unavailable()) last_error_.clear();
  });
}

// The feed starts where the log ends now (a new node delivers what is posted from here on; its
// history comes from Redis), and after a reconnect goes on from the last id it delivered.
void RedisBroker::find_start() {
  if (feed_started_) {
    if (!unavailable()) last_error_.clear();
    return read_feed();
  }
  feed_.command({"XREVRANGE", key("log"), "+", "-", "COUNT", "1"}, [this](redisReply* r) {
    if (!r || r->type != REDIS_REPLY_ARRAY) return;
    if (r->elements > 0 && r->element[0]->elements > 0)
      last_seen_ = entry_id(text_of(r->element[0]->element[0]));
    feed_started_ = true;
    if (!unavailable()) last_error_.clear();
    read_feed();
  });
}

void RedisBroker::read_feed() {
  if (reading_ || !feed_.up()) return;
  std::string from = std::to_string(last_seen_) + "-0";
  reading_ =
      feed_.command({"XREAD", "COUNT", kReadCount, "BLOCK", kBlockMs, "STREAMS", key("log"), from},
                    [this, alive = alive_](redisReply* r) {
                      if (!*alive) return;  // the broker is going
                      reading_ = false;
                      if (!r)
                        return;  // the link went down: find_start() reads again from last_seen_
                      deliver_entries(r);
                      read_feed();
                    });
}

// XREAD's answer: [[log, [[id, [room, R, json, J]], …]]], or nil when the wait ran out.
void RedisBroker::deliver_entries(redisReply* r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) return;
  const redisReply* stream = r->element[0];
  if (stream->type != REDIS_REPLY_ARRAY || stream->elements < 2) return;
  const redisReply* entries = stream->element[1];
  for (size_t i = 0; i < entries->elements; ++i) {
    const redisReply* entry = entries->element[i];
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2) continue;
    uint64_t id = entry_id(text_of(entry->element[0]));
    if (id <= last_seen_) continue;  // never twice, never backwards
    last_seen_ = id;
    std::string_view room = field_of(entry->element[1], "room");
    std::string_view json = field_of(entry->element[1], "json");
    if (room_name_error(room) || json.empty()) {
      log::warn("skipping a malformed entry of the Redis log", "id", id);
      continue;
    }
    sink_.on_committed(id, room, message_frame(id, json), false);
  }
}

void RedisBroker::publish(Draft draft, PublishDone done) {
  std::optional<std::string> why = unavailable();
  if (!why && cmd_.waiting() >= kMaxWaiting) why = "Redis is behind; try again later";
  if (why)
    return reactor_.defer([done = std::move(done), why = *why] { done(unavailable_result(why)); });
  // The id is Redis's to give: the JSON carries a slot for it ({"id":%ID%,…}).
  std::string json = message_json({0, draft.room, draft.user, draft.text, wall_clock_ms()});
  assert(json.starts_with("{\"id\":0,"));
  json.replace(6, 1, "%ID%");
  std::string owner = draft.subject.empty() ? draft.user : '\x1e' + draft.subject;
  auto args = std::make_shared<std::vector<std::string>>(std::vector<std::string>{
      "4", key("seq"), key("log"), key("room:" + draft.room),
      key("nonce:" + owner + '\x1f' + draft.nonce), draft.room,
      std::to_string(std::max(last_seen_, last_given_)), json,
      std::to_string(options_.history_per_room), std::to_string(options_.log_length),
      std::to_string(options_.nonce_ttl_s), draft.nonce.empty() ? "0" : "1"});
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
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2)  // not known to be stored
      return done(unavailable_result(r && r->type == REDIS_REPLY_ERROR ? std::string(text_of(r))
                                                                       : "Redis did not answer"));
    auto id = static_cast<uint64_t>(r->element[0]->integer);
    last_given_ = std::max(last_given_, id);
    bool fresh = r->element[1]->integer == 1;
    done({fresh ? PublishResult::Status::Created : PublishResult::Status::Duplicate, id, {}});
  };
  if (!cmd_.command(argv, std::move(on_reply)))
    reactor_.defer([done] { done(unavailable_result("Redis unavailable")); });
}

void RedisBroker::read_history(std::string room, std::optional<uint64_t> after, size_t limit,
                               HistoryDone done) {
  std::string count = std::to_string(limit);
  std::string stream = key("room:" + room);
  std::string from = after ? "(" + std::to_string(*after) + "-0" : "";
  bool newest = !after;
  std::vector<std::string_view> argv =
      newest ? std::vector<std::string_view>{"XREVRANGE", stream, "+", "-", "COUNT", count}
             : std::vector<std::string_view>{"XRANGE", stream, from, "+", "COUNT", count};
  auto on_reply = [done, newest, alive = alive_](redisReply* r) {
    if (!*alive) return;  // the broker is going
    std::vector<FrameRef> frames;
    if (r && r->type == REDIS_REPLY_ARRAY) {
      for (size_t i = 0; i < r->elements; ++i) {
        const redisReply* entry = r->element[newest ? r->elements - 1 - i : i];
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2) continue;
        uint64_t id = entry_id(text_of(entry->element[0]));
        frames.push_back(message_frame(id, field_of(entry->element[1], "json")));
      }
    }
    done(std::move(frames));
  };
  if (!cmd_.command(argv, std::move(on_reply))) reactor_.defer([done] { done({}); });
}

}  // namespace sse
