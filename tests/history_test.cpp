// Nothing lost: resume with Last-Event-ID, reset events, GET /messages paging, idempotent POSTs,
// heartbeats, kill -9 and journal damage, over real sockets against the real binary.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "test_server.h"

using namespace testing_support;

namespace {

void post_n(uint16_t port, int n, const std::string& prefix = "m") {
  Client c(port);
  for (int i = 0; i < n; ++i) {
    auto r = c.post_json("{\"user\":\"u\",\"text\":\"" + prefix + std::to_string(i) + "\"}");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 201);
  }
}

std::vector<uint64_t> range(uint64_t from, uint64_t to) {
  std::vector<uint64_t> v;
  for (uint64_t i = from; i <= to; ++i) v.push_back(i);
  return v;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::vector<uint64_t> kept_ids(uint16_t port) {
  Client c(port);
  auto r = c.get("/messages?since=0&limit=1000");
  return r && r->status == 200 ? ids_in(r->body) : std::vector<uint64_t>{};
}

}  // namespace

TEST(History, ResumeWithHeaderOrQueryThenLive) {
  ServerProcess server;
  post_n(server.port(), 10);
  // Whitespace around the id is no part of it, in the query as in the header.
  for (const char* how : {"header", "query", "query with spaces"}) {
    SCOPED_TRACE(how);
    bool header = std::string(how) == "header";
    std::string query = std::string(how) == "query" ? "?lastEventId=4" : "?lastEventId=+4%20";
    Subscription sub(server.port(), header ? "4" : "", header ? "" : query);
    ASSERT_TRUE(sub.ok);
    for (int want = 5; want <= 10; ++want) {
      auto ev = sub.reader.next_message();
      ASSERT_TRUE(ev);
      EXPECT_EQ(ev->id, std::to_string(want));
    }
  }
  // The header wins over the query string (EventSource keeps the URL but sends the header).
  Subscription both(server.port(), "8", "?lastEventId=2");
  ASSERT_TRUE(both.ok);
  EXPECT_EQ(both.reader.next_message()->id, "9");
  post_n(server.port(), 1, "live");
  EXPECT_EQ(both.reader.next_message()->id, "10");
  EXPECT_EQ(both.reader.next_message()->id, "11");
}

TEST(History, ResetWhenTheIdIsNotKept) {
  ServerProcess server({"--history", "5"});
  post_n(server.port(), 10);
  for (const char* last : {"2", "999", "not-a-number"}) {
    SCOPED_TRACE(last);
    Subscription sub(server.port(), last);
    ASSERT_TRUE(sub.ok);
    auto first = sub.reader.next();
    ASSERT_TRUE(first);
    EXPECT_EQ(first->event, "reset");
    EXPECT_EQ(first->data, "{\"room\":\"general\",\"oldest\":6,\"newest\":10}");
    for (int want = 6; want <= 10; ++want)
      EXPECT_EQ(sub.reader.next_message()->id, std::to_string(want));
  }
  Subscription exact(server.port(), "5");  // just before the oldest kept: nothing is missing
  auto first = exact.reader.next();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->event, "");
  EXPECT_EQ(first->id, "6");
}

