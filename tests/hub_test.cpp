#include "hub.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "room_name.h"
#include "sse.h"

using sse::FrameRef;
using sse::Hub;
using sse::HubOptions;

namespace {

// A sink with a bounded queue and the subscription that feeds it.
struct FakeStream : sse::Sink {
  FakeStream(Hub& hub, size_t cap, std::string user = "")
      : capacity(cap), sub(hub, *this, std::move(user)) {}
  bool deliver(const FrameRef& f) override {
    if (got.size() - drained >= capacity) return false;
    got.push_back(std::string(sse::frame_event(*f.get())));
    return true;
  }
  size_t free_slots() const override { return capacity - (got.size() - drained); }
  void drain_all() {
    drained = got.size();
    sub.refill();
  }
  size_t capacity;
  size_t drained = 0;
  std::vector<std::string> got;
  sse::Subscription sub;
};

// Commits messages with ids 1, 2, … as the broker would.
struct Poster {
  explicit Poster(Hub& h) : hub(h) {}
  uint64_t post(const std::string& room, bool restored = false) {
    uint64_t id = next++;
    std::string json = sse::message_json({id, room, "u", "text of " + std::to_string(id), 0});
    hub.on_committed(id, room, sse::message_frame(id, json), restored);
    posted[room].push_back(id);
    return id;
  }
  Hub& hub;
  uint64_t next = 1;
  std::map<std::string, std::vector<uint64_t>> posted;
};

std::vector<uint64_t> ids(const FakeStream& s) {
  std::vector<uint64_t> out;
  for (const auto& b : s.got)
    if (b.starts_with("id: ")) out.push_back(std::stoull(b.substr(4)));
  return out;
}

std::vector<std::string> events(const FakeStream& s, std::string_view type) {
  std::vector<std::string> out;
  std::string prefix = "event: " + std::string(type) + "\ndata: ";
  for (const auto& b : s.got)
    if (b.starts_with(prefix)) out.push_back(b.substr(prefix.size(), b.size() - prefix.size() - 2));
  return out;
}

HubOptions options(size_t per_room, uint64_t bytes = 1ull << 30, size_t max_rooms = 1000) {
  HubOptions o;
  o.history_per_room = per_room;
  o.history_bytes = bytes;
  o.max_rooms = max_rooms;
  return o;
}

}  // namespace

TEST(RoomName, Table) {
  for (std::string ok :
       {std::string("general"), std::string("a"), std::string("team-a"), std::string("x_y.z"),
        std::string("0"), std::string(64, 'a'), std::string("a..b")})
    EXPECT_FALSE(sse::room_name_error(ok)) << ok;
  for (std::string bad :
       {std::string(), std::string(65, 'a'), std::string("Team"), std::string("a b"),
        std::string("a/b"), std::string("ü"), std::string("a#b"), std::string("a%20"),
        std::string("a\nb"), std::string("a\0b", 3), std::string("*")})
    EXPECT_TRUE(sse::room_name_error(bad)) << bad;
}

TEST(Hub, LiveStreamsGetEachMessageOfTheirRoomsOnce) {
  Hub hub(options(100));
  Poster p(hub);
  FakeStream a(hub, 100), b(hub, 100), both(hub, 100);
  ASSERT_TRUE(hub.subscribe(a.sub, {"a"}, std::nullopt));
  ASSERT_TRUE(hub.subscribe(b.sub, {"b"}, std::nullopt));
  ASSERT_TRUE(hub.subscribe(both.sub, {"a", "b"}, std::nullopt));
  for (const char* room : {"a", "b", "a", "c", "b"}) p.post(room);
  EXPECT_EQ(ids(a), (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(ids(b), (std::vector<uint64_t>{2, 5}));
  EXPECT_EQ(ids(both), (std::vector<uint64_t>{1, 2, 3, 5}));
  EXPECT_EQ(hub.stats().deliveries, 8u);
  EXPECT_EQ(hub.room_count(), 3u);
  EXPECT_EQ(hub.stream_count(), 3u);
}

TEST(Hub, ResumeReplaysThenGoesLiveWithoutGapOrDuplicate) {
  Hub hub(options(100));
  Poster p(hub);
  for (int i = 0; i < 10; ++i) p.post("general");
  FakeStream s(hub, 4);  // small queue: replay is paced by refill()
  hub.subscribe(s.sub, {"general"}, 3);
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{4, 5, 6, 7}));
  p.post("general");  // id 11: must come after 10, once
  s.drain_all();
  s.drain_all();
  EXPECT_TRUE(s.sub.live());
  p.post("general");  // 12
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{4, 5, 6, 7, 8, 9, 10, 11, 12}));
}

// Every resume point, every queue size, messages posted to the stream's rooms and another while
// it catches up: joined, the stream is exactly the posted sequence of its rooms after the point.
TEST(Hub, MultiRoomReplayMergesByIdAtEveryResumePoint) {
  std::mt19937 rng(7);
  const std::vector<std::string> rooms = {"a", "b", "c"};
  for (size_t cap : {1, 2, 3, 7, 100}) {
    for (uint64_t resume = 0; resume <= 30; ++resume) {
      Hub hub(options(1000));
      Poster p(hub);
      for (int i = 0; i < 30; ++i) p.post(rooms[rng() % 3]);
      FakeStream s(hub, cap);
      hub.subscribe(s.sub, {"a", "b"}, resume);
      for (int step = 0; step < 40; ++step) {
        if (rng() % 2) p.post(rooms[rng() % 3]);
        s.drain_all();
      }
      while (!s.sub.live()) s.drain_all();
      p.post("b");
      std::vector<uint64_t> want;
      for (const auto& room : {"a", "b"})
        for (uint64_t id : p.posted[room])
          if (id > resume) want.push_back(id);
      std::sort(want.begin(), want.end());
      ASSERT_EQ(ids(s), want) << "cap " << cap << " resume " << resume;
      EXPECT_TRUE(events(s, "reset").empty());
    }
  }
}

