#include "batch_writer.h"

#include <liburing.h>

#include <cassert>
#include <cerrno>

namespace sse {
namespace {

// Submit past a bad entry, and let completions wait for the loop's next system call instead of
// interrupting it (one thread submits): kernels from 6.0 know these; older ones get a plain ring.
constexpr unsigned kPreferredFlags =
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER;

}  // namespace

BatchWriter::BatchWriter(bool enabled)
    : iov_(kMaxSends * kMaxIov), headers_(kMaxSends), requested_(kMaxSends), results_(kMaxSends) {
  if (!enabled) return;
  auto ring = std::make_unique<io_uring>();
  if (io_uring_queue_init(kMaxSends, ring.get(), kPreferredFlags) != 0 &&
      io_uring_queue_init(kMaxSends, ring.get(), 0) != 0)
    return;  // no io_uring here: available() stays false
  ring_ = std::move(ring);
}

BatchWriter::~BatchWriter() {
  if (ring_) io_uring_queue_exit(ring_.get());
}

void BatchWriter::add(int fd, size_t n) {
  assert(ring_ && count_ < kMaxSends && n <= kMaxIov);
  iovec* iov = next_iov();
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) total += iov[i].iov_len;
  msghdr& header = headers_[count_];
  header = msghdr{};
  header.msg_iov = iov;
  header.msg_iovlen = n;
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());  // never null: the ring has kMaxSends slots
  io_uring_prep_sendmsg(sqe, fd, &header, MSG_DONTWAIT | MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, count_);
  requested_[count_] = total;
  results_[count_] = -EINTR;  // until its completion says otherwise
  ++count_;
}

void BatchWriter::run() {
  if (count_ == 0) return;
  io_uring* ring = ring_.get();
  // Every send either completes inline or fails with -EAGAIN at once, so this wait is short.
  int rc = io_uring_submit_and_wait(ring, static_cast<unsigned>(count_));
  while (rc == -EINTR) rc = io_uring_submit_and_wait(ring, 0);
  size_t submitted = rc > 0 ? static_cast<size_t>(rc) : 0;
  // Sent or not, unknown until its completion arrives: such a stream cannot go on (a repeat
  // could duplicate bytes), so it ends and its client resumes from its last id.
  for (size_t i = 0; i < submitted; ++i) results_[i] = -ECANCELED;
  bool lost = false;
  for (size_t seen = 0; seen < submitted;) {
    io_uring_cqe* cqe = nullptr;
    int wait = io_uring_wait_cqe(ring, &cqe);
    if (wait == -EINTR) continue;
    if (wait != 0) {
      lost = true;
      break;
    }
    uint64_t i = io_uring_cqe_get_data64(cqe);
    if (i < count_) results_[i] = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    ++seen;
  }
  if (submitted < count_ || lost) {
    // The kernel refused some (it should not: the completion queue is never full), or their
    // completions cannot be read. Nothing may go out later with stale pointers, so drop the ring:
    // the refused stay -EINTR and are written again with writev, as everything is from now on.
    io_uring_queue_exit(ring);
    ring_.reset();
  }
}

}  // namespace sse
