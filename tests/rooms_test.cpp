// Rooms over real sockets against the real binary: isolation, one stream for several rooms that
// resumes exactly across reconnects, per-room resets, presence names, GET /rooms, restart, and
// --max-rooms.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "test_server.h"

using namespace testing_support;

namespace {

std::optional<HttpResponse> post_to(uint16_t port, const std::string& room, const std::string& user,
                                    const std::string& text) {
  Client c(port);
  return c.post_json(R"({"user":")" + user + R"(","text":")" + text + R"(","room":")" + room +
                     R"("})");
}

uint64_t post_id(uint16_t port, const std::string& room, const std::string& text = "hi") {
  auto r = post_to(port, room, "u", text);
  EXPECT_TRUE(r && r->status == 201) << (r ? r->body : "no answer");
  return r && r->status == 201 ? json_id(r->body) : 0;
}

// Reads events until `pred` holds for one (nullopt if the stream ends first).
std::optional<SseEvent> next_event_of(SseReader& reader, const std::string& type) {
  while (auto e = reader.next())
    if (e->event == type) return e;
  return std::nullopt;
}

// What a stream resumed from `last_event_id` gets until message `until`, presence left out:
// "reset <room>" for a reset, the id for a message.
std::vector<std::string> resumed(uint16_t port, const std::string& last_event_id,
                                 const std::string& query, uint64_t until) {
  Subscription s(port, last_event_id, query);
  EXPECT_TRUE(s.ok);
  std::vector<std::string> got;
  while (auto e = s.reader.next()) {
    if (e->event == "presence") continue;
    got.push_back(e->event.empty() ? e->id : e->event + " " + field(e->data, "room"));
    if (e->event.empty() && e->id == std::to_string(until)) break;
  }
  return got;
}