TEST(Hub, OnlyTheRoomThatFellShortGetsAReset) {
  Hub hub(options(3));
  Poster p(hub);
  p.post("quiet");                             // 1
  for (int i = 0; i < 6; ++i) p.post("busy");  // 2..7: keeps 5..7
  p.post("quiet");                             // 8
  FakeStream s(hub, 100);
  hub.subscribe(s.sub, {"quiet", "busy"}, 1);
  ASSERT_FALSE(s.got.empty());
  EXPECT_EQ(s.got[0], "event: reset\ndata: {\"room\":\"busy\",\"oldest\":5,\"newest\":7}\n\n");
  EXPECT_EQ(events(s, "reset").size(), 1u);
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{5, 6, 7, 8}));

  FakeStream exact(hub, 100);  // 4 is just before busy's oldest: nothing was lost
  hub.subscribe(exact.sub, {"quiet", "busy"}, 4);
  EXPECT_TRUE(events(exact, "reset").empty());
  EXPECT_EQ(ids(exact), (std::vector<uint64_t>{5, 6, 7, 8}));
}

// What storage kept of a room from before memory (a Backfill of ids in (after, through]).
sse::Backfill backfill_of(const std::string& room, uint64_t through, std::vector<uint64_t> ids,
                          bool complete) {
  sse::Backfill b{room, through, {}, complete};
  for (uint64_t id : ids)
    b.messages.push_back({id, sse::message_frame(id, sse::message_json({id, room, "u", "t", 0}))});
  return b;
}

// Resumes `s` from `after` with one room's backfill.
void subscribe_backfilled(Hub& hub, FakeStream& s, const std::vector<std::string>& rooms,
                          uint64_t after, sse::Backfill backfill) {
  std::vector<sse::Backfill> fills;
  fills.push_back(std::move(backfill));
  ASSERT_TRUE(hub.subscribe(s.sub, rooms, after, std::move(fills)));
}

TEST(Hub, RoomsShortOfAResumePointAreThoseThatWouldReset) {
  Hub hub(options(3));
  Poster p(hub);
  p.post("quiet");                             // 1
  for (int i = 0; i < 6; ++i) p.post("busy");  // 2..7: keeps 5..7, dropped through 4
  using Short = std::vector<std::pair<std::string, uint64_t>>;
  // Read up to a little into what memory keeps: here all three of busy's (5..7).
  EXPECT_EQ(hub.rooms_short_of({"quiet", "busy", "new"}, 1), (Short{{"busy", 7}}));
  EXPECT_EQ(hub.rooms_short_of({"quiet", "busy"}, 4), Short{});
  EXPECT_EQ(hub.rooms_short_of({"busy"}, 99), Short{});  // not an id of this hub: a reset anyway
}

TEST(Hub, ACompleteBackfillReplaysAheadOfMemoryWithoutAReset) {
  Hub hub(options(3));
  Poster p(hub);
  p.post("quiet");                             // 1
  for (int i = 0; i < 6; ++i) p.post("busy");  // 2..7: keeps 5..7
  p.post("quiet");                             // 8
  FakeStream s(hub, 2);                        // small: the replay is paced
  // Storage overlaps memory at 5 (it read up to the floor and a little past): sent once.
  subscribe_backfilled(hub, s, {"quiet", "busy"}, 2, backfill_of("busy", 4, {3, 4, 5}, true));
  EXPECT_GT(hub.backfill_bytes(), 0u);
  while (!s.sub.live()) s.drain_all();
  EXPECT_TRUE(events(s, "reset").empty());
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(hub.backfill_bytes(), 0u);
  p.post("busy");  // 9: live
  EXPECT_EQ(ids(s).back(), 9u);
}

TEST(Hub, AnIncompleteBackfillResetsFromItsOldest) {
  Hub hub(options(3));
  Poster p(hub);
  for (int i = 0; i < 8; ++i) p.post("busy");  // 1..8: keeps 6..8
  FakeStream s(hub, 100);
  // 2..3 are gone from storage too.
  subscribe_backfilled(hub, s, {"busy"}, 1, backfill_of("busy", 5, {4, 5}, false));
  EXPECT_EQ(events(s, "reset"),
            (std::vector<std::string>{R"({"room":"busy","oldest":4,"newest":8})"}));
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{4, 5, 6, 7, 8}));
}

TEST(Hub, MemoryDroppingPastABackfillWhileItWaitedResets) {
  Hub hub(options(3));
  Poster p(hub);
  for (int i = 0; i < 5; ++i) p.post("a");     // 1..5: keeps 3..5
  auto fill = backfill_of("a", 2, {2}, true);  // read when memory started at 3
  for (int i = 0; i < 2; ++i) p.post("a");     // 6, 7: now keeps 5..7; 3 and 4 are gone
  FakeStream s(hub, 100);
  subscribe_backfilled(hub, s, {"a"}, 1, std::move(fill));
  // Not 2 then a hole: from the reset on, nothing is missing.
  EXPECT_EQ(events(s, "reset"),
            (std::vector<std::string>{R"({"room":"a","oldest":5,"newest":7})"}));
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{5, 6, 7}));
  EXPECT_EQ(hub.backfill_bytes(), 0u);
}

// Memory drops while storage is read, as a busy room does: the read went on into what memory
// kept (rooms_short_of), so nothing falls between it and memory, and there is no reset (a hostile
// probe found one on every resume from Redis while a room took a message a second).
TEST(Hub, MemoryDroppingWhileABackfillIsReadIsCoveredByItsOverlap) {
  Hub hub(options(3));
  Poster p(hub);
  for (int i = 0; i < 5; ++i) p.post("a");  // 1..5: keeps 3..5
  auto short_rooms = hub.rooms_short_of({"a"}, 1);
  ASSERT_EQ(short_rooms.size(), 1u);
  uint64_t through = short_rooms[0].second;
  EXPECT_EQ(through, 5u);
  auto fill = backfill_of("a", through, {2, 3, 4, 5}, true);
  for (int i = 0; i < 2; ++i) p.post("a");  // 6, 7 while it was read: 3 and 4 are gone
  FakeStream s(hub, 100);
  subscribe_backfilled(hub, s, {"a"}, 1, std::move(fill));
  EXPECT_TRUE(events(s, "reset").empty());
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(hub.backfill_bytes(), 0u);
}