TEST(History, GetMessagesPages) {
  ServerProcess server;
  post_n(server.port(), 25);
  Client c(server.port());
  EXPECT_EQ(ids_in(c.get("/messages?since=0&limit=10")->body), range(1, 10));
  EXPECT_EQ(ids_in(c.get("/messages?since=10&limit=10")->body), range(11, 20));
  EXPECT_EQ(ids_in(c.get("/messages?since=20&limit=10")->body), range(21, 25));
  EXPECT_EQ(ids_in(c.get("/messages?limit=5")->body), range(21, 25));  // newest
  EXPECT_EQ(ids_in(c.get("/messages")->body), range(1, 25));           // default limit 100
  EXPECT_EQ(ids_in(c.get("/messages?since=0&limit=5000")->body), range(1, 25));
  EXPECT_EQ(c.get("/messages?since=25")->body, "[]");
  auto full = c.get("/messages?since=0&limit=1");
  EXPECT_EQ(full->header("content-type"), "application/json");
  EXPECT_TRUE(full->body.starts_with(
      "[{\"id\":1,\"room\":\"general\",\"user\":\"u\",\"text\":\"m0\",\"ts\":"))
      << full->body;
  // Paging back: the newest before an id, or a range between two.
  EXPECT_EQ(ids_in(c.get("/messages?before=21&limit=5")->body), range(16, 20));
  EXPECT_EQ(ids_in(c.get("/messages?before=3")->body), range(1, 2));
  EXPECT_EQ(ids_in(c.get("/messages?since=10&before=14")->body), range(11, 13));
  EXPECT_EQ(c.get("/messages?before=1")->body, "[]");
  auto zero = c.get("/messages?before=0");
  EXPECT_EQ(zero->status, 400);
  EXPECT_NE(zero->body.find("before must be a message id of at least 1"), std::string::npos)
      << zero->body;
  EXPECT_EQ(c.get("/messages?before=x")->status, 400);
  EXPECT_EQ(c.get("/messages?limit=0")->status, 400);
  EXPECT_EQ(c.get("/messages?since=abc")->status, 400);
  EXPECT_EQ(c.get("/messages?limit=-1")->status, 400);
  // One value each: which of two would count is anybody's guess.
  for (const char* target : {"/messages?limit=5&limit=10", "/messages?since=1&since=2",
                             "/messages?room=a&room=b", "/rooms?limit=1&limit=2"}) {
    auto twice = c.get(target);
    EXPECT_EQ(twice->status, 400) << target;
    EXPECT_NE(twice->body.find("more than once"), std::string::npos) << twice->body;
  }
}

// A page holds at most 1 MiB: paging on from `since` gives the oldest that fit, the newest page
// (no `since`) the newest (a walkthrough found it gave the oldest, skipping the newest ones).
TEST(History, APageOverAMebibyteKeepsTheEndItWasAskedFor) {
  ServerProcess server({"--history", "1000"});
  post_n(server.port(), 600, std::string(1990, 'x'));  // about 2 KB each: 1.2 MB in all
  Client c(server.port());
  std::vector<uint64_t> newest = ids_in(c.get("/messages?limit=1000")->body);
  ASSERT_GT(newest.size(), 400u);
  ASSERT_LT(newest.size(), 600u);
  EXPECT_EQ(newest, range(600 - newest.size() + 1, 600));
  std::vector<uint64_t> oldest = ids_in(c.get("/messages?since=0&limit=1000")->body);
  EXPECT_EQ(oldest, range(1, oldest.size()));
  EXPECT_EQ(oldest.size(), newest.size());
}

TEST(History, NonceMakesPostIdempotent) {
  ServerProcess server;
  Subscription sub(server.port());
  ASSERT_TRUE(sub.ok);
  Client c(server.port());
  auto first = c.post_json(R"({"user":"alice","text":"once","nonce":"abc-1"})");
  ASSERT_EQ(first->status, 201);
  EXPECT_EQ(json_id(first->body), 1u);
  auto retry = c.post_json(R"({"user":"alice","text":"once","nonce":"abc-1"})");
  ASSERT_EQ(retry->status, 200);
  EXPECT_EQ(json_id(retry->body), 1u);
  auto other_user =
      c.post_json(R"({"user":"bob","text":"same nonce, other user","nonce":"abc-1"})");
  ASSERT_EQ(other_user->status, 201);
  EXPECT_EQ(json_id(other_user->body), 2u);
  EXPECT_EQ(kept_ids(server.port()), range(1, 2));
  EXPECT_EQ(sub.reader.next_message()->id, "1");
  EXPECT_EQ(sub.reader.next_message()->id, "2");  // the retry was not broadcast
}

