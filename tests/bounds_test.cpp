// Every connection is bounded in time and bytes, over real sockets against the real binary: idle
// and lingering connections close on time, readers that stop reading are cut off, and hostile
// readers cost bounded memory while an honest subscriber keeps receiving.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "test_server.h"

using namespace testing_support;

TEST(Bounds, AConnectionThatSendsNothingGetsTheRequestTimeout) {
  ServerProcess server({"--request-timeout", "1", "--keepalive-timeout", "600"});
  Client c(server.port(), /*timeout_s=*/15);
  EXPECT_TRUE(c.wait_closed());  // long before the keep-alive timeout
}

TEST(Bounds, ALingeringCloseEndsHoweverThePeerTrickles) {
  ServerProcess server;
  Client c(server.port(), /*timeout_s=*/30);
  ASSERT_TRUE(c.send("GARBAGE\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  // One byte a second, forever: the server must still close (its cap is a few seconds). Its
  // half-close comes at once; the full close shows when a byte sent is answered with a reset.
  bool closed = false;
  for (int i = 0; i < 25 && !closed; ++i) {
    closed = ::send(c.fd(), "x", 1, MSG_NOSIGNAL) < 0;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  EXPECT_TRUE(closed);
}