// A busy room dropped past the first read while it was read: the stream reads on from there
// (chat routes). A read-on that reaches back joins up, one that is cut resets after its hole.
TEST(Hub, ABackfillReadOnJoinsUpOrResetsAfterTheHole) {
  auto answered = [](sse::Backfill b) {
    b.answered = true;
    return b;
  };
  for (bool cut : {false, true}) {
    SCOPED_TRACE(cut ? "cut" : "reaches back");
    Hub hub(options(3));
    Poster p(hub);
    for (int i = 0; i < 10; ++i) p.post("a");                                // 1..10: keeps 8..10
    sse::Backfill fill = answered(backfill_of("a", 5, {2, 3, 4, 5}, true));  // read before 6..10
    auto short_rooms = hub.rooms_short_of({"a"}, fill.through);
    ASSERT_EQ(short_rooms.size(), 1u);         // 6 and 7 are no longer in memory
    uint64_t through = short_rooms[0].second;  // into memory's window: 10
    std::vector<uint64_t> more_ids;
    for (uint64_t id = cut ? 7 : 6; id <= through; ++id) more_ids.push_back(id);
    fill.read_on(answered(backfill_of("a", through, more_ids, !cut)));
    EXPECT_EQ(fill.through, through);
    EXPECT_EQ(fill.complete, !cut);
    FakeStream s(hub, 100);
    subscribe_backfilled(hub, s, {"a"}, 1, std::move(fill));
    if (cut) {
      EXPECT_EQ(events(s, "reset"),
                (std::vector<std::string>{R"({"room":"a","oldest":7,"newest":10})"}));
      EXPECT_EQ(ids(s), (std::vector<uint64_t>{7, 8, 9, 10}));
    } else {
      EXPECT_TRUE(events(s, "reset").empty());
      EXPECT_EQ(ids(s), (std::vector<uint64_t>{2, 3, 4, 5, 6, 7, 8, 9, 10}));
    }
  }
}

TEST(Hub, ABackfillReadOnThatGoesUnansweredLeavesItUnanswered) {
  sse::Backfill fill = backfill_of("a", 5, {2, 3}, true);
  fill.answered = true;
  fill.read_on(backfill_of("a", 9, {}, false));  // answered stays false: storage was down
  EXPECT_FALSE(fill.answered);
}

TEST(Hub, MemoryDroppingPastABackfillMidReplayResetsToMemorysOldest) {
  Hub hub(options(3));
  Poster p(hub);
  for (int i = 0; i < 6; ++i) p.post("a");  // 1..6: keeps 4..6
  FakeStream s(hub, 1);
  subscribe_backfilled(hub, s, {"a"}, 0, backfill_of("a", 3, {1, 2, 3}, true));
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{1}));
  for (int i = 0; i < 3; ++i) p.post("a");  // 7..9: keeps 7..9; 4..6 are gone
  while (!s.sub.live()) s.drain_all();
  EXPECT_EQ(events(s, "reset"),
            (std::vector<std::string>{R"({"room":"a","oldest":7,"newest":9})"}));
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{1, 7, 8, 9}));
  EXPECT_EQ(hub.backfill_bytes(), 0u);
}

TEST(Hub, ABackfillLeftUnsentIsLetGoWhenTheStreamLeaves) {
  Hub hub(options(3));
  Poster p(hub);
  for (int i = 0; i < 6; ++i) p.post("a");  // 1..6: keeps 4..6
  {
    FakeStream s(hub, 1);
    subscribe_backfilled(hub, s, {"a"}, 0, backfill_of("a", 3, {1, 2, 3}, true));
    EXPECT_EQ(ids(s), (std::vector<uint64_t>{1}));
    EXPECT_GT(hub.backfill_bytes(), 0u);
  }
  EXPECT_EQ(hub.backfill_bytes(), 0u);
}

TEST(Hub, AnIdFromTheFutureResetsEveryRoom) {
  Hub hub(options(100));
  Poster p(hub);
  p.post("a");
  p.post("b");
  FakeStream s(hub, 100);
  hub.subscribe(s.sub, {"a", "b"}, 99);
  EXPECT_EQ(events(s, "reset"),
            (std::vector<std::string>{R"({"room":"a","oldest":1,"newest":1})",
                                      R"({"room":"b","oldest":2,"newest":2})"}));
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{1, 2}));
}

TEST(Hub, HistoryDroppedWhileCatchingUpResetsThatRoomOnce) {
  Hub hub(options(4));
  Poster p(hub);
  for (int i = 0; i < 4; ++i) p.post("a");  // 1..4
  FakeStream s(hub, 1);
  hub.subscribe(s.sub, {"a"}, 0);
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{1}));
  for (int i = 0; i < 4; ++i) p.post("a");  // 5..8: 2..4 are gone before it read them
  while (!s.sub.live()) s.drain_all();
  EXPECT_EQ(events(s, "reset"),
            (std::vector<std::string>{R"({"room":"a","oldest":5,"newest":8})"}));
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{1, 5, 6, 7, 8}));
}