// Removes the data directory under a running server and waits until storage recovered, which
// rewrites the journal from memory.
void force_recovery(uint16_t port, const std::string& dir) {
  // A compaction's thread may be making or renaming its file meanwhile: remove what is there then.
  std::error_code error;
  for (int i = 0; i < 100 && (std::filesystem::remove_all(dir, error), error); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_FALSE(error) << error.message();
  for (int i = 0; i < 200 && !std::filesystem::exists(dir + "/journal"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Client probe(port);
  for (int i = 0; i < 100; ++i) {
    auto h = probe.get("/healthz");
    if (h && h->status == 200) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "storage did not recover";
}

}  // namespace

TEST(Rooms, EachRoomsSubscribersSeeOnlyThatRoom) {
  ServerProcess server;
  Subscription a(server.port(), "", "?room=team-a");
  Subscription b(server.port(), "", "?room=team-b");
  Subscription general(server.port());  // no room: general, as before rooms
  ASSERT_TRUE(a.ok && b.ok && general.ok);
  uint64_t to_a = post_id(server.port(), "team-a", "for a");
  uint64_t to_b = post_id(server.port(), "team-b", "for b");
  uint64_t to_general = post_message(server.port(), "u", "no room named");
  uint64_t last_a = post_id(server.port(), "team-a", "again a");

  auto m = a.reader.next_message();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->id, std::to_string(to_a));
  EXPECT_EQ(field(m->data, "room"), "team-a");
  EXPECT_EQ(m->data.find("{\"id\":" + std::to_string(to_a) + ",\"room\":\"team-a\",\"user\":\"u\""),
            0u)
      << m->data;
  EXPECT_EQ(a.reader.next_message()->id, std::to_string(last_a));  // nothing of b or general
  auto mb = b.reader.next_message();
  EXPECT_EQ(mb->id, std::to_string(to_b));
  EXPECT_EQ(field(mb->data, "room"), "team-b");
  auto mg = general.reader.next_message();
  EXPECT_EQ(mg->id, std::to_string(to_general));
  EXPECT_EQ(field(mg->data, "room"), "general");
  // The ids are one sequence for the whole server.
  EXPECT_LT(to_a, to_b);
  EXPECT_LT(to_b, to_general);
  // Nothing else reached b or general: the next message each sees is a new one of its own.
  uint64_t later_b = post_id(server.port(), "team-b");
  EXPECT_EQ(b.reader.next_message()->id, std::to_string(later_b));
  uint64_t later_general = post_message(server.port(), "u", "x");
  EXPECT_EQ(general.reader.next_message()->id, std::to_string(later_general));
}

TEST(Rooms, FormPostsNameTheRoomToo) {
  ServerProcess server;
  Subscription a(server.port(), "", "?room=ops");
  ASSERT_TRUE(a.ok);
  Client c(server.port());
  auto r = c.post_form("user=ann&text=deploy&room=ops");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(field(a.reader.next_message()->data, "text"), "deploy");
}

// POST /messages?room=ops, as a reader names its rooms: the query's room when the body names
// none, never silently `general`; a body naming another room is refused.
TEST(Rooms, APostMayNameItsRoomInTheQueryString) {
  ServerProcess server;
  Subscription ops(server.port(), "", "?room=ops");
  ASSERT_TRUE(ops.ok);
  Client c(server.port());
  auto post = [&](const std::string& target, const std::string& body) {
    c.send("POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
    return c.read_response();
  };
  auto r = post("/messages?room=ops", R"({"user":"ann","text":"from the query"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(field(ops.reader.next_message()->data, "text"), "from the query");
  r = post("/messages?room=ops", R"({"user":"ann","text":"both","room":"ops"})");
  EXPECT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(field(ops.reader.next_message()->data, "text"), "both");
  r = post("/messages?room=ops", R"({"user":"ann","text":"which?","room":"dev"})");
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("the query string names room"), std::string::npos) << r->body;
  for (std::string bad :
       {"/messages?room=Ops", "/messages?room=", "/messages?room=a&room=b", "/messages?room=%zz"}) {
    r = post(bad, R"({"user":"ann","text":"no"})");
    ASSERT_TRUE(r) << bad;
    EXPECT_EQ(r->status, 400) << bad << " " << r->body;
  }
  r = post("/messages", R"({"user":"ann","text":"plain"})");  // still general
  EXPECT_EQ(r->status, 201);
  Client reader(server.port());
  EXPECT_NE(reader.get("/messages?room=general")->body.find("plain"), std::string::npos);
  EXPECT_EQ(reader.get("/messages?room=dev")->body, "[]");
}

TEST(Rooms, BadRoomNamesAndTooManyRoomsAre400) {
  ServerProcess server({"--max-rooms-per-stream", "2"});
  for (std::string body :
       {R"({"user":"u","text":"t","room":"Team"})", R"({"user":"u","text":"t","room":""})",
        R"({"user":"u","text":"t","room":"a/b"})", R"({"user":"u","text":"t","room":7})"}) {
    Client c(server.port());
    auto r = c.post_json(body);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << body;
    EXPECT_NE(r->body.find("room"), std::string::npos) << r->body;
  }
  for (std::string path : std::vector<std::string>{
           "/events?room=Team", "/events?room=", "/events?room=a&room=b&room=c",
           "/events?room=" + std::string(65, 'x'), "/events?user=%01", "/messages?room=UP",
           "/rooms?limit=0"}) {
    Client c(server.port());
    auto r = c.get(path, "Accept: text/event-stream\r\n");
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 400) << path;
  }
  // The same room twice is one room, within the limit; the server serves on.
  Subscription twice(server.port(), "", "?room=a&room=a&room=b");
  EXPECT_TRUE(twice.ok);
  EXPECT_EQ(post_id(server.port(), "a"), 1u);
  EXPECT_EQ(twice.reader.next_message()->id, "1");
  auto next = post_id(server.port(), "b");
  EXPECT_EQ(twice.reader.next_message()->id, std::to_string(next));
}

// Two publishers post to two rooms (and a third the stream does not read) while a reader of both
// reconnects again and again with its Last-Event-ID: joined, what it read is exactly what was
// posted to its rooms, in id order, once each.
TEST(Rooms, ATwoRoomStreamResumesExactlyAcrossManyReconnects) {
  ServerProcess server({"--history", "100000"});
  std::mutex mu;
  std::set<uint64_t> posted_to_ours;
  std::atomic<bool> stop{false};
  auto publisher = [&](int seed) {
    std::mt19937 rng(seed);
    Client c(server.port());
    const char* rooms[] = {"a", "b", "c"};
    while (!stop) {
      std::string room = rooms[rng() % 3];
      auto r = c.post_json(R"({"user":"p","text":"m","room":")" + room + R"("})");
      ASSERT_TRUE(r && r->status == 201);
      if (room != "c") {
        std::lock_guard lock(mu);
        posted_to_ours.insert(json_id(r->body));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  std::thread p1(publisher, 1), p2(publisher, 2);

  std::mt19937 rng(3);
  std::vector<uint64_t> got;
  std::string last_id = "0";  // from the very first message, whenever the reader starts
  auto read_some = [&](size_t count) {
    Subscription s(server.port(), last_id, "?room=a&room=b");
    ASSERT_TRUE(s.ok);
    for (size_t i = 0; i < count; ++i) {
      auto m = s.reader.next_message();
      ASSERT_TRUE(m) << "after " << got.size();
      got.push_back(std::stoull(m->id));
      EXPECT_NE(field(m->data, "room"), "c");
      last_id = m->id;
    }
  };
  // Read a few, then drop the connection mid-stream, as a flaky network would.
  for (int round = 0; round < 100; ++round) {
    read_some(1 + rng() % 7);
    if (HasFatalFailure()) break;
  }
  stop = true;
  p1.join();
  p2.join();
  ASSERT_FALSE(HasFatalFailure());
  size_t left = static_cast<size_t>(std::count_if(posted_to_ours.begin(), posted_to_ours.end(),
                                                  [&](uint64_t id) { return id > got.back(); }));
  read_some(left);
  std::vector<uint64_t> want(posted_to_ours.begin(), posted_to_ours.end());
  EXPECT_EQ(got, want);
}

// A stream that does not resume opens with the newest id of its own rooms (other rooms' ids
// would tell how busy they are), and coming back from it misses nothing (and here, where no
// room was forgotten meanwhile, resets nothing).
TEST(Rooms, AStreamOpensWithTheNewestIdOfItsOwnRooms) {
  ServerProcess server;
  uint16_t port = server.port();
  ASSERT_EQ(post_id(port, "a"), 1u);
  ASSERT_EQ(post_id(port, "b"), 2u);
  std::string opened_at;
  {
    Subscription fresh(port, "", "?room=a&room=quiet");
    ASSERT_TRUE(fresh.ok);
    ASSERT_TRUE(fresh.reader.next());  // the opening block comes with the first event
    opened_at = fresh.reader.last_event_id();
  }
  EXPECT_EQ(opened_at, "1");
  ASSERT_EQ(post_id(port, "b"), 3u);
  ASSERT_EQ(post_id(port, "a"), 4u);
  Subscription back(port, opened_at, "?room=a&room=quiet");
  ASSERT_TRUE(back.ok);
  auto ev = back.reader.next();
  while (ev && ev->event == "presence") ev = back.reader.next();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->event, "");  // a message, no reset
  EXPECT_EQ(ev->id, "4");
}

TEST(Rooms, OnlyTheRoomWhoseHistoryFellShortIsReset) {
  ServerProcess server({"--history", "3"});
  uint64_t quiet1 = post_id(server.port(), "quiet");
  for (int i = 0; i < 6; ++i) post_id(server.port(), "busy");  // keeps the newest 3 of busy
  uint64_t quiet2 = post_id(server.port(), "quiet");
  Subscription s(server.port(), std::to_string(quiet1), "?room=quiet&room=busy");
  ASSERT_TRUE(s.ok);
  auto first = s.reader.next();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->event, "reset");
  EXPECT_EQ(field(first->data, "room"), "busy");
  EXPECT_EQ(field(first->data, "oldest"), std::to_string(quiet1 + 4));
  EXPECT_EQ(field(first->data, "newest"), std::to_string(quiet1 + 6));
  std::vector<uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    auto e = s.reader.next();
    ASSERT_TRUE(e);
    ASSERT_EQ(e->event, "") << e->raw;  // no reset for quiet
    ids.push_back(std::stoull(e->id));
  }
  EXPECT_EQ(ids, (std::vector<uint64_t>{quiet1 + 4, quiet1 + 5, quiet1 + 6, quiet2}));

  // ?lastEventId= works the same way (a page reopening its EventSource with new rooms).
  Subscription q(server.port(), "",
                 "?room=busy&room=quiet&lastEventId=" + std::to_string(quiet1 + 5));
  ASSERT_TRUE(q.ok);
  EXPECT_EQ(q.reader.next()->id, std::to_string(quiet1 + 6));
  EXPECT_EQ(q.reader.next()->id, std::to_string(quiet2));
}

TEST(Rooms, PresenceNamesWhoReadsARoom) {
  ServerProcess server;
  Subscription alice(server.port(), "", "?room=team&user=alice");
  ASSERT_TRUE(alice.ok);
  {
    Subscription bob(server.port(), "", "?room=team&room=other&user=bob");
    // An empty name is no name, not a 400 that would make an EventSource give up.
    Subscription anon(server.port(), "", "?room=team&user=%20");
    ASSERT_TRUE(bob.ok && anon.ok);
    // Presence comes at most once a second per room: read until it shows all three.
    std::optional<SseEvent> p;
    do {
      p = next_event_of(alice.reader, "presence");
      ASSERT_TRUE(p);
    } while (field(p->data, "online") != "3");
    EXPECT_EQ(p->data, R"({"room":"team","online":3,"users":["alice","bob"]})");
  }
  std::optional<SseEvent> p;
  do {
    p = next_event_of(alice.reader, "presence");
    ASSERT_TRUE(p);
  } while (field(p->data, "online") != "1");
  EXPECT_EQ(p->data, R"({"room":"team","online":1,"users":["alice"]})");
}

// Presence names at most 100 distinct readers (every reader is still counted in `online`), and a
// room's presence goes out at most once a second, for all the changes since the last: a burst of
// joins, and then of leaves, reaches a watcher as a few events, not one per reader. (No timing is
// asserted: the burst is asked for before any answer is read, and the bound on the number of
// events would hold even if the server took seconds over it.)
TEST(Rooms, PresenceListsAtMost100NamesAndSumsUpABurstOfChanges) {
  ServerProcess server;
  Subscription watcher(server.port(), "", "?room=crowd");
  ASSERT_TRUE(watcher.ok);
  auto own = next_event_of(watcher.reader, "presence");
  ASSERT_TRUE(own);
  EXPECT_EQ(own->data, R"({"room":"crowd","online":1,"users":[]})");

  // 120 named readers (u000 to u119, so sorted by number) and 10 unnamed ones.
  constexpr int kNamed = 120, kUnnamed = 10, kJoins = kNamed + kUnnamed;
  std::vector<Client> readers;
  readers.reserve(kJoins);
  for (int i = 0; i < kJoins; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "u%03d", i);
    std::string query = i < kNamed ? std::string("?room=crowd&user=") + name : "?room=crowd";
    readers.emplace_back(server.port());
    ASSERT_TRUE(readers.back().send("GET /events" + query +
                                    " HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"));
  }
  for (Client& reader : readers) {
    auto head = reader.read_head();
    ASSERT_TRUE(head);
    ASSERT_EQ(head->status, 200);
  }
  std::string everyone =
      R"({"room":"crowd","online":)" + std::to_string(kJoins + 1) + R"(,"users":[)";
  for (int i = 0; i < 100; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "u%03d", i);
    everyone += std::string(i ? "," : "") + "\"" + name + "\"";
  }
  everyone += "]}";
  // One event per join would be 130 of them before the full count.
  int events = 0;
  std::optional<SseEvent> p;
  do {
    p = next_event_of(watcher.reader, "presence");
    ASSERT_TRUE(p);
    ++events;
  } while (field(p->data, "online") != std::to_string(kJoins + 1));
  EXPECT_LE(events, 10) << "presence events for " << kJoins << " joins";
  EXPECT_EQ(p->data, everyone);  // the first 100 names; all 131 readers counted

  // All of them leave at once: again a few events, the last with the watcher alone.
  readers.clear();
  events = 0;
  do {
    p = next_event_of(watcher.reader, "presence");
    ASSERT_TRUE(p);
    ++events;
  } while (field(p->data, "online") != "1");
  EXPECT_LE(events, 10) << "presence events for " << kJoins << " leaves";
  EXPECT_EQ(p->data, R"({"room":"crowd","online":1,"users":[]})");
}

