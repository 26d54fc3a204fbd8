// Several real sse-chat nodes sharing one real redis-server (issue #15), over real sockets: every
// node's subscribers get every message of their rooms in id order with the same ids; a stream
// resumes on any node; a killed node's subscribers resume elsewhere; Redis going away, coming
// back (with its AOF, or empty), or getting stuck never yields a 201 that is lost, a gap or ids
// that go backwards; a nonce is honoured on every node; --reuse-port shares one port.
//
// Each test starts its own redis-server (tests/support/redis_server.h) and its own nodes. Waits
// are polls with deadlines; no assertion depends on how fast anything is, except that a stuck
// Redis must be noticed within 15 s rather than never.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "redis_server.h"
#include "test_server.h"

using namespace testing_support;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// Polls `pred` every 20 ms until it holds or `limit` has passed.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  auto deadline = Clock::now() + limit;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
}

int status_of(uint16_t port, const std::string& path) {
  Client c(port, 10);
  auto r = c.get(path);
  return r ? r->status : 0;
}

bool healthy(uint16_t port) {
  return status_of(port, "/healthz") == 200;
}

// A node on `redis`, once it has warmed up (/healthz 200).
std::unique_ptr<ServerProcess> start_node(const RedisServer& redis,
                                          std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--redis", redis.url(), "--heartbeat", "1"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto node = std::make_unique<ServerProcess>(args);
  if (!eventually([&] { return healthy(node->port()); }, 30s))
    ADD_FAILURE() << "node on port " << node->port() << " never became healthy:\n" << node->log();
  return node;
}

// One POST and what came of it; status 0: no answer (the outcome is unknown).
struct Posted {
  int status = 0;
  uint64_t id = 0;
  std::string room;
  std::string text;  // unique per test: tells which POST a delivered message is
  std::string retry_after;
  std::string body;
  Clock::time_point sent;
  Clock::time_point answered;
};

// A POST of `text` to `room`, as sent.
std::string post_request(const std::string& room, const std::string& text) {
  std::string body = R"({"user":"pub","text":")" + text + R"(","room":")" + room + "\"}";
  return "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: "
         "application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

// One POST on a connection of its own (never a retry on a reused one: that could post twice).
Posted post(uint16_t port, const std::string& room, const std::string& text,
            const std::string& user = "pub", const std::string& nonce = "") {
  Posted p;
  p.room = room;
  p.text = text;
  std::string body = R"({"user":")" + user + R"(","text":")" + text + R"(","room":")" + room + "\"";
  if (!nonce.empty()) body += R"(,"nonce":")" + nonce + "\"";
  body += "}";
  p.sent = Clock::now();
  Client c(port, 30);
  auto r = c.post_json(body);
  p.answered = Clock::now();
  if (!r) return p;
  p.status = r->status;
  p.body = r->body;
  p.retry_after = r->header("retry-after");
  if (p.status == 200 || p.status == 201) p.id = json_id(r->body);
  return p;
}

// Every POST of a test, from any thread.
class PostLog {
 public:
  void add(Posted p) {
    std::lock_guard lock(mu_);
    all_.push_back(std::move(p));
  }
  std::vector<Posted> all() const {
    std::lock_guard lock(mu_);
    return all_;
  }
  size_t created() const {
    std::lock_guard lock(mu_);
    return size_t(std::count_if(all_.begin(), all_.end(), [](auto& p) { return p.status == 201; }));
  }
  size_t created_after(Clock::time_point t) const {
    std::lock_guard lock(mu_);
    return size_t(std::count_if(all_.begin(), all_.end(),
                                [&](auto& p) { return p.status == 201 && p.sent > t; }));
  }
  size_t answered_between(Clock::time_point from, Clock::time_point to) const {
    std::lock_guard lock(mu_);
    return size_t(std::count_if(all_.begin(), all_.end(), [&](auto& p) {
      return p.status != 0 && p.sent > from && p.answered < to;
    }));
  }

 private:
  mutable std::mutex mu_;
  std::vector<Posted> all_;
};

