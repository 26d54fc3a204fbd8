// Connection against a fake owner (no server, no broker): real sockets (a socketpair), a real
// Reactor for epoll interest, and the test playing the writer set by calling flush itself.
#include "connection.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "sse.h"

using sse::Connection;
using sse::Request;

namespace {

class FakeHost : public sse::ConnectionHost {
 public:
  FakeHost() { settings_.queue_frames = 64; }

  void handle_request(Connection& conn, Request& req) override {
    handled.push_back(req.path);
    if (req.path == "/events")
      return conn.start_stream("HTTP/1.1 200 OK\r\n\r\n", "retry: 1\n\n", true);
    if (hold_next) {
      hold_next = false;
      conn.hold();
      return;
    }
    respond(conn, req.path, !req.keep_alive);
  }
  void mark_dirty(Connection& conn) override {
    for (Connection* c : dirty)
      if (c == &conn) return;
    dirty.push_back(&conn);
  }
  void schedule_reap(Connection& conn) override { reaped.push_back(&conn); }
  const sse::ConnectionSettings& settings() const override { return settings_; }
  sse::Reactor& reactor() override { return reactor_; }
  int64_t now_ms() const override { return clock_ms; }
  sse::Metrics& metrics() override { return metrics_; }

  static void respond(Connection& conn, const std::string& body, bool close) {
    sse::http::Response r;
    r.content_type = "text/plain";
    r.body = body;
    r.close = close;
    conn.respond(r);
  }
  // The writer set's job: flush every connection with queued output once.
  void flush_writers() {
    std::vector<Connection*> batch;
    batch.swap(dirty);
    for (Connection* c : batch) c->flush();
  }

