#include "redis_broker.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>

#include "log.h"
#include "redis_scripts.h"
#include "sse.h"

namespace sse {
namespace {

constexpr std::string_view kBlockMs = "5000";    // a blocking read's longest wait
constexpr std::string_view kReadCount = "1000";  // entries per read at most

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

}  // namespace

RedisBroker::RedisBroker(Reactor& reactor, CommitSink& sink, RedisBrokerOptions options)
    : reactor_(reactor), sink_(sink), options_(std::move(options)), cmd_(reactor), feed_(reactor) {
  cmd_.on_up = [this] { on_cmd_up(); };
  feed_.on_up = [this] { on_feed_up(); };
  auto down = [this](const std::string& why) {
    if (down_reason_.empty()) log::warn("Redis link lost", "reason", why);
    down_reason_ = "Redis unavailable: " + why;
    reading_ = false;
  };
  cmd_.on_down = down;
  feed_.on_down = down;
}

bool RedisBroker::start(std::string&) {
  connect(cmd_);
  connect(feed_);
  return true;
}

void RedisBroker::connect(RedisLink& link) {
  std::string error;
  if (!link.connect(options_.endpoint, error)) down_reason_ = "Redis unavailable: " + error;
}

void RedisBroker::tick() {
  if (!cmd_.active()) connect(cmd_);
  if (!feed_.active()) connect(feed_);
}

std::optional<std::string> RedisBroker::unavailable() const {
  if (cmd_.up() && feed_.up() && !script_sha_.empty() && down_reason_.empty()) return std::nullopt;
  return down_reason_.empty() ? std::string("connecting to Redis") : down_reason_;
}

void RedisBroker::on_cmd_up() {
  cmd_.command({"SCRIPT", "LOAD", redis_scripts::kPublish}, [this](redisReply* r) {
    if (!r || r->type != REDIS_REPLY_STRING) return;
    script_sha_ = std::string(text_of(r));
    if (feed_.up()) down_reason_.clear();
  });
}

// The feed starts where the log ends now (a new node delivers what is posted from here on; its
// history comes from Redis), and after a reconnect goes on from the last id it delivered.
void RedisBroker::on_feed_up() {
  if (feed_started_) {
    if (!script_sha_.empty()) down_reason_.clear();
    return read_feed();
  }
  feed_.command({"XREVRANGE", key("log"), "+", "-", "COUNT", "1"}, [this](redisReply* r) {
    if (!r || r->type != REDIS_REPLY_ARRAY) return;
    if (r->elements > 0 && r->element[0]->elements > 0)
      last_seen_ = entry_id(text_of(r->element[0]->element[0]));
    feed_started_ = true;
    if (!script_sha_.empty()) down_reason_.clear();
    read_feed();
  });
}

void RedisBroker::read_feed() {
  if (reading_ || !feed_.up()) return;
  reading_ = true;
  std::string from = std::to_string(last_seen_) + "-0";
  feed_.command({"XREAD", "COUNT", kReadCount, "BLOCK", kBlockMs, "STREAMS", key("log"), from},
                [this](redisReply* r) {
                  reading_ = false;
                  if (!r) return;  // the link went down: on_feed_up reads again from last_seen_
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
    std::string_view room = field_of(entry->element[1], "room");
    std::string_view json = field_of(entry->element[1], "json");
    last_seen_ = id;
    sink_.on_committed(id, room, message_frame(id, json), false);
  }
}

void RedisBroker::publish(Draft draft, PublishDone done) {
  if (auto why = unavailable()) {
    return reactor_.defer([done = std::move(done), why = *why] {
      done({PublishResult::Status::Unavailable, 0, why});
    });
  }
  // The id is Redis's to give: the JSON carries a slot for it ({"id":%ID%,…}).
  std::string json = message_json({0, draft.room, draft.user, draft.text, wall_clock_ms()});
  json.replace(6, 1, "%ID%");
  std::string owner = draft.subject.empty() ? draft.user : '\x1e' + draft.subject;
  std::string nonce_key = key("nonce:" + owner + '\x1f' + draft.nonce);
  std::string floor = std::to_string(std::max(last_seen_, last_given_));
  std::string history = std::to_string(options_.history_per_room);
  std::string log_length = std::to_string(options_.log_length);
  std::string ttl = std::to_string(options_.nonce_ttl_s);
  bool sent = cmd_.command(
      {"EVALSHA", script_sha_, "4", key("seq"), key("log"), key("room:" + draft.room), nonce_key,
       draft.room, floor, json, history, log_length, ttl, draft.nonce.empty() ? "0" : "1"},
      [this, done](redisReply* r) {
        // No reply, or an error: not known to be stored, so never a 201.
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
          return done({PublishResult::Status::Unavailable, 0,
                       r && r->type == REDIS_REPLY_ERROR ? std::string(text_of(r))
                                                         : "Redis did not answer"});
        auto id = static_cast<uint64_t>(r->element[0]->integer);
        bool fresh = r->element[1]->integer == 1;
        last_given_ = std::max(last_given_, id);
        done({fresh ? PublishResult::Status::Created : PublishResult::Status::Duplicate, id, {}});
      });
  if (!sent)
    reactor_.defer([done = std::move(done)] {
      done({PublishResult::Status::Unavailable, 0, "Redis unavailable"});
    });
}

void RedisBroker::read_history(std::string room, std::optional<uint64_t> after, size_t limit,
                               HistoryDone done) {
  std::string count = std::to_string(limit);
  std::vector<std::string_view> argv;
  std::string stream = key("room:" + room), from = after ? "(" + std::to_string(*after) + "-0" : "";
  if (after)
    argv = {"XRANGE", stream, from, "+", "COUNT", count};
  else
    argv = {"XREVRANGE", stream, "+", "-", "COUNT", count};
  bool newest = !after;
  bool sent = cmd_.command(argv, [done, newest](redisReply* r) {
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
  });
  if (!sent) reactor_.defer([done = std::move(done)] { done({}); });
}

}  // namespace sse
