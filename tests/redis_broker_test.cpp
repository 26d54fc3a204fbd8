// RedisBroker against a real redis-server: two brokers ("nodes", each with its own hub) share
// one Redis on one loop. What a POST on either node becomes, on both; nonces across nodes; no
// 201 while Redis is away; the feed going on without a gap once it is back; history from Redis.
#include "redis_broker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "hub.h"
#include "reactor.h"
#include "recording_sink.h"
#include "redis_server.h"
#include "run_loop.h"
#include "sse.h"

using sse::PublishResult;
using Status = sse::PublishResult::Status;
using testing_support::RedisServer;
using testing_support::run_until;

namespace {

// A node: its broker, and its hub, recording what it was given.
struct Node : testing_support::RecordingSink {
  std::unique_ptr<sse::RedisBroker> broker;

  Node(sse::Reactor& reactor, const std::string& url) : RecordingSink({1000, 1ull << 30, 1000}) {
    std::string error;
    sse::RedisBrokerOptions o;
    o.endpoint = *sse::parse_redis_url(url, error);
    o.prefix = "t";
    broker = std::make_unique<sse::RedisBroker>(reactor, *this, o);
    EXPECT_TRUE(broker->start(error)) << error;
  }
};

struct Cluster {
  sse::Reactor reactor;
  RedisServer redis;
  Node a{reactor, redis.url()};
  Node b{reactor, redis.url()};
  Cluster() {
    reactor.every(std::chrono::milliseconds(20), [] {});
    reactor.every(std::chrono::milliseconds(200), [this] {
      for (Node* n : {&a, &b})
        if (n->broker) n->broker->tick();
    });
    ready_at_start = ready();
  }
  bool ready_at_start = false;
  bool ready() {
    return run_until(reactor, [&] { return !a.broker->unavailable() && !b.broker->unavailable(); });
  }
  PublishResult post(Node& node, const std::string& text, const std::string& nonce = "",
                     const std::string& room = "general") {
    PublishResult out{Status::Unavailable, 0, "no answer"};
    bool answered = false;
    node.broker->publish({room, "u", text, nonce, ""}, [&](const PublishResult& r) {
      out = r;
      answered = true;
    });
    run_until(reactor, [&] { return answered; });
    return out;
  }
};

}  // namespace

TEST(RedisBroker, EveryNodeGetsEveryMessageInIdOrderWithTheSameIds) {
  Cluster c;
  ASSERT_TRUE(c.ready_at_start);
  // All at once from both nodes, so their scripts interleave in Redis.
  std::vector<uint64_t> posted;
  for (int i = 0; i < 200; ++i)
    (i % 2 ? c.a : c.b).broker->publish({"general", "u", "m", "", ""}, [&](const PublishResult& r) {
      EXPECT_EQ(r.status, Status::Created) << r.reason;
      posted.push_back(r.id);
    });
  ASSERT_TRUE(run_until(c.reactor, [&] {
    return posted.size() == 200 && c.a.live.size() == 200 && c.b.live.size() == 200;
  }));
  std::sort(posted.begin(), posted.end());
  EXPECT_EQ(std::adjacent_find(posted.begin(), posted.end()), posted.end());  // all distinct
  EXPECT_EQ(c.a.live, posted);  // every message, in id order, on both nodes
  EXPECT_EQ(c.b.live, posted);
  EXPECT_EQ(c.a.jsons, c.b.jsons);
  EXPECT_NE(c.a.jsons[0].find(R"("id":)" + std::to_string(posted[0]) + ","), std::string::npos)
      << c.a.jsons[0];
}

TEST(RedisBroker, ANonceRetriedOnAnotherNodeGetsTheOriginalId) {
  Cluster c;
  ASSERT_TRUE(c.ready_at_start);
  PublishResult first = c.post(c.a, "once", "n-1");
  ASSERT_EQ(first.status, Status::Created) << first.reason;
  PublishResult retry = c.post(c.b, "once", "n-1");
  EXPECT_EQ(retry.status, Status::Duplicate);
  EXPECT_EQ(retry.id, first.id);
}