TEST(Hub, TheByteBoundDropsTheGloballyOldestFirst) {
  Hub probe(options(10));
  Poster sizer(probe);
  sizer.post("a");
  uint64_t one = probe.kept_bytes();  // every test message has the same size (ids < 10)
  Hub hub(options(100, one * 5));
  Poster p(hub);
  for (const char* room : {"a", "b", "a", "c", "b", "a", "c"}) p.post(room);  // keeps 3..7
  EXPECT_EQ(hub.kept_messages(), 5u);
  EXPECT_LE(hub.kept_bytes(), one * 5);
  std::vector<uint64_t> kept;
  hub.for_each_kept([&](uint64_t id, std::string_view, const FrameRef&) { kept.push_back(id); });
  EXPECT_EQ(kept, (std::vector<uint64_t>{3, 4, 5, 6, 7}));
  EXPECT_EQ(hub.find("b")->dropped_through(), 2u);
  EXPECT_EQ(hub.find("a")->dropped_through(), 1u);
  EXPECT_EQ(hub.kept_page("a", {std::nullopt, std::nullopt, 10}).size(), 2u);  // 3, 6
}

TEST(Hub, PastMaxRoomsTheRoomIdleLongestIsForgotten) {
  Hub hub(options(100, 1ull << 30, 3));
  Poster p(hub);
  p.post("old");    // 1
  p.post("read");   // 2
  p.post("newer");  // 3
  FakeStream reader(hub, 100);
  hub.subscribe(reader.sub, {"read"}, std::nullopt);
  p.post("old");  // 4: "old" is active again, so "newer" is idle longest
  EXPECT_TRUE(hub.can_open({"fresh"}));
  p.post("fresh");  // 5
  EXPECT_EQ(hub.room_count(), 3u);
  EXPECT_EQ(hub.find("newer"), nullptr);
  EXPECT_EQ(hub.stats().rooms_forgotten, 1u);
  EXPECT_EQ(hub.kept_messages(), 4u);

  // A stream resuming the forgotten room from before its last message hears it is gone.
  FakeStream back(hub, 100);
  ASSERT_TRUE(hub.subscribe(back.sub, {"newer"}, 1));
  EXPECT_EQ(events(back, "reset"),
            (std::vector<std::string>{R"({"room":"newer","oldest":4,"newest":3})"}));

  EXPECT_EQ(hub.find("old"), nullptr);  // idle longer than "fresh"

  // Every room is read now: no room can be made for a stream until one is left.
  FakeStream r2(hub, 100);
  ASSERT_TRUE(hub.subscribe(r2.sub, {"fresh"}, std::nullopt));
  EXPECT_FALSE(hub.can_open({"another"}));
  FakeStream refused(hub, 100);
  EXPECT_FALSE(hub.subscribe(refused.sub, {"fresh", "another"}, std::nullopt));
  EXPECT_EQ(hub.stream_count(), 3u);
  EXPECT_EQ(hub.find("fresh")->subscriber_count(), 1u);
}

// A POST checks can_open() before its commit; a stream that takes the last idle room meanwhile
// leaves the commit nothing to forget. The room is made anyway, and the excess goes at the next
// room made (it stayed above --max-rooms for good).
TEST(Hub, ARoomMadePastMaxRoomsInARaceIsMadeUpForAtTheNext) {
  Hub hub(options(100, 1ull << 30, 3));
  Poster p(hub);
  p.post("r1");
  p.post("r2");
  p.post("idle");
  FakeStream a(hub, 100), b(hub, 100);
  hub.subscribe(a.sub, {"r1"}, std::nullopt);
  hub.subscribe(b.sub, {"r2"}, std::nullopt);
  EXPECT_TRUE(hub.can_open({"new1"}));  // the POST's check: "idle" can go
  auto late = std::make_unique<FakeStream>(hub, 100);
  hub.subscribe(late->sub, {"idle"}, std::nullopt);
  p.post("new1");  // its commit
  EXPECT_EQ(hub.room_count(), 4u);
  late.reset();
  p.post("new2");
  EXPECT_EQ(hub.room_count(), 3u);
  EXPECT_NE(hub.find("r1"), nullptr);
  EXPECT_NE(hub.find("r2"), nullptr);
  EXPECT_NE(hub.find("new2"), nullptr);
}

// The excess is a commit's to make up: a stream, which may forget only a room that keeps nothing
// (when its reader may not post), forgets no more than can_open() allowed it.
TEST(Hub, AStreamDoesNotMakeUpTheExcessWithRoomsThatKeepMessages) {
  Hub hub(options(100, 1ull << 30, 3));
  Poster p(hub);
  p.post("r1");
  FakeStream a(hub, 100);
  hub.subscribe(a.sub, {"r1"}, std::nullopt);
  auto on_empty = std::make_unique<FakeStream>(hub, 100);
  hub.subscribe(on_empty->sub, {"empty"}, std::nullopt);
  p.post("k");
  EXPECT_TRUE(hub.can_open({"new0"}));  // the POST's check: "k" can go
  auto late = std::make_unique<FakeStream>(hub, 100);
  hub.subscribe(late->sub, {"k"}, std::nullopt);
  p.post("new0");
  ASSERT_EQ(hub.room_count(), 4u);
  on_empty.reset();  // "empty" is idle and keeps nothing
  ASSERT_TRUE(hub.can_open({"z"}, /*may_forget_kept=*/false));
  FakeStream reader(hub, 100);
  ASSERT_TRUE(hub.subscribe(reader.sub, {"z"}, std::nullopt));
  EXPECT_EQ(hub.find("empty"), nullptr);
  EXPECT_NE(hub.find("new0"), nullptr);  // its message kept
  EXPECT_EQ(hub.room_count(), 4u);
  late.reset();
  p.post("new1");  // a commit makes up the excess
  EXPECT_EQ(hub.room_count(), 3u);
  EXPECT_EQ(hub.find("new0"), nullptr);
  EXPECT_EQ(hub.find("k"), nullptr);
}

