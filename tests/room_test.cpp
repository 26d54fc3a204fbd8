#include "room.h"

#include <gtest/gtest.h>

#include "sse.h"

using sse::FrameRef;
using sse::Room;

namespace {

// A sink with a bounded queue and the subscription that feeds it.
struct FakeSubscriber : sse::Sink {
  FakeSubscriber(Room& room, size_t cap) : capacity(cap), sub(room, *this) {}
  bool deliver(const FrameRef& f) override {
    if (got.size() - drained >= capacity) return false;
    got.push_back(std::string(f.bytes()));
    return true;
  }
  size_t free_slots() const override { return capacity - (got.size() - drained); }
  void drain_all() { drained = got.size(); }
  size_t capacity;
  size_t drained = 0;
  std::vector<std::string> got;
  sse::Subscription sub;
};

void publish(Room& room, const std::string& text) {
  uint64_t id = room.next_id();
  room.publish(id, sse::message_frame(id, sse::message_json({id, "u", text, 0})));
}

std::vector<uint64_t> ids(const FakeSubscriber& s) {
  std::vector<uint64_t> out;
  for (const auto& b : s.got)
    if (b.starts_with("id: ")) out.push_back(std::stoull(b.substr(4)));
  return out;
}

}  // namespace

TEST(Room, LiveSubscribersGetEachFrameOnce) {
  Room room(100);
  FakeSubscriber a(room, 100), b(room, 100);
  room.subscribe(a.sub, std::nullopt);
  room.subscribe(b.sub, std::nullopt);
  for (int i = 0; i < 5; ++i) publish(room, "m" + std::to_string(i));
  EXPECT_EQ(ids(a), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(ids(b), ids(a));
  EXPECT_EQ(room.stats().deliveries, 10u);
}

TEST(Room, ResumeReplaysThenGoesLiveWithoutGapOrDuplicate) {
  Room room(100);
  for (int i = 0; i < 10; ++i) publish(room, "m");
  FakeSubscriber s(room, 4);  // small queue: replay is paced by refill()
  room.subscribe(s.sub, 3);
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{4, 5, 6, 7}));
  publish(room, "during replay");  // id 11: must come after 10, once
  s.drain_all();
  room.refill(s.sub);
  s.drain_all();
  room.refill(s.sub);
  publish(room, "live");  // 12
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{4, 5, 6, 7, 8, 9, 10, 11, 12}));
}

TEST(Room, ResetWhenIdIsTooOldOrFromTheFuture) {
  Room room(3);
  for (int i = 0; i < 6; ++i) publish(room, "m");  // retains 4..6
  FakeSubscriber old(room, 100);
  room.subscribe(old.sub, 1);
  ASSERT_FALSE(old.got.empty());
  EXPECT_EQ(old.got[0], "event: reset\ndata: {\"oldest\":4,\"newest\":6}\n\n");
  EXPECT_EQ(ids(old), (std::vector<uint64_t>{4, 5, 6}));

  FakeSubscriber future(room, 100);
  room.subscribe(future.sub, 99);
  EXPECT_EQ(future.got[0], "event: reset\ndata: {\"oldest\":4,\"newest\":6}\n\n");
  EXPECT_EQ(ids(future), (std::vector<uint64_t>{4, 5, 6}));

  FakeSubscriber exact(room, 100);
  room.subscribe(exact.sub, 3);  // 3 is just before the oldest: nothing was lost
  EXPECT_EQ(ids(exact), (std::vector<uint64_t>{4, 5, 6}));
  EXPECT_FALSE(exact.got[0].starts_with("event: reset"));
}

TEST(Room, FullQueueIsReportedAsSlowConsumer) {
  Room room(100);
  FakeSubscriber s(room, 2);
  room.subscribe(s.sub, std::nullopt);
  for (int i = 0; i < 3; ++i) publish(room, "m");
  EXPECT_EQ(room.stats().slow_consumers, 1u);
}

TEST(Room, UnsubscribeKeepsOthers) {
  Room room(10);
  FakeSubscriber a(room, 10), b(room, 10), c(room, 10);
  room.subscribe(a.sub, std::nullopt);
  room.subscribe(b.sub, std::nullopt);
  room.subscribe(c.sub, std::nullopt);
  room.unsubscribe(a.sub);
  publish(room, "x");
  EXPECT_TRUE(a.got.empty());
  EXPECT_EQ(b.got.size(), 1u);
  EXPECT_EQ(c.got.size(), 1u);
  EXPECT_EQ(room.subscriber_count(), 2u);
}