// The sorted ids of the 201 answers for the rooms in `rooms`.
std::vector<uint64_t> created_ids(const std::vector<Posted>& posts,
                                  const std::set<std::string>& rooms) {
  std::vector<uint64_t> ids;
  for (const Posted& p : posts)
    if (p.status == 201 && rooms.count(p.room)) ids.push_back(p.id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

struct Got {
  std::string event;  // "" for a message, else "reset", "presence", ...
  uint64_t id = 0;
  std::string room;
  std::string text;
  std::string data;
};

// GET /events read by a thread of its own; what it got is read with the accessors below.
class Stream {
 public:
  Stream(uint16_t port, const std::string& query, const std::string& last_event_id = "")
      : sub_(std::make_unique<Subscription>(port, last_event_id, query)) {
    ok = sub_->ok;
    if (ok) reader_ = std::thread([this] { run(); });
  }
  ~Stream() { close(); }
  Stream(const Stream&) = delete;

  // Stops reading (what was read stays); the server sees the connection go.
  void close() {
    if (sub_->client.fd() >= 0) shutdown(sub_->client.fd(), SHUT_RDWR);
    if (reader_.joinable()) reader_.join();
    sub_->client.close();
  }
  std::vector<Got> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  std::vector<Got> messages() const {
    std::lock_guard lock(mu_);
    std::vector<Got> out;
    for (const Got& g : events_)
      if (g.event.empty()) out.push_back(g);
    return out;
  }
  std::vector<uint64_t> ids() const {
    std::vector<uint64_t> out;
    for (const Got& g : messages()) out.push_back(g.id);
    return out;
  }
  size_t count() const {
    std::lock_guard lock(mu_);
    return messages_;
  }
  bool ended() const {
    std::lock_guard lock(mu_);
    return ended_;
  }
  // Waits until `pred` holds for what was read (false at the deadline or the stream's end).
  bool wait(const std::function<bool(const Stream&)>& pred, std::chrono::milliseconds limit) {
    auto deadline = Clock::now() + limit;
    std::unique_lock lock(mu_);
    for (;;) {
      lock.unlock();
      bool done = pred(*this);
      lock.lock();
      if (done) return true;
      if (ended_ || Clock::now() >= deadline) {
        lock.unlock();
        return pred(*this);
      }
      cv_.wait_until(lock, std::min(deadline, Clock::now() + 200ms));
    }
  }
  bool wait_count(size_t n, std::chrono::milliseconds limit) {
    return wait([n](const Stream& s) { return s.count() >= n; }, limit);
  }
  bool wait_ended(std::chrono::milliseconds limit) {
    return wait([](const Stream& s) { return s.ended(); }, limit);
  }

  bool ok = false;

 private:
  void run() {
    while (auto ev = sub_->reader.next()) {
      Got g;
      g.event = ev->event;
      g.data = ev->data;
      g.room = field(ev->data, "room");
      if (ev->event.empty()) {
        g.id = std::strtoull(ev->id.c_str(), nullptr, 10);
        g.text = field(ev->data, "text");
      }
      std::lock_guard lock(mu_);
      messages_ += g.event.empty();
      events_.push_back(std::move(g));
      cv_.notify_all();
    }
    std::lock_guard lock(mu_);
    ended_ = true;
    cv_.notify_all();
  }

  std::unique_ptr<Subscription> sub_;
  std::thread reader_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Got> events_;
  size_t messages_ = 0;
  bool ended_ = false;
};

// A stream as EventSource opens one: tried again while the node answers by closing (warming up).
std::unique_ptr<Stream> open_stream(uint16_t port, const std::string& query,
                                    const std::string& last_event_id = "") {
  std::unique_ptr<Stream> s;
  eventually(
      [&] {
        s = std::make_unique<Stream>(port, query, last_event_id);
        return s->ok;
      },
      20s);
  return s;
}

struct Listed {
  uint64_t id;
  std::string text;
};

// GET /messages?room=R&limit=1000 (what the node says the room keeps), oldest first.
std::vector<Listed> list_room(uint16_t port, const std::string& room) {
  Client c(port, 20);
  auto r = c.get("/messages?room=" + room + "&limit=1000");
  if (!r || r->status != 200) {
    ADD_FAILURE() << "GET /messages?room=" << room << " failed: " << (r ? r->body : "no answer");
    return {};
  }
  std::vector<Listed> out;
  const std::string marker = "{\"id\":";
  size_t p = r->body.find(marker);
  while (p != std::string::npos) {
    size_t next = r->body.find(marker, p + marker.size());
    std::string one = r->body.substr(p, next == std::string::npos ? std::string::npos : next - p);
    out.push_back({json_id(one), field(one, "text")});
    p = next;
  }
  return out;
}

std::vector<uint64_t> ids_of(const std::vector<Listed>& listed) {
  std::vector<uint64_t> ids;
  for (const Listed& l : listed) ids.push_back(l.id);
  return ids;
}

std::vector<uint64_t> ids_of(const std::vector<Got>& got) {
  std::vector<uint64_t> ids;
  for (const Got& g : got) ids.push_back(g.id);
  return ids;
}

bool strictly_increasing(const std::vector<uint64_t>& ids) {
  return std::adjacent_find(ids.begin(), ids.end(), std::greater_equal<uint64_t>()) == ids.end();
}

std::string describe(const std::vector<uint64_t>& got, const std::vector<uint64_t>& want) {
  std::set<uint64_t> g(got.begin(), got.end()), w(want.begin(), want.end());
  size_t missing = 0, extra = 0;
  uint64_t first_missing = 0, first_extra = 0;
  for (uint64_t id : w)
    if (!g.count(id) && missing++ == 0) first_missing = id;
  for (uint64_t id : g)
    if (!w.count(id) && extra++ == 0) first_extra = id;
  return "got " + std::to_string(got.size()) + " ids, want " + std::to_string(want.size()) +
         "; missing " + std::to_string(missing) + " (first " + std::to_string(first_missing) +
         "), extra " + std::to_string(extra) + " (first " + std::to_string(first_extra) +
         "), duplicates " + std::to_string(got.size() - g.size()) +
         (strictly_increasing(got) ? "" : ", NOT in increasing order");
}

// What a room's delivered or listed messages must be, against the POSTs: every 201 is there with
// its id; anything else is a POST whose answer never came (status 0), or a 503 that said the
// message may have been stored (those texts go to `stored_503`). Any other answer with the
// message there anyway breaks "503: nothing was stored".
void check_against_posts(const std::string& what,
                         const std::vector<std::pair<uint64_t, std::string>>& got,
                         const std::vector<Posted>& posts, const std::set<std::string>& rooms,
                         std::vector<std::string>* stored_503 = nullptr) {
  std::map<std::string, const Posted*> by_text;
  for (const Posted& p : posts)
    if (rooms.count(p.room)) by_text[p.text] = &p;
  std::set<uint64_t> seen;
  for (const auto& [id, text] : got) {
    seen.insert(id);
    auto it = by_text.find(text);
    if (it == by_text.end()) {
      ADD_FAILURE() << what << ": message " << id << " (" << text << ") was never posted";
      continue;
    }
    const Posted& p = *it->second;
    if (p.status == 201) {
      EXPECT_EQ(id, p.id) << what << ": " << text << " was answered 201 with another id";
    } else if (p.status != 0) {
      // Only a 503 that said so may have been stored: Redis ran the command and then its answer
      // was lost (Redis died), which no node can know.
      bool said_maybe = p.body.find("may have stored") != std::string::npos;
      if (said_maybe && stored_503)
        stored_503->push_back(text + " (answered " + std::to_string(p.status) + " " + p.body +
                              ", stored as id " + std::to_string(id) + ")");
      else
        ADD_FAILURE() << what << ": " << text << " was answered " << p.status << " " << p.body
                      << " yet stored as id " << id;
    }
  }
  for (const Posted& p : posts) {
    if (p.status == 201 && rooms.count(p.room)) {
      EXPECT_TRUE(seen.count(p.id))
          << what << ": 201 id " << p.id << " (" << p.text << ") is missing";
    }
  }
}

// A command Redis ran just before it went may have lost only its answer: such a POST is answered
// 503 saying it may have been stored (check_against_posts fails any other 503 that was stored).
// Counted, not failed: no node can know, and the nonce makes its retry safe.
void note_maybe_stored(const std::vector<std::string>& stored_503, const std::string& when) {
  if (!stored_503.empty())
    std::cerr << "note: " << stored_503.size() << " POST(s) answered 503 " << when
              << " (may have stored) were stored: " << ::testing::PrintToString(stored_503) << "\n";
}

std::vector<std::pair<uint64_t, std::string>> pairs_of(const std::vector<Got>& got) {
  std::vector<std::pair<uint64_t, std::string>> out;
  for (const Got& g : got) out.emplace_back(g.id, g.text);
  return out;
}

std::vector<std::pair<uint64_t, std::string>> pairs_of(const std::vector<Listed>& listed) {
  std::vector<std::pair<uint64_t, std::string>> out;
  for (const Listed& l : listed) out.emplace_back(l.id, l.text);
  return out;
}

std::set<std::string> rooms_of(const std::string& query) {
  std::set<std::string> rooms;
  size_t p = 0;
  while ((p = query.find("room=", p)) != std::string::npos) {
    p += 5;
    rooms.insert(query.substr(p, query.find('&', p) - p));
  }
  return rooms;
}

}  // namespace

// 1. Three nodes, subscribers of two rooms on each, three publishers posting to all three nodes
// at once: every subscriber of a room has exactly that room's 201 ids, in order, on every node.
TEST(RedisNodes, ThreeNodesDeliverEveryRoomInIdOrderWithTheSameIds) {
  RedisServer redis;
  std::vector<std::unique_ptr<ServerProcess>> nodes;
  for (int i = 0; i < 3; ++i) nodes.push_back(start_node(redis));
  const std::vector<std::string> queries = {"?room=alpha", "?room=beta", "?room=alpha&room=beta"};
  std::vector<std::unique_ptr<Stream>> streams;  // node by node, one per query
  for (auto& node : nodes)
    for (const std::string& q : queries) {
      streams.push_back(open_stream(node->port(), q));
      ASSERT_TRUE(streams.back()->ok) << q;
    }

  PostLog log;
  std::vector<std::thread> publishers;
  for (int t = 0; t < 3; ++t)
    publishers.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i)
        log.add(post(nodes[size_t(t + i) % 3]->port(), (i / 3) % 2 ? "beta" : "alpha",
                     "t" + std::to_string(t) + "-" + std::to_string(i)));
    });
  for (auto& t : publishers) t.join();

  auto posts = log.all();
  for (const Posted& p : posts) ASSERT_EQ(p.status, 201) << p.text << ": " << p.body;
  std::set<uint64_t> distinct;
  for (const Posted& p : posts) distinct.insert(p.id);
  EXPECT_EQ(distinct.size(), posts.size()) << "an id was given twice";
  EXPECT_GT(*distinct.begin(), uint64_t{1} << 40) << "Redis ids start at Redis's clock in µs";
  EXPECT_LT(*distinct.rbegin(), uint64_t{1} << 53) << "ids must stay exact JSON numbers";

  for (size_t i = 0; i < streams.size(); ++i) {
    const std::string& q = queries[i % queries.size()];
    auto want = created_ids(posts, rooms_of(q));
    EXPECT_TRUE(streams[i]->wait_count(want.size(), 60s))
        << "node " << i / 3 << " " << q << ": " << describe(streams[i]->ids(), want);
    auto got = streams[i]->messages();
    EXPECT_EQ(ids_of(got), want) << "node " << i / 3 << " " << q << ": "
                                 << describe(ids_of(got), want);
    check_against_posts("node " + std::to_string(i / 3) + " " + q, pairs_of(got), posts,
                        rooms_of(q));
    for (const Got& g : got) EXPECT_TRUE(rooms_of(q).count(g.room)) << g.room << " on " << q;
  }
}