// A limit above 1000 is not refused: at most 1000 are listed. A limit that is not a whole number
// of at least 1 is refused, and the reason says what is accepted.
TEST(Rooms, ALimitAbove1000ListsAtMost1000AndTheRefusalSaysSo) {
  ServerProcess server({"--history", "2000"});
  Client c(server.port());
  for (int i = 0; i < 1001; ++i) {
    auto r = c.post_json(R"({"user":"u","text":"m","room":"many"})");
    ASSERT_TRUE(r && r->status == 201) << (r ? r->body : "no answer");
  }
  auto page = c.get("/messages?room=many&since=0&limit=1001");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  std::vector<uint64_t> ids = ids_in(page->body);
  ASSERT_EQ(ids.size(), 1000u);
  EXPECT_EQ(ids.front(), 1u);
  EXPECT_EQ(ids.back(), 1000u);
  auto huge = c.get("/messages?room=many&since=0&limit=99999999999999999999");
  ASSERT_TRUE(huge);
  EXPECT_EQ(huge->status, 200);
  EXPECT_EQ(ids_in(huge->body).size(), 1000u);
  auto rooms = c.get("/rooms?limit=1001");
  ASSERT_TRUE(rooms);
  EXPECT_EQ(rooms->status, 200);
  EXPECT_EQ(rooms->body, R"([{"room":"many","online":0,"last_id":1001,"messages":1001}])");
  for (const char* path :
       {"/messages?limit=0", "/messages?room=many&limit=-1", "/rooms?limit=0", "/rooms?limit=x"}) {
    auto r = c.get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 400) << path;
    EXPECT_EQ(
        r->body,
        R"x({"error":"limit must be a whole number of at least 1 (at most 1000 are listed)"})x")
        << path;
  }
}