// With several nodes, a room read on another is read: this node keeps it too, as Redis does.
TEST(Hub, ARoomReadOnAnotherNodeIsNotForgotten) {
  Hub hub(options(100, 1ull << 30, 2));
  Poster p(hub);
  p.post("there");  // 1
  p.post("here");   // 2
  hub.set_remote_presence("there", 1, {"bob"});
  p.post("new");  // 3: "there" is idle longest here, but read there
  EXPECT_NE(hub.find("there"), nullptr);
  EXPECT_EQ(hub.find("here"), nullptr);
  hub.set_remote_presence("there", 0, {});  // its reader left: idle from now
  p.post("newer");                          // 4: forgets "new", idle since 3
  EXPECT_EQ(hub.find("new"), nullptr);
  p.post("newest");  // 5: forgets "there"
  EXPECT_EQ(hub.find("there"), nullptr);
  EXPECT_NE(hub.find("newer"), nullptr);
}

TEST(Hub, ARoomAskedForIsNotForgottenToMakeSpaceForAnotherOfTheSameStream) {
  Hub hub(options(100, 1ull << 30, 2));
  Poster p(hub);
  p.post("a");
  p.post("b");
  EXPECT_FALSE(hub.can_open({"a", "b", "c"}));  // only a or b could make space, both asked for
  EXPECT_TRUE(hub.can_open({"a", "c"}));
  FakeStream s(hub, 100);
  ASSERT_TRUE(hub.subscribe(s.sub, {"a", "c"}, 0));
  EXPECT_NE(hub.find("a"), nullptr);
  EXPECT_EQ(hub.find("b"), nullptr);
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{1}));
}

TEST(Hub, PresenceListsDistinctNamesOncePerChange) {
  Hub hub(options(100));
  auto alice = std::make_unique<FakeStream>(hub, 100, "alice");
  FakeStream alice2(hub, 100, "alice"), bob(hub, 100, "bob"), anon(hub, 100);
  hub.subscribe(bob.sub, {"team", "general"}, std::nullopt);
  hub.subscribe(alice->sub, {"team"}, std::nullopt);
  hub.subscribe(alice2.sub, {"team"}, std::nullopt);
  hub.subscribe(anon.sub, {"team"}, std::nullopt);
  hub.send_presence();
  EXPECT_EQ(events(anon, "presence"),
            (std::vector<std::string>{R"({"room":"team","online":4,"users":["alice","bob"]})"}));
  EXPECT_EQ(events(bob, "presence"),
            (std::vector<std::string>{R"({"room":"team","online":4,"users":["alice","bob"]})",
                                      R"({"room":"general","online":1,"users":["bob"]})"}));
  hub.send_presence();  // nothing changed: nothing sent
  EXPECT_EQ(events(anon, "presence").size(), 1u);
  alice.reset();  // alice still has another stream
  hub.send_presence();
  EXPECT_EQ(events(anon, "presence").back(),
            R"({"room":"team","online":3,"users":["alice","bob"]})");
  EXPECT_EQ(events(bob, "presence").size(), 3u);  // general did not change
}

// A stream whose queue is full when its room's readers change gets the room's presence as it is
// once it has room again (it was skipped for good, so its list of who is online stayed stale).
TEST(Hub, APresenceAFullQueueMissedComesOnceItDrains) {
  Hub hub(options(100));
  Poster p(hub);
  FakeStream slow(hub, 3, "slow");
  hub.subscribe(slow.sub, {"team", "general"}, std::nullopt);
  hub.send_presence();
  slow.drain_all();
  p.post("general");
  p.post("general");  // one slot left: presence needs two
  auto bob = std::make_unique<FakeStream>(hub, 100, "bob");
  hub.subscribe(bob->sub, {"team"}, std::nullopt);
  hub.send_presence();
  bob.reset();
  FakeStream carol(hub, 100, "carol");
  hub.subscribe(carol.sub, {"team"}, std::nullopt);
  hub.send_presence();
  EXPECT_EQ(events(slow, "presence").size(), 2u);  // its first two, nothing since
  slow.drain_all();
  EXPECT_EQ(events(slow, "presence").back(),
            R"({"room":"team","online":2,"users":["carol","slow"]})");
  EXPECT_EQ(events(slow, "presence").size(), 3u);  // the room as it is, once; general unchanged
  slow.drain_all();
  EXPECT_EQ(events(slow, "presence").size(), 3u);
}