// 2. One subscriber hops from node to node (15 times) with its last id, as EventSource would after
// a balancer moved it, while a publisher posts to every node: joined, its streams are exactly the
// posted sequence.
TEST(RedisNodes, ASubscriberMovingBetweenNodesGetsExactlyThePostedSequence) {
  RedisServer redis;
  std::vector<std::unique_ptr<ServerProcess>> nodes;
  for (int i = 0; i < 3; ++i) nodes.push_back(start_node(redis));
  // Open before anything is posted: the whole posted sequence is what it must see.
  auto stream = open_stream(nodes[0]->port(), "?room=moving");
  ASSERT_TRUE(stream->ok);

  PostLog log;
  std::atomic<bool> stop{false};
  std::thread publisher([&] {
    for (int i = 0; !stop && i < 900; ++i) {
      log.add(post(nodes[size_t(i) % 3]->port(), "moving", "m" + std::to_string(i)));
      std::this_thread::sleep_for(2ms);  // pacing only, so the moves fall all along the posting
    }
  });

  std::vector<Got> joined;
  for (int move = 0; move < 15; ++move) {
    size_t want = 3 + size_t(move * 7) % 11;  // leave after 3 to 13 messages
    ASSERT_TRUE(stream->wait_count(want, 30s)) << "move " << move;
    stream->close();
    auto got = stream->messages();
    joined.insert(joined.end(), got.begin(), got.end());
    std::string last = std::to_string(joined.back().id);
    uint16_t port = nodes[size_t(move + 1) % 3]->port();
    // Half the moves send the id as the header, half as ?lastEventId= (what the page does).
    stream = move % 2 ? open_stream(port, "?room=moving&lastEventId=" + last)
                      : open_stream(port, "?room=moving", last);
    ASSERT_TRUE(stream->ok) << "move " << move;
  }
  stop = true;
  publisher.join();

  auto posts = log.all();
  for (const Posted& p : posts) ASSERT_EQ(p.status, 201) << p.text << ": " << p.body;
  auto want = created_ids(posts, {"moving"});
  size_t before = joined.size();
  EXPECT_TRUE(stream->wait_count(want.size() - std::min(before, want.size()), 30s));
  auto got = stream->messages();
  joined.insert(joined.end(), got.begin(), got.end());
  EXPECT_EQ(ids_of(joined), want) << describe(ids_of(joined), want);
  check_against_posts("joined stream", pairs_of(joined), posts, {"moving"});
}

// 3. kill -9 of a node while it delivers: its subscribers resume on the other nodes with their
// last id and, joined, have every message of their rooms once, in order.
TEST(RedisNodes, SubscribersOfAKilledNodeResumeElsewhereAndMissNothing) {
  RedisServer redis;
  std::vector<std::unique_ptr<ServerProcess>> nodes;
  for (int i = 0; i < 3; ++i) nodes.push_back(start_node(redis));
  const std::vector<std::string> queries = {"?room=alpha", "?room=beta", "?room=alpha&room=beta"};
  std::vector<std::unique_ptr<Stream>> on_victim;
  for (const std::string& q : queries) {
    on_victim.push_back(open_stream(nodes[0]->port(), q));
    ASSERT_TRUE(on_victim.back()->ok);
  }
  uint16_t victim_port = nodes[0]->port();

  PostLog log;
  std::atomic<bool> stop{false}, killed{false};
  std::vector<std::thread> publishers;
  for (int t = 0; t < 2; ++t)
    publishers.emplace_back([&, t] {
      for (int i = 0; !stop && i < 400; ++i) {
        size_t n = size_t(t + i) % 3;
        if (n == 0 && killed) n = 1 + size_t(i) % 2;
        log.add(post(n == 0 ? victim_port : nodes[n]->port(), i % 2 ? "beta" : "alpha",
                     "k" + std::to_string(t) + "-" + std::to_string(i)));
        std::this_thread::sleep_for(3ms);
      }
    });

  for (auto& s : on_victim) ASSERT_TRUE(s->wait_count(60, 30s));
  EXPECT_EQ(nodes[0]->stop(SIGKILL), 128 + SIGKILL);
  killed = true;
  std::vector<std::unique_ptr<Stream>> resumed;
  for (size_t i = 0; i < on_victim.size(); ++i) {
    EXPECT_TRUE(on_victim[i]->wait_ended(10s)) << "the killed node's stream did not end";
    on_victim[i]->close();
    auto got = on_victim[i]->ids();
    ASSERT_FALSE(got.empty());
    resumed.push_back(
        open_stream(nodes[1 + i % 2]->port(), queries[i], std::to_string(got.back())));
    ASSERT_TRUE(resumed.back()->ok);
  }
  for (auto& s : resumed) EXPECT_TRUE(s->wait_count(60, 30s));
  stop = true;
  for (auto& t : publishers) t.join();

  auto posts = log.all();
  size_t unknown = 0;
  for (const Posted& p : posts) {
    EXPECT_TRUE(p.status == 201 || p.status == 0) << p.text << ": " << p.status << " " << p.body;
    unknown += p.status == 0;
  }
  ASSERT_GE(log.created(), 120u);
  // The truth is what the surviving nodes keep (every room has fewer than --history messages).
  std::map<std::string, std::vector<Listed>> kept;
  for (std::string room : {"alpha", "beta"}) {
    kept[room] = list_room(nodes[2]->port(), room);
    EXPECT_EQ(ids_of(kept[room]), ids_of(list_room(nodes[1]->port(), room))) << room;
    check_against_posts("kept " + room, pairs_of(kept[room]), posts, {room});
  }
  for (size_t i = 0; i < queries.size(); ++i) {
    std::vector<uint64_t> want;
    for (const std::string& room : rooms_of(queries[i]))
      for (uint64_t id : ids_of(kept[room])) want.push_back(id);
    std::sort(want.begin(), want.end());
    size_t before = on_victim[i]->count();
    EXPECT_TRUE(resumed[i]->wait_count(want.size() - std::min(before, want.size()), 30s));
    auto joined = on_victim[i]->messages();
    auto after = resumed[i]->messages();
    joined.insert(joined.end(), after.begin(), after.end());
    EXPECT_EQ(ids_of(joined), want) << queries[i] << ": " << describe(ids_of(joined), want)
                                    << " (POSTs without an answer: " << unknown << ")";
  }
}

// 4. Redis stopped for a few seconds while posting goes on: every POST meanwhile is a 503 with
// Retry-After (never a 201), /healthz and ssechat_redis_up say so, streams stay open with
// heartbeats; once Redis is back, every subscriber has every 201 id, no gap.
TEST(RedisNodes, RedisDownMeans503sAndNoGapOnceItIsBack) {
  RedisServer redis({"--appendonly", "yes", "--appendfsync", "always"});
  std::vector<std::unique_ptr<ServerProcess>> nodes;
  for (int i = 0; i < 2; ++i) nodes.push_back(start_node(redis));
  const std::vector<std::string> queries = {"?room=alpha", "?room=alpha&room=beta"};
  std::vector<std::unique_ptr<Stream>> streams;
  for (auto& node : nodes)
    for (const std::string& q : queries) {
      streams.push_back(open_stream(node->port(), q));
      ASSERT_TRUE(streams.back()->ok);
    }
  Subscription quiet(nodes[0]->port(), "", "?room=quiet");  // nothing is posted there: pings only
  ASSERT_TRUE(quiet.ok);
  EXPECT_EQ(metric(nodes[0]->port(), "ssechat_redis_up"), 1u);
  EXPECT_EQ(metric(nodes[0]->port(), "ssechat_storage_up"), 1u);

  PostLog log;
  std::atomic<bool> stop{false};
  std::thread publisher([&] {
    for (int i = 0; !stop && i < 2500; ++i) {
      log.add(post(nodes[size_t(i) % 2]->port(), (i / 2) % 2 ? "beta" : "alpha",
                   "d" + std::to_string(i)));
      std::this_thread::sleep_for(5ms);
    }
  });
  ASSERT_TRUE(eventually([&] { return log.created() >= 30; }, 30s));

  redis.stop();
  auto down = Clock::now();
  for (auto& node : nodes) {
    EXPECT_TRUE(eventually([&] { return status_of(node->port(), "/healthz") == 503; }, 10s));
    EXPECT_TRUE(eventually([&] { return metric(node->port(), "ssechat_redis_up") == 0; }, 10s));
    EXPECT_EQ(metric(node->port(), "ssechat_storage_up"), 0u);
  }
  // Streams stay open: the quiet one keeps getting heartbeats while Redis is away.
  quiet.client.buffer().clear();
  EXPECT_TRUE(eventually(
      [&] {
        return quiet.client.fill() && quiet.client.buffer().find(": ping") != std::string::npos;
      },
      10s))
      << "no heartbeat on a stream while Redis is down";
  EXPECT_TRUE(eventually([&] { return log.answered_between(down, Clock::now()) >= 20; }, 20s));
  auto back = Clock::now();
  redis.start();
  for (auto& node : nodes)
    EXPECT_TRUE(eventually([&] { return healthy(node->port()); }, 45s))
        << "node " << node->port() << " did not come back:\n"
        << node->log();
  for (auto& node : nodes) EXPECT_EQ(metric(node->port(), "ssechat_redis_up"), 1u);
  EXPECT_TRUE(eventually([&] { return log.created_after(back) >= 30; }, 30s));
  stop = true;
  publisher.join();

  auto posts = log.all();
  size_t during = 0;
  for (const Posted& p : posts) {
    if (p.status == 503) {
      EXPECT_FALSE(p.retry_after.empty()) << "503 without Retry-After";
    }
    if (p.sent > down && p.answered < back) {
      ++during;
      EXPECT_EQ(p.status, 503) << p.text << " while Redis was down: " << p.body;
    }
    EXPECT_TRUE(p.status == 201 || p.status == 503 || p.status == 0)
        << p.text << ": " << p.status << " " << p.body;
  }
  EXPECT_GE(during, 20u);
  std::vector<std::string> stored_503;
  for (size_t i = 0; i < streams.size(); ++i) {
    std::string what = "node " + std::to_string(i / 2) + " " + queries[i % 2];
    auto rooms = rooms_of(queries[i % 2]);
    auto want = created_ids(posts, rooms);
    EXPECT_TRUE(streams[i]->wait(
        [&](const Stream& s) {
          auto ids = s.ids();
          return !ids.empty() && ids.back() >= want.back();
        },
        30s))
        << what << ": " << describe(streams[i]->ids(), want);
    EXPECT_FALSE(streams[i]->ended()) << what << ": the stream was closed";
    auto got = streams[i]->messages();
    EXPECT_TRUE(strictly_increasing(ids_of(got))) << what << ": " << describe(ids_of(got), want);
    check_against_posts(what, pairs_of(got), posts, rooms, &stored_503);
  }
  note_maybe_stored(stored_503, "at the stop");
}

