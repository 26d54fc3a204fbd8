// When HeapTrim gives free memory back: after a fall from the high-water mark that is both large
// and to half or less, once per fall.
#include "heap_trim.h"

#include <gtest/gtest.h>

namespace sse {
namespace {

HeapLoad connections(size_t peak, size_t now) {
  return {peak, now, 0};
}

TEST(HeapTrim, TrimsOnceWhenConnectionsFallToHalfByAMargin) {
  HeapTrim trim;
  EXPECT_FALSE(trim.on_tick(connections(2000, 2000)));
  EXPECT_FALSE(trim.on_tick(connections(2000, 1200)));  // not yet half
  EXPECT_FALSE(trim.on_tick(connections(1200, 900)));   // half, but still falling
  EXPECT_TRUE(trim.on_tick(connections(900, 900)));     // the peak is remembered across ticks
  EXPECT_FALSE(trim.on_tick(connections(900, 900)));    // once: the mark starts again at 900
  EXPECT_FALSE(trim.on_tick(connections(900, 500)));    // from 900: not yet half
  EXPECT_EQ(trim.trims(), 1u);
}

// A fall over several seconds is trimmed once it stops, whole: a trim halfway down (at 400 of
// 1,000) would have left the last 400 closed connections' memory kept, 400 -> 200 being no margin.
TEST(HeapTrim, AFallIsTrimmedOnceItHasStopped) {
  HeapTrim trim;
  EXPECT_FALSE(trim.on_tick(connections(1000, 1000)));
  EXPECT_FALSE(trim.on_tick(connections(1000, 400)));
  EXPECT_FALSE(trim.on_tick(connections(400, 200)));
  EXPECT_TRUE(trim.on_tick(connections(200, 200)));
  EXPECT_EQ(trim.trims(), 1u);
}

TEST(HeapTrim, ABurstBetweenTicksCountsThroughItsHighWaterMark) {
  HeapTrim trim;
  EXPECT_FALSE(trim.on_tick(connections(10, 10)));
  EXPECT_TRUE(trim.on_tick(connections(3000, 10)));  // opened and closed within one second
}

TEST(HeapTrim, SmallServersNeverTrim) {
  HeapTrim trim;
  for (size_t n : {200, 0, 255, 0})
    EXPECT_FALSE(trim.on_tick(connections(n, 0)));  // each fall under 256 connections
  EXPECT_EQ(trim.trims(), 0u);
}

TEST(HeapTrim, KeptBytesFallingTrimsToo) {
  HeapTrim trim;
  EXPECT_FALSE(trim.on_tick({5, 5, 100ull << 20}));
  EXPECT_FALSE(trim.on_tick({5, 5, 60ull << 20}));  // down 40 MiB, but not to half
  EXPECT_TRUE(trim.on_tick({5, 5, 40ull << 20}));
  EXPECT_FALSE(trim.on_tick({5, 5, 30ull << 20}));  // half of 40 MiB, under the 32 MiB margin
}

// Opening and closing hundreds of connections again and again trims at most every
// kMinTicksBetween seconds: a fall in between waits for it.
TEST(HeapTrim, TrimsAtMostOnceInItsInterval) {
  HeapTrim trim;
  EXPECT_TRUE(trim.on_tick(connections(1000, 0)));
  int waited = 0;
  while (!trim.on_tick(connections(1000, 0))) ++waited;
  EXPECT_EQ(waited, HeapTrim::kMinTicksBetween - 1);
  EXPECT_EQ(trim.trims(), 2u);
}

// A few connections that each held a megabyte of frames history no longer keeps leave the heap
// with much free memory and no fall in either count: the allocator's own figure says so. Growth
// counts from the least it held free since the last trim, so an attack repeated after a trim is
// given back again.
TEST(HeapTrim, FreeMemoryGrowingByTheMarginTrims) {
  HeapTrim trim;
  auto with_free = [](uint64_t mib) { return HeapLoad{100, 100, 0, mib << 20}; };
  EXPECT_FALSE(trim.on_tick(with_free(10)));
  EXPECT_FALSE(trim.on_tick(with_free(40)));  // 30 MiB more: under the margin
  EXPECT_TRUE(trim.on_tick(with_free(250)));
  for (int i = 0; i < HeapTrim::kMinTicksBetween; ++i)
    EXPECT_FALSE(trim.on_tick(with_free(250)));  // trimmed pages still count free
  EXPECT_FALSE(trim.on_tick(with_free(5)));      // taken again by the next attack
  EXPECT_TRUE(trim.on_tick(with_free(240)));     // and freed again
  EXPECT_FALSE(trim.on_tick({100, 100, 0, 0}));  // 0: the allocator cannot say
  EXPECT_EQ(trim.trims(), 2u);
}

// A trim for a fall in connections, on a tick that did not ask the allocator: its next figure
// (the trimmed chunks still counted free) is where growth counts from, not a second trim.
TEST(HeapTrim, AFallsTrimIsNotFollowedByOneForTheFreeMemoryItLeft) {
  HeapTrim trim;
  EXPECT_FALSE(trim.on_tick({10, 10, 0, 5ull << 20}));
  EXPECT_FALSE(trim.on_tick({3000, 3000, 0, 0}));
  EXPECT_FALSE(trim.on_tick({3000, 10, 0, 0}));  // still falling
  EXPECT_TRUE(trim.on_tick({10, 10, 0, 0}));
  for (int i = 0; i < HeapTrim::kMinTicksBetween; ++i)
    EXPECT_FALSE(trim.on_tick({10, 10, 0, 200ull << 20}));
  EXPECT_EQ(trim.trims(), 1u);
}

}  // namespace
}  // namespace sse