TEST(Rooms, ListsRoomsMostRecentlyActiveFirst) {
  ServerProcess server;
  post_id(server.port(), "a");
  post_id(server.port(), "b");
  uint64_t last_a = post_id(server.port(), "a");
  Subscription reader(server.port(), "", "?room=b&room=empty");
  ASSERT_TRUE(reader.ok);
  Client c(server.port());
  auto r = c.get("/rooms");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body,
            "[{\"room\":\"a\",\"online\":0,\"last_id\":" + std::to_string(last_a) +
                ",\"messages\":2},{\"room\":\"b\",\"online\":1,\"last_id\":2,\"messages\":1},"
                "{\"room\":\"empty\",\"online\":1,\"last_id\":0,\"messages\":0}]");
  auto one = c.get("/rooms?limit=1");
  ASSERT_TRUE(one);
  EXPECT_EQ(std::count(one->body.begin(), one->body.end(), '{'), 1);
  EXPECT_EQ(metric(server.port(), "ssechat_rooms"), 3u);
}

TEST(Rooms, RoomsAndTheirMessagesSurviveARestart) {
  std::string dir = make_temp_dir();
  std::vector<uint64_t> a_ids, b_ids;
  {
    ServerProcess server({"--data-dir", dir}, false);
    a_ids.push_back(post_id(server.port(), "a"));
    b_ids.push_back(post_id(server.port(), "b"));
    a_ids.push_back(post_id(server.port(), "a"));
    EXPECT_EQ(server.stop(SIGTERM), 0);
  }
  ServerProcess server({"--data-dir", dir}, false);
  Client c(server.port());
  auto a = c.get("/messages?room=a&since=0");
  ASSERT_TRUE(a);
  EXPECT_EQ(ids_in(a->body), a_ids);
  EXPECT_EQ(field(a->body, "room"), "a");
  auto b = c.get("/messages?room=b");
  EXPECT_EQ(ids_in(b->body), b_ids);
  auto rooms = c.get("/rooms");
  EXPECT_NE(rooms->body.find("\"room\":\"a\""), std::string::npos);
  EXPECT_NE(rooms->body.find("\"room\":\"b\""), std::string::npos);
  Subscription s(server.port(), "0", "?room=a&room=b");
  ASSERT_TRUE(s.ok);
  for (uint64_t want : {a_ids[0], b_ids[0], a_ids[1]})
    EXPECT_EQ(s.reader.next_message()->id, std::to_string(want));
  EXPECT_EQ(post_id(server.port(), "b"), a_ids[1] + 1);  // ids go on from the journal
}