// 4b. A Redis that is open but stuck (SIGSTOP): a POST is answered 503 within seconds rather than
// hanging, /healthz says so, and after SIGCONT the node serves again. A POST answered 503 must not
// turn up later as a stored message.
TEST(RedisNodes, AStuckRedisIsDetectedAndTheNodeRecovers) {
  RedisServer redis;
  auto a = start_node(redis);
  auto b = start_node(redis);
  auto stream = open_stream(b->port(), "?room=alpha");
  ASSERT_TRUE(stream->ok);
  Posted first = post(a->port(), "alpha", "before");
  ASSERT_EQ(first.status, 201) << first.body;

  redis.pause();
  {
    // Once a command has waited 3 s, POSTs are refused without being sent, and /healthz says so
    // from then on, not only once the link is dropped (at 5 s).
    Client waiting(b->port(), 30);
    ASSERT_TRUE(waiting.send(post_request("alpha", "in-flight")));
    std::this_thread::sleep_for(3500ms);  // the command is stale now
    Posted refused = post(b->port(), "alpha", "refused-at-once");
    EXPECT_EQ(refused.status, 503) << refused.body;
    EXPECT_EQ(status_of(b->port(), "/healthz"), 503);
  }
  Posted stuck = post(a->port(), "alpha", "while-stuck");
  EXPECT_EQ(stuck.status, 503) << stuck.body;
  EXPECT_FALSE(stuck.retry_after.empty());
  EXPECT_LT(stuck.answered - stuck.sent, 15s) << "the stuck Redis was not noticed in time";
  EXPECT_TRUE(eventually([&] { return status_of(a->port(), "/healthz") == 503; }, 15s));
  EXPECT_TRUE(eventually([&] { return metric(a->port(), "ssechat_redis_up") == 0; }, 15s));
  Posted again = post(b->port(), "alpha", "still-stuck");
  EXPECT_EQ(again.status, 503) << again.body;
  EXPECT_LT(again.answered - again.sent, 15s);
  EXPECT_FALSE(stream->ended()) << "a stream was closed while Redis was stuck";
  // A publish a node sent before it counted Redis as stuck carries a deadline 3 s later on Redis's
  // clock: a Redis that went on before then could still store it, as its 503 ("may have stored")
  // says. On a loaded machine the checks above may take less than that: stay stuck past it.
  std::this_thread::sleep_until(std::max(stuck.sent, again.sent) + 3500ms);

  redis.resume();
  EXPECT_TRUE(eventually([&] { return healthy(a->port()) && healthy(b->port()); }, 45s))
      << a->log() << b->log();
  Posted after = post(a->port(), "alpha", "after");
  ASSERT_EQ(after.status, 201) << after.body;
  EXPECT_GT(after.id, first.id);
  EXPECT_TRUE(stream->wait(
      [&](const Stream& s) {
        auto ids = s.ids();
        return std::find(ids.begin(), ids.end(), after.id) != ids.end();
      },
      30s));
  auto got = stream->messages();
  EXPECT_TRUE(strictly_increasing(ids_of(got)));
  std::vector<std::string> texts;
  for (const Got& g : got) texts.push_back(g.text);
  // Exactly the two 201s: the POSTs answered 503 while Redis was stuck were not stored.
  EXPECT_EQ(texts, (std::vector<std::string>{"before", "after"}))
      << "POSTs answered 503 while Redis was stuck (after "
      << std::chrono::duration_cast<std::chrono::milliseconds>(stuck.answered - stuck.sent).count()
      << " ms: " << stuck.body << "; after "
      << std::chrono::duration_cast<std::chrono::milliseconds>(again.answered - again.sent).count()
      << " ms: " << again.body << ") were stored and delivered once Redis went on";
  auto kept = list_room(a->port(), "alpha");
  std::vector<std::string> kept_texts;
  for (const Listed& l : kept) kept_texts.push_back(l.text);
  EXPECT_EQ(kept_texts, (std::vector<std::string>{"before", "after"}));
}

// 5. Redis killed under load and restarted with its AOF (appendfsync always): every id that got
// a 201 is still there, as a node started afterwards reads it.
TEST(RedisNodes, RedisRestartedFromItsAofKeepsEvery201) {
  RedisServer redis({"--appendonly", "yes", "--appendfsync", "always"});
  std::vector<std::unique_ptr<ServerProcess>> nodes;
  for (int i = 0; i < 2; ++i) nodes.push_back(start_node(redis));
  PostLog log;
  std::atomic<bool> stop{false};
  std::vector<std::thread> publishers;
  for (int t = 0; t < 2; ++t)
    publishers.emplace_back([&, t] {
      for (int i = 0; !stop && i < 900; ++i) {
        log.add(post(nodes[size_t(t + i) % 2]->port(), i % 2 ? "beta" : "alpha",
                     "r" + std::to_string(t) + "-" + std::to_string(i)));
        std::this_thread::sleep_for(5ms);
      }
    });
  ASSERT_TRUE(eventually([&] { return log.created() >= 100; }, 30s));
  redis.stop(SIGKILL);
  auto down = Clock::now();
  for (auto& node : nodes)
    EXPECT_TRUE(eventually([&] { return status_of(node->port(), "/healthz") == 503; }, 10s));
  redis.start();
  auto back = Clock::now();
  for (auto& node : nodes)
    EXPECT_TRUE(eventually([&] { return healthy(node->port()); }, 45s)) << node->log();
  EXPECT_TRUE(eventually([&] { return log.created_after(back) >= 20; }, 30s));
  stop = true;
  for (auto& t : publishers) t.join();

  auto posts = log.all();
  uint64_t last_before = 0, first_after = UINT64_MAX;
  for (const Posted& p : posts) {
    EXPECT_TRUE(p.status == 201 || p.status == 503 || p.status == 0)
        << p.text << ": " << p.status << " " << p.body;
    if (p.status != 201) continue;
    if (p.answered < down) last_before = std::max(last_before, p.id);
    if (p.sent > back) first_after = std::min(first_after, p.id);
  }
  EXPECT_LT(last_before, first_after) << "ids went backwards across the Redis restart";

  auto fresh = start_node(redis);
  std::vector<std::string> stored_503;
  for (std::string room : {"alpha", "beta"}) {
    auto kept = list_room(fresh->port(), room);
    ASSERT_LT(kept.size(), 1000u) << "the listing would be cut";
    EXPECT_TRUE(strictly_increasing(ids_of(kept))) << room;
    check_against_posts("new node's " + room, pairs_of(kept), posts, {room}, &stored_503);
    EXPECT_EQ(ids_of(kept), ids_of(list_room(nodes[0]->port(), room))) << room;
  }
  note_maybe_stored(stored_503, "at the kill");
}

