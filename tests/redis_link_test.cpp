// RedisLink over a real redis-server of the test's own: hiredis driven by our reactor, commands
// and replies in order, binary-safe arguments, AUTH and SELECT from the URL, and what happens to
// waiting commands when Redis goes away and comes back.
#include "redis_link.h"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

#include "reactor.h"
#include "redis_scripts.h"
#include "redis_server.h"
#include "run_loop.h"

using sse::RedisEndpoint;
using sse::RedisLink;
using testing_support::RedisServer;
using testing_support::run_until;

namespace {

RedisEndpoint endpoint_of(const std::string& url) {
  std::string error;
  auto e = sse::parse_redis_url(url, error);
  EXPECT_TRUE(e) << url << ": " << error;
  return e.value_or(RedisEndpoint{});
}

struct Fixture {
  sse::Reactor reactor;
  RedisLink link{reactor};
  bool up = false;
  std::string down;
  Fixture() {
    reactor.every(std::chrono::milliseconds(20), [] {});  // wakes the loop to check run_until
    link.on_up = [this] { up = true; };
    link.on_down = [this](const std::string& why) { down = why.empty() ? "?" : why; };
  }
  bool connect(const std::string& url) {
    std::string error;
    up = false;
    down.clear();
    if (!link.connect(endpoint_of(url), error)) {
      down = error;
      return false;
    }
    return run_until(reactor, [&] { return up || !down.empty(); }) && up;
  }
  // Sends one command and waits for its reply: "(nil)" when the link dropped first.
  std::string call(const std::vector<std::string_view>& argv) {
    std::string out;
    bool answered = false;
    bool sent = link.command(argv, [&](redisReply* r) {
      answered = true;
      if (!r)
        out = "(nil)";
      else if (r->type == REDIS_REPLY_INTEGER)
        out = std::to_string(r->integer);
      else if (r->str)
        out = std::string(r->str, r->len);
      else
        out = "type " + std::to_string(r->type);
    });
    if (!sent) return "(not sent)";
    run_until(reactor, [&] { return answered; });
    return out;
  }
};

}  // namespace