TEST(Rooms, PastMaxRoomsTheIdleLongestIsForgottenAndItsStreamsAreReset) {
  ServerProcess server({"--max-rooms", "2"});
  uint64_t a = post_id(server.port(), "a");
  post_id(server.port(), "b");
  post_id(server.port(), "c");  // forgets a, idle longest
  Client c(server.port());
  auto rooms = c.get("/rooms");
  ASSERT_TRUE(rooms);
  EXPECT_EQ(rooms->body.find("\"room\":\"a\""), std::string::npos) << rooms->body;
  EXPECT_EQ(metric(server.port(), "ssechat_rooms"), 2u);
  EXPECT_EQ(metric(server.port(), "ssechat_rooms_forgotten_total"), 1u);
  EXPECT_NE(server.log().find("room forgotten"), std::string::npos);

  Subscription back(server.port(), std::to_string(a - 1), "?room=a");  // forgets b
  ASSERT_TRUE(back.ok);
  // Counted each time, logged once a minute: streams alone can make rooms be forgotten.
  EXPECT_EQ(metric(server.port(), "ssechat_rooms_forgotten_total"), 2u);
  std::string log = server.log();
  EXPECT_EQ(log.find("room forgotten", log.find("room forgotten") + 1), std::string::npos) << log;
  auto reset = back.reader.next();
  ASSERT_TRUE(reset);
  EXPECT_EQ(reset->event, "reset");
  EXPECT_EQ(reset->data, R"({"room":"a","oldest":2,"newest":1})");

  // Both rooms are read now: a stream for a third room is refused for now, and comes back.
  Subscription c_reader(server.port(), "", "?room=c");
  ASSERT_TRUE(c_reader.ok);
  Client refused(server.port());
  auto r = refused.get("/events?room=d");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429);
  EXPECT_FALSE(r->header("retry-after").empty());
  auto post = post_to(server.port(), "d", "u", "t");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 503);
  EXPECT_FALSE(post->header("retry-after").empty());
  EXPECT_EQ(post_id(server.port(), "c"), 4u);  // the server serves on
}