// A nonce reused for another message (other text, or other room) is a 422 that names the id it
// was used for, rather than a 200 behind which the new message is lost.
TEST(History, ANonceReusedForAnotherMessageIs422) {
  ServerProcess server;
  Client c(server.port());
  Client quiet(server.port());  // a room made before id 1, and read, so it has no message
  ASSERT_TRUE(quiet.send("GET /events?room=quiet HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(quiet.read_head());
  ASSERT_EQ(c.post_json(R"({"user":"al","text":"lunch?","room":"a","nonce":"n-1"})")->status, 201);
  ASSERT_EQ(c.post_json(R"({"user":"al","text":"other","room":"b"})")->status, 201);  // id 2
  ASSERT_EQ(c.post_json(R"({"user":"al","text":"other"})")->status, 201);  // id 3, general
  // The same message, spelled another way (a form, spaces the server trims), is a retry.
  auto same = c.post_form("user=al&text=+lunch%3F+&room=a&nonce=n-1");
  ASSERT_TRUE(same);
  EXPECT_EQ(same->status, 200);
  EXPECT_EQ(json_id(same->body), 1u);
  for (const char* body : {R"({"user":"al","text":"dinner?","room":"a","nonce":"n-1"})",
                           R"({"user":"al","text":"lunch?","room":"b","nonce":"n-1"})",
                           R"({"user":"al","text":"lunch?","nonce":"n-1"})",
                           // a room that does not exist (yet), or has no message after id 1
                           R"({"user":"al","text":"lunch?","room":"fresh","nonce":"n-1"})",
                           R"({"user":"al","text":"lunch?","room":"quiet","nonce":"n-1"})"}) {
    auto reused = c.post_json(body);
    ASSERT_TRUE(reused);
    EXPECT_EQ(reused->status, 422) << body;
    EXPECT_NE(reused->body.find("(id 1)"), std::string::npos) << reused->body;
  }
  EXPECT_EQ(kept_ids(server.port()), range(3, 3));  // general's: nothing was posted again
  auto rooms = c.get("/rooms");
  ASSERT_TRUE(rooms);
  EXPECT_EQ(rooms->body.find("fresh"), std::string::npos) << rooms->body;
}

TEST(History, HeartbeatOnAnIdleStream) {
  ServerProcess server({"--heartbeat", "1"});
  Client c(server.port());
  c.send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(c.read_head());
  while (c.buffer().find(": ping\n") == std::string::npos) ASSERT_TRUE(c.fill());
  // A line, no block of its own: a blank line after it is an empty event to some clients.
  EXPECT_EQ(c.buffer().find(": ping\n\n"), std::string::npos);
}

// The first ping comes about --heartbeat after the stream's opening, whatever the phase of the
// server's clock when it opened (each stream opens 0.4–1.4 s after a ping the server sent), not
// up to twice that.
TEST(History, FirstHeartbeatComesAfterOneHeartbeat) {
  ServerProcess server({"--heartbeat", "2"});
  for (int i = 0; i < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(i == 0 ? 0 : 500 * i - 100));
    Client c(server.port());
    auto opened = std::chrono::steady_clock::now();
    c.send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(c.read_head());
    while (c.buffer().find(": ping\n") == std::string::npos) ASSERT_TRUE(c.fill());
    auto waited = std::chrono::steady_clock::now() - opened;
    EXPECT_LT(waited, std::chrono::milliseconds(3300)) << "stream " << i;
  }
}

TEST(History, SubscribersReconnectingAtManyPointsSeeExactlyThePostedSequence) {
  ServerProcess server;
  const int total = 400;
  std::atomic<bool> done{false};
  std::thread publisher([&] {
    Client c(server.port());
    for (int i = 1; i <= total; ++i) {
      auto r = c.post_json("{\"user\":\"pub\",\"text\":\"n" + std::to_string(i) + "\"}");
      if (!r || r->status != 201) break;
      if (i % 20 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    done = true;
  });
  std::vector<std::thread> readers;
  std::vector<std::vector<std::string>> streams(6);
  for (int s = 0; s < 6; ++s) {
    readers.emplace_back([&, s] {
      std::mt19937 rng(s);
      std::string last = "0";  // from the very first message, however late this reader starts
      auto& got = streams[s];
      while (got.size() < static_cast<size_t>(total)) {
        Subscription sub(server.port(), last);
        if (!sub.ok) return;
        int take = 1 + static_cast<int>(rng() % 60);  // drop the connection after this many
        for (int k = 0; k < take && got.size() < static_cast<size_t>(total); ++k) {
          auto ev = sub.reader.next_message();
          if (!ev) return;
          got.push_back(ev->data);
          last = ev->id;
        }
      }
    });
  }
  publisher.join();
  for (auto& t : readers) t.join();
  for (int s = 0; s < 6; ++s) {
    SCOPED_TRACE(s);
    ASSERT_EQ(streams[s].size(), static_cast<size_t>(total));
    for (int i = 1; i <= total; ++i)
      ASSERT_NE(streams[s][i - 1].find("\"text\":\"n" + std::to_string(i) + "\""),
                std::string::npos)
          << "position " << i << ": " << streams[s][i - 1];
  }
}

TEST(History, SlowSubscriberIsCutOffThenCatchesUpWithNothingMissing) {
  ServerProcess server({"--client-queue", "16"});
  Subscription slow(server.port());
  ASSERT_TRUE(slow.ok);
  std::string big(1900, 'q');
  Client poster(server.port());
  int posted = 0;
  // Burst until the server has given up on the (not reading) subscriber.
  for (;;) {
    for (int k = 0; k < 200; ++k, ++posted) {
      auto r = poster.post_json("{\"user\":\"b\",\"text\":\"" + std::to_string(posted + 1) + big +
                                "\"}");
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 201);
    }
    auto m = Client(server.port()).get("/metrics");
    if (m->body.find("ssechat_slow_consumer_disconnects_total 1\n") != std::string::npos) break;
    ASSERT_LT(posted, 40000);
  }
  std::vector<uint64_t> seen;
  while (auto ev = slow.reader.next_message()) seen.push_back(std::stoull(ev->id));  // to the cut
  ASSERT_LT(seen.size(), static_cast<size_t>(posted));
  Subscription again(server.port(), std::to_string(seen.empty() ? 0 : seen.back()));
  ASSERT_TRUE(again.ok);
  while (seen.size() < static_cast<size_t>(posted)) {
    auto ev = again.reader.next_message();
    ASSERT_TRUE(ev);
    seen.push_back(std::stoull(ev->id));
  }
  EXPECT_EQ(seen, range(1, static_cast<uint64_t>(posted)));
}

TEST(History, KillDashNineLosesNoAcknowledgedMessage) {
  std::string dir = make_temp_dir();
  std::vector<std::pair<uint64_t, std::string>> acked;
  std::mutex mu;
  {
    ServerProcess server({"--data-dir", dir}, false);
    std::atomic<bool> stop{false};
    std::thread poster([&] {
      Client c(server.port());
      for (int i = 0; !stop; ++i) {
        std::string text = "durable " + std::to_string(i);
        auto r = c.post_json("{\"user\":\"k\",\"text\":\"" + text + "\"}");
        if (!r || r->status != 201) return;  // the server died under us
        std::lock_guard<std::mutex> lock(mu);
        acked.emplace_back(json_id(r->body), text);
      }
    });
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      std::lock_guard<std::mutex> lock(mu);
      if (acked.size() >= 300) break;
    }
    server.stop(SIGKILL);
    stop = true;
    poster.join();
  }
  ServerProcess restarted({"--data-dir", dir}, false);
  Client c(restarted.port());
  auto r = c.get("/messages?since=0&limit=1000");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body << restarted.log();
  std::vector<uint64_t> ids = ids_in(r->body);
  ASSERT_GE(ids.size(), acked.size()) << restarted.log();
  std::set<uint64_t> unique(ids.begin(), ids.end());
  EXPECT_EQ(unique.size(), ids.size()) << "an id appears twice";
  for (auto& [id, text] : acked) {
    EXPECT_TRUE(unique.count(id)) << "acknowledged id " << id << " is missing";
    EXPECT_NE(r->body.find("{\"id\":" + std::to_string(id) +
                           ",\"room\":\"general\",\"user\":\"k\",\"text\":\"" + text + "\""),
              std::string::npos);
  }
  uint64_t next = post_message(restarted.port(), "k", "after restart");
  EXPECT_GT(next, ids.empty() ? 0 : ids.back());  // ids continue, none reused
}

TEST(History, DamagedJournalStillStartsAndKeepsWhatIsIntact) {
  std::string dir = make_temp_dir();
  {
    ServerProcess server({"--data-dir", dir, "--fsync", "always"}, false);
    post_n(server.port(), 6);
    ASSERT_EQ(server.stop(SIGTERM), 0);
  }
  std::string journal = dir + "/journal";
  const std::string pristine = read_file(journal);
  ASSERT_FALSE(pristine.empty());
  size_t record = pristine.size() / 6;  // equal-sized records: "m0".."m5"

  struct Damage {
    const char* name;
    std::string bytes;
    std::vector<uint64_t> survivors;
    const char* warning;
    bool tail = false;  // cut: the ids it could have held are not given again
  } cases[] = {
      {"truncated last record", pristine.substr(0, pristine.size() - 3), range(1, 5), "cut", true},
      {"garbage tail", pristine + "\x13\x37garbage\xff\xfe\x00junk", range(1, 6), "cut", true},
      {"a whole last record corrupt",
       [&] {
         std::string b = pristine;
         b[5 * record + record / 2] ^= 0x55;  // inside record 6: complete, acknowledged
         return b;
       }(),
       range(1, 5), "cut", true},
      {"flipped byte in the middle",
       [&] {
         std::string b = pristine;
         b[2 * record + record / 2] ^= 0x55;  // inside record 3
         return b;
       }(),
       {1, 2, 4, 5, 6},
       "1 message(s) lost"},
  };
  for (const Damage& d : cases) {
    SCOPED_TRACE(d.name);
    write_file(journal, d.bytes);
    ServerProcess server({"--data-dir", dir}, false);
    EXPECT_EQ(kept_ids(server.port()), d.survivors);
    if (d.tail) {  // a stream from the last intact id is told, not silently short
      Subscription s(server.port(), std::to_string(d.survivors.back()));
      ASSERT_TRUE(s.ok);
      auto first = s.reader.next();
      ASSERT_TRUE(first);
      EXPECT_EQ(first->event, "reset") << first->raw;
    }
    uint64_t next = post_message(server.port(), "u", "new");
    if (d.tail)
      EXPECT_GT(next, d.survivors.back() + 1);  // whatever was cut may have had the next id
    else
      EXPECT_EQ(next, d.survivors.back() + 1);
    ASSERT_EQ(server.stop(SIGTERM), 0);
    std::string log = server.log();
    EXPECT_NE(log.find("level=warn"), std::string::npos) << log;
    EXPECT_NE(log.find(d.warning), std::string::npos) << log;
    // The journal was rewritten clean: a second start warns no more.
    ServerProcess again({"--data-dir", dir}, false);
    EXPECT_EQ(again.stop(SIGTERM), 0);
    // (A machine with few descriptors adds a warning of its own at every start.)
    std::istringstream lines(again.log());
    for (std::string line; std::getline(lines, line);)
      EXPECT_TRUE(line.find("level=warn") == std::string::npos ||
                  line.find("open-file limit") != std::string::npos)
          << line;
  }
}

TEST(History, JournalStaysBoundedAndKeepsTheHistoryWindow) {
  std::string dir = make_temp_dir();
  {
    ServerProcess server({"--data-dir", dir, "--history", "50", "--journal-max-bytes", "8192"},
                         false);
    post_n(server.port(), 600);
    ASSERT_EQ(server.stop(SIGTERM), 0);
  }
  struct stat st;
  ASSERT_EQ(stat((dir + "/journal").c_str(), &st), 0);
  EXPECT_LE(st.st_size, 2 * 8192 + 4096);
  ServerProcess server({"--data-dir", dir, "--history", "50"}, false);
  EXPECT_EQ(kept_ids(server.port()), range(551, 600));
  EXPECT_EQ(post_message(server.port(), "u", "next"), 601u);
}

TEST(History, FsyncAlwaysAcknowledgesAfterTheDisk) {
  std::string dir = make_temp_dir();
  ServerProcess server({"--data-dir", dir, "--fsync", "always"}, false);
  Subscription sub(server.port());
  ASSERT_TRUE(sub.ok);
  Client c(server.port());
  // Pipelined POSTs, each waiting for its sync, still answer in order.
  std::string batch;
  for (int i = 1; i <= 5; ++i) {
    std::string body = "{\"user\":\"s\",\"text\":\"t" + std::to_string(i) + "\"}";
    batch +=
        "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
  }
  ASSERT_TRUE(c.send(batch));
  for (int i = 1; i <= 5; ++i) {
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 201);
    EXPECT_EQ(json_id(r->body), static_cast<uint64_t>(i));
    EXPECT_EQ(sub.reader.next_message()->id, std::to_string(i));
  }
}