TEST(Hub, LeavingKeepsTheOthersOfEveryRoom) {
  Hub hub(options(10));
  Poster p(hub);
  auto a = std::make_unique<FakeStream>(hub, 10);
  FakeStream b(hub, 10), c(hub, 10);
  hub.subscribe(a->sub, {"x", "y"}, std::nullopt);
  hub.subscribe(b.sub, {"y", "x"}, std::nullopt);
  hub.subscribe(c.sub, {"x"}, std::nullopt);
  a.reset();
  p.post("x");
  p.post("y");
  EXPECT_EQ(ids(b), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(ids(c), (std::vector<uint64_t>{1}));
  EXPECT_EQ(hub.find("x")->subscriber_count(), 2u);
  EXPECT_EQ(hub.find("y")->subscriber_count(), 1u);
}

TEST(Hub, FullQueueIsReportedAsSlowConsumer) {
  Hub hub(options(100));
  Poster p(hub);
  FakeStream s(hub, 2);
  hub.subscribe(s.sub, {"general"}, std::nullopt);
  for (int i = 0; i < 3; ++i) p.post("general");
  EXPECT_EQ(hub.stats().slow_consumers, 1u);
}

TEST(Hub, PagesOneRoom) {
  Hub hub(options(100));
  Poster p(hub);
  for (const char* room : {"a", "b", "a", "a", "b"}) p.post(room);
  auto page_ids = [&](std::optional<uint64_t> after, size_t limit,
                      std::optional<uint64_t> before = std::nullopt) {
    std::vector<uint64_t> out;
    for (const FrameRef& f : hub.kept_page("a", {after, before, limit}))
      out.push_back(sse::frame_id(*f.get()));
    return out;
  };
  EXPECT_EQ(page_ids(std::nullopt, 2), (std::vector<uint64_t>{3, 4}));
  EXPECT_EQ(page_ids(0, 2), (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(page_ids(3, 10), (std::vector<uint64_t>{4}));
  EXPECT_EQ(page_ids(UINT64_MAX, 10), (std::vector<uint64_t>{}));
  // Pages back: the newest below `before`, or the first after `after` below it.
  EXPECT_EQ(page_ids(std::nullopt, 2, 4), (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(page_ids(std::nullopt, 1, 4), (std::vector<uint64_t>{3}));
  EXPECT_EQ(page_ids(std::nullopt, 5, 1), (std::vector<uint64_t>{}));
  EXPECT_EQ(page_ids(1, 5, 4), (std::vector<uint64_t>{3}));
  EXPECT_EQ(page_ids(3, 5, 2), (std::vector<uint64_t>{}));
  EXPECT_TRUE(hub.kept_page("nope", {0, std::nullopt, 10}).empty());
}

TEST(Hub, RestoredMessagesAreKeptNotDelivered) {
  Hub hub(options(100));
  Poster p(hub);
  FakeStream s(hub, 10);
  hub.subscribe(s.sub, {"a"}, std::nullopt);
  p.post("a", true);
  EXPECT_TRUE(s.got.empty());
  EXPECT_EQ(hub.kept_messages(), 1u);
  EXPECT_EQ(hub.stats().messages, 0u);
}

TEST(Hub, ResetsForAnIdFromTheFutureWaitForRoomInTheQueue) {
  Hub hub(options(100));
  Poster p(hub);
  std::vector<std::string> rooms = {"a", "b", "c", "d", "e"};
  for (const auto& room : rooms) p.post(room);
  FakeStream s(hub, 1);  // one frame at a time: five resets must not overflow it
  ASSERT_TRUE(hub.subscribe(s.sub, rooms, 99));
  while (!s.sub.live()) s.drain_all();
  EXPECT_EQ(events(s, "reset").size(), 5u);
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(hub.stats().slow_consumers, 0u);
}

TEST(Hub, RoomsThatKeepNothingAreForgottenFirst) {
  Hub hub(options(100, 1ull << 30, 3));
  Poster p(hub);
  p.post("important");
  {
    FakeStream junk(hub, 10);
    hub.subscribe(junk.sub, {"junk1", "junk2"}, std::nullopt);
  }
  FakeStream more(hub, 10);
  ASSERT_TRUE(hub.subscribe(more.sub, {"junk3", "junk4"}, std::nullopt));
  EXPECT_NE(hub.find("important"), nullptr);
  EXPECT_EQ(hub.find("junk1"), nullptr);
  EXPECT_EQ(hub.find("junk2"), nullptr);
}

TEST(Hub, APresenceChangeIsSentOnceEvenIfTheRoomWasForgottenAndMadeAgain) {
  Hub hub(options(100, 1ull << 30, 1));
  FakeStream watcher(hub, 100);
  {
    FakeStream a(hub, 100, "ann");
    hub.subscribe(a.sub, {"a"}, std::nullopt);
  }
  Poster p(hub);
  p.post("b");  // forgets a, whose presence change is still pending
  hub.subscribe(watcher.sub, {"a"}, std::nullopt);  // forgets b, makes a again
  hub.send_presence();
  EXPECT_EQ(events(watcher, "presence").size(), 1u);
}

TEST(Hub, FloorsComeBackAfterARestart) {
  Hub before(options(2, 1ull << 30, 2));
  Poster p(before);
  for (int i = 0; i < 4; ++i) p.post("a");  // keeps 3, 4
  p.post("b");                              // 5
  p.post("c");                              // 6: forgets a? no: a is idle longest -> forgotten
  std::vector<std::pair<std::string, uint64_t>> floors;
  before.for_each_floor(
      [&](std::string_view room, uint64_t through) { floors.emplace_back(room, through); });
  std::sort(floors.begin(), floors.end());
  EXPECT_EQ(floors, (std::vector<std::pair<std::string, uint64_t>>{{"a", 4}}));

  // A restart replays the floors, then what was kept; a resume of a hears it is gone.
  Hub after(options(2, 1ull << 30, 2));
  for (auto& [room, through] : floors) after.restore_floor(room, through);
  Poster q(after);
  q.next = 5;
  q.post("b", true);
  q.post("c", true);
  after.restored();
  FakeStream s(after, 10);
  after.subscribe(s.sub, {"a", "b"}, 2);
  EXPECT_EQ(events(s, "reset"),
            (std::vector<std::string>{R"({"room":"a","oldest":5,"newest":4})"}));
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{5}));
}

TEST(Hub, ListsRoomsByNewestMessage) {
  Hub hub(options(100));
  Poster p(hub);
  for (const char* room : {"a", "b", "c", "a"}) p.post(room);
  FakeStream reader(hub, 10);
  hub.subscribe(reader.sub, {"quiet"}, std::nullopt);
  p.post("b");
  std::vector<std::string> order;
  for (const sse::Room* room : hub.rooms_by_activity(10)) order.push_back(room->name());
  EXPECT_EQ(order, (std::vector<std::string>{"b", "a", "c", "quiet"}));
  EXPECT_EQ(hub.rooms_by_activity(2).size(), 2u);
}

// Nodes sharing Redis: an id a little above what this hub has seen was given by another node a
// moment ago; the stream waits for what follows it (nothing twice, nothing reset). Far above, it
// is still one nobody issued.
TEST(Hub, AnIdAnotherNodeJustGaveWaitsForWhatFollows) {
  HubOptions o = options(100);
  o.ids_ahead_allowed = 10;
  Hub hub(o);
  Poster p(hub);
  p.post("a");  // 1
  p.post("a");  // 2
  FakeStream s(hub, 100);
  hub.subscribe(s.sub, {"a"}, 4);  // 3 and 4 are on their way here
  EXPECT_TRUE(s.got.empty());
  EXPECT_TRUE(s.sub.live());
  for (int i = 0; i < 4; ++i) p.post("a");  // 3..6
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{5, 6}));

  FakeStream far(hub, 100);
  hub.subscribe(far.sub, {"a"}, 100);
  EXPECT_EQ(events(far, "reset").size(), 1u);
}

// A data set's base: ids up to last_id were issued elsewhere (no reset for them), and messages up
// to lost_through are gone for every room, even rooms this hub has not made yet.
// A fresh stream opens with newest_of its rooms: a floor above a room's last message (storage
// lost what came after it) counts, or the stream would be reset each time it comes back.
TEST(Hub, TheOpeningIdIsAtLeastARoomsFloor) {
  Hub hub(options(100));
  Poster p(hub);
  for (int i = 0; i < 3; ++i) p.post("a", /*restored=*/true);  // 1..3
  hub.restore_base(/*last_id=*/10, /*lost_through=*/10);       // 4..10 were lost
  uint64_t opening = hub.newest_of({"a"});
  EXPECT_EQ(opening, 10u);
  FakeStream back(hub, 100);
  ASSERT_TRUE(hub.subscribe(back.sub, {"a"}, opening));
  EXPECT_TRUE(events(back, "reset").empty());
  EXPECT_EQ(hub.newest_of({"never-made"}), 10u);  // the floor of every room it does not know
}

TEST(Hub, TheBaseFromSharedStorageFloorsEveryRoom) {
  Hub hub(options(100));
  hub.restore_base(/*last_id=*/50, /*lost_through=*/40);
  EXPECT_EQ(hub.next_id(), 51u);
  FakeStream old(hub, 100);
  hub.subscribe(old.sub, {"new-room"}, 30);  // 31..40 are gone
  EXPECT_EQ(events(old, "reset"),
            (std::vector<std::string>{R"({"room":"new-room","oldest":41,"newest":40})"}));
  FakeStream recent(hub, 100);
  hub.subscribe(recent.sub, {"new-room"}, 45);  // issued, not lost: nothing to say
  EXPECT_TRUE(recent.got.empty());
}

// Storage lost messages a live stream never got: it hears a reset for that room, then goes on
// with the rest, and a stream of another room hears nothing.
TEST(Hub, MessagesLostBeforeDeliveryResetTheLiveStreamsOfThatRoom) {
  Hub hub(options(100));
  Poster p(hub);
  p.post("a");  // 1
  p.post("b");  // 2
  FakeStream both(hub, 100), other(hub, 100);
  hub.subscribe(both.sub, {"a", "b"}, std::nullopt);
  hub.subscribe(other.sub, {"b"}, std::nullopt);
  hub.lose_through("a", 5);  // 3..5 of room a never arrived
  p.next = 6;
  p.post("a");  // 6
  p.post("b");  // 7
  EXPECT_EQ(events(both, "reset"),
            (std::vector<std::string>{R"({"room":"a","oldest":6,"newest":5})"}));
  EXPECT_EQ(ids(both), (std::vector<uint64_t>{6, 7}));
  EXPECT_TRUE(events(other, "reset").empty());
  EXPECT_EQ(ids(other), (std::vector<uint64_t>{7}));
  EXPECT_EQ(hub.find("a")->history().size(), 1u);  // 1 went with what was lost
}

// Storage may have lost messages of rooms it cannot name: every room but those it still has
// resets its streams that needed them, keeps what memory has (replayed after the reset), and a
// room made from now on resets a resume from before them.
TEST(Hub, MessagesLostInUnnamedRoomsResetEveryOtherRoomAndKeepMemory) {
  Hub hub(options(100));
  Poster p(hub);
  p.post("a");  // 1
  p.post("b");  // 2
  FakeStream both(hub, 100), only_b(hub, 100);
  hub.subscribe(both.sub, {"a", "b"}, std::nullopt);
  hub.subscribe(only_b.sub, {"b"}, std::nullopt);
  hub.lose_everywhere_through(5, {"b"});  // 3..5 may have been a's, or any room's but b's
  p.next = 6;
  p.post("a");  // 6
  EXPECT_EQ(events(both, "reset"),
            (std::vector<std::string>{R"({"room":"a","oldest":1,"newest":1})"}));
  EXPECT_EQ(ids(both), (std::vector<uint64_t>{6}));
  EXPECT_TRUE(only_b.got.empty());
  EXPECT_EQ(hub.find("a")->history().size(), 2u);  // 1 is still kept
  FakeStream resumed(hub, 100);
  hub.subscribe(resumed.sub, {"a"}, 0);
  EXPECT_EQ(events(resumed, "reset").size(), 1u);
  EXPECT_EQ(ids(resumed), (std::vector<uint64_t>{1, 6}));
  FakeStream fresh(hub, 100);
  hub.subscribe(fresh.sub, {"fresh"}, 2);
  EXPECT_EQ(events(fresh, "reset").size(), 1u);
  // A room storage still has keeps its floor (5, from the loss above), made or not.
  hub.lose_everywhere_through(8, {"c"});
  p.next = 9;
  p.post("c");  // 9
  FakeStream of_c(hub, 100);
  hub.subscribe(of_c.sub, {"c"}, 5);
  EXPECT_TRUE(events(of_c, "reset").empty());
  EXPECT_EQ(ids(of_c), (std::vector<uint64_t>{9}));
}

// Past --max-rooms forgotten names, the oldest name drops out of the remembered set: its floor
// then holds for every room the hub does not otherwise know, so the room made again with that
// name still says its old messages are gone (a reset for a genuinely new room is harmless).
TEST(Hub, ARoomWhoseForgottenNameDroppedOutStillResets) {
  Hub hub(options(100, 1ull << 30, 2));
  Poster p(hub);
  for (int i = 0; i < 3; ++i) p.post("b");                         // 1..3
  for (const char* room : {"x1", "x2", "x3", "x4"}) p.post(room);  // 4..7: forget b, x1, x2
  EXPECT_EQ(hub.stats().rooms_forgotten, 3u);
  p.post("b");  // 8
  FakeStream s(hub, 100);
  hub.subscribe(s.sub, {"b"}, 1);
  EXPECT_EQ(events(s, "reset"),
            (std::vector<std::string>{R"({"room":"b","oldest":8,"newest":8})"}));
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{8}));

  FakeStream fresh(hub, 100);  // may have had messages up to 3, as far as the hub knows
  hub.subscribe(fresh.sub, {"fresh"}, 1);
  EXPECT_EQ(events(fresh, "reset").size(), 1u);
}