// A backlog far larger than --max-queued-bytes is replayed paced by the socket, never refused.
TEST(Rooms, AResumeLargerThanTheByteBudgetIsPacedNotRefused) {
  ServerProcess server({"--max-queued-bytes", "2097152", "--max-body", "16384"});
  std::string text;
  for (int i = 0; i < 1998; ++i) text += "\\u2028";  // six bytes each once escaped again
  Client poster(server.port());
  for (int i = 0; i < 300; ++i) {
    auto r = poster.post_json(R"({"user":"u","text":"a)" + text + R"(a"})");
    ASSERT_TRUE(r && r->status == 201);
  }
  Subscription s(server.port(), "0");
  ASSERT_TRUE(s.ok);
  for (int want = 1; want <= 300; ++want) {
    auto m = s.reader.next_message();
    ASSERT_TRUE(m) << want;
    ASSERT_EQ(m->id, std::to_string(want));
  }
  EXPECT_EQ(metric(server.port(), "ssechat_slow_consumer_disconnects_total"), 0u);
}

// What compaction dropped, and rooms that were forgotten, still reset a resuming stream after a
// restart; a forgotten room does not come back.
TEST(Rooms, ResetsAndForgottenRoomsSurviveARestart) {
  std::string dir = make_temp_dir();
  std::vector<std::string> args = {"--data-dir",  dir, "--history",           "3",
                                   "--max-rooms", "3", "--journal-max-bytes", "4096"};
  {
    ServerProcess server(args, false);
    post_id(server.port(), "gone");                            // 1
    for (int i = 0; i < 10; ++i) post_id(server.port(), "a");  // 2..11: keeps 9..11
    post_id(server.port(), "b");                               // 12
    for (int i = 0; i < 60; ++i) post_id(server.port(), "c");  // forgets gone; compacts
    EXPECT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
  }
  ServerProcess server(args, false);
  Client c(server.port());
  auto rooms = c.get("/rooms");
  ASSERT_TRUE(rooms);
  EXPECT_EQ(rooms->body.find("\"gone\""), std::string::npos) << rooms->body;
  Subscription s(server.port(), "0", "?room=a&room=gone");
  ASSERT_TRUE(s.ok);
  std::set<std::string> resets;
  for (int i = 0; i < 2; ++i) {
    auto e = s.reader.next();
    ASSERT_TRUE(e);
    ASSERT_EQ(e->event, "reset") << e->raw;
    resets.insert(e->data);
  }
  EXPECT_EQ(resets, (std::set<std::string>{R"({"room":"a","oldest":9,"newest":11})",
                                           R"({"room":"gone","oldest":2,"newest":1})"}));
  EXPECT_EQ(s.reader.next_message()->id, "9");
}