  sse::ConnectionSettings settings_;
  sse::Reactor reactor_;
  sse::Metrics metrics_;
  std::vector<std::string> handled;
  std::vector<Connection*> dirty;
  std::vector<Connection*> reaped;
  bool hold_next = false;
  int64_t clock_ms = 1000000;
};

// One connection on one end of a socketpair; the test is the client on the other end.
struct Pair {
  explicit Pair(FakeHost& host) {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    client = fds[1];
    conn = new Connection(host, fds[0], sse::net::IpAddress{});
  }
  ~Pair() {
    delete conn;
    ::close(client);
  }
  void send(const std::string& bytes) {
    ASSERT_EQ(::write(client, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  // Everything the connection has written so far ("" when nothing).
  std::string received() {
    std::string out;
    char buf[65536];
    ssize_t n;
    while ((n = ::read(client, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    peer_closed = peer_closed || n == 0;
    return out;
  }
  Connection* conn;
  int client;
  bool peer_closed = false;
};

std::string get(const std::string& path, bool close = false) {
  return "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + (close ? "Connection: close\r\n" : "") +
         "\r\n";
}

// The bodies of the responses in `wire`, in order.
std::vector<std::string> bodies(const std::string& wire) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = wire.find("Content-Length: ", pos)) != std::string::npos) {
    size_t len = std::stoul(wire.substr(pos + 16));
    size_t start = wire.find("\r\n\r\n", pos) + 4;
    out.push_back(wire.substr(start, len));
    pos = start + len;
  }
  return out;
}

using Paths = std::vector<std::string>;

// A request with "Connection: close", answered: the connection then lingers.
void answer_and_linger(FakeHost& host, Pair& p) {
  p.send(get("/bye", /*close=*/true));
  p.conn->on_event(EPOLLIN);
  host.flush_writers();
  ASSERT_EQ(p.conn->state(), Connection::State::Lingering);
}

}  // namespace

TEST(Connection, PipelinedRequestsAreAnsweredInOrder) {
  FakeHost host;
  Pair p(host);
  p.send(get("/a") + get("/b") + get("/c"));
  p.conn->on_event(EPOLLIN);
  EXPECT_EQ(host.handled, (Paths{"/a", "/b", "/c"}));
  host.flush_writers();
  EXPECT_EQ(bodies(p.received()), (Paths{"/a", "/b", "/c"}));
}

TEST(Connection, EverySplitOfTwoPipelinedRequestsGivesTheSameAnswers) {
  std::string wire = get("/first") + get("/second");
  for (size_t cut = 1; cut < wire.size(); ++cut) {
    FakeHost host;
    Pair p(host);
    p.send(wire.substr(0, cut));
    p.conn->on_event(EPOLLIN);
    p.send(wire.substr(cut));
    p.conn->on_event(EPOLLIN);
    host.flush_writers();
    EXPECT_EQ(bodies(p.received()), (Paths{"/first", "/second"})) << "cut at " << cut;
  }
}

TEST(Connection, HeldRequestPausesTheNextUntilReleased) {
  FakeHost host;
  Pair p(host);
  host.hold_next = true;
  p.send(get("/slow") + get("/next") + get("/last"));
  p.conn->on_event(EPOLLIN);
  EXPECT_EQ(host.handled, (Paths{"/slow"}));  // the others wait: answers must stay in order
  p.send(get("/later"));
  p.conn->on_event(EPOLLIN);  // bytes arriving while held are kept, not parsed
  EXPECT_EQ(host.handled, (Paths{"/slow"}));
  FakeHost::respond(*p.conn, "/slow", false);
  p.conn->release();
  EXPECT_EQ(host.handled, (Paths{"/slow", "/next", "/last", "/later"}));
  host.flush_writers();
  EXPECT_EQ(bodies(p.received()), (Paths{"/slow", "/next", "/last", "/later"}));
}

TEST(Connection, ReadingPausesWhileManyAnswersAreUnsent) {
  FakeHost host;
  Pair p(host);
  std::string wire;
  for (int i = 0; i < 40; ++i) wire += get("/" + std::to_string(i));
  p.send(wire);
  p.conn->on_event(EPOLLIN);
  size_t first_round = host.handled.size();
  EXPECT_LT(first_round, 40u);  // a client that never reads cannot make the queue grow
  EXPECT_GT(first_round, 0u);
  std::string got;
  for (int round = 0; round < 10 && host.handled.size() < 40; ++round) {
    host.flush_writers();  // the queue drains, parsing resumes
    got += p.received();
  }
  host.flush_writers();
  got += p.received();
  std::vector<std::string> want;
  for (int i = 0; i < 40; ++i) want.push_back("/" + std::to_string(i));
  EXPECT_EQ(bodies(got), want);
}

TEST(Connection, HalfClosedPeerStillGetsEveryAnswer) {
  FakeHost host;
  Pair p(host);
  std::string wire;
  for (int i = 0; i < 100; ++i) wire += get("/" + std::to_string(i));
  p.send(wire);
  ASSERT_EQ(::shutdown(p.client, SHUT_WR), 0);
  std::string got;
  for (int round = 0; round < 50 && !p.conn->closed(); ++round) {
    p.conn->on_event(EPOLLIN | EPOLLRDHUP);
    host.flush_writers();
    got += p.received();
  }
  std::vector<std::string> want;
  for (int i = 0; i < 100; ++i) want.push_back("/" + std::to_string(i));
  EXPECT_EQ(bodies(got), want);
  EXPECT_TRUE(p.conn->closed());  // once every answer is written
}

TEST(Connection, FullStreamQueueClosesTheSlowConsumer) {
  FakeHost host;
  host.settings_.queue_frames = 4;
  Pair p(host);
  p.conn->start_stream("HTTP/1.1 200 OK\r\n\r\n", "retry: 1\n\n", true);
  sse::FrameRef frame("data: x\n\n");
  int accepted = 0;
  while (p.conn->deliver(frame)) ++accepted;
  EXPECT_EQ(accepted, 2);  // the head and the opening event took two of the four slots
  EXPECT_TRUE(p.conn->closed());
  EXPECT_EQ(host.metrics_.slow_consumers, 1u);
  EXPECT_EQ(host.reaped.size(), 1u);
}

TEST(Connection, AnAnswerLargerThanTheByteBoundClosesTheConnection) {
  FakeHost host;
  host.settings_.max_queued_bytes = 300;
  Pair p(host);
  p.send(get("/" + std::string(400, 'a')));  // the fake host echoes the path as the body
  p.conn->on_event(EPOLLIN);
  EXPECT_TRUE(p.conn->closed());
  EXPECT_EQ(p.conn->close_reason(), "output queue full");
}

TEST(Connection, ReadingPausesOnQueuedBytesToo) {
  FakeHost host;
  Pair p(host);
  std::string big = "/" + std::string(7000, 'b');  // ten answers pass 64 KiB
  std::string wire;
  for (int i = 0; i < 14; ++i) wire += get(big);
  p.send(wire);
  for (int i = 0; i < 20; ++i) p.conn->on_event(EPOLLIN);  // no flush: nobody reads
  EXPECT_GE(host.handled.size(), 9u);
  EXPECT_LT(host.handled.size(), 14u);
  std::string got;
  for (int round = 0; round < 40 && host.handled.size() < 14; ++round) {
    host.flush_writers();
    got += p.received();
    p.conn->on_event(EPOLLIN);
  }
  host.flush_writers();
  got += p.received();
  EXPECT_EQ(bodies(got), Paths(14, big));
}

TEST(Connection, LingersAfterCloseThenTimesOut) {
  FakeHost host;
  Pair p(host);
  p.send(get("/bye", /*close=*/true) + get("/ignored"));
  p.conn->on_event(EPOLLIN);
  EXPECT_EQ(host.handled, (Paths{"/bye"}));
  host.flush_writers();
  EXPECT_EQ(bodies(p.received()), (Paths{"/bye"}));
  EXPECT_EQ(p.conn->state(), Connection::State::Lingering);
  EXPECT_TRUE(p.peer_closed);  // our side is shut down for writing
  p.send("more bytes are read and dropped");
  p.conn->on_event(EPOLLIN);
  EXPECT_EQ(p.conn->state(), Connection::State::Lingering);
  p.conn->check_timeouts(host.clock_ms + 1000);
  EXPECT_FALSE(p.conn->closed());
  p.conn->check_timeouts(host.clock_ms + 60000);
  EXPECT_TRUE(p.conn->closed());
}

TEST(Connection, LingeringEndsWhenThePeerCloses) {
  FakeHost host;
  Pair p(host);
  ASSERT_NO_FATAL_FAILURE(answer_and_linger(host, p));
  ::shutdown(p.client, SHUT_WR);
  p.conn->on_event(EPOLLIN);
  EXPECT_TRUE(p.conn->closed());
}

TEST(Connection, IdleKeepAliveTimesOutButARequestInProgressGets408) {
  FakeHost host;
  Pair idle(host);
  idle.conn->check_timeouts(host.clock_ms + host.settings_.keepalive_timeout_ms + 1);
  EXPECT_TRUE(idle.conn->closed());

  Pair slow(host);
  slow.send("GET /half HTTP/1.1\r\nHo");
  slow.conn->on_event(EPOLLIN);
  slow.conn->check_timeouts(host.clock_ms + host.settings_.request_timeout_ms + 1);
  host.flush_writers();
  EXPECT_NE(slow.received().find("HTTP/1.1 408"), std::string::npos);
}

TEST(Connection, ANewConnectionThatSendsNothingGetsTheRequestTimeout) {
  FakeHost host;
  host.settings_.request_timeout_ms = 10000;
  host.settings_.keepalive_timeout_ms = 60000;
  Pair p(host);
  int64_t now = host.clock_ms;
  p.conn->check_timeouts(now + 9000);
  EXPECT_FALSE(p.conn->closed());
  p.conn->check_timeouts(now + 10001);
  EXPECT_TRUE(p.conn->closed());
  // After a request it is a keep-alive connection: the longer limit applies.
  Pair served(host);
  served.send(get("/x"));
  served.conn->on_event(EPOLLIN);
  host.flush_writers();
  served.conn->check_timeouts(now + 30000);
  EXPECT_FALSE(served.conn->closed());
}

TEST(Connection, ALingeringCloseHasAHardCapHoweverThePeerTrickles) {
  FakeHost host;
  Pair p(host);
  ASSERT_NO_FATAL_FAILURE(answer_and_linger(host, p));
  int64_t start = host.clock_ms;
  // One byte every 1.5 s keeps the idle timer from firing, but not the cap.
  for (int64_t t = 1500; t <= 4500; t += 1500) {
    host.clock_ms = start + t;
    p.send("x");
    p.conn->on_event(EPOLLIN);
    p.conn->check_timeouts(start + t);
  }
  EXPECT_FALSE(p.conn->closed());
  p.conn->check_timeouts(start + 5001);
  EXPECT_TRUE(p.conn->closed());
}

TEST(Connection, OutputThatMakesNoProgressIsClosedAfterTheSendTimeout) {
  FakeHost host;
  host.settings_.send_timeout_ms = 30000;
  Pair p(host);
  p.conn->start_stream("HTTP/1.1 200 OK\r\n\r\n", "retry: 1\n\n", true);
  ASSERT_TRUE(p.conn->deliver(sse::FrameRef("data: x\n\n")));  // queued, never flushed
  int64_t now = host.clock_ms;
  p.conn->check_timeouts(now + 29000);
  EXPECT_FALSE(p.conn->closed());  // a stream without output pending never times out
  p.conn->check_timeouts(now + 30001);
  EXPECT_TRUE(p.conn->closed());
  EXPECT_EQ(p.conn->close_reason(), "send timeout");

  // Written to the kernel is not read by the client: a reader that stopped reading in a quiet
  // room has nothing queued here, only in its socket, and is closed all the same.
  Pair stopped(host);
  stopped.conn->start_stream("HTTP/1.1 200 OK\r\n\r\n", "retry: 1\n\n", true);
  host.flush_writers();
  stopped.conn->check_timeouts(now + 1000);
  stopped.conn->check_timeouts(now + 30001);
  EXPECT_TRUE(stopped.conn->closed());

  Pair reader(host);
  reader.conn->start_stream("HTTP/1.1 200 OK\r\n\r\n", "retry: 1\n\n", true);
  host.flush_writers();
  reader.conn->check_timeouts(now + 1000);
  reader.received();  // the client takes it
  reader.conn->check_timeouts(now + 2000);
  reader.conn->check_timeouts(now + 30001);
  EXPECT_FALSE(reader.conn->closed());
}

TEST(Connection, RequestsSentOneByOneAlsoPauseOnUnsentBytes) {
  FakeHost host;
  Pair p(host);
  std::string big = "/" + std::string(7000, 'b');
  int sent = 0;
  for (; sent < 30 && (p.conn->interest() & EPOLLIN); ++sent) {  // a read of its own each time
    p.send(get(big));
    p.conn->on_event(EPOLLIN);
  }
  EXPECT_LT(sent, 30);  // reading paused once 64 KiB of answers were waiting
  EXPECT_FALSE(p.conn->closed());
  host.flush_writers();
  p.received();
  host.flush_writers();
  EXPECT_TRUE(p.conn->interest() & EPOLLIN);  // and resumes once they are taken
}

TEST(Connection, AHangUpWhilePausedDoesNotReadMore) {
  FakeHost host;
  Pair p(host);
  host.hold_next = true;
  std::string wire;
  for (int i = 0; i < 3000; ++i) wire += get("/" + std::to_string(i));  // ~80 KB
  p.send(wire);  // fits the socketpair's buffer
  p.conn->on_event(EPOLLIN);
  ASSERT_EQ(host.handled.size(), 1u);  // held: the rest waits
  ::shutdown(p.client, SHUT_WR);
  for (int i = 0; i < 100; ++i) p.conn->on_event(EPOLLRDHUP);  // all epoll reports while paused
  EXPECT_FALSE(p.conn->closed());  // nothing more was read, so no bound was hit
  FakeHost::respond(*p.conn, "/0", false);
  p.conn->release();
  std::string got;
  for (int round = 0; round < 5000 && !p.conn->closed(); ++round) {
    if (p.conn->interest() & EPOLLIN) p.conn->on_event(EPOLLIN);  // as epoll would
    host.flush_writers();
    got += p.received();
  }
  EXPECT_EQ(bodies(got).size(), 3000u) << p.conn->close_reason();
}

// A chunked stream that ends on purpose (a drain) ends with the last chunk, and nothing follows
// it: a frame delivered or a ping sent afterwards is dropped, not written past the end of the
// body (a keep-alive client would read it as the next response).
TEST(Connection, NothingFollowsTheLastChunkOfAStreamThatEnds) {
  FakeHost host;
  Pair p(host);
  p.conn->start_stream("HTTP/1.1 200 OK\r\n\r\n", "retry: 1\n\n", true);
  p.conn->drain();
  EXPECT_EQ(p.conn->free_slots(), 0u);
  EXPECT_TRUE(p.conn->deliver(sse::stream_frame("data: late\n\n")));
  host.flush_writers();
  std::string wire = p.received();
  ASSERT_TRUE(wire.ends_with("0\r\n\r\n")) << wire;
  EXPECT_EQ(wire.find("late"), std::string::npos) << wire;
  EXPECT_EQ(wire.find("0\r\n\r\n"), wire.size() - 5) << wire;
}

// A stream's peer that keeps sending is closed once it has sent a bound's worth (an EventSource
// sends nothing); a few stray bytes are discarded and the stream goes on.
TEST(Connection, AStreamWhosePeerKeepsSendingIsClosed) {
  FakeHost host;
  Pair p(host);
  p.conn->start_stream("HTTP/1.1 200 OK\r\n\r\n", "retry: 1\n\n", true);
  host.flush_writers();
  p.send("\r\n\r\nstray");
  p.conn->on_event(EPOLLIN);
  EXPECT_EQ(p.conn->state(), Connection::State::Stream);
  std::string junk(16 * 1024, 'x');
  for (int i = 0; i < 8 && p.conn->state() == Connection::State::Stream; ++i) {
    p.send(junk);
    p.conn->on_event(EPOLLIN);
  }
  EXPECT_EQ(p.conn->state(), Connection::State::Closed);
}

// The bound counts what follows the request, not the request (read with the first of it).
TEST(Connection, AStreamsPeerMaySendTheWholeBoundAfterItsRequest) {
  FakeHost host;
  Pair p(host);
  p.send(get("/events") + std::string(64 * 1024, 'x'));
  for (int i = 0; i < 4; ++i) p.conn->on_event(EPOLLIN);
  EXPECT_EQ(p.conn->state(), Connection::State::Stream);
  p.send("x");
  p.conn->on_event(EPOLLIN);
  EXPECT_EQ(p.conn->state(), Connection::State::Closed);
}