// 6. Redis back empty (FLUSHALL): new ids are above every id given before, on every node; a node
// started afterwards that a stream resumes on with an old id says `reset` for the rooms whose
// history is gone, rather than nothing.
TEST(RedisNodes, AfterFlushallIdsKeepIncreasingAndOldResumesGetReset) {
  RedisServer redis;
  auto a = start_node(redis);
  auto b = start_node(redis);
  auto stream = open_stream(a->port(), "?room=alpha");
  ASSERT_TRUE(stream->ok);
  PostLog log;
  for (int i = 0; i < 30; ++i) {
    std::string room = i % 3 == 0 ? "alpha" : i % 3 == 1 ? "beta" : "gamma";
    log.add(post((i % 2 ? b : a)->port(), room, "old" + std::to_string(i)));
  }
  auto old_posts = log.all();
  uint64_t old_max = 0, old_alpha = 0;
  for (const Posted& p : old_posts) {
    ASSERT_EQ(p.status, 201) << p.body;
    old_max = std::max(old_max, p.id);
    if (p.room == "alpha") old_alpha = std::max(old_alpha, p.id);
  }
  ASSERT_TRUE(stream->wait_count(10, 30s));

  ASSERT_EQ(redis.cli({"FLUSHALL"}), "OK");
  // A node that starts while Redis is empty, before anything new is posted.
  auto early = start_node(redis);
  {
    auto resumed = open_stream(early->port(), "?room=alpha", std::to_string(old_alpha));
    ASSERT_TRUE(resumed->ok);
    EXPECT_TRUE(resumed->wait(
        [](const Stream& s) {
          for (const Got& g : s.events())
            if (g.event == "reset" && g.room == "alpha") return true;
          return false;
        },
        10s))
        << "resuming with an old id on a node started after FLUSHALL (nothing posted since) "
           "gave no reset for alpha";
  }

  for (int i = 0; i < 30; ++i) {
    std::string room = i % 2 ? "beta" : "alpha";  // gamma gets nothing new
    auto& node = i % 3 == 0 ? a : i % 3 == 1 ? b : early;
    Posted p = post(node->port(), room, "new" + std::to_string(i));
    EXPECT_EQ(p.status, 201) << p.body;
    EXPECT_GT(p.id, old_max) << "an id after FLUSHALL (port " << node->port()
                             << ") is not above every id before it";
    log.add(p);
  }
  auto posts = log.all();
  // The stream that was open all along goes on, in order, with every alpha 201.
  auto want = created_ids(posts, {"alpha"});
  EXPECT_TRUE(stream->wait_count(want.size(), 30s)) << describe(stream->ids(), want);
  EXPECT_EQ(stream->ids(), want) << describe(stream->ids(), want);

  // A node started after FLUSHALL and the new posts: an old id resumes with a reset per room whose
  // history is gone (alpha's old messages; gamma's, which has nothing new), then what is kept.
  auto late = start_node(redis);
  uint64_t first_old = created_ids(old_posts, {"alpha", "gamma"}).front();
  auto resumed = open_stream(late->port(), "?room=alpha&room=gamma", std::to_string(first_old));
  ASSERT_TRUE(resumed->ok);
  auto new_alpha = created_ids(posts, {"alpha"});
  new_alpha.erase(std::remove_if(new_alpha.begin(), new_alpha.end(),
                                 [&](uint64_t id) { return id <= old_max; }),
                  new_alpha.end());
  EXPECT_TRUE(resumed->wait(
      [&](const Stream& s) {
        std::set<std::string> reset;
        for (const Got& g : s.events())
          if (g.event == "reset") reset.insert(g.room);
        return reset.count("alpha") && reset.count("gamma") && s.count() >= new_alpha.size();
      },
      15s));
  auto events = resumed->events();
  std::set<std::string> reset_before_messages;
  bool seen_message = false;
  for (const Got& g : events) {
    if (g.event.empty()) seen_message = true;
    if (g.event == "reset" && !seen_message) reset_before_messages.insert(g.room);
  }
  EXPECT_TRUE(reset_before_messages.count("alpha"))
      << "no reset for alpha before its messages on a node started after FLUSHALL";
  EXPECT_TRUE(reset_before_messages.count("gamma"))
      << "no reset for gamma (its history is gone) on a node started after FLUSHALL";
  EXPECT_EQ(resumed->ids(), new_alpha) << describe(resumed->ids(), new_alpha);
}

// What a stream resumed on `port` from `after` got, checked against the POSTs to its rooms:
// exactly their 201 ids in order, each with its text, and no reset.
void expect_resumed_exactly(uint16_t port, const std::string& query, uint64_t after,
                            const std::vector<Posted>& posts) {
  SCOPED_TRACE("GET /events" + query + " with Last-Event-ID " + std::to_string(after));
  auto rooms = rooms_of(query);
  auto want = created_ids(posts, rooms);
  want.erase(want.begin(), std::upper_bound(want.begin(), want.end(), after));
  auto stream = open_stream(port, query, std::to_string(after));
  ASSERT_TRUE(stream->ok);
  EXPECT_TRUE(stream->wait_count(want.size(), 20s)) << describe(stream->ids(), want);
  EXPECT_EQ(stream->ids(), want) << describe(stream->ids(), want);
  for (const Got& g : stream->events())
    EXPECT_NE(g.event, "reset") << "a reset although Redis keeps every message: " << g.data;
  std::vector<Posted> since;
  std::copy_if(posts.begin(), posts.end(), std::back_inserter(since),
               [&](const Posted& p) { return p.id > after; });
  check_against_posts("resumed stream", pairs_of(stream->messages()), since, rooms);
}

// 6b. A node whose memory does not reach back resumes from Redis: it forgot rooms under
// --max-rooms, keeps a shorter --history, or warmed only the most active rooms at start.
TEST(RedisNodes, AResumeReadsFromRedisWhatTheNodesMemoryLacks) {
  RedisServer redis({"--appendonly", "yes", "--appendfsync", "always"});
  auto full = start_node(redis);
  auto small = start_node(redis, {"--max-rooms", "3", "--history", "4"});
  const std::vector<std::string> rooms = {"r1", "r2", "r3", "r4", "r5"};
  PostLog log;
  for (int i = 0; i < 50; ++i)
    log.add(post((i % 2 ? small : full)->port(), rooms[size_t(i) % 5], "m" + std::to_string(i)));
  auto posts = log.all();
  for (const Posted& p : posts) ASSERT_EQ(p.status, 201) << p.body;
  auto ids = created_ids(posts, {rooms.begin(), rooms.end()});

  // The small node keeps 3 rooms (r3..r5, the last posted to) with 4 messages each of 10.
  for (const char* query : {"?room=r1&room=r2", "?room=r4", "?room=r1&room=r5&room=r3"})
    for (uint64_t after : {ids[0] - 1, ids[7], ids[31]})
      expect_resumed_exactly(small->port(), query, after, posts);

  // Eight more rooms: the small node forgets so many that it no longer remembers r1..r5's names
  // (it keeps --max-rooms of them), and joining a room forgets another at that very moment.
  for (int i = 0; i < 8; ++i) log.add(post(full->port(), "q" + std::to_string(i), "q"));
  for (const Posted& p : log.all()) ASSERT_EQ(p.status, 201) << p.body;
  for (const char* query : {"?room=r1&room=r2", "?room=r3", "?room=r4&room=q0"})
    expect_resumed_exactly(small->port(), query, ids[0] - 1, log.all());

  // Started now with --max-rooms 2, a node warms only r4 and r5 from Redis.
  auto late = start_node(redis, {"--max-rooms", "2"});
  expect_resumed_exactly(late->port(), "?room=r1", ids[0] - 1, posts);
  expect_resumed_exactly(late->port(), "?room=r2&room=r5", ids[12], posts);

  // And the nodes go on together: posted after the resumes, delivered live to a resumed stream.
  auto live = open_stream(late->port(), "?room=r1", std::to_string(ids[0] - 1));
  ASSERT_TRUE(live->ok);
  for (int i = 0; i < 5; ++i) log.add(post(full->port(), "r1", "after" + std::to_string(i)));
  posts = log.all();
  auto want = created_ids(posts, {"r1"});
  EXPECT_TRUE(live->wait_count(want.size(), 20s)) << describe(live->ids(), want);
  EXPECT_EQ(live->ids(), want) << describe(live->ids(), want);

  // With Redis away, such a resume is closed before it says anything (an EventSource comes back
  // with the same id), never reset past what Redis keeps; once Redis is back it is exact.
  redis.stop();
  ASSERT_TRUE(eventually([&] { return !healthy(small->port()); }, 10s));
  auto refused = open_stream(small->port(), "?room=r1", std::to_string(ids[0] - 1));
  ASSERT_TRUE(refused->ok);
  EXPECT_TRUE(refused->wait_ended(10s));
  EXPECT_TRUE(refused->events().empty()) << refused->events().front().data;
  redis.start();
  ASSERT_TRUE(eventually([&] { return healthy(small->port()); }, 30s));
  expect_resumed_exactly(small->port(), "?room=r1&room=r2", ids[0] - 1, log.all());
}

