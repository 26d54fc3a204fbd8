#pragma once
// Gives the heap's free pages back to the kernel once a load that grew it has gone.
//
// glibc keeps what is freed in its free lists, so after thousands of connections (an attack, a
// reconnect storm) or a burst of rooms the process would stay at that peak's RSS for good. The
// server reports what it holds once a second; when that fell to half or less of its high-water
// mark since the last trim, by a margin worth a system call per free block, and connections are no
// longer closing, the free pages go back (malloc_trim) — once, not on every tick, since a trim
// walks the allocator's free lists.

#include <cstddef>
#include <cstdint>

namespace sse {

struct HeapLoad {
  size_t connections = 0;  // the high-water mark since the last report, for the peak
  size_t connections_now = 0;
  uint64_t kept_bytes = 0;  // history and resume reads held in memory
  // What the allocator holds free (0 where it cannot say): a few connections that each held a
  // megabyte of frames no longer kept leave it behind without a fall in either count above.
  uint64_t free_heap_bytes = 0;
};

class HeapTrim {
 public:
  static constexpr size_t kConnectionDrop = 256;        // ~16 KiB each under load
  static constexpr uint64_t kKeptDrop = 32ull << 20;    // bytes of frames
  static constexpr uint64_t kFreeGrowth = 32ull << 20;  // free heap bytes since the last trim
  // Ticks (seconds) between two trims at least: opening and closing hundreds of connections
  // again and again makes the loop walk the free lists no more often than this.
  static constexpr int kMinTicksBetween = 10;

  // True when the load fell far enough for a trim (and the trim ran).
  bool on_tick(const HeapLoad& load);
  uint64_t trims() const { return trims_; }

 private:
  bool fell(size_t peak, size_t now, size_t margin) const {
    return peak >= now + margin && now <= peak / 2;
  }

  size_t peak_connections_ = 0;
  size_t last_connections_now_ = 0;  // at the tick before
  uint64_t peak_kept_ = 0;
  // The least the allocator held free since the last trim (a trim's chunks still count free).
  static constexpr uint64_t kFreeUnknown = UINT64_MAX / 2;
  uint64_t free_low_ = kFreeUnknown;
  int ticks_since_trim_ = kMinTicksBetween;
  uint64_t trims_ = 0;
};

// Returns the free pages of the process's allocator to the kernel.
void release_free_heap();
// Bytes the allocator holds free, 0 where it cannot say (under AddressSanitizer).
uint64_t free_heap_bytes();

}  // namespace sse
