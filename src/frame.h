// An immutable, reference-counted byte string: one broadcast message formatted once and shared by
// the history and every subscriber's ring. The loop is single-threaded, so the count is a plain
// integer (no atomics on the delivery path).
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <new>
#include <string_view>
#include <utility>

namespace sse {

class Frame {
 public:
  // Copies `parts`, one after the other, into a new frame whose count is 1, owned by the returned
  // FrameRef.
  static Frame* create(std::initializer_list<std::string_view> parts) {
    size_t size = 0;
    for (std::string_view part : parts) size += part.size();
    void* mem = ::operator new(sizeof(Frame) + size);
    auto* frame = new (mem) Frame(size);
    char* at = frame->data_;
    for (std::string_view part : parts) {
      if (!part.empty()) std::memcpy(at, part.data(), part.size());
      at += part.size();
    }
    return frame;
  }

  std::string_view bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }
  const char* data() const { return data_; }

  void retain() { ++refs_; }
  void release() {
    assert(refs_ > 0);
    if (--refs_ == 0) {
      this->~Frame();
      ::operator delete(this);
    }
  }
  uint32_t refs() const { return refs_; }

 private:
  explicit Frame(size_t size) : size_(size) {}
  uint32_t refs_ = 1;
  size_t size_;
  char data_[];  // NOLINT: flexible array member (GNU extension), one allocation per frame
};

// Owning handle to a Frame; copying retains, destruction releases.
class FrameRef {
 public:
  FrameRef() = default;
  explicit FrameRef(std::string_view bytes) : frame_(Frame::create({bytes})) {}
  explicit FrameRef(std::initializer_list<std::string_view> parts) : frame_(Frame::create(parts)) {}
  FrameRef(const FrameRef& other) : frame_(other.frame_) {
    if (frame_) frame_->retain();
  }
  FrameRef(FrameRef&& other) noexcept : frame_(std::exchange(other.frame_, nullptr)) {}
  FrameRef& operator=(FrameRef other) noexcept {
    std::swap(frame_, other.frame_);
    return *this;
  }
  ~FrameRef() {
    if (frame_) frame_->release();
  }

  explicit operator bool() const { return frame_ != nullptr; }
  const Frame* get() const { return frame_; }
  const Frame* operator->() const { return frame_; }
  std::string_view bytes() const { return frame_ ? frame_->bytes() : std::string_view{}; }

 private:
  Frame* frame_ = nullptr;
};

// A committed message as memory keeps it: its id and its frame.
struct KeptFrame {
  uint64_t id;
  FrameRef frame;
};

}  // namespace sse