// 6b'. While a resume is read from Redis, posts go on into its rooms, and a node with a short
// --history drops their oldest messages meanwhile: the stream still gets every message without a
// reset (a hostile probe saw a reset on every such resume while one room took a message).
TEST(RedisNodes, AResumeFromRedisWhilePostsGoOnIsExact) {
  RedisServer redis;
  auto full = start_node(redis);
  auto small = start_node(redis, {"--history", "5"});
  const std::vector<std::string> rooms = {"w1", "w2", "w3"};
  PostLog log;
  std::atomic<bool> stop{false};
  std::thread poster([&] {
    for (int i = 0; !stop; ++i) {
      log.add(post(full->port(), rooms[size_t(i) % 3], "m" + std::to_string(i)));
      std::this_thread::sleep_for(2ms);
    }
  });
  ASSERT_TRUE(eventually([&] { return log.created() >= 600; }, 60s));
  uint64_t after = created_ids(log.all(), {"w1", "w2"}).front() - 1;
  std::vector<std::unique_ptr<Stream>> streams;
  for (int i = 0; i < 3; ++i) {  // each while the posts go on
    streams.push_back(open_stream(small->port(), "?room=w1&room=w2", std::to_string(after)));
    ASSERT_TRUE(streams.back()->ok);
    std::this_thread::sleep_for(200ms);
  }
  stop = true;
  poster.join();
  auto posts = log.all();
  for (const Posted& p : posts) ASSERT_EQ(p.status, 201) << p.body;
  auto want = created_ids(posts, {"w1", "w2"});
  for (auto& stream : streams) {
    EXPECT_TRUE(stream->wait_count(want.size(), 30s)) << describe(stream->ids(), want);
    EXPECT_EQ(stream->ids(), want) << describe(stream->ids(), want);
    for (const Got& g : stream->events())
      EXPECT_NE(g.event, "reset") << "a reset although Redis keeps every message: " << g.data;
  }
}

// 6c. What a resume reads from Redis is bounded (a quarter of --history-memory here): past it the
// stream gets the newest messages that fit, after a reset that says where they start, and then
// every message from there on.
TEST(RedisNodes, AResumeReadsAtMostItsShareFromRedisAndSaysWhereItStarts) {
  RedisServer redis;
  auto full = start_node(redis);
  auto small = start_node(redis, {"--history", "10", "--history-memory", "1048576"});
  PostLog log;
  const std::string padding(1000, 'x');  // ~1.1 KB frames: 400 of them are past 256 KiB
  for (int i = 0; i < 400; ++i) log.add(post(full->port(), "big", std::to_string(i) + padding));
  auto posts = log.all();
  for (const Posted& p : posts) ASSERT_EQ(p.status, 201) << p.body;
  auto want = created_ids(posts, {"big"});

  auto stream = open_stream(small->port(), "?room=big", std::to_string(want.front() - 1));
  ASSERT_TRUE(stream->ok);
  ASSERT_TRUE(stream->wait(
      [&](const Stream& s) { return !s.ids().empty() && s.ids().back() == want.back(); }, 20s));
  auto events = stream->events();
  ASSERT_FALSE(events.empty());
  ASSERT_EQ(events.front().event, "reset") << events.front().data;
  uint64_t oldest = std::stoull(field(events.front().data, "oldest"));
  auto from = std::find(want.begin(), want.end(), oldest);
  ASSERT_NE(from, want.end()) << "the reset names " << oldest << ", not a posted id";
  std::vector<uint64_t> rest(from, want.end());
  EXPECT_EQ(stream->ids(), rest) << describe(stream->ids(), rest);
  EXPECT_GT(rest.size(), 100u) << "far less than the share was read";
  EXPECT_LT(rest.size(), 300u) << "more than the share was read";
}

namespace {

// Five messages posted to `room` through `node`, once it has read them all (its memory keeps
// what its --history says); their ids, fewer when something failed.
std::vector<uint64_t> post_five_read_by(ServerProcess& node, const std::string& room) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(post(node.port(), room, "m" + std::to_string(i)).id);
  auto read = open_stream(node.port(), "?room=" + room, std::to_string(ids[3]));
  if (!read->ok || !read->wait_count(1, 10s)) ids.pop_back();
  return ids;
}

}  // namespace

// 6d. Redis lost messages a node had read (as after a restart from an older AOF): a resume over
// them, read from Redis, is reset, since Redis cannot show they were ever there.
TEST(RedisNodes, AResumeOverMessagesRedisLostIsReset) {
  RedisServer redis;
  auto node = start_node(redis, {"--history", "2"});
  std::vector<uint64_t> ids = post_five_read_by(*node, "x");
  ASSERT_EQ(ids.size(), 5u);
  for (const char* stream : {"{sse-chat}:log", "{sse-chat}:room:x"})
    redis.cli({"XDEL", stream, std::to_string(ids[3]) + "-0", std::to_string(ids[4]) + "-0"});
  Posted after = post(node->port(), "x", "after");  // its prev is ids[2]: Redis lost 3 and 4
  ASSERT_EQ(after.status, 201) << after.body;

  auto resumed = open_stream(node->port(), "?room=x", std::to_string(ids[2]));
  ASSERT_TRUE(resumed->ok);
  ASSERT_TRUE(resumed->wait(
      [&](const Stream& s) { return !s.ids().empty() && s.ids().back() == after.id; }, 10s));
  auto events = resumed->events();
  ASSERT_EQ(events.front().event, "reset") << "message " << ids[3] << " was missed without a reset";
  EXPECT_EQ(resumed->ids(), (std::vector<uint64_t>{ids[4], after.id}));

  // From further back Redis still has 1 and 2, but they come before the hole: a reset that named
  // 1 as the oldest would say falsely that nothing after it is missing (3 is).
  auto earlier = open_stream(node->port(), "?room=x", std::to_string(ids[0]));
  ASSERT_TRUE(earlier->ok);
  ASSERT_TRUE(earlier->wait(
      [&](const Stream& s) { return !s.ids().empty() && s.ids().back() == after.id; }, 10s));
  auto reset = earlier->events().front();
  ASSERT_EQ(reset.event, "reset");
  EXPECT_EQ(field(reset.data, "oldest"), std::to_string(ids[4])) << reset.data;
  EXPECT_EQ(earlier->ids(), (std::vector<uint64_t>{ids[4], after.id}));
}

// A node started after messages were posted resumes from 0 as a node that saw them all does: every
// message, no reset (Redis recorded no loss, so nothing came before the data set's first id). An
// id below that first id was given by no data set this Redis has: reset, then every message.
TEST(RedisNodes, AResumeFromZeroOnANodeStartedLaterIsNotReset) {
  RedisServer redis;
  auto first = start_node(redis);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(post(first->port(), "x", "m" + std::to_string(i)).id);
  auto later = start_node(redis);
  for (auto* node : {first.get(), later.get()}) {
    auto resumed = open_stream(node->port(), "?room=x", "0");
    ASSERT_TRUE(resumed->ok);
    ASSERT_TRUE(resumed->wait_count(3, 10s)) << node->log();
    EXPECT_EQ(resumed->ids(), ids);
    for (const auto& e : resumed->events()) EXPECT_NE(e.event, "reset") << e.data;
  }
  auto foreign = open_stream(later->port(), "?room=x", std::to_string(ids[0] / 2));
  ASSERT_TRUE(foreign->ok);
  ASSERT_TRUE(foreign->wait_count(3, 10s));
  EXPECT_EQ(foreign->events().front().event, "reset");
  EXPECT_EQ(foreign->ids(), ids);
}

// Redis emptied (FLUSHALL) and nothing posted since, so no entry has told the node: a resume
// that needs what memory no longer keeps finds no data set at all in Redis, which after ids the
// node read means they are lost: reset, not silence.
TEST(RedisNodes, AResumeIntoAnEmptiedRedisIsReset) {
  RedisServer redis;
  auto node = start_node(redis, {"--history", "2"});
  std::vector<uint64_t> ids = post_five_read_by(*node, "x");
  ASSERT_EQ(ids.size(), 5u);
  ASSERT_EQ(redis.cli({"FLUSHALL"}), "OK");
  auto resumed = open_stream(node->port(), "?room=x", std::to_string(ids[0]));
  ASSERT_TRUE(resumed->ok);
  ASSERT_TRUE(resumed->wait_count(2, 10s));
  EXPECT_EQ(resumed->events().front().event, "reset") << ids[1] << " and " << ids[2] << " missed";
  EXPECT_EQ(resumed->ids(), (std::vector<uint64_t>{ids[3], ids[4]}));
}

