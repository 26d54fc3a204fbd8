// Bounded FIFO of frame slices (a reference to a shared frame and a byte range of it) plus the
// offset already written of the first one: the output queue of one connection. A whole frame is
// one slice; a history page is slices of the very frames streams were sent, never a copy.
// Storage starts small and doubles up to `max_frames`, so an idle subscriber costs a few words
// while a busy one may queue up to the bound; past the bound push() fails and the caller applies
// its slow-consumer policy.
//
//   slots_:  [ . . F3 F4 F5 . . . ]      head_ -> F3, count_ = 3
//                  ^ written up to head_offset_ bytes of F3's slice
#pragma once

#include <sys/uio.h>

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "frame.h"

namespace sse {

class FrameRing {
 public:
  explicit FrameRing(size_t max_frames, size_t initial = 4)
      : max_frames_(round_up_pow2(max_frames)), capacity_(0) {
    initial_ = initial < max_frames_ ? round_up_pow2(initial) : max_frames_;
  }

  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  size_t max_frames() const { return max_frames_; }
  size_t capacity() const { return capacity_; }
  size_t free_slots() const { return max_frames_ - count_; }
  size_t pending_bytes() const { return pending_bytes_; }

  // Appends a reference; false when the ring already holds max_frames (the frame is not queued).
  [[nodiscard]] bool push(const FrameRef& frame) { return push(frame, 0, frame->size()); }
  // Appends bytes [begin, end) of `frame`.
  [[nodiscard]] bool push(const FrameRef& frame, size_t begin, size_t end) {
    assert(begin <= end && end <= frame->size());
    if (count_ == max_frames_) return false;
    if (count_ == capacity_) grow();
    slots_[(head_ + count_) & (capacity_ - 1)] =
        Slot{frame, static_cast<uint32_t>(begin), static_cast<uint32_t>(end)};
    ++count_;
    pending_bytes_ += end - begin;
    return true;
  }

  // Fills up to `max_iov` entries with what is still unwritten, oldest first; returns how many.
  size_t fill_iovec(struct iovec* iov, size_t max_iov) const {
    size_t n = 0;
    for (; n < count_ && n < max_iov; ++n) {
      const Slot& slot = slots_[(head_ + n) & (capacity_ - 1)];
      size_t skip = n == 0 ? head_offset_ : 0;
      iov[n].iov_base = const_cast<char*>(slot.frame->data() + slot.begin + skip);
      iov[n].iov_len = slot.length() - skip;
    }
    return n;
  }

  // Drops `bytes` from the front, releasing every frame that is now fully written.
  void consume(size_t bytes) {
    assert(bytes <= pending_bytes_);
    pending_bytes_ -= bytes;
    while (bytes > 0) {
      size_t left = slots_[head_].length() - head_offset_;
      if (bytes < left) {
        head_offset_ += bytes;
        return;
      }
      bytes -= left;
      pop_front();
    }
    // Zero-length frames at the front are complete too.
    while (count_ > 0 && slots_[head_].length() == head_offset_) pop_front();
  }

  // Drops every frame but the first, which may be partly written already (and, on a stream, may
  // be its response head): what a stream that is ending need not send.
  void keep_front_only() {
    while (count_ > 1) {
      Slot& last = slots_[(head_ + count_ - 1) & (capacity_ - 1)];
      pending_bytes_ -= last.length();
      last = Slot{};
      --count_;
    }
  }

  void clear() {
    while (count_ > 0) pop_front();
    pending_bytes_ = 0;
  }

  // After a burst, gives back the grown storage of an empty ring (keeping the initial slots, so a
  // steady trickle of deliveries allocates nothing).
  void shrink_if_empty() {
    if (count_ != 0 || capacity_ <= initial_) return;
    slots_ = std::make_unique<Slot[]>(initial_);
    capacity_ = initial_;
    head_ = 0;
  }

 private:
  struct Slot {
    FrameRef frame;
    uint32_t begin = 0;
    uint32_t end = 0;
    size_t length() const { return end - begin; }
  };

  static size_t round_up_pow2(size_t n) {
    size_t p = 1;
    while (p < n) p <<= 1;
    return p;
  }

  void pop_front() {
    slots_[head_] = Slot{};
    head_ = (head_ + 1) & (capacity_ - 1);
    head_offset_ = 0;
    --count_;
  }

  void grow() {
    size_t new_capacity = capacity_ == 0 ? initial_ : capacity_ * 2;
    auto fresh = std::make_unique<Slot[]>(new_capacity);
    for (size_t i = 0; i < count_; ++i) fresh[i] = std::move(slots_[(head_ + i) & (capacity_ - 1)]);
    slots_ = std::move(fresh);
    capacity_ = new_capacity;
    head_ = 0;
  }

  std::unique_ptr<Slot[]> slots_;
  size_t max_frames_;
  size_t initial_;
  size_t capacity_;
  size_t head_ = 0;
  size_t count_ = 0;
  size_t head_offset_ = 0;
  size_t pending_bytes_ = 0;
};

}  // namespace sse
