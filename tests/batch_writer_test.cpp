// BatchWriter over real sockets: many sends in one submission, each with its own result (bytes,
// a partial count, -EAGAIN for a full socket, an error for a closed peer).
#include "batch_writer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

using sse::BatchWriter;

namespace {

struct Pair {
  int writer = -1;
  int reader = -1;
  Pair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    writer = fds[0];
    reader = fds[1];
  }
  ~Pair() {
    if (writer >= 0) close(writer);
    if (reader >= 0) close(reader);
  }
  std::string read_all() const {
    std::string out;
    char buf[65536];
    for (ssize_t n; (n = read(reader, buf, sizeof buf)) > 0;)
      out.append(buf, static_cast<size_t>(n));
    return out;
  }
};

// Queues `parts` as one send's iovecs.
void add(BatchWriter& batch, int fd, const std::vector<std::string>& parts) {
  iovec* iov = batch.next_iov();
  for (size_t i = 0; i < parts.size(); ++i)
    iov[i] = iovec{const_cast<char*>(parts[i].data()), parts[i].size()};
  batch.add(fd, parts.size());
}

#define REQUIRE_IO_URING(batch) \
  if (!(batch).available()) GTEST_SKIP() << "io_uring is not available here"

}  // namespace

TEST(BatchWriter, DisabledNeverUsesIoUring) {
  BatchWriter batch(false);
  EXPECT_FALSE(batch.available());
}

TEST(BatchWriter, ManySocketsOneSubmissionEachInOrder) {
  BatchWriter batch(true);
  REQUIRE_IO_URING(batch);
  std::vector<Pair> pairs(40);
  std::vector<std::vector<std::string>> sent(pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    sent[i] = {"data: " + std::to_string(i) + "\n", "id: " + std::to_string(i * 7) + "\n\n"};
    add(batch, pairs[i].writer, sent[i]);
  }
  ASSERT_EQ(batch.size(), pairs.size());
  batch.run();
  for (size_t i = 0; i < pairs.size(); ++i) {
    std::string expected = sent[i][0] + sent[i][1];
    EXPECT_EQ(batch.result(i), static_cast<ssize_t>(expected.size())) << i;
    EXPECT_EQ(batch.bytes(i), expected.size());
    EXPECT_EQ(pairs[i].read_all(), expected) << i;
  }
  // The next batch starts empty and reuses the same slots.
  batch.clear();
  add(batch, pairs[3].writer, {"again"});
  batch.run();
  EXPECT_EQ(batch.result(0), 5);
  EXPECT_EQ(pairs[3].read_all(), "again");
}

TEST(BatchWriter, FullSocketGivesPartialThenAgainNeverBlocks) {
  BatchWriter batch(true);
  REQUIRE_IO_URING(batch);
  Pair slow, fast;
  int small = 4096;
  setsockopt(slow.writer, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  std::string big(1 << 20, 'x');
  add(batch, slow.writer, {big});
  add(batch, fast.writer, {"ok"});
  batch.run();
  ssize_t first = batch.result(0);
  EXPECT_GT(first, 0);
  EXPECT_LT(first, static_cast<ssize_t>(big.size()));  // what fitted
  EXPECT_EQ(batch.result(1), 2);                       // a full neighbour does not hold it back
  batch.clear();
  add(batch, slow.writer, {big});
  add(batch, fast.writer, {"ok"});
  batch.run();
  EXPECT_EQ(batch.result(0), -EAGAIN);  // full: reported at once, never parked in the kernel
  EXPECT_EQ(batch.result(1), 2);
}

TEST(BatchWriter, ClosedPeerIsAnErrorWithoutSigpipe) {
  BatchWriter batch(true);
  REQUIRE_IO_URING(batch);
  Pair gone, alive;
  close(gone.reader);
  gone.reader = -1;
  add(batch, gone.writer, {"lost"});
  add(batch, alive.writer, {"kept"});
  batch.run();  // a SIGPIPE would end the test process here
  EXPECT_EQ(batch.result(0), -EPIPE);
  EXPECT_EQ(batch.result(1), 4);
  EXPECT_EQ(alive.read_all(), "kept");
}

TEST(BatchWriter, BadDescriptorFailsOnlyItsOwnSend) {
  BatchWriter batch(true);
  REQUIRE_IO_URING(batch);
  Pair ok;
  add(batch, 1 << 20, {"nowhere"});  // no such descriptor
  add(batch, ok.writer, {"fine"});
  batch.run();
  EXPECT_LT(batch.result(0), 0);
  EXPECT_NE(batch.result(0), -EINTR);
  EXPECT_EQ(batch.result(1), 4);
  EXPECT_TRUE(batch.available());
}

TEST(BatchWriter, AFullBatchOfSends) {
  BatchWriter batch(true);
  REQUIRE_IO_URING(batch);
  std::vector<Pair> pairs(BatchWriter::kMaxSends);
  std::vector<std::string> parts(BatchWriter::kMaxIov, "ab");
  for (auto& p : pairs) add(batch, p.writer, parts);
  EXPECT_TRUE(batch.full());
  batch.run();
  std::string expected;
  for (const auto& part : parts) expected += part;
  for (size_t i = 0; i < pairs.size(); ++i) {
    EXPECT_EQ(batch.result(i), static_cast<ssize_t>(expected.size())) << i;
    EXPECT_EQ(pairs[i].read_all(), expected) << i;
  }
}