// A room this node did not warm (more rooms than its --max-rooms) resumed from 0: read from Redis,
// which recorded no loss, so it is complete from the start: no reset either.
TEST(RedisNodes, AResumeFromZeroOfARoomReadFromRedisIsNotReset) {
  RedisServer redis;
  auto first = start_node(redis);
  std::vector<uint64_t> ids;
  for (std::string room : {"a", "b", "c"}) ids.push_back(post(first->port(), room, "m").id);
  auto later = start_node(redis, {"--max-rooms", "2"});
  auto resumed = open_stream(later->port(), "?room=a", "0");
  ASSERT_TRUE(resumed->ok);
  ASSERT_TRUE(resumed->wait_count(1, 10s));
  for (const auto& e : resumed->events()) EXPECT_NE(e.event, "reset") << e.data;
  EXPECT_EQ(resumed->ids(), std::vector<uint64_t>{ids[0]});
}

// Every node was down when Redis lost its data. A node started on the empty Redis learns the new
// data set's first id from its first message: a client's id from the lost data set is reset
// there, as on a node started after that message.
TEST(RedisNodes, AnIdFromADataSetLostWhileNoNodeRanIsReset) {
  RedisServer redis;
  uint64_t old_id = 0;
  {
    auto gone = start_node(redis);
    old_id = post(gone->port(), "x", "old").id;
    ASSERT_NE(old_id, 0u);
  }
  ASSERT_EQ(redis.cli({"FLUSHALL"}), "OK");
  auto early = start_node(redis);
  Posted fresh = post(early->port(), "x", "new");
  ASSERT_EQ(fresh.status, 201) << fresh.body;
  auto late = start_node(redis);
  for (auto* node : {early.get(), late.get()}) {
    auto resumed = open_stream(node->port(), "?room=x", std::to_string(old_id));
    ASSERT_TRUE(resumed->ok);
    ASSERT_TRUE(resumed->wait_count(1, 10s)) << node->log();
    EXPECT_EQ(resumed->events().front().event, "reset") << "node " << node->port();
    EXPECT_EQ(resumed->ids(), std::vector<uint64_t>{fresh.id});
  }
}

// 7. An idempotent POST retried on another node gets the original id (200), and is delivered
// once.
TEST(RedisNodes, TheSameNonceOnAnotherNodeGetsTheOriginalId) {
  RedisServer redis;
  auto a = start_node(redis);
  auto b = start_node(redis);
  auto stream = open_stream(b->port(), "?room=general");
  ASSERT_TRUE(stream->ok);
  Posted first = post(a->port(), "general", "once", "ann", "nonce-42");
  ASSERT_EQ(first.status, 201) << first.body;
  Posted retry = post(b->port(), "general", "once", "ann", "nonce-42");
  EXPECT_EQ(retry.status, 200) << retry.body;
  EXPECT_EQ(retry.id, first.id);
  Posted again = post(a->port(), "general", "once", "ann", "nonce-42");
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.id, first.id);
  // Another user's nonce of the same name is another message.
  Posted other = post(b->port(), "general", "other", "bob", "nonce-42");
  EXPECT_EQ(other.status, 201) << other.body;
  EXPECT_GT(other.id, first.id);
  Posted last = post(a->port(), "general", "last", "ann");
  ASSERT_EQ(last.status, 201);
  EXPECT_TRUE(stream->wait_count(3, 30s));
  EXPECT_EQ(stream->ids(), (std::vector<uint64_t>{first.id, other.id, last.id}));
  // The nonce reused for another text, on the node that did not take the first POST: 422.
  Posted reused = post(b->port(), "general", "not once", "ann", "nonce-42");
  EXPECT_EQ(reused.status, 422) << reused.body;
  auto kept = list_room(a->port(), "general");
  EXPECT_EQ(ids_of(kept), (std::vector<uint64_t>{first.id, other.id, last.id}));
}

// A node whose memory no longer keeps the nonce's message (--history 2) judges a reuse from the
// room's stream in Redis, which still has it: 422 for another text, 200 for the same.
TEST(RedisNodes, ANonceReusedForAnotherTextIsJudgedFromRedisPastTheNodesMemory) {
  RedisServer redis;
  auto node = start_node(redis, {"--history", "2"});
  Posted first = post(node->port(), "r", "original", "ann", "n1");
  ASSERT_EQ(first.status, 201) << first.body;
  for (int i = 0; i < 5; ++i) ASSERT_EQ(post(node->port(), "r", "more").status, 201);
  auto listed = list_room(node->port(), "r");  // paged from Redis (XADD MAXLEN ~ keeps it)
  ASSERT_FALSE(listed.empty());
  ASSERT_EQ(listed.front().id, first.id) << "Redis no longer has it";
  Posted same = post(node->port(), "r", "original", "ann", "n1");
  EXPECT_EQ(same.status, 200) << same.body;
  EXPECT_EQ(same.id, first.id);
  Posted reused = post(node->port(), "r", "DIFFERENT", "ann", "n1");
  EXPECT_EQ(reused.status, 422) << reused.body;
}

// 8. --reuse-port: a second node listens on the first one's port; both run, both answer
// requests to that port (each logs the requests it answered), and the port answers on once the
// first one is gone.
TEST(RedisNodes, TwoNodesShareOnePortWithReusePort) {
  RedisServer redis;
  auto a = start_node(redis, {"--reuse-port", "--access-log", "-"});
  uint16_t port = a->port();
  ServerProcess b({"--redis", redis.url(), "--listen", "127.0.0.1:" + std::to_string(port),
                   "--reuse-port", "--access-log", "-"});
  EXPECT_EQ(b.port(), port);
  EXPECT_TRUE(a->running());
  EXPECT_TRUE(b.running());
  // The port reaches either node: once both have warmed up, every request there is answered 200.
  EXPECT_TRUE(eventually(
      [&] {
        for (int i = 0; i < 30; ++i)
          if (status_of(port, "/healthz") != 200) return false;
        return true;
      },
      30s));
  size_t a_before = occurrences(a->log(), "/healthz"), b_before = occurrences(b.log(), "/healthz");
  for (int i = 0; i < 40; ++i) EXPECT_EQ(status_of(port, "/healthz"), 200) << "request " << i;
  EXPECT_TRUE(eventually(
      [&] {
        return occurrences(a->log(), "/healthz") + occurrences(b.log(), "/healthz") >=
               a_before + b_before + 40;
      },
      10s));
  EXPECT_GT(occurrences(a->log(), "/healthz"), a_before) << "the first node answered none of 40";
  EXPECT_GT(occurrences(b.log(), "/healthz"), b_before) << "the second node answered none of 40";
  Posted p = post(port, "general", "shared");
  EXPECT_EQ(p.status, 201) << p.body;
  // Whichever node answers, it has the message (both read the one log).
  for (int i = 0; i < 10; ++i)
    EXPECT_TRUE(eventually(
        [&] {
          auto kept = list_room(port, "general");
          return kept.size() == 1 && kept[0].id == p.id;
        },
        10s));
  EXPECT_EQ(a->stop(SIGTERM), 0);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(status_of(port, "/healthz"), 200) << "after a stopped";
  EXPECT_TRUE(b.running());
}

// A node started while Redis does not answer yet takes connections only once warm: a POST sent
// meanwhile waits in the backlog and is stored, instead of the 503 a node still connecting gives
// (what a balancer sent to a restarting node got). Redis never answering: it answers after 5 s.
TEST(RedisNodes, ANodeTakesConnectionsOnceWarm) {
  RedisServer redis;
  redis.pause();
  NotifySocket notify;  // systemd hears READY=1 only then, so a rolling restart waits for it
  ServerProcess node({"--redis", redis.url(), "--access-log", "-"}, true, {{notify.env()}});
  EXPECT_FALSE(notify.wait_for("READY=1", 500));
  std::thread wake([&] {
    std::this_thread::sleep_for(1s);
    redis.resume();
  });
  Posted early = post(node.port(), "general", "early");
  wake.join();
  EXPECT_EQ(early.status, 201) << early.body << node.log();
  EXPECT_TRUE(notify.wait_for("READY=1"));
  EXPECT_EQ(list_room(node.port(), "general").size(), 1u);

  RedisServer gone;
  gone.stop();
  ServerProcess alone({"--redis", gone.url()});
  Posted refused = post(alone.port(), "general", "nobody stores this");
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_FALSE(refused.retry_after.empty());
  EXPECT_EQ(status_of(alone.port(), "/healthz"), 503);
}