// A record lost from the middle of the journal, its room unknown: a stream resuming from before it
// hears `reset` for every room it reads, then gets every intact message; one resuming from after
// it misses nothing and hears nothing. The same after the journal was rewritten clean.
TEST(History, AMessageLostInTheMiddleOfTheJournalResetsStreamsFromBeforeIt) {
  std::string dir = make_temp_dir();
  {
    ServerProcess server({"--data-dir", dir, "--fsync", "always"}, false);
    Client c(server.port());
    for (int i = 0; i < 6; ++i) {  // 1 a, 2 b, 3 a, …: records of equal size
      std::string room = i % 2 ? "b" : "a";
      auto r = c.post_json(R"({"user":"u","text":"m)" + std::to_string(i) + R"(","room":")" + room +
                           R"("})");
      ASSERT_TRUE(r && r->status == 201);
    }
    ASSERT_EQ(server.stop(SIGTERM), 0);
  }
  std::string journal = dir + "/journal";
  std::string bytes = read_file(journal);
  size_t record = bytes.size() / 6;
  bytes[2 * record + record / 2] ^= 0x55;  // inside record 3 (room a)
  write_file(journal, bytes);
  for (int start = 0; start < 2; ++start) {
    SCOPED_TRACE(start == 0 ? "damaged" : "rewritten");
    ServerProcess server({"--data-dir", dir}, false);
    auto events = [&](const std::string& last_event_id) {
      Subscription s(server.port(), last_event_id, "?room=a&room=b");
      EXPECT_TRUE(s.ok);
      std::vector<std::string> got;
      while (auto e = s.reader.next()) {
        if (e->event == "presence") continue;
        got.push_back(e->event.empty() ? e->id : e->event + " " + field(e->data, "room"));
        if (e->id == "6") break;
      }
      return got;
    };
    EXPECT_EQ(events("1"), (std::vector<std::string>{"reset a", "reset b", "2", "4", "5", "6"}));
    EXPECT_EQ(events("3"), (std::vector<std::string>{"4", "5", "6"}));
    ASSERT_EQ(server.stop(SIGTERM), 0);
  }
}
