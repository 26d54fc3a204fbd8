// The Redis broker (issue #15, in progress: not yet selectable with --redis). Redis is the message
// log that several nodes share: a POST is one atomic script (redis_scripts.h) that gives the id
// and stores the message, and is answered 201 only once Redis has replied; every node, the
// poster's included, delivers messages by reading the one ordered log from the last id it has,
// so all nodes see every message of a room in id order with the same ids.
//
//   publish --EVALSHA (cmd link)--> Redis --XREAD BLOCK (feed link)--> on_committed, in id order
#pragma once

#include <cstdint>
#include <string>

#include "broker.h"
#include "reactor.h"
#include "redis_link.h"

namespace sse {

struct RedisBrokerOptions {
  RedisEndpoint endpoint;
  std::string prefix = "sse-chat";  // keys are {prefix}:…, one hash slot
  size_t history_per_room = 1000;   // a room's stream keeps at least this many
  size_t log_length = 100000;       // the shared log keeps at least this many
  uint32_t nonce_ttl_s = 86400;
};

class RedisBroker final : public Broker {
 public:
  RedisBroker(Reactor& reactor, CommitSink& sink, RedisBrokerOptions options);

  // Starts connecting; the broker is available once both links are up (unavailable() says why
  // not meanwhile). False only for what no retry can mend.
  bool start(std::string& error) override;
  void publish(Draft draft, PublishDone done) override;
  // Pages the room's stream in Redis.
  void read_history(std::string room, std::optional<uint64_t> after, size_t limit,
                    HistoryDone done) override;
  std::optional<std::string> unavailable() const override;
  bool idle() const override { return cmd_.waiting() == 0; }
  // Reconnects a link that is down.
  void tick() override;
  BrokerStats stats() const override { return {last_seen_, 0}; }
  void room_forgotten(std::string_view, uint64_t) override {}  // Redis keeps every room

 private:
  void connect(RedisLink& link);
  void on_cmd_up();
  void on_feed_up();
  void read_feed();
  void deliver_entries(struct redisReply* reply);
  std::string key(std::string_view name) const {
    return "{" + options_.prefix + "}:" + std::string(name);
  }

  Reactor& reactor_;
  CommitSink& sink_;
  RedisBrokerOptions options_;
  RedisLink cmd_;   // scripts and history reads
  RedisLink feed_;  // the blocking read of the log
  std::string script_sha_;
  std::string down_reason_ = "connecting to Redis";
  uint64_t last_seen_ = 0;   // the newest id given to the sink
  uint64_t last_given_ = 0;  // the newest id a POST here was answered with (the feed may lag)
  bool feed_started_ = false;
  bool reading_ = false;
};

}  // namespace sse