// 9. Redis past its maxmemory (noeviction, the advised policy) refuses a publish's first write,
// so the whole publish, before anything is stored: the POST is a 503 that says nothing was
// stored, /healthz and ssechat_storage_up say storage fails (logged once); once Redis has room
// again, health comes back without a POST, and the same nonce gets 201, not 200.
TEST(RedisNodes, RedisOutOfMemoryMeans503sThatStoredNothingUntilItHasRoom) {
  RedisServer redis({"--maxmemory-policy", "noeviction"});
  auto node = start_node(redis);
  Posted first = post(node->port(), "alpha", "before");
  ASSERT_EQ(first.status, 201) << first.body;

  ASSERT_EQ(redis.cli({"CONFIG", "SET", "maxmemory", "1"}), "OK");  // every write is past it
  for (int i = 0; i < 2; ++i) {
    Posted refused = post(node->port(), "alpha", "while-full", "pub", "n-full");
    EXPECT_EQ(refused.status, 503) << refused.body;
    EXPECT_NE(refused.body.find("out of memory"), std::string::npos) << refused.body;
    EXPECT_NE(refused.body.find("nothing was stored"), std::string::npos) << refused.body;
    EXPECT_FALSE(refused.retry_after.empty());
  }
  Client c(node->port(), 10);
  auto health = c.get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  EXPECT_NE(health->body.find("Redis is out of memory"), std::string::npos) << health->body;
  EXPECT_EQ(metric(node->port(), "ssechat_storage_up"), 0u);
  EXPECT_EQ(metric(node->port(), "ssechat_redis_up"), 1u);  // the links are fine
  EXPECT_EQ(redis.cli({"XLEN", "{sse-chat}:log"}), "1");
  const std::string warning = "POSTs are refused until it takes writes again";
  std::string log = node->log();
  size_t warned = log.find(warning);
  EXPECT_NE(warned, std::string::npos) << log;
  EXPECT_EQ(log.find(warning, warned + 1), std::string::npos) << "logged more than once:\n" << log;

  ASSERT_EQ(redis.cli({"CONFIG", "SET", "maxmemory", "0"}), "OK");
  EXPECT_TRUE(eventually([&] { return healthy(node->port()); }, 10s)) << node->log();
  EXPECT_EQ(metric(node->port(), "ssechat_storage_up"), 1u);
  Posted retried = post(node->port(), "alpha", "while-full", "pub", "n-full");
  EXPECT_EQ(retried.status, 201) << retried.body;
  std::vector<std::string> kept;
  for (const Listed& l : list_room(node->port(), "alpha")) kept.push_back(l.text);
  EXPECT_EQ(kept, (std::vector<std::string>{"before", "while-full"}));
}

// 10. A node stopped with SIGTERM takes its readers out of every node's presence as it stops,
// rather than leaving them counted until its entries expire (30 s; the wait below is 10 s).
TEST(RedisNodes, AStoppedNodesReadersLeavePresenceAtOnce) {
  RedisServer redis;
  auto a = start_node(redis);
  auto b = start_node(redis);
  Stream alice(a->port(), "?room=lobby&user=alice");
  ASSERT_TRUE(alice.ok);
  auto last_presence = [](const Stream& s) {
    std::string data;
    for (const Got& g : s.events())
      if (g.event == "presence") data = g.data;
    return data;
  };
  const std::string both = R"({"room":"lobby","online":2,"users":["alice","bob"]})";
  const std::string alone = R"({"room":"lobby","online":1,"users":["alice"]})";
  {
    Stream bob(b->port(), "?room=lobby&user=bob");
    ASSERT_TRUE(bob.ok);
    EXPECT_TRUE(alice.wait([&](const Stream& s) { return last_presence(s) == both; }, 20s))
        << last_presence(alice);
    EXPECT_EQ(b->stop(SIGTERM), 0);
    EXPECT_TRUE(bob.wait_ended(10s));
  }
  EXPECT_TRUE(alice.wait([&](const Stream& s) { return last_presence(s) == alone; }, 10s))
      << last_presence(alice);
}

namespace {

// `online` of `room` in the node's GET /rooms; -1 when the room is not listed.
long listed_online(uint16_t port, const std::string& room) {
  Client c(port, 10);
  auto r = c.get("/rooms?limit=1000");
  if (!r || r->status != 200) return -1;
  size_t at = r->body.find("{\"room\":\"" + room + "\"");
  if (at == std::string::npos) return -1;
  return std::stol(field(r->body.substr(at, r->body.find('}', at) - at + 1), "online"));
}

}  // namespace

// 11. Every node counts every node's readers, in GET /rooms and presence, whether or not it has
// readers of the room itself: a room read only elsewhere is listed with them, a node that starts
// later counts them too (from the rooms with live entries, not from the presence log, emptied
// here), the count drops when they leave, and a killed node's readers stop counting once its
// entries expire (30 s), also on a node with no readers of the room.
TEST(RedisNodes, EveryNodeCountsReadersItDoesNotHave) {
  RedisServer redis;
  auto a = start_node(redis);
  auto b = start_node(redis);
  std::unique_ptr<ServerProcess> c;
  {
    Stream alice(a->port(), "?room=lobby&user=alice");
    ASSERT_TRUE(alice.ok);
    EXPECT_TRUE(eventually([&] { return listed_online(b->port(), "lobby") == 1; }, 20s))
        << listed_online(b->port(), "lobby");
    redis.cli({"XTRIM", "{sse-chat}:presence-log", "MAXLEN", "0"});
    c = start_node(redis);
    EXPECT_TRUE(eventually([&] { return listed_online(c->port(), "lobby") == 1; }, 20s))
        << listed_online(c->port(), "lobby");
  }
  EXPECT_TRUE(eventually([&] { return listed_online(b->port(), "lobby") == 0; }, 20s))
      << listed_online(b->port(), "lobby");
  // A reader who joins on b now hears of itself alone, not of alice, who left.
  Stream carol(b->port(), "?room=lobby&user=carol");
  ASSERT_TRUE(carol.ok);
  EXPECT_TRUE(carol.wait(
      [](const Stream& s) {
        for (const Got& g : s.events())
          if (g.event == "presence") return true;
        return false;
      },
      10s));
  for (const Got& g : carol.events()) {
    if (g.event == "presence") {
      EXPECT_EQ(g.data, R"({"room":"lobby","online":1,"users":["carol"]})");
    }
  }
  Stream dave(a->port(), "?room=lobby&user=dave");
  ASSERT_TRUE(dave.ok);
  EXPECT_TRUE(eventually([&] { return listed_online(b->port(), "lobby") == 2; }, 20s));
  EXPECT_TRUE(eventually([&] { return listed_online(c->port(), "lobby") == 2; }, 20s));
  EXPECT_EQ(a->stop(SIGKILL), 128 + SIGKILL);
  EXPECT_TRUE(eventually([&] { return listed_online(b->port(), "lobby") == 1; }, 60s))
      << listed_online(b->port(), "lobby");
  EXPECT_TRUE(eventually([&] { return listed_online(c->port(), "lobby") == 1; }, 30s))
      << listed_online(c->port(), "lobby");
}

// Redis keeps at most the largest --max-rooms of any node: the room posted to longest ago goes
// with its stream. A stream that resumes it from before its messages, on a node that no longer
// has it in memory either, hears `reset`: never silence over messages Redis dropped.
TEST(RedisNodes, ARoomRedisDroppedIsResetNotSilentlyEmpty) {
  RedisServer redis;
  auto node = start_node(redis, {"--max-rooms", "2"});
  Posted first = post(node->port(), "a", "gone");
  ASSERT_EQ(first.status, 201) << first.body;
  for (const char* room : {"b", "c"}) ASSERT_EQ(post(node->port(), room, "x").status, 201);
  EXPECT_EQ(redis.cli({"EXISTS", "{sse-chat}:room:a"}), "0");  // dropped: rooms a, b, c > 2
  auto resumed = open_stream(node->port(), "?room=a", std::to_string(first.id - 1));
  ASSERT_TRUE(resumed->ok);
  ASSERT_TRUE(resumed->wait([](const Stream& s) { return !s.events().empty(); }, 20s));
  std::vector<Got> got = resumed->events();
  EXPECT_EQ(got.front().event, "reset") << got.front().data;
  EXPECT_TRUE(resumed->ids().empty());  // nothing of room a is kept anywhere
}