// Redis back empty: the node that answered a POST never gives an id at or below it again, even
// when its own feed had not read that message yet. (Another node that never heard of the id can
// still reuse it until the ids are made safe across nodes: see the note on issue #15.)
TEST(RedisBroker, NoCreatedWhileRedisIsAwayAndNoGapAfter) {
  Cluster c;
  ASSERT_TRUE(c.ready_at_start);
  PublishResult before = c.post(c.a, "before");
  ASSERT_EQ(before.status, Status::Created);
  c.redis.stop(9);  // no AOF here: Redis comes back empty, and ids must still go up
  ASSERT_TRUE(run_until(c.reactor, [&] { return c.a.broker->unavailable().has_value(); }));
  for (int i = 0; i < 3; ++i) {
    PublishResult r = c.post(c.a, "while away");
    EXPECT_EQ(r.status, Status::Unavailable);
    EXPECT_EQ(r.id, 0u);
  }
  c.redis.start();
  ASSERT_TRUE(c.ready());
  std::vector<uint64_t> after;
  for (int i = 0; i < 5; ++i) {
    PublishResult r = c.post(i % 2 ? c.b : c.a, "after");
    ASSERT_EQ(r.status, Status::Created) << r.reason;
    after.push_back(r.id);
  }
  EXPECT_GT(after.front(), before.id);  // never backwards
  // Both nodes deliver everything posted after the return, in order, with no gap: "before" too
  // unless Redis went before their feeds read it (it was not kept: no AOF).
  auto delivered_after = [&](const std::vector<uint64_t>& ids) {
    std::vector<uint64_t> out;
    for (uint64_t id : ids)
      if (id != before.id) out.push_back(id);
    return out;
  };
  ASSERT_TRUE(run_until(c.reactor, [&] {
    return delivered_after(c.a.live).size() >= 5 && delivered_after(c.b.live).size() >= 5;
  }));
  EXPECT_EQ(delivered_after(c.a.live), after);
  EXPECT_EQ(delivered_after(c.b.live), after);
  EXPECT_LE(c.a.live.size(), 6u);
  EXPECT_LE(c.b.live.size(), 6u);
}

// Redis open but stuck (SIGSTOP): the waiting POSTs get 503 within the deadline instead of
// hanging, and once Redis runs again the node serves again.
TEST(RedisBroker, AStuckRedisIsDetectedAndLeftBehind) {
  Cluster c;
  ASSERT_TRUE(c.ready_at_start);
  c.redis.pause();
  std::vector<PublishResult> answers;
  for (int i = 0; i < 3; ++i)
    c.a.broker->publish({"general", "u", "stuck", "", ""},
                        [&](const PublishResult& r) { answers.push_back(r); });
  ASSERT_TRUE(run_until(c.reactor, [&] { return answers.size() == 3; }));
  for (const PublishResult& r : answers) EXPECT_EQ(r.status, Status::Unavailable);
  EXPECT_TRUE(c.a.broker->unavailable());
  c.redis.resume();
  ASSERT_TRUE(c.ready());
  EXPECT_EQ(c.post(c.a, "back").status, Status::Created);
}

// Redis lost its scripts (SCRIPT FLUSH, a restart of Redis alone): the POST still gets its id.
TEST(RedisBroker, ALostScriptIsLoadedAgain) {
  Cluster c;
  ASSERT_TRUE(c.ready_at_start);
  ASSERT_EQ(c.post(c.a, "one").status, Status::Created);
  ASSERT_EQ(c.redis.cli({"SCRIPT", "FLUSH"}), "OK");
  PublishResult r = c.post(c.a, "two");
  EXPECT_EQ(r.status, Status::Created) << r.reason;
  EXPECT_EQ(c.post(c.a, "three").status, Status::Created);
}

// A broker that goes away with POSTs waiting answers none of them (their owner is going too).
TEST(RedisBroker, ABrokerDestroyedWithPostsWaitingCallsNobody) {
  Cluster c;
  ASSERT_TRUE(c.ready_at_start);
  int called = 0;
  for (int i = 0; i < 5; ++i)
    c.a.broker->publish({"general", "u", "x", "", ""}, [&](const PublishResult&) { ++called; });
  c.a.broker.reset();
  c.reactor.run_deferred();
  EXPECT_EQ(called, 0);
}

TEST(RedisBroker, HistoryPagesComeFromRedis) {
  Cluster c;
  ASSERT_TRUE(c.ready_at_start);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(c.post(c.a, "h", "", "team-a").id);
  c.post(c.a, "elsewhere");
  auto page = [&](std::optional<uint64_t> after, size_t limit) {
    std::vector<uint64_t> out;
    bool done = false;
    c.b.broker->read_history("team-a", after, limit, [&](std::vector<sse::FrameRef> frames) {
      for (auto& f : frames) out.push_back(sse::frame_id(*f.get()));
      done = true;
    });
    run_until(c.reactor, [&] { return done; });
    return out;
  };
  EXPECT_EQ(page(std::nullopt, 3), std::vector<uint64_t>(ids.end() - 3, ids.end()));
  EXPECT_EQ(page(ids[1], 4), std::vector<uint64_t>(ids.begin() + 2, ids.begin() + 6));
  EXPECT_TRUE(page(ids.back(), 10).empty());
}