// The room of the newest message is forgotten, then the journal is rewritten from memory (the
// data directory was removed): a restart still never issues that id again.
TEST(Rooms, IdsAreNeverReusedWhenTheNewestRoomWasForgotten) {
  std::string dir = make_temp_dir();
  std::vector<std::string> args = {"--data-dir", dir, "--max-rooms", "2"};
  ServerProcess server(args, false);
  Subscription reader(server.port(), "", "?room=a");
  ASSERT_TRUE(reader.ok);
  EXPECT_EQ(post_id(server.port(), "a"), 1u);
  EXPECT_EQ(post_id(server.port(), "b"), 2u);
  {
    Subscription other(server.port(), "", "?room=c");  // forgets b
    ASSERT_TRUE(other.ok);
  }
  force_recovery(server.port(), dir);  // within a second or so
  EXPECT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
  ServerProcess again(args, false);
  EXPECT_EQ(post_id(again.port(), "a"), 3u);
}

// GET /me tells a page how many rooms one stream may read here: the smaller of
// --max-rooms-per-stream and --max-rooms, and a stream of one more is refused.
TEST(Rooms, MeSaysHowManyRoomsAStreamMayRead) {
  for (auto [args, most] : std::vector<std::pair<std::vector<std::string>, int>>{
           {{"--max-rooms-per-stream", "3"}, 3}, {{"--max-rooms", "2"}, 2}}) {
    ServerProcess server(args);
    Client c(server.port());
    auto me = c.get("/me");
    ASSERT_TRUE(me);
    EXPECT_EQ(me->body, R"({"auth":false,"max_rooms_per_stream":)" + std::to_string(most) + "}");
    std::string query = "/events?room=r0";
    for (int i = 1; i < most; ++i) query += "&room=r" + std::to_string(i);
    Client fits(server.port());
    ASSERT_TRUE(fits.send("GET " + query + " HTTP/1.1\r\nHost: x\r\n\r\n"));
    auto head = fits.read_head();
    ASSERT_TRUE(head);
    EXPECT_EQ(head->status, 200);
    EXPECT_EQ(c.get(query + "&room=one-more", "Accept: text/event-stream\r\n")->status, 400);
  }
}

TEST(Rooms, HeadMalformedQueriesAndImpossibleStreamsAreRefusedPlainly) {
  ServerProcess server({"--max-rooms", "2"});
  Client c(server.port());
  ASSERT_TRUE(c.send("HEAD /events?room=A HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto head = c.read_response(true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 400);
  EXPECT_EQ(c.get("/rooms?limit=1%")->status, 400);
  // Three rooms can never be read at once with --max-rooms 2: no "retry later" that never works.
  EXPECT_EQ(c.get("/events?room=a&room=b&room=c", "Accept: text/event-stream\r\n")->status, 400);
  uint64_t id = post_id(server.port(), "a");
  Subscription padded(server.port(), std::to_string(id - 1) + " ", "?room=a");  // OWS around it
  ASSERT_TRUE(padded.ok);
  auto first = padded.reader.next();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->event, "");
  EXPECT_EQ(first->id, std::to_string(id));
}

// More rooms forgotten than --max-rooms: the oldest name drops out of those remembered, and the
// room made again with that name still resets a stream that resumes from before its messages.
TEST(Rooms, ARoomForgottenLongAgoStillResetsWhenMadeAgain) {
  ServerProcess server({"--max-rooms", "2"});
  for (int i = 0; i < 3; ++i) post_id(server.port(), "b");                         // 1..3
  for (const char* room : {"x1", "x2", "x3", "x4"}) post_id(server.port(), room);  // 4..7
  EXPECT_EQ(post_id(server.port(), "b"), 8u);
  EXPECT_EQ(resumed(server.port(), "1", "?room=b", 8), (std::vector<std::string>{"reset b", "8"}));
}

// A compaction or a recovery writes every room's floor before the messages: after a restart the
// rooms still there keep their own resets, however many names were forgotten besides them.
TEST(Rooms, RoomsKeepTheirResetsAfterARewriteAndARestart) {
  for (bool recovery : {false, true}) {
    SCOPED_TRACE(recovery ? "recovery" : "compaction");
    std::string dir = make_temp_dir();
    std::vector<std::string> args = {"--data-dir", dir, "--max-rooms",         "2",
                                     "--history",  "1", "--journal-max-bytes", "4096"};
    std::vector<std::string> want = {"reset a", "reset b", "6", "8"};
    {
      ServerProcess server(args, false);
      for (const char* room : {"x1", "x2", "a", "b", "a", "a", "b", "b"})  // 1..8
        post_id(server.port(), room, std::string(1000, 'm'));
      EXPECT_EQ(resumed(server.port(), "4", "?room=a&room=b", 8), want);
      if (recovery) force_recovery(server.port(), dir);
      EXPECT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
    }
    ServerProcess server(args, false);
    EXPECT_EQ(resumed(server.port(), "4", "?room=a&room=b", 8), want);
  }
}

// The newest ids were a forgotten room's, and the journal was rewritten from memory: after a
// restart, a stream resuming from the newest id is up to date, not "from the future".
TEST(Rooms, TheNewestIdOfAForgottenRoomIsNoResetAfterARestart) {
  std::string dir = make_temp_dir();
  std::vector<std::string> args = {"--data-dir", dir, "--max-rooms", "1"};
  {
    ServerProcess server(args, false);
    for (int i = 0; i < 3; ++i) post_id(server.port(), "x");
    {
      Subscription y(server.port(), "", "?room=y");  // forgets x
      ASSERT_TRUE(y.ok);
    }
    force_recovery(server.port(), dir);
    EXPECT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
  }
  ServerProcess server(args, false);
  Subscription s(server.port(), "3", "?room=y");
  ASSERT_TRUE(s.ok);
  EXPECT_EQ(post_id(server.port(), "y"), 4u);
  auto first = s.reader.next();
  while (first && first->event == "presence") first = s.reader.next();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->event, "") << first->raw;
  EXPECT_EQ(first->id, "4");
}

