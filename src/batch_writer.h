// Sends to many sockets with one system call. The writer set queues each loop iteration's writes
// here as io_uring SENDMSG requests and submits them together: on loopback that costs about 0.7×
// one writev per socket (bench/floor --batch), most of a delivery's cost being the system call
// itself. Every send is non-blocking (MSG_DONTWAIT: a full socket answers -EAGAIN, it is never
// parked in the kernel), and run() waits for all of them, so nothing is in flight once it returns:
// callers keep the simple "write, then look at the result" model of writev.
//
// Where io_uring is missing (an old kernel, kernel.io_uring_disabled, a seccomp filter)
// available() is false and callers write with writev themselves.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <memory>
#include <vector>

struct io_uring;

namespace sse {

class BatchWriter {
 public:
  static constexpr size_t kMaxSends = 256;  // per submission
  static constexpr size_t kMaxIov = 64;     // per send; a longer queue goes on with writev

  // `enabled` false: never tries io_uring (--no-io-uring).
  explicit BatchWriter(bool enabled);
  ~BatchWriter();
  BatchWriter(const BatchWriter&) = delete;
  BatchWriter& operator=(const BatchWriter&) = delete;

  bool available() const { return ring_ != nullptr; }
  bool full() const { return count_ == kMaxSends; }
  size_t size() const { return count_; }

  // Room for the next send's iovecs (kMaxIov of them), valid until run() returns.
  iovec* next_iov() { return &iov_[count_ * kMaxIov]; }
  // Queues a send of the first `n` iovecs of next_iov() to `fd`.
  void add(int fd, size_t n);
  // Submits every queued send and waits for all of them. result(i) is then the i-th send's byte
  // count or -errno (-EINTR: not sent, write it again; -EAGAIN: the socket is full; any other:
  // failed, the connection ends), bytes(i) what it asked to send.
  void run();
  // Empties the queue for the next batch.
  void clear() { count_ = 0; }
  ssize_t result(size_t i) const { return results_[i]; }
  size_t bytes(size_t i) const { return requested_[i]; }

 private:
  std::unique_ptr<io_uring> ring_;
  size_t count_ = 0;
  std::vector<iovec> iov_;
  std::vector<msghdr> headers_;
  std::vector<size_t> requested_;
  std::vector<ssize_t> results_;
};

}  // namespace sse
