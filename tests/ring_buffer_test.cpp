#include "ring_buffer.h"

#include <gtest/gtest.h>

#include <string>

using sse::FrameRef;
using sse::FrameRing;

namespace {
// Plays the part of writev: takes up to max_bytes from the front, 64 frames per round.
std::string drain(FrameRing& ring, size_t max_bytes) {
  std::string out;
  while (!ring.empty() && out.size() < max_bytes) {
    iovec iov[64];
    size_t n = ring.fill_iovec(iov, 64);
    std::string round;
    for (size_t i = 0; i < n && out.size() + round.size() < max_bytes; ++i)
      round.append(static_cast<char*>(iov[i].iov_base),
                   std::min(iov[i].iov_len, max_bytes - out.size() - round.size()));
    ring.consume(round.size());
    out += round;
  }
  return out;
}
}  // namespace

TEST(FrameRing, FifoWithPartialWrites) {
  FrameRing ring(8);
  ASSERT_TRUE(ring.push(FrameRef("abc")));
  ASSERT_TRUE(ring.push(FrameRef("defg")));
  EXPECT_EQ(ring.pending_bytes(), 7u);
  EXPECT_EQ(drain(ring, 2), "ab");  // offset into the first frame
  EXPECT_EQ(ring.size(), 2u);
  EXPECT_EQ(drain(ring, 3), "cde");
  EXPECT_EQ(ring.size(), 1u);
  EXPECT_EQ(drain(ring, 100), "fg");
  EXPECT_TRUE(ring.empty());
  EXPECT_EQ(ring.pending_bytes(), 0u);
}

TEST(FrameRing, FullRingRefusesAndKeepsOrder) {
  FrameRing ring(4, 2);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(ring.push(FrameRef(std::to_string(i))));
  EXPECT_FALSE(ring.push(FrameRef("x")));
  EXPECT_EQ(ring.free_slots(), 0u);
  EXPECT_EQ(drain(ring, 100), "0123");
}

TEST(FrameRing, WrapsAroundTheEnd) {
  FrameRing ring(4, 4);
  std::string expected, got;
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 3; ++i) {
      std::string s = std::to_string(round * 3 + i) + ",";
      expected += s;
      ASSERT_TRUE(ring.push(FrameRef(s)));
    }
    got += drain(ring, ring.pending_bytes() - 1);  // leaves a byte behind: head moves around
  }
  got += drain(ring, 1000);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(ring.capacity(), 4u);  // never grew past the bound
}

TEST(FrameRing, GrowsLazilyAndShrinksWhenIdle) {
  FrameRing ring(1024, 4);
  EXPECT_EQ(ring.capacity(), 0u);  // an idle subscriber holds no slots
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(ring.push(FrameRef("x")));
  EXPECT_EQ(ring.capacity(), 128u);
  drain(ring, 1000);
  ring.shrink_if_empty();
  EXPECT_EQ(ring.capacity(), 4u);
}

TEST(FrameRing, SharesFramesInsteadOfCopying) {
  FrameRef frame("shared");
  FrameRing a(8), b(8);
  ASSERT_TRUE(a.push(frame));
  ASSERT_TRUE(b.push(frame));
  EXPECT_EQ(frame->refs(), 3u);
  iovec ia[1] = {}, ib[1] = {};
  a.fill_iovec(ia, 1);
  b.fill_iovec(ib, 1);
  EXPECT_EQ(ia[0].iov_base, ib[0].iov_base);  // the same bytes
  a.consume(6);
  EXPECT_EQ(frame->refs(), 2u);
  b.clear();
  EXPECT_EQ(frame->refs(), 1u);
}

// An ending stream keeps only what it started writing (the rest of a half-sent event, or its
// response head) and drops what it never began, wherever the ring wraps.
TEST(FrameRing, KeepFrontOnlyDropsWhatWasNeverStarted) {
  FrameRing ring(4);
  for (const char* f : {"x1", "x2", "x3"}) ASSERT_TRUE(ring.push(FrameRef(f)));
  EXPECT_EQ(drain(ring, 6), "x1x2x3");  // the next pushes wrap around the end
  for (const char* f : {"abc", "def", "ghi"}) ASSERT_TRUE(ring.push(FrameRef(f)));
  EXPECT_EQ(drain(ring, 1), "a");
  ring.keep_front_only();
  EXPECT_EQ(ring.size(), 1u);
  EXPECT_EQ(ring.pending_bytes(), 2u);
  ASSERT_TRUE(ring.push(FrameRef("!")));
  EXPECT_EQ(drain(ring, 100), "bc!");
  ring.keep_front_only();  // empty: nothing to do
  EXPECT_TRUE(ring.empty());
}