// A room a stream makes again after it was forgotten has its old last id, and is listed by it.
TEST(Rooms, ARoomMadeAgainIsListedByItsLastId) {
  ServerProcess server({"--max-rooms", "3"});
  for (const char* room : {"x", "y", "z"}) post_id(server.port(), room);  // 1..3
  {
    Subscription x(server.port(), "", "?room=x");  // x is idle last from now on
    ASSERT_TRUE(x.ok);
  }
  post_id(server.port(), "w");  // 4: forgets y
  {
    Subscription y(server.port(), "", "?room=y");  // forgets z, makes y again
    ASSERT_TRUE(y.ok);
  }
  Client c(server.port());
  auto r = c.get("/rooms");
  ASSERT_TRUE(r);
  size_t w = r->body.find(R"("room":"w")"), y = r->body.find(R"("room":"y")"),
         x = r->body.find(R"("room":"x")");
  ASSERT_NE(x, std::string::npos) << r->body;
  EXPECT_LT(w, y) << r->body;
  EXPECT_LT(y, x) << r->body;
  EXPECT_NE(r->body.find(R"("last_id":2,"messages":0})", y), std::string::npos) << r->body;
  EXPECT_EQ(r->body.find(R"("room":"z")"), std::string::npos) << r->body;
}

// A POST to a new room forgets the room idle longest, and that forgetting may start a compaction:
// the message being committed is part of what the rewritten journal keeps (it was left out when
// the compaction ran in the middle of its commit).
TEST(Rooms, TheMessageWhoseRoomForgotAnotherSurvivesTheCompactionItStarted) {
  std::string dir = make_temp_dir();
  uint64_t last = 0;
  std::string room;
  {
    ServerProcess server({"--data-dir", dir, "--max-rooms", "2", "--journal-max-bytes", "4096"},
                         false);
    uint64_t before = 0;
    for (int i = 0; i < 400; ++i) {
      room = "r" + std::to_string(i);
      last = post_id(server.port(), room, "m" + std::to_string(i));
      ASSERT_GT(last, 0u);
      uint64_t size = metric(server.port(), "ssechat_journal_bytes");
      if (i > 2 && size < before) break;  // this POST's forgetting compacted the journal
      before = size;
    }
    ASSERT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
  }
  ServerProcess server({"--data-dir", dir, "--max-rooms", "2"}, false);
  Client c(server.port());
  auto r = c.get("/messages?room=" + room);
  ASSERT_TRUE(r);
  EXPECT_NE(r->body.find("{\"id\":" + std::to_string(last) + ","), std::string::npos) << r->body;
}