// Floors as storage writes them down at a compaction (in for_each_floor's order, the hub-wide one
// as the room ""), then the kept messages, read back into `after` as a restart does.
void restore_like_a_restart(const Hub& before, Hub& after) {
  before.for_each_floor([&](std::string_view room, uint64_t through) {
    if (room.empty())
      after.restore_base(before.next_id() - 1, through);
    else
      after.restore_floor(room, through);
  });
  before.for_each_kept([&](uint64_t id, std::string_view room, const FrameRef& frame) {
    after.on_committed(id, room, frame, true);
  });
  after.restored();
}

// A compaction writes the floors of every room, live or forgotten, before the messages: on restore
// the live rooms' floors are theirs again, however many forgotten names there are.
TEST(Hub, LiveRoomsKeepTheirFloorsAcrossARestartPastMaxRoomsForgottenNames) {
  Hub before(options(1, 1ull << 30, 2));
  Poster p(before);
  for (const char* room : {"x1", "x2", "a", "b", "a", "a", "b", "b"}) p.post(room);  // 1..8
  Hub after(options(1, 1ull << 30, 2));
  restore_like_a_restart(before, after);
  for (Hub* hub : {&before, &after}) {
    FakeStream s(*hub, 100);
    hub->subscribe(s.sub, {"a", "b"}, 4);
    EXPECT_EQ(events(s, "reset"),
              (std::vector<std::string>{R"({"room":"a","oldest":6,"newest":6})",
                                        R"({"room":"b","oldest":8,"newest":8})"}));
    EXPECT_EQ(ids(s), (std::vector<uint64_t>{6, 8}));
  }
}

