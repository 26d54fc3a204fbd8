// The send window (--send-window-us): under load the writer set flushes at most once per window,
// so the messages of one window reach a stream in one send; a pipelining client is not held by
// it; and the reactor wakes for a postponed flush without any I/O.
//
// The windows here are long (a second) so that what they group is unambiguous. Only one test
// looks at a clock, and only to tell "a few milliseconds" from "at least 24 windows of a second".
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "reactor.h"
#include "test_server.h"

using namespace testing_support;

namespace {

std::string post_request(const std::string& text) {
  std::string body = R"({"user":"w","text":")" + text + R"("})";
  return "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: "
         "application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

// Nothing but wake_by() wakes this loop: each iteration asks for the next one, a millisecond on.
// Were the deadline ignored, the loop would sleep until the guard timer, a minute later.
TEST(SendWindow, ReactorWakesByTheDeadlineWithoutAnyEvent) {
  sse::Reactor reactor;
  int iterations = 0;
  bool guard_fired = false;
  reactor.every(std::chrono::seconds(60), [&] {
    guard_fired = true;
    reactor.stop();
  });
  reactor.after_dispatch([&] {
    if (++iterations == 5) {
      reactor.stop();
    } else {
      reactor.wake_by(sse::monotonic_us() + 1000);
    }
    return false;
  });
  reactor.wake_by(sse::monotonic_us() + 1000);
  reactor.run();
  EXPECT_EQ(iterations, 5);
  EXPECT_FALSE(guard_fired);
}

// Five POSTs from five clients, 50 ms apart (each in a loop iteration of its own), inside one
// window of a second (started by the send of the metrics answer read first): their answers and
// messages go out in one send round, where without a window each would have had its own.
TEST(SendWindow, TheMessagesOfOneWindowGoOutInOneSendRound) {
  ServerProcess server({"--send-window-us", "1000000", "--heartbeat", "3600"});
  Subscription sub(server.port());
  ASSERT_TRUE(sub.ok);
  uint64_t rounds_before = metric(server.port(), "ssechat_send_rounds_total");
  std::vector<std::unique_ptr<Client>> posters;
  for (int i = 0; i < 5; ++i) {
    posters.push_back(std::make_unique<Client>(server.port()));
    ASSERT_TRUE(posters.back()->send(post_request("w" + std::to_string(i))));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (auto& poster : posters) {
    auto r = poster->read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 201) << r->body;
  }
  for (int i = 0; i < 5; ++i) {
    auto ev = sub.reader.next_message();
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->id, std::to_string(i + 1));
  }
  // Read when this request is handled: the round that sent the first metrics answer, the one
  // that sent the five, and nothing since.
  EXPECT_EQ(metric(server.port(), "ssechat_send_rounds_total") - rounds_before, 2u);
}

// A client that pipelines many requests stops being read each time 16 answers wait to be
// written; the window must not hold those answers. Held, 400 requests would take at least 24
// windows of a second; hurried, they take milliseconds. The 10-second bound sits far from both.
TEST(SendWindow, APipeliningClientIsNotHeldByTheWindow) {
  ServerProcess server({"--send-window-us", "1000000"});
  Client client(server.port());
  ASSERT_TRUE(client.connected());
  std::string all;
  for (int i = 0; i < 400; ++i) all += "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(client.send(all));
  for (int i = 0; i < 400; ++i) {
    auto r = client.read_response();
    ASSERT_TRUE(r) << "answer " << i;
    ASSERT_EQ(r->status, 200);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
}

// Posts and messages still pass when every loop iteration flushes (no window at all).
TEST(SendWindow, ZeroFlushesAfterEveryIteration) {
  ServerProcess server({"--send-window-us", "0"});
  Subscription sub(server.port());
  ASSERT_TRUE(sub.ok);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(post_message(server.port(), "w", "z" + std::to_string(i)), static_cast<uint64_t>(i));
    auto ev = sub.reader.next_message();
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->id, std::to_string(i));
  }
}