TEST(RedisUrl, Table) {
  struct Case {
    const char* url;
    const char* host;
    int port;
    const char* path;
    const char* user;
    const char* password;
    int db;
  } ok[] = {
      {"redis://127.0.0.1", "127.0.0.1", 6379, "", "", "", 0},
      {"redis://redis.internal:6380", "redis.internal", 6380, "", "", "", 0},
      {"redis://:s3cret@127.0.0.1:7000/2", "127.0.0.1", 7000, "", "", "s3cret", 2},
      {"redis://chat:pw@h/0", "h", 6379, "", "chat", "pw", 0},
      {"redis://[::1]:6390/1", "::1", 6390, "", "", "", 1},
      {"redis://[::1]", "::1", 6379, "", "", "", 0},
      {"redis://h/", "h", 6379, "", "", "", 0},
      {"unix:///run/redis/redis.sock", "", 6379, "/run/redis/redis.sock", "", "", 0},
      {"redis://chat@h", "h", 6379, "", "chat", "", 0},
      {"redis://chat:@h", "h", 6379, "", "chat", "", 0},
      {"redis://:p%40ss%2Fx@h:1/3", "h", 1, "", "", "p@ss/x", 3},
      {"unix://:pw@/run/r.sock?db=2", "", 6379, "/run/r.sock", "", "pw", 2},
      {"unix://u:@/run/r.sock", "", 6379, "/run/r.sock", "u", "", 0},
      {"unix:///run/r.sock?password=p%40ss&user=u&db=1", "", 6379, "/run/r.sock", "u", "p@ss", 1},
  };
  for (const Case& c : ok) {
    std::string error;
    auto e = sse::parse_redis_url(c.url, error);
    ASSERT_TRUE(e) << c.url << ": " << error;
    EXPECT_EQ(e->host, c.host) << c.url;
    EXPECT_EQ(e->port, c.port) << c.url;
    EXPECT_EQ(e->unix_path, c.path) << c.url;
    EXPECT_EQ(e->username, c.user) << c.url;
    EXPECT_EQ(e->password, c.password) << c.url;
    EXPECT_EQ(e->db, c.db) << c.url;
  }
  for (const char* bad :
       {"", "http://h", "redis://", "redis://h:0", "redis://h:65536", "redis://h:x", "redis://h/x",
        "redis://[::1", "redis://[::1]x", "unix://relative.sock", "unix://", "redis://:%zz@h",
        "unix:///s?db=x", "unix:///s?colour=blue", "unix://:pw@"}) {
    std::string error;
    EXPECT_FALSE(sse::parse_redis_url(bad, error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

TEST(RedisLink, CommandsAndRepliesBinarySafeAndInOrder) {
  RedisServer redis;
  Fixture f;
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  std::string value("a\0b\r\nc", 6);
  EXPECT_EQ(f.call({"SET", "k", value}), "OK");
  EXPECT_EQ(f.call({"GET", "k"}), value);
  // A thousand at once (pipelined): every reply, in order.
  std::vector<long long> seen;
  for (int i = 0; i < 1000; ++i)
    ASSERT_TRUE(
        f.link.command({"INCR", "n"}, [&](redisReply* r) { seen.push_back(r ? r->integer : -1); }));
  EXPECT_EQ(f.link.waiting(), 1000u);
  ASSERT_TRUE(run_until(f.reactor, [&] { return seen.size() == 1000; }));
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(seen[i], i + 1);
  EXPECT_EQ(f.link.waiting(), 0u);
  EXPECT_EQ(f.call({"XADD", "s", "*", "data", value}).size(), 15u);  // "<ms>-<seq>"
  EXPECT_EQ(redis.cli({"XLEN", "s"}), "1");
}

TEST(RedisLink, WaitingCommandsGetNothingWhenRedisGoesAndTheLinkComesBack) {
  RedisServer redis;
  Fixture f;
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  redis.pause();  // open but stuck: the command waits
  int nulls = 0;
  ASSERT_TRUE(f.link.command({"PING"}, [&](redisReply* r) { nulls += r == nullptr; }));
  redis.stop(9);  // still stopped: it never answers
  ASSERT_TRUE(run_until(f.reactor, [&] { return !f.down.empty(); }));
  EXPECT_FALSE(f.link.up());
  EXPECT_FALSE(f.link.command({"PING"}, [](redisReply*) {}));
  EXPECT_EQ(nulls, 1);  // the waiting command learns it will get no answer, once
  redis.start();
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  EXPECT_EQ(f.call({"PING"}), "PONG");
}

// Closing the link from inside one of its own reply callbacks (what an owner that gives up does)
// answers the other waiting commands with nullptr once, and the link can connect again at once.
TEST(RedisLink, CloseFromInsideAReplyThenConnectAgain) {
  RedisServer redis;
  Fixture f;
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  int answered = 0, lost = 0;
  ASSERT_TRUE(f.link.command({"PING"}, [&](redisReply* r) {
    ++answered;
    EXPECT_TRUE(r);
    f.link.close();
  }));
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(f.link.command({"PING"}, [&](redisReply* r) { lost += r == nullptr; }));
  ASSERT_TRUE(run_until(f.reactor, [&] { return answered == 1 && lost == 3; }));
  EXPECT_FALSE(f.link.active());
  EXPECT_TRUE(f.down.empty());  // close() is the owner's own doing: no on_down
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  EXPECT_EQ(f.call({"PING"}), "PONG");
}

TEST(RedisLink, NothingListeningIsReportedNotFatal) {
  uint16_t port;
  {
    RedisServer redis;
    port = redis.port();
  }  // gone: nothing listens there now
  Fixture f;
  EXPECT_FALSE(f.connect("redis://127.0.0.1:" + std::to_string(port)));
  EXPECT_FALSE(f.down.empty());
  EXPECT_FALSE(f.link.up());
}

TEST(RedisLink, PasswordAndDatabaseFromTheUrl) {
  RedisServer redis({"--requirepass", "s3cret"});
  Fixture f;
  std::string base = "127.0.0.1:" + std::to_string(redis.port());
  EXPECT_FALSE(f.connect("redis://:wrong@" + base));
  EXPECT_NE(f.down.find("AUTH"), std::string::npos) << f.down;
  ASSERT_TRUE(f.connect("redis://:s3cret@" + base + "/3")) << f.down;
  EXPECT_EQ(f.call({"SET", "where", "three"}), "OK");
  EXPECT_EQ(redis.cli({"-a", "s3cret", "--no-auth-warning", "-n", "3", "GET", "where"}), "three");
  f.link.close();
  EXPECT_FALSE(f.link.up());
  EXPECT_FALSE(f.connect("redis://" + base));  // no password: the first command is refused
}

// Escapes in the password, an ACL user that needs no password, and a socket with a password and a
// database.
TEST(RedisLink, UsersEscapesAndSocketsFromTheUrl) {
  char tmpl[] = "/tmp/sse-redis-sock-XXXXXX";
  std::string sock = std::string(mkdtemp(tmpl)) + "/redis.sock";
  RedisServer redis({"--requirepass", "p@ss w", "--unixsocket", sock});
  std::string base = "127.0.0.1:" + std::to_string(redis.port());
  Fixture f;
  ASSERT_TRUE(f.connect("redis://:p%40ss%20w@" + base)) << f.down;
  EXPECT_EQ(f.call({"ACL", "SETUSER", "chat", "on", "nopass", "~*", "&*", "+@all"}), "OK");
  f.link.close();
  for (std::string as_chat : {"redis://chat@" + base, "redis://chat:@" + base + "/1"}) {
    ASSERT_TRUE(f.connect(as_chat)) << as_chat << ": " << f.down;
    EXPECT_EQ(f.call({"ACL", "WHOAMI"}), "chat") << as_chat;
    f.link.close();
  }
  ASSERT_TRUE(f.connect("unix://:p%40ss%20w@" + sock + "?db=2")) << f.down;
  EXPECT_EQ(f.call({"SET", "where", "socket"}), "OK");
  EXPECT_EQ(redis.cli({"-a", "p@ss w", "--no-auth-warning", "-n", "2", "GET", "where"}), "socket");
  f.link.close();
  ASSERT_TRUE(f.connect("unix://" + sock + "?password=p%40ss%20w&user=chat")) << f.down;
  EXPECT_EQ(f.call({"ACL", "WHOAMI"}), "chat");
  f.link.close();
  EXPECT_FALSE(f.connect("unix://" + sock));  // no password: the first command is refused
  redis.stop();
  std::filesystem::remove_all(std::filesystem::path(sock).parent_path());
}

// ---- the publish script (src/redis_scripts.h), run against real Redis through the link ----

namespace {

struct Published {
  long long id = -1;
  bool fresh = false;
  bool stale = false;
};

Published publish(Fixture& f, const std::string& room, const std::string& text,
                  const std::string& nonce = "", long long floor = 0, int history = 1000,
                  const std::string& deadline = "0", int max_rooms = 10000) {
  std::string json = R"({"id":%ID%,"room":")" + room + R"(","text":")" + text + R"("})";
  std::string room_key = "{c}:room:" + room, nonce_key = "{c}:nonce:" + nonce;
  std::string floor_text = std::to_string(floor), history_text = std::to_string(history);
  std::string max_rooms_text = std::to_string(max_rooms);
  Published out;
  bool answered = false;
  f.link.command({"EVAL",
                  sse::redis_scripts::kPublish,
                  "10",
                  "{c}:seq",
                  "{c}:log",
                  room_key,
                  nonce_key,
                  "{c}:rooms",
                  "{c}:since",
                  "{c}:history",
                  "{c}:max-rooms",
                  "{c}:dropped",
                  "{c}:presence-rooms",
                  room,
                  floor_text,
                  json,
                  history_text,
                  "100000",
                  "86400",
                  nonce.empty() ? "0" : "1",
                  deadline,
                  max_rooms_text,
                  "{c}:room:"},
                 [&](redisReply* r) {
                   answered = true;
                   if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
                     out.id = r->element[0]->integer;
                     out.fresh = r->element[1]->integer == 1;
                     out.stale = r->element[1]->integer == 2;
                   } else if (r && r->type == REDIS_REPLY_ERROR) {
                     ADD_FAILURE() << r->str;
                   }
                 });
  run_until(f.reactor, [&] { return answered; });
  return out;
}

}  // namespace

// Redis's clock in microseconds, as redis-cli TIME prints it.
long long redis_micros(RedisServer& redis) {
  std::string t = redis.cli({"TIME"});
  size_t nl = t.find('\n');
  return std::stoll(t.substr(0, nl)) * 1000000 + std::stoll(t.substr(nl + 1));
}

TEST(RedisPublishScript, IdsLogsAndRoomStreamsAgree) {
  RedisServer redis;
  Fixture f;
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  long long before = redis_micros(redis);
  long long first = publish(f, "general", "a").id;
  EXPECT_GE(first, before);  // a data set's first id is Redis's clock
  EXPECT_LE(first, redis_micros(redis));
  long long second = publish(f, "team-a", "b").id;
  long long third = publish(f, "general", "100%ID% sure").id;  // a text that looks like the slot
  EXPECT_GT(second, first);
  EXPECT_GT(third, second);
  EXPECT_LE(third, redis_micros(redis));  // each is Redis's clock (none came a microsecond apart)
  std::string id1 = std::to_string(first), id2 = std::to_string(second),
              id3 = std::to_string(third);
  EXPECT_EQ(redis.cli({"GET", "{c}:since"}), id1);
  EXPECT_EQ(redis.cli({"XLEN", "{c}:log"}), "3");
  EXPECT_EQ(redis.cli({"XLEN", "{c}:room:general"}), "2");
  std::string log = redis.cli({"XRANGE", "{c}:log", "-", "+"});
  EXPECT_EQ(log.substr(0, id1.size() + 3), id1 + "-0\n") << log;  // one element per line
  EXPECT_NE(log.find(R"({"id":)" + id2 + R"(,"room":"team-a","text":"b"})"), std::string::npos)
      << log;
  EXPECT_NE(log.find(R"({"id":)" + id3 + R"(,"room":"general","text":"100%ID% sure"})"),
            std::string::npos)
      << log;
  // Each entry names the one before it, in the log and in its room.
  EXPECT_NE(log.find("prev\n" + id2), std::string::npos) << log;
  std::string general = redis.cli({"XRANGE", "{c}:room:general", "-", "+"});
  EXPECT_EQ(general.substr(0, id1.size() + 3), id1 + "-0\n") << general;
  EXPECT_NE(general.find("\n" + id3 + "-0\n"), std::string::npos) << general;
  EXPECT_EQ(general.find("\n" + id2 + "-0\n"), std::string::npos) << general;
  EXPECT_NE(general.find("prev\n" + id1), std::string::npos) << general;
  EXPECT_EQ(redis.cli({"ZSCORE", "{c}:rooms", "general"}), id3);
  EXPECT_EQ(redis.cli({"ZSCORE", "{c}:rooms", "team-a"}), id2);
}

TEST(RedisPublishScript, ANonceSeenBeforeGetsTheOriginalId) {
  RedisServer redis;
  Fixture f;
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  Published first = publish(f, "general", "once", "alice\x1fn-1");
  EXPECT_TRUE(first.fresh);
  Published again = publish(f, "general", "once", "alice\x1fn-1");
  EXPECT_EQ(again.id, first.id);
  EXPECT_FALSE(again.fresh);
  EXPECT_GT(publish(f, "general", "other", "alice\x1fn-2").id, first.id);
  EXPECT_EQ(redis.cli({"XLEN", "{c}:log"}), "2");  // the retry stored nothing
}

// Redis lost its last writes (restored from an older AOF) or came back empty: ids go on above
// every id given before, never back, even for a node that has seen none of them (its floor is
// 0), because an id is Redis's clock unless the last one is higher.
TEST(RedisPublishScript, IdsNeverGoBackAfterRedisLostItsData) {
  RedisServer redis;
  Fixture f;
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  std::vector<long long> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(publish(f, "general", "x").id);
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end());
  // As the older copy had it: the counter and both streams end at the first message.
  std::string first = std::to_string(ids[0]);
  EXPECT_EQ(redis.cli({"SET", "{c}:seq", first}), "OK");
  for (size_t i = 1; i < ids.size(); ++i) {
    std::string entry = std::to_string(ids[i]) + "-0";
    EXPECT_EQ(redis.cli({"XDEL", "{c}:log", entry}), "1");
    EXPECT_EQ(redis.cli({"XDEL", "{c}:room:general", entry}), "1");
  }
  long long restored = publish(f, "general", "after the restore", "", /*floor=*/0).id;
  EXPECT_GT(restored, ids.back());
  EXPECT_EQ(redis.cli({"FLUSHALL"}), "OK");
  long long after = publish(f, "general", "after", "", /*floor=*/0).id;
  EXPECT_GT(after, restored);
  EXPECT_EQ(redis.cli({"GET", "{c}:since"}), std::to_string(after));
  // A node's floor above Redis's clock (its ids came faster than one a microsecond) wins.
  EXPECT_EQ(redis.cli({"FLUSHALL"}), "OK");
  long long floor = after + 1000000000000LL;
  EXPECT_EQ(publish(f, "general", "next", "", floor).id, floor + 1);
  EXPECT_EQ(publish(f, "general", "next", "", 3).id, floor + 2);  // a lower floor changes nothing
}

TEST(RedisPublishScript, RoomStreamsAreTrimmedToAboutTheirHistory) {
  RedisServer redis;
  Fixture f;
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  for (int i = 0; i < 1000; ++i) ASSERT_GT(publish(f, "busy", "m", "", 0, 100).id, 0);
  long long kept = std::stoll(redis.cli({"XLEN", "{c}:room:busy"}));
  EXPECT_GE(kept, 100);  // never fewer than the history asks for
  EXPECT_LT(kept, 1000);
}

// Nodes with different --history share the room streams: one with a shorter history does not trim
// away what a node with a longer one keeps.
TEST(RedisPublishScript, RoomStreamsKeepTheLongestHistoryOfAnyNode) {
  RedisServer redis;
  Fixture f;
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  ASSERT_GT(publish(f, "busy", "long", "", 0, 1000).id, 0);  // a node keeping 1000 posted once
  for (int i = 0; i < 600; ++i) ASSERT_GT(publish(f, "busy", "m", "", 0, 5).id, 0);
  EXPECT_EQ(redis.cli({"XLEN", "{c}:room:busy"}), "601");
  EXPECT_EQ(redis.cli({"GET", "{c}:history"}), "1000");
}

// Redis keeps at most the largest --max-rooms of any node that posted: past it the room posted to
// longest ago goes with its stream, and what it may have held is the floor of a room that has no
// stream, or whose stream is made again.
TEST(RedisPublishScript, RoomsPastTheLargestMaxRoomsAreDroppedWithTheirStreams) {
  RedisServer redis;
  Fixture f;
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  long long a = publish(f, "a", "1", "", 0, 1000, "0", 3).id;
  publish(f, "b", "2", "", 0, 1000, "0", 2);  // a node with a smaller limit: the largest counts
  publish(f, "c", "3", "", 0, 1000, "0", 2);
  EXPECT_EQ(redis.cli({"ZCARD", "{c}:rooms"}), "3");
  long long d = publish(f, "d", "4", "", 0, 1000, "0", 2).id;
  EXPECT_EQ(redis.cli({"ZCARD", "{c}:rooms"}), "3");
  EXPECT_EQ(redis.cli({"EXISTS", "{c}:room:a"}), "0");
  EXPECT_EQ(redis.cli({"GET", "{c}:dropped"}), std::to_string(a));
  EXPECT_EQ(redis.cli({"GET", "{c}:max-rooms"}), "3");
  long long again = publish(f, "a", "5", "", 0, 1000, "0", 3).id;  // drops b
  EXPECT_GT(again, d);
  std::string first = redis.cli({"XRANGE", "{c}:room:a", "-", "+"});
  EXPECT_NE(first.find("prev\n" + std::to_string(a)), std::string::npos) << first;
}

// A room someone reads on any node (its presence has not expired) is never the one dropped: the
// room posted to longest ago among the others goes; with every other room read, none does.
TEST(RedisPublishScript, ARoomSomeoneReadsIsNotDropped) {
  RedisServer redis;
  Fixture f;
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  std::string later = std::to_string(redis_micros(redis) / 1000 + 60000);
  std::string gone = std::to_string(redis_micros(redis) / 1000 - 1000);
  publish(f, "a", "1", "", 0, 1000, "0", 2);
  publish(f, "b", "2", "", 0, 1000, "0", 2);
  redis.cli({"ZADD", "{c}:presence-rooms", later, "a"});  // read on some node
  redis.cli({"ZADD", "{c}:presence-rooms", gone, "b"});   // was read, no longer
  publish(f, "c", "3", "", 0, 1000, "0", 2);
  EXPECT_EQ(redis.cli({"EXISTS", "{c}:room:a"}), "1");
  EXPECT_EQ(redis.cli({"EXISTS", "{c}:room:b"}), "0");
  redis.cli({"ZADD", "{c}:presence-rooms", later, "c"});
  publish(f, "d", "4", "", 0, 1000, "0", 2);  // a and c are read: over the limit for now
  EXPECT_EQ(redis.cli({"ZCARD", "{c}:rooms"}), "3");
  EXPECT_EQ(redis.cli({"EXISTS", "{c}:room:d"}), "1");
  redis.cli({"ZADD", "{c}:presence-rooms", "XX", gone, "a"});  // no longer read
  publish(f, "d", "5", "", 0, 1000, "0", 2);
  EXPECT_EQ(redis.cli({"ZCARD", "{c}:rooms"}), "2");
  EXPECT_EQ(redis.cli({"EXISTS", "{c}:room:a"}), "0");
  // Odd data where presence is kept: nobody is known to read, and the POST is stored whole.
  redis.cli({"DEL", "{c}:presence-rooms"});
  redis.cli({"SET", "{c}:presence-rooms", "not a sorted set"});
  EXPECT_TRUE(publish(f, "e", "6", "", 0, 1000, "0", 2).fresh);
  EXPECT_EQ(redis.cli({"ZCARD", "{c}:rooms"}), "2");
  EXPECT_EQ(redis.cli({"EXISTS", "{c}:room:c"}), "0");
}

// Run after its deadline (Redis was stuck with the command in its socket, and the node gave up):
// nothing is stored, so the 503 the node answered stays true.
TEST(RedisPublishScript, RunAfterItsDeadlineItStoresNothing) {
  RedisServer redis;
  Fixture f;
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  std::string past = std::to_string(redis_micros(redis) - 1);
  Published late = publish(f, "general", "late", "alice\x1fn-1", 0, 1000, past);
  EXPECT_TRUE(late.stale);
  EXPECT_EQ(redis.cli({"XLEN", "{c}:log"}), "0");
  EXPECT_EQ(redis.cli({"EXISTS", "{c}:nonce:alice\x1fn-1"}), "0");
  std::string future = std::to_string(redis_micros(redis) + 60000000);
  Published in_time = publish(f, "general", "in time", "", 0, 1000, future);
  EXPECT_TRUE(in_time.fresh);
  EXPECT_EQ(redis.cli({"XLEN", "{c}:log"}), "1");
}

// Odd data under our keys never makes the script fail halfway (Redis would keep what it had
// written): an entry above every id in a room's stream, and a key of the wrong type, are dealt
// with before the first write.
TEST(RedisPublishScript, OddDataIsCheckedBeforeAnyWrite) {
  RedisServer redis;
  Fixture f;
  ASSERT_TRUE(f.connect(redis.url())) << f.down;
  long long first = publish(f, "general", "a").id;
  long long ahead = first + 1000000000000LL;  // ahead of Redis's clock
  std::string junk = std::to_string(ahead);
  redis.cli({"XADD", "{c}:room:general", junk + "-0", "json", "{}", "prev", "0"});
  EXPECT_EQ(publish(f, "general", "b").id, ahead + 1);  // above the room's top, and stored
  EXPECT_EQ(redis.cli({"XLEN", "{c}:log"}), "2");
  redis.cli({"DEL", "{c}:rooms"});
  redis.cli({"SET", "{c}:rooms", "not a sorted set"});
  bool answered = false;
  std::string error;
  f.link.command({"EVAL",
                  sse::redis_scripts::kPublish,
                  "10",
                  "{c}:seq",
                  "{c}:log",
                  "{c}:room:general",
                  "{c}:nonce:x",
                  "{c}:rooms",
                  "{c}:since",
                  "{c}:history",
                  "{c}:max-rooms",
                  "{c}:dropped",
                  "{c}:presence-rooms",
                  "general",
                  "0",
                  R"({"id":%ID%})",
                  "1000",
                  "100000",
                  "86400",
                  "0",
                  "0",
                  "10000",
                  "{c}:room:"},
                 [&](redisReply* r) {
                   answered = true;
                   if (r && r->type == REDIS_REPLY_ERROR) error = r->str;
                 });
  run_until(f.reactor, [&] { return answered; });
  EXPECT_NE(error.find("not a sorted set"), std::string::npos) << error;
  EXPECT_EQ(redis.cli({"XLEN", "{c}:log"}), "2");  // nothing written
  EXPECT_EQ(redis.cli({"XLEN", "{c}:room:general"}), "3");
}