// The hub-wide floor, raised when a forgotten name dropped out, is a floor storage keeps too; a
// room made before it was raised keeps its own.
TEST(Hub, TheFloorOfForgottenNamesThatDroppedOutSurvivesARestart) {
  Hub before(options(100, 1ull << 30, 2));
  Poster p(before);
  for (const char* room : {"keep", "b", "b", "keep", "x1", "keep", "x2", "keep", "x3"})
    p.post(room);  // 1..9: b, x1, x2 forgotten in turn; b dropped out
  Hub after(options(100, 1ull << 30, 2));
  restore_like_a_restart(before, after);
  FakeStream keep(after, 100);
  after.subscribe(keep.sub, {"keep"}, 1);
  EXPECT_TRUE(events(keep, "reset").empty());
  EXPECT_EQ(ids(keep), (std::vector<uint64_t>{4, 6, 8}));
  FakeStream s(after, 100);
  after.subscribe(s.sub, {"b"}, 1);
  EXPECT_EQ(events(s, "reset").size(), 1u);
}

// Messages lost from the middle of storage, rooms unknown: every room, made or not, resets a stream
// that resumes from before them, and keeps what it has.
TEST(Hub, ALossOfUnknownRoomsMidRestoreResetsEveryRoom) {
  Hub hub(options(2));
  Poster p(hub);
  p.post("a", true);       // 1
  p.post("a", true);       // 2
  hub.restore_base(3, 3);  // 3 was lost
  p.next = 4;
  p.post("a", true);  // 4: drops 1 (a room keeps 2), its floor stays 3
  p.post("b", true);  // 5
  hub.restored();
  FakeStream s(hub, 100);
  hub.subscribe(s.sub, {"a", "b"}, 2);
  EXPECT_EQ(events(s, "reset").size(), 2u);
  EXPECT_EQ(ids(s), (std::vector<uint64_t>{4, 5}));
  FakeStream after_loss(hub, 100);
  hub.subscribe(after_loss.sub, {"a", "b"}, 3);
  EXPECT_TRUE(events(after_loss, "reset").empty());
  EXPECT_EQ(ids(after_loss), (std::vector<uint64_t>{4, 5}));
}

// The highest id issued, as storage writes it down, is not "from the future" after a restart even
// when no kept message has it (its room was forgotten).
TEST(Hub, TheHighestIdIssuedIsNotFromTheFutureAfterARestart) {
  Hub hub(options(100, 1ull << 30, 1));
  hub.restore_base(3, 0);
  hub.restore_floor("x", 3);
  hub.restored();
  FakeStream s(hub, 100);
  hub.subscribe(s.sub, {"y"}, 3);
  EXPECT_TRUE(s.got.empty());
  EXPECT_TRUE(s.sub.live());
}

// A room made again by a stream after it was forgotten has its old last id: the list stays ordered
// by last id.
TEST(Hub, ARoomMadeAgainIsListedByItsLastId) {
  Hub hub(options(100, 1ull << 30, 3));
  Poster p(hub);
  for (const char* room : {"x", "y", "z"}) p.post(room);  // 1..3
  {
    FakeStream reader(hub, 10);
    hub.subscribe(reader.sub, {"x"}, std::nullopt);  // x is idle last from now on
  }
  p.post("w");  // 4: forgets y
  {
    FakeStream reader(hub, 10);
    hub.subscribe(reader.sub, {"y"}, std::nullopt);  // forgets z
  }
  std::vector<std::pair<std::string, uint64_t>> listed;
  for (const sse::Room* room : hub.rooms_by_activity(10))
    listed.emplace_back(room->name(), room->last_id());
  EXPECT_EQ(listed, (std::vector<std::pair<std::string, uint64_t>>{{"w", 4}, {"y", 2}, {"x", 1}}));
}
