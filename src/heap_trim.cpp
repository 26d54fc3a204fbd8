#include "heap_trim.h"

#include <malloc.h>

#include <algorithm>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(__SANITIZE_ADDRESS__)
#define __SANITIZE_ADDRESS__ 1  // clang says it this way
#endif
#endif

#if defined(__SANITIZE_ADDRESS__)
extern "C" void
__sanitizer_purge_allocator();  // sanitizer/allocator_interface.h, not always installed
#endif

namespace sse {

bool HeapTrim::on_tick(const HeapLoad& load) {
  peak_connections_ = std::max(peak_connections_, load.connections);
  peak_kept_ = std::max(peak_kept_, load.kept_bytes);
  // Not while connections are still closing: a trim halfway down would leave the rest of the
  // fall, less than the margin from there, kept for good.
  bool settled = load.connections_now >= last_connections_now_;
  last_connections_now_ = load.connections_now;
  // Free memory taken again (pages made resident again) lowers the mark the growth counts from.
  if (load.free_heap_bytes > 0) free_low_ = std::min(free_low_, load.free_heap_bytes);
  if (++ticks_since_trim_ < kMinTicksBetween) return false;  // the peaks wait for the next one
  bool trim = (settled && fell(peak_connections_, load.connections_now, kConnectionDrop)) ||
              fell(peak_kept_, load.kept_bytes, kKeptDrop) ||
              (settled && load.free_heap_bytes >= free_low_ + kFreeGrowth);
  if (!trim) return false;
  release_free_heap();
  ++trims_;
  ticks_since_trim_ = 0;
  peak_connections_ = load.connections_now;
  peak_kept_ = load.kept_bytes;
  // Trimmed chunks still count as free: growth is measured from the next figure, until some
  // are taken (this tick's may be from before the fall that made this trim).
  free_low_ = kFreeUnknown;
  return true;
}

void release_free_heap() {
#if defined(__SANITIZE_ADDRESS__)
  // Under AddressSanitizer the heap is its allocator's, not glibc's.
  __sanitizer_purge_allocator();
#else
  malloc_trim(0);
#endif
}

uint64_t free_heap_bytes() {
#if defined(__SANITIZE_ADDRESS__)
  return 0;
#else
  struct mallinfo2 info = mallinfo2();
  return info.fordblks;
#endif
}

}  // namespace sse
