// LocalBroker against real files in a temporary directory and a real Reactor, with disk failures
// injected through JournalIo: every storage error must reach the POST's answer (never a 201 for a
// message that is not stored), and recovery must keep everything acknowledged before.
#include "local_broker.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>

#include "broker_testing.h"
#include "hub.h"
#include "recording_sink.h"
#include "run_loop.h"
#include "sse.h"

using sse::Draft;
using sse::FrameRef;
using sse::FsyncPolicy;
using sse::LocalBroker;
using sse::LocalBrokerOptions;
using sse::PublishResult;
using Status = sse::PublishResult::Status;

namespace {

// Fails or counts the journal's system calls on demand (datasync runs on the syncer thread).
struct FaultyIo : sse::JournalIo {
  std::atomic<int> datasync_errno{0};
  std::atomic<int> rename_errno{0};
  std::atomic<int> open_tmp_errno{0};
  std::atomic<bool> hold_datasync{false};  // the syncer thread's datasync waits while true
  std::atomic<int> syncer_passes{-1};  // >= 0: the syncer's datasync waits for a pass, and takes it
  std::atomic<int> syncer_waiting{0};  // datasync calls of the syncer that are being held
  std::thread::id loop_thread = std::this_thread::get_id();
  std::atomic<int> datasync_calls{0};
  std::atomic<int> rename_calls{0};
  std::atomic<int> sync_dir_calls{0};
  std::atomic<int> sync_dir_errno{0};
  std::mutex synced_dirs_mu;
  std::vector<std::string> synced_dirs;  // every directory synced, in order
  std::atomic<int> write_calls{0};
  std::atomic<int> write_errno{0};
  std::atomic<int> append_errno{0};                // fails the loop's appends to the journal only
  std::atomic<bool> hold_compaction_write{false};  // a compaction thread's writes wait while true
  std::atomic<int> compaction_writes_held{0};

  int open(const char* path, int flags, mode_t mode) override {
    std::string name = path;
    if (open_tmp_errno && (name.ends_with(".tmp") || name.ends_with(".compact"))) {
      errno = open_tmp_errno;
      return -1;
    }
    return JournalIo::open(path, flags, mode);
  }
  ssize_t write(int fd, const void* data, size_t len) override {
    if (hold_compaction_write && std::this_thread::get_id() != loop_thread &&
        testing_support::is_compaction_file(fd)) {
      ++compaction_writes_held;
      while (hold_compaction_write) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ++write_calls;
    if (int e = write_errno.load()) {
      errno = e;
      return -1;
    }
    int append_e = append_errno.load();
    if (append_e && std::this_thread::get_id() == loop_thread &&
        !testing_support::is_compaction_file(fd)) {
      errno = append_e;
      return -1;
    }
    return JournalIo::write(fd, data, len);
  }
  int datasync(int fd) override {
    bool syncer =
        std::this_thread::get_id() != loop_thread && !testing_support::is_compaction_file(fd);
    if (hold_datasync && syncer) {
      ++syncer_waiting;
      while (hold_datasync) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      --syncer_waiting;
    }
    if (syncer && syncer_passes >= 0) {
      ++syncer_waiting;
      for (int passes = syncer_passes; passes >= 0; passes = syncer_passes) {
        if (passes > 0 && syncer_passes.compare_exchange_weak(passes, passes - 1)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      --syncer_waiting;
    }
    ++datasync_calls;
    if (int e = datasync_errno.load()) {
      errno = e;
      return -1;
    }
    return JournalIo::datasync(fd);
  }
  int sync_dir(const std::string& dir) override {
    ++sync_dir_calls;
    if (int e = sync_dir_errno.load()) {
      errno = e;
      return -1;
    }
    {
      std::lock_guard<std::mutex> lock(synced_dirs_mu);
      synced_dirs.push_back(dir);
    }
    return JournalIo::sync_dir(dir);
  }
  int rename(const char* from, const char* to) override {
    ++rename_calls;
    if (int e = rename_errno.load()) {
      errno = e;
      return -1;
    }
    return JournalIo::rename(from, to);
  }
};

// The hub of rooms, recording what the broker committed to it.

using Answer = testing_support::PublishAnswer;

using Fixture = testing_support::BrokerFixture;

using testing_support::broker_options;
using testing_support::journal_temp_dir;

using testing_support::draft;
using testing_support::ids_after_restart;

std::vector<uint64_t> ids(std::initializer_list<uint64_t> list) {
  return list;
}

// A stream's sink that keeps every frame it is given.
struct KeepingSink : sse::Sink {
  bool deliver(const FrameRef& frame) override {
    frames.emplace_back(sse::frame_event(*frame.get()));
    return true;
  }
  size_t free_slots() const override { return 1000; }
  std::vector<std::string> frames;
};

// The lock removed by hand, another sse-chat takes the directory, acknowledges `count` messages in
// room team (text b_text(i), nonce "nb<i>") and stops; `while_held` runs while it holds the lock.
// Their ids.
std::string b_text(int i) {
  return "from b, long enough to compact " + std::to_string(i);
}
std::vector<uint64_t> post_as_another_server(const std::string& dir, int count = 1,
                                             uint64_t max_bytes = 64 << 20,
                                             const std::function<void()>& while_held = nullptr) {
  std::filesystem::remove(dir + "/lock");
  Fixture b(broker_options(dir, FsyncPolicy::EverySec, nullptr, max_bytes));
  EXPECT_TRUE(b.start());
  std::vector<uint64_t> acknowledged;
  for (int i = 0; i < count; ++i) {
    PublishResult r = b.publish_and_wait(b_text(i), "nb" + std::to_string(i), "team");
    EXPECT_EQ(r.status, Status::Created);
    acknowledged.push_back(r.id);
  }
  if (while_held) while_held();
  return acknowledged;
}

// Storage works again: a POST is stored, and a restart finds `kept` (the ids acknowledged before)
// and that one, nothing else.
void expect_posting_again_and_kept_after_restart(Fixture& f, const std::string& dir,
                                                 std::vector<uint64_t> kept) {
  PublishResult after = f.publish_and_wait("after");
  ASSERT_EQ(after.status, Status::Created);
  f.broker.reset();
  kept.push_back(after.id);
  EXPECT_EQ(ids_after_restart(dir), kept);
}

}  // namespace

TEST(LocalBroker, AnswersLaterOnTheLoopNeverInsideTheCall) {
  Fixture f(broker_options(journal_temp_dir(), FsyncPolicy::EverySec));
  f.start();
  auto first = f.publish("one");
  EXPECT_FALSE(first->done);  // a completion never re-enters its caller
  auto second = f.publish("two");
  f.reactor.run_deferred();
  ASSERT_TRUE(first->done && second->done);
  EXPECT_EQ(first->result.status, Status::Created);
  EXPECT_EQ(first->result.id, 1u);
  EXPECT_EQ(second->result.id, 2u);
  EXPECT_EQ(f.sink.live, ids({1, 2}));
}

// Every POST of one loop iteration goes to the journal in one write, before any is answered; a
// nonce retried within the same iteration joins its message instead of storing it twice.
TEST(LocalBroker, OneIterationsMessagesAreWrittenTogether) {
  std::string dir = journal_temp_dir();
  {
    FaultyIo io;
    Fixture f(broker_options(dir, FsyncPolicy::EverySec, &io));
    f.start();
    int writes_before = io.write_calls;
    std::vector<std::shared_ptr<Answer>> answers;
    for (int i = 0; i < 5; ++i) answers.push_back(f.publish("m" + std::to_string(i)));
    answers.push_back(f.publish("m0-again", "n1"));
    answers.push_back(f.publish("m0-again", "n1"));
    for (auto& a : answers) EXPECT_FALSE(a->done);
    EXPECT_EQ(io.write_calls, writes_before);  // nothing written inside the calls either
    EXPECT_TRUE(f.sink.live.empty());          // nor broadcast
    f.reactor.run_deferred();
    EXPECT_EQ(io.write_calls, writes_before + 1);
    for (int i = 0; i < 6; ++i) {
      ASSERT_TRUE(answers[i]->done);
      EXPECT_EQ(answers[i]->result.status, Status::Created);
      EXPECT_EQ(answers[i]->result.id, static_cast<uint64_t>(i + 1));
    }
    ASSERT_TRUE(answers[6]->done);
    EXPECT_EQ(answers[6]->result.status, Status::Duplicate);
    EXPECT_EQ(answers[6]->result.id, 6u);
    EXPECT_EQ(f.sink.live, ids({1, 2, 3, 4, 5, 6}));
  }
  EXPECT_EQ(ids_after_restart(dir), ids({1, 2, 3, 4, 5, 6}));
}

// A failed write refuses every message of its iteration, and none of them comes back later.
TEST(LocalBroker, AFailedWriteRefusesTheWholeIteration) {
  std::string dir = journal_temp_dir();
  {
    FaultyIo io;
    Fixture f(broker_options(dir, FsyncPolicy::EverySec, &io));
    f.start();
    ASSERT_EQ(f.publish_and_wait("kept").status, Status::Created);
    io.write_errno = ENOSPC;
    auto a = f.publish("lost-1", "n1");
    auto b = f.publish("lost-2");
    f.reactor.run_deferred();
    ASSERT_TRUE(a->done && b->done);
    EXPECT_EQ(a->result.status, Status::Unavailable);
    EXPECT_EQ(b->result.status, Status::Unavailable);
    EXPECT_EQ(f.sink.live, ids({1}));
    io.write_errno = 0;
    f.tick();  // recovers
    ASSERT_FALSE(f.broker->unavailable());
    auto retry = f.publish_and_wait("lost-1", "n1");  // the nonce was not used up
    EXPECT_EQ(retry.status, Status::Created);
    EXPECT_EQ(retry.id, 4u);
  }
  EXPECT_EQ(ids_after_restart(dir), ids({1, 4}));
}

TEST(LocalBroker, IdsKeepIncreasingAcrossARestart) {
  std::string dir = journal_temp_dir();
  {
    Fixture f(broker_options(dir, FsyncPolicy::EverySec));
    f.start();
    for (int i = 0; i < 3; ++i) f.publish_and_wait("m");
  }
  Fixture f(broker_options(dir, FsyncPolicy::EverySec));
  f.start();
  EXPECT_EQ(f.sink.restored_ids, ids({1, 2, 3}));
  EXPECT_EQ(f.publish_and_wait("after").id, 4u);
  EXPECT_EQ(f.broker->stats().last_id, 4u);
}

TEST(LocalBroker, HistoryPagesAndNeverWrapsPastTheLargestId) {
  Fixture f(broker_options(journal_temp_dir(), FsyncPolicy::Never));
  f.start();
  for (int i = 0; i < 5; ++i) f.publish_and_wait("m");
  EXPECT_EQ(f.history(0, 2), ids({1, 2}));
  EXPECT_EQ(f.history(2, 10), ids({3, 4, 5}));
  EXPECT_EQ(f.history(std::nullopt, 2), ids({4, 5}));
  EXPECT_EQ(f.history(UINT64_MAX, 10), ids({}));
  EXPECT_EQ(f.history(UINT64_MAX - 1, 10), ids({}));
}

TEST(LocalBroker, SameNonceWhileTheFirstWaitsForTheDiskIsStoredOnce) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  {
    Fixture f(broker_options(dir, FsyncPolicy::Always, &io));
    f.start();
    io.hold_datasync = true;
    auto first = f.publish("hello", "n1");
    auto retry = f.publish("hello", "n1");  // e.g. the same POST retried on another connection
    f.reactor.run_deferred();
    EXPECT_FALSE(first->done);  // neither is on disk yet, so neither is answered
    EXPECT_FALSE(retry->done);
    EXPECT_TRUE(f.sink.live.empty());
    io.hold_datasync = false;
    ASSERT_TRUE(f.run_until([&] { return first->done && retry->done; }));
    EXPECT_EQ(first->result.status, Status::Created);
    EXPECT_EQ(retry->result.status, Status::Duplicate);
    EXPECT_EQ(retry->result.id, first->result.id);
    EXPECT_EQ(f.sink.live, ids({1}));
    EXPECT_EQ(f.publish_and_wait("hello", "n1").status, Status::Duplicate);
  }
  EXPECT_EQ(ids_after_restart(dir), ids({1}));
}

TEST(LocalBroker, FailedFsyncUnderAlwaysIsNeverAcknowledged) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  Fixture f(broker_options(dir, FsyncPolicy::Always, &io));
  f.start();
  EXPECT_EQ(f.publish_and_wait("kept").status, Status::Created);
  io.datasync_errno = EIO;
  for (int i = 0; i < 3; ++i) {
    PublishResult r = f.publish_and_wait("lost");
    EXPECT_EQ(r.status, Status::Unavailable);
    EXPECT_NE(r.reason.find("Input/output error"), std::string::npos) << r.reason;
  }
  ASSERT_TRUE(f.broker->unavailable());
  EXPECT_EQ(f.sink.live, ids({1}));  // nothing that failed was broadcast either
  f.tick();                          // the disk still fails: recovery fails too
  EXPECT_TRUE(f.broker->unavailable());
  io.datasync_errno = 0;
  f.tick();
  EXPECT_FALSE(f.broker->unavailable());
  PublishResult after = f.publish_and_wait("after");
  EXPECT_EQ(after.status, Status::Created);
  EXPECT_GT(after.id, 2u);  // ids of refused messages are never reused
  EXPECT_EQ(f.history(), ids({1, after.id}));
  f.broker.reset();
  EXPECT_EQ(ids_after_restart(dir), ids({1, after.id}));
}

// Under --fsync always a compaction syncs the directory after the rename; when that fails, the
// messages still waiting for the disk are cut from the new file, where their records now are (the
// old file's offsets cut into what was acknowledged).
TEST(LocalBroker, AFailedDirectorySyncAfterCompactionCutsOnlyTheRefused) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  std::string text(1500, 'x');
  {
    Fixture f(broker_options(dir, FsyncPolicy::Always, &io, /*max_bytes=*/200));
    f.start();
    EXPECT_EQ(f.publish_and_wait("a").status, Status::Created);
    EXPECT_EQ(f.publish_and_wait("b").status, Status::Created);
    io.syncer_passes = 0;  // what is written now waits for the disk
    auto first = f.publish(text + "1");
    f.reactor.run_deferred();
    while (io.syncer_waiting == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    auto second = f.publish(text + "2");  // written while the first one's sync is under way
    f.reactor.run_deferred();
    io.sync_dir_errno = EIO;
    io.syncer_passes = 1;  // the first is synced, committed, and the journal compacted
    ASSERT_TRUE(f.run_until([&] { return first->done && second->done; }));
    EXPECT_EQ(first->result.status, Status::Created);
    EXPECT_EQ(second->result.status, Status::Unavailable);
    io.sync_dir_errno = 0;
    io.syncer_passes = -1;
  }
  EXPECT_EQ(ids_after_restart(dir), ids({1, 2, 3}));  // a crash before any recovery
}

TEST(LocalBroker, FailedFsyncUnderEverysecRefusesUntilRecovered) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  Fixture f(broker_options(dir, FsyncPolicy::EverySec, &io));
  f.start();
  EXPECT_EQ(f.publish_and_wait("before").status, Status::Created);
  io.datasync_errno = EIO;
  f.publish_and_wait("written, not yet synced");  // the syncer has something to sync
  ASSERT_TRUE(f.run_until([&] { return f.broker->unavailable().has_value(); }));
  EXPECT_NE(f.broker->unavailable()->find("fdatasync"), std::string::npos);
  EXPECT_EQ(f.publish_and_wait("refused").status, Status::Unavailable);
  io.datasync_errno = 0;
  f.tick();
  ASSERT_FALSE(f.broker->unavailable());
  expect_posting_again_and_kept_after_restart(f, dir, {1, 2});
}

// While storage fails, a retry of a message acknowledged before still gets its id: it is stored
// (recovery writes it again), and a 503 would tell its sender it was not. What failing refused
// is not known by its nonce: its retry is refused too, and stored once storage is back.
TEST(LocalBroker, ARetryOfAnAcknowledgedMessageGetsItsIdWhileStorageFails) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  Fixture f(broker_options(dir, FsyncPolicy::EverySec, &io));
  f.start();
  PublishResult before = f.publish_and_wait("before", "n1");
  ASSERT_EQ(before.status, Status::Created);
  io.datasync_errno = EIO;
  PublishResult unsynced = f.publish_and_wait("written, not yet synced", "n2");
  ASSERT_EQ(unsynced.status, Status::Created);
  ASSERT_TRUE(f.run_until([&] { return f.broker->unavailable().has_value(); }));
  PublishResult again = f.publish_and_wait("before", "n1");
  EXPECT_EQ(again.status, Status::Duplicate);
  EXPECT_EQ(again.id, before.id);
  again = f.publish_and_wait("written, not yet synced", "n2");
  EXPECT_EQ(again.status, Status::Duplicate);
  EXPECT_EQ(again.id, unsynced.id);
  EXPECT_EQ(f.publish_and_wait("refused", "n3").status, Status::Unavailable);
  EXPECT_EQ(f.publish_and_wait("refused", "n3").status, Status::Unavailable);
  io.datasync_errno = 0;
  f.tick();
  ASSERT_FALSE(f.broker->unavailable());
  PublishResult stored = f.publish_and_wait("refused", "n3");
  EXPECT_EQ(stored.status, Status::Created);
  EXPECT_GT(stored.id, unsynced.id);
}

TEST(LocalBroker, FailedCompactionRefusesAndIsRetriedOnlyOnTheTick) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  Fixture f(broker_options(dir, FsyncPolicy::Never, &io, /*max_bytes=*/200));
  f.start();
  io.rename_errno = ENOSPC;
  std::vector<uint64_t> acknowledged;
  for (int i = 0; i < 20; ++i) {
    PublishResult r =
        f.publish_and_wait("a message long enough to grow the journal " + std::to_string(i));
    if (r.status == Status::Created) acknowledged.push_back(r.id);
  }
  // The compaction fails when its thread is done and the loop renames.
  ASSERT_TRUE(f.run_until([&] { return f.broker->unavailable().has_value(); }));
  EXPECT_NE(f.broker->unavailable()->find("compaction"), std::string::npos);
  int renames = io.rename_calls;
  for (int i = 0; i < 10; ++i) EXPECT_EQ(f.publish_and_wait("refused").status, Status::Unavailable);
  EXPECT_EQ(io.rename_calls, renames);  // refused POSTs do not retry the rewrite
  f.tick();
  EXPECT_EQ(io.rename_calls, renames + 1);  // the tick does, once
  EXPECT_TRUE(f.broker->unavailable());
  io.rename_errno = 0;
  f.tick();
  ASSERT_FALSE(f.broker->unavailable());
  PublishResult after = f.publish_and_wait("after");
  ASSERT_EQ(after.status, Status::Created);
  acknowledged.push_back(after.id);
  f.broker.reset();
  EXPECT_EQ(ids_after_restart(dir), acknowledged);
}

TEST(LocalBroker, CompactionThatCannotCreateItsFileKeepsEverythingAcknowledged) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  Fixture f(broker_options(dir, FsyncPolicy::EverySec, &io, /*max_bytes=*/200));
  f.start();
  io.open_tmp_errno = EMFILE;
  std::vector<uint64_t> acknowledged;
  for (int i = 0; i < 20; ++i) {
    PublishResult r = f.publish_and_wait("a message long enough to grow the journal");
    if (r.status == Status::Created) acknowledged.push_back(r.id);
  }
  ASSERT_TRUE(f.broker->unavailable());
  ASSERT_FALSE(acknowledged.empty());
  f.broker.reset();
  EXPECT_EQ(ids_after_restart(dir), acknowledged);
}

TEST(LocalBroker, DirectoryIsSyncedAfterACompactionRename) {
  for (FsyncPolicy policy : {FsyncPolicy::Always, FsyncPolicy::EverySec}) {
    FaultyIo io;
    Fixture f(broker_options(journal_temp_dir(), policy, &io, /*max_bytes=*/200));
    f.start();
    for (int i = 0; i < 5; ++i) ASSERT_EQ(f.publish_and_wait("grow").status, Status::Created);
    ASSERT_TRUE(f.run_until([&] { return io.rename_calls > 0 && io.sync_dir_calls > 0; }));
  }
}

TEST(LocalBroker, RemovedDataDirectoryIsRefusedThenRecreated) {
  std::string dir = journal_temp_dir();
  Fixture f(broker_options(dir, FsyncPolicy::EverySec));
  f.start();
  ASSERT_EQ(f.publish_and_wait("before").status, Status::Created);
  std::filesystem::remove_all(dir);
  PublishResult refused = f.publish_and_wait("into the void");
  EXPECT_EQ(refused.status, Status::Unavailable);
  EXPECT_NE(refused.reason.find("removed"), std::string::npos) << refused.reason;
  f.tick();  // recreates the directory from what is in memory
  ASSERT_FALSE(f.broker->unavailable());
  expect_posting_again_and_kept_after_restart(f, dir, {1});
}

// A server restarted more often than its journal doubles still keeps it near --journal-max-bytes:
// the bound after a start is that, not twice the file as loaded (the journal grew by every life's
// writes, 180 KB to 900 KB over five restarts while memory kept 50 KB).
TEST(LocalBroker, RestartsDoNotLetTheJournalOutgrowItsBound) {
  std::string dir = journal_temp_dir();
  const uint64_t max_bytes = 2048;
  std::vector<uintmax_t> sizes;
  for (int life = 0; life < 10; ++life) {
    Fixture f(broker_options(dir, FsyncPolicy::Never, nullptr, max_bytes), {5, 1ull << 30, 1000});
    f.start();
    ASSERT_TRUE(f.run_until([&] { return !f.broker->compacting(); }));
    for (int i = 0; i < 10; ++i)
      ASSERT_EQ(f.publish_and_wait("life " + std::to_string(life)).status, Status::Created);
    f.broker.reset();
    sizes.push_back(std::filesystem::file_size(dir + "/journal"));
  }
  // A life writes about 1 KB: the file stays within the bound plus one life's writes.
  for (uintmax_t size : sizes) EXPECT_LE(size, 2 * max_bytes) << ::testing::PrintToString(sizes);
}

// A window larger than --journal-max-bytes is not rewritten at every start (with the defaults,
// 256 MiB of history against a 64 MiB journal bound, each restart would rewrite and sync it all).
TEST(LocalBroker, AWindowLargerThanTheBoundIsNotRewrittenAtEveryStart) {
  std::string dir = journal_temp_dir();
  {
    Fixture f(broker_options(dir, FsyncPolicy::Never, nullptr, 512));
    f.start();
    for (int i = 0; i < 20; ++i) ASSERT_EQ(f.publish_and_wait("kept").status, Status::Created);
  }
  auto inode = [&] {
    struct stat st {};
    EXPECT_EQ(stat((dir + "/journal").c_str(), &st), 0);
    return st.st_ino;
  };
  ino_t before = inode();
  for (int life = 0; life < 3; ++life) {
    Fixture f(broker_options(dir, FsyncPolicy::Never, nullptr, 512));
    f.start();
    ASSERT_TRUE(f.run_until([&] { return !f.broker->compacting(); }));
    EXPECT_EQ(f.history().size(), 20u);
  }
  EXPECT_EQ(inode(), before);
}

// A journal cut in place by another process (`: > journal`, logrotate's copytruncate) keeps its
// path and inode; the once-a-second check sees it shorter than written, refuses, and recovery
// writes back what memory keeps, so a restart still finds every acknowledged message.
TEST(LocalBroker, AJournalCutInPlaceIsFoundAndWrittenBack) {
  std::string dir = journal_temp_dir();
  Fixture f(broker_options(dir, FsyncPolicy::EverySec));
  f.start();
  PublishResult a = f.publish_and_wait("a");
  PublishResult b = f.publish_and_wait("b");
  ASSERT_EQ(b.status, Status::Created);
  ASSERT_EQ(truncate((dir + "/journal").c_str(), 0), 0);
  f.tick();  // finds it, and tries to recover at once
  f.tick();
  ASSERT_FALSE(f.broker->unavailable());
  PublishResult c = f.publish_and_wait("c");
  ASSERT_EQ(c.status, Status::Created);
  f.broker.reset();
  EXPECT_EQ(ids_after_restart(dir), ids({a.id, b.id, c.id}));
}

TEST(LocalBroker, LongNonceKeysStayDistinctAfterARestart) {
  std::string dir = journal_temp_dir();
  // 32 four-byte characters of user and 64 of nonce: keys far longer than 255 bytes that differ
  // only in their last character.
  std::string user;
  for (int i = 0; i < 32; ++i) user += "\xF0\x9F\x98\x80";
  std::string prefix;
  for (int i = 0; i < 63; ++i) prefix += "\xF0\x9F\x98\x81";
  std::string nonce_a = prefix + "a", nonce_b = prefix + "b", nonce_c = prefix + "c";
  {
    Fixture f(broker_options(dir, FsyncPolicy::EverySec));
    f.start();
    EXPECT_EQ(f.publish_and_wait(draft("a", nonce_a, "general", user)).id, 1u);
    EXPECT_EQ(f.publish_and_wait(draft("b", nonce_b, "general", user)).id, 2u);
  }
  Fixture f(broker_options(dir, FsyncPolicy::EverySec));
  f.start();
  PublishResult b = f.publish_and_wait(draft("b", nonce_b, "general", user));
  EXPECT_EQ(b.status, Status::Duplicate);
  EXPECT_EQ(b.id, 2u);
  PublishResult a = f.publish_and_wait(draft("a", nonce_a, "general", user));
  EXPECT_EQ(a.status, Status::Duplicate);
  EXPECT_EQ(a.id, 1u);
  EXPECT_EQ(f.publish_and_wait(draft("c", nonce_c, "general", user)).status, Status::Created);
}

// Journals written before rooms (both earlier formats) load, their messages in "general".
TEST(LocalBroker, JournalOfThePreviousFormatsStillLoads) {
  std::string dir = journal_temp_dir();
  std::string bytes;
  for (uint64_t id = 1; id <= 3; ++id) {
    std::string json = R"({"id":)" + std::to_string(id) + R"(,"user":"alice","text":"old","ts":0})";
    sse::JournalRecord r{id, id == 2 ? "alice\x1fn2" : "", "", json};
    bytes += id == 3 ? sse::encode_record_v2(r) : sse::encode_record_v1(r);
  }
  std::ofstream(dir + "/journal", std::ios::binary) << bytes;
  Fixture f(broker_options(dir, FsyncPolicy::EverySec));
  f.start();
  EXPECT_EQ(f.sink.restored_ids, ids({1, 2, 3}));
  EXPECT_EQ(f.sink.rooms, (std::vector<std::string>{"general", "general", "general"}));
  auto page = f.sink.kept_page("general", {2, std::nullopt, 1});
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(sse::frame_json(*page[0].get()),
            R"({"id":3,"room":"general","user":"alice","text":"old","ts":0})");
  EXPECT_EQ(f.publish_and_wait("old", "n2").id, 2u);
  EXPECT_EQ(f.publish_and_wait("new").id, 4u);
  f.broker.reset();
  EXPECT_EQ(ids_after_restart(dir), ids({1, 2, 3, 4}));
}

// With tokens on, a nonce belongs to the token's subject, not to the display name: two people
// both called Alice never answer each other's retries, and one person's retry is still joined.
TEST(LocalBroker, NoncesOfTokenBearersBelongToTheirSubject) {
  LocalBrokerOptions o = broker_options("", FsyncPolicy::Never);
  o.journal = false;
  Fixture f(o);
  f.start();
  EXPECT_EQ(f.publish_and_wait(draft("a", "n1", "general", "Alice", "sub-1")).id, 1u);
  EXPECT_EQ(f.publish_and_wait(draft("b", "n1", "general", "Alice", "sub-2")).status,
            Status::Created);
  EXPECT_EQ(f.publish_and_wait(draft("b", "n1", "general", "Alice")).status,
            Status::Created);  // tokens off
  PublishResult retry = f.publish_and_wait(draft("a", "n1", "general", "Alice", "sub-1"));
  EXPECT_EQ(retry.status, Status::Duplicate);
  EXPECT_EQ(retry.id, 1u);
}

TEST(LocalBroker, TheNewestNoncesAreRemembered) {
  LocalBrokerOptions o = broker_options("", FsyncPolicy::Never);
  o.journal = false;
  o.nonce_window = 2;
  Fixture f(o);
  f.start();
  EXPECT_EQ(f.publish_and_wait("a", "n1").id, 1u);
  EXPECT_EQ(f.publish_and_wait("a", "n1").status, Status::Duplicate);
  f.publish_and_wait("b");  // no nonce: does not push n1 out
  f.publish_and_wait("c", "n2");
  EXPECT_EQ(f.publish_and_wait("a", "n1").status, Status::Duplicate);
  f.publish_and_wait("d", "n3");  // n1 is the third newest now: forgotten
  EXPECT_EQ(f.publish_and_wait("a", "n1").status, Status::Created);
}

// Compaction writes what the hub keeps, each in its room, with the nonces still remembered.
TEST(LocalBroker, CompactionKeepsRoomsAndNoncesAcrossARestart) {
  std::string dir = journal_temp_dir();
  {
    Fixture f(broker_options(dir, FsyncPolicy::Never, nullptr, 4096));
    f.start();
    EXPECT_EQ(f.publish_and_wait("hi", "n1", "team-a").id, 1u);
    for (int i = 0; i < 200; ++i)
      f.publish_and_wait(draft(std::string(100, 'x'), "", "general", "bob"));
  }
  Fixture f(broker_options(dir, FsyncPolicy::Never));
  f.start();
  EXPECT_LT(f.sink.restored_ids.size(), 201u);  // compacted: bob's oldest are gone from the file
  EXPECT_EQ(f.sink.restored_ids.front(), 1u);
  EXPECT_EQ(f.sink.rooms.front(), "team-a");
  EXPECT_EQ(f.history(0, 10, "team-a"), ids({1}));
  EXPECT_EQ(f.history(std::nullopt, 1000).size(), 100u);  // the hub keeps 100 per room
  PublishResult retry = f.publish_and_wait("hi", "n1", "team-a");
  EXPECT_EQ(retry.status, Status::Duplicate);
  EXPECT_EQ(retry.id, 1u);
}

TEST(LocalBroker, RecordSyncedIntoARemovedJournalIsRefused) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  Fixture f(broker_options(dir, FsyncPolicy::Always, &io));
  f.start();
  ASSERT_EQ(f.publish_and_wait("before").status, Status::Created);
  io.hold_datasync = true;
  auto during = f.publish("during");
  f.reactor.run_deferred();  // written at the end of the loop iteration
  while (io.syncer_waiting == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::filesystem::remove_all(dir);  // while its fdatasync is in flight
  io.hold_datasync = false;
  ASSERT_TRUE(f.run_until([&] { return during->done; }));
  EXPECT_EQ(during->result.status, Status::Unavailable);
  f.tick();
  ASSERT_FALSE(f.broker->unavailable());
  f.broker.reset();
  EXPECT_EQ(ids_after_restart(dir), ids({1}));
}

TEST(LocalBroker, RemovedDataDirectoryIsFoundWithoutAnyPost) {
  std::string dir = journal_temp_dir();
  {
    Fixture f(broker_options(dir, FsyncPolicy::EverySec));
    f.start();
    f.publish_and_wait("one");
    f.publish_and_wait("two");
    std::filesystem::remove_all(dir);
    f.tick();  // finds it and rebuilds it from memory at once
    EXPECT_FALSE(f.broker->unavailable());
    EXPECT_TRUE(std::filesystem::exists(dir + "/journal"));
  }
  EXPECT_EQ(ids_after_restart(dir), ids({1, 2}));
}

TEST(LocalBroker, ANewJournalFileIsInTheDirectoryBeforeAnythingIsAcknowledged) {
  FaultyIo io;
  std::string dir = journal_temp_dir() + "/fresh";
  Fixture f(broker_options(dir, FsyncPolicy::Always, &io));
  f.start();
  ASSERT_EQ(f.publish_and_wait("acked").status, Status::Created);
  // The data directory itself, not only its parent (for the new directory), was synced before the
  // answer: by the syncer right after the start, or in the round that synced the message.
  std::lock_guard<std::mutex> lock(io.synced_dirs_mu);
  EXPECT_NE(std::find(io.synced_dirs.begin(), io.synced_dirs.end(), dir), io.synced_dirs.end());
}

TEST(LocalBroker, ARenameDuringADirectorySyncIsSyncedToo) {
  FaultyIo io;
  Fixture f(broker_options(journal_temp_dir(), FsyncPolicy::EverySec, &io, /*max_bytes=*/200));
  f.start();
  io.hold_datasync = true;
  while (io.rename_calls == 0) ASSERT_EQ(f.publish_and_wait("grow").status, Status::Created);
  while (io.syncer_waiting == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  int dir_syncs = io.sync_dir_calls;
  // The syncer is inside its fdatasync, about to sync the directory for rename 1: rename 2 now.
  while (io.rename_calls == 1) ASSERT_EQ(f.publish_and_wait("grow").status, Status::Created);
  io.hold_datasync = false;
  ASSERT_TRUE(f.run_until([&] { return io.sync_dir_calls >= dir_syncs + 2; }, 5000))
      << dir_syncs << " " << io.sync_dir_calls << " " << io.rename_calls << " "
      << io.datasync_calls;
}

TEST(LocalBroker, AMessageRefusedAfterAFailedSyncDoesNotComeBackAfterARestart) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  {
    Fixture f(broker_options(dir, FsyncPolicy::Always, &io));
    f.start();
    ASSERT_EQ(f.publish_and_wait("kept").status, Status::Created);
    io.datasync_errno = EIO;
    EXPECT_EQ(f.publish_and_wait("refused").status, Status::Unavailable);
  }  // stopped before any recovery ran
  EXPECT_EQ(ids_after_restart(dir), ids({1}));
}

// The journal's path stops leading to the file in use: the file moved, the directory moved, or
// another file put in its place (its inode is another, though the path still exists).
TEST(LocalBroker, AJournalMovedAwayIsFoundAndRebuilt) {
  for (std::string how : {"file", "directory", "replaced"}) {
    std::string dir = journal_temp_dir();
    {
      Fixture f(broker_options(dir, FsyncPolicy::EverySec));
      f.start();
      f.publish_and_wait("one");
      if (how == "directory") {
        std::filesystem::rename(dir, dir + ".old");
      } else if (how == "file") {
        std::filesystem::rename(dir + "/journal", dir + "/journal.bak");
      } else {
        std::filesystem::copy_file(dir + "/journal", dir + "/journal.copy");
        std::filesystem::rename(dir + "/journal.copy", dir + "/journal");
      }
      EXPECT_EQ(f.publish_and_wait("refused").status, Status::Unavailable) << how;
      f.tick();
      ASSERT_FALSE(f.broker->unavailable()) << how;
      EXPECT_EQ(f.publish_and_wait("three").status, Status::Created) << how;
    }
    EXPECT_EQ(ids_after_restart(dir), ids({1, 3})) << how;
  }
}

// A record written just before its path check failed is refused, and cut from the file: when the
// path leads to the file again by the next tick, recovery must not take the refused record for
// another server's and broadcast it. (A data directory made unreadable (`chmod 000`) and then
// readable again does this to a server that is not root: the lock's lookup failed too, so the
// lock counts as lost and the journal is read for what another server acknowledged. As root, the
// directory moved away and back, and the lock removed, do the same.)
TEST(LocalBroker, ARecordRefusedWhenItsPathFailedIsNotAdoptedOnceThePathIsBack) {
  std::string dir = journal_temp_dir();
  {
    Fixture f(broker_options(dir, FsyncPolicy::EverySec));
    f.start();
    ASSERT_EQ(f.publish_and_wait("one").status, Status::Created);
    std::filesystem::rename(dir, dir + ".away");
    EXPECT_EQ(f.publish_and_wait("refused").status, Status::Unavailable);
    std::filesystem::rename(dir + ".away", dir);
    std::filesystem::remove(dir + "/lock");
    f.tick();
    ASSERT_FALSE(f.broker->unavailable());
    EXPECT_EQ(f.sink.live, ids({1}));
    EXPECT_EQ(f.publish_and_wait("three").status, Status::Created);
  }
  EXPECT_EQ(ids_after_restart(dir), ids({1, 3}));
}

// A fault that comes back as soon as storage recovers (a file size limit that the journal's
// appends cross though its rewrite fits) backs off: the next recovery waits 2 s, then longer,
// rather than flapping once a second in the log and in /healthz.
TEST(LocalBroker, AFaultThatReturnsAtOnceAfterRecoveringBacksOff) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  Fixture f(broker_options(dir, FsyncPolicy::EverySec, &io));
  f.start();
  ASSERT_EQ(f.publish_and_wait("kept").status, Status::Created);
  io.append_errno = EFBIG;
  EXPECT_EQ(f.publish_and_wait("refused").status, Status::Unavailable);
  f.tick();  // a first failure is retried at the next tick: the rewrite fits, so it recovers
  ASSERT_FALSE(f.broker->unavailable());
  EXPECT_EQ(f.publish_and_wait("refused again").status, Status::Unavailable);
  int64_t failed_again = f.reactor.now_ms();
  f.tick();
  f.tick();
  EXPECT_TRUE(f.broker->unavailable()) << "recovered at once again: it flaps";
  io.append_errno = 0;
  ASSERT_TRUE(f.run_until([&] {
    f.broker->tick();
    return !f.broker->unavailable() && !f.broker->compacting();
  }));
  EXPECT_GE(f.reactor.now_ms() - failed_again, 2000);
  expect_posting_again_and_kept_after_restart(f, dir, {1});
}

// Out of descriptors, the syncer cannot take its own handle on the journal to sync it: a POST
// waiting for the disk (--fsync always) waits a few seconds for one, then gets 503 rather than
// waiting for good, and storage recovers once there are descriptors again.
TEST(LocalBroker, NoDescriptorToSyncWithRefusesWithinSecondsThenRecovers) {
  std::string dir = journal_temp_dir();
  Fixture f(broker_options(dir, FsyncPolicy::Always));
  f.start();
  ASSERT_EQ(f.publish_and_wait("before").status, Status::Created);
  rlimit was{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &was), 0);
  rlimit low = was;
  low.rlim_cur = std::min<rlim_t>(was.rlim_cur, 1024);  // however high the limit, few to fill
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> held;
  for (int fd; (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) held.push_back(fd);
  EXPECT_EQ(errno, EMFILE);
  auto during = f.publish("during");
  bool answered = f.run_until([&] { return during->done; }, 15000);
  for (int fd : held) close(fd);
  setrlimit(RLIMIT_NOFILE, &was);
  ASSERT_TRUE(answered) << "a POST waited for the disk with no bound";
  EXPECT_EQ(during->result.status, Status::Unavailable);
  EXPECT_NE(during->result.reason.find("no descriptor"), std::string::npos)
      << during->result.reason;
  f.tick();
  ASSERT_FALSE(f.broker->unavailable());
  expect_posting_again_and_kept_after_restart(f, dir, {1});
}

// The journal's floors name the highest id issued: after a restart the hub has it too, so a stream
// resuming from it is up to date, not "from the future", even when no kept message has that id.
TEST(LocalBroker, TheHighestIdIssuedReachesTheHubAfterARestart) {
  std::string dir = journal_temp_dir();
  sse::HubOptions one_room{100, 1ull << 30, 1};
  {
    Fixture f(broker_options(dir, FsyncPolicy::EverySec), one_room);
    f.start();
    for (int i = 0; i < 3; ++i) f.publish_and_wait("m", "", "x");
    KeepingSink sink;
    sse::Subscription y(f.sink.hub, sink, "");
    ASSERT_TRUE(f.sink.hub.subscribe(y, {"y"}, std::nullopt));  // forgets x
    std::filesystem::remove_all(dir);
    f.tick();  // rewrites the journal from memory: floors, no message
    ASSERT_FALSE(f.broker->unavailable());
  }
  Fixture f(broker_options(dir, FsyncPolicy::EverySec), one_room);
  f.start();
  EXPECT_TRUE(f.sink.restored_ids.empty());
  EXPECT_EQ(f.sink.hub.next_id(), 4u);
}

// A forgotten name that dropped out of those the hub remembers raised the floor of every room the
// hub does not know: compaction writes it down, so the room made again after a restart resets.
TEST(LocalBroker, TheFloorOfForgottenNamesSurvivesCompactionAndARestart) {
  std::string dir = journal_temp_dir();
  sse::HubOptions one_room{100, 1ull << 30, 1};
  {
    Fixture f(broker_options(dir, FsyncPolicy::Never, nullptr, 4096), one_room);
    f.start();
    f.publish_and_wait("m", "", "b");   // 1
    f.publish_and_wait("m", "", "b");   // 2
    f.publish_and_wait("m", "", "x1");  // 3: forgets b
    f.publish_and_wait("m", "", "x2");  // 4: forgets x1; b's name drops out of those remembered
    for (int i = 0; i < 100; ++i) f.publish_and_wait(std::string(100, 'x'), "", "x2");
  }
  Fixture f(broker_options(dir, FsyncPolicy::Never), one_room);
  f.start();
  ASSERT_FALSE(f.sink.restored_ids.empty());
  EXPECT_GT(f.sink.restored_ids.front(), 3u);  // compacted: b's and x1's records are gone
  KeepingSink sink;
  sse::Subscription b(f.sink.hub, sink, "");
  ASSERT_TRUE(f.sink.hub.subscribe(b, {"b"}, 1));
  ASSERT_FALSE(sink.frames.empty());
  EXPECT_TRUE(sink.frames[0].starts_with("event: reset\n")) << sink.frames[0];
}

// Streams alone make and forget rooms, each forgetting a record in the journal: with no POST at
// all, the journal is still compacted and stays near --journal-max-bytes.
TEST(LocalBroker, ForgottenRoomsAloneDoNotGrowTheJournalWithoutBound) {
  std::string dir = journal_temp_dir();
  Fixture f(broker_options(dir, FsyncPolicy::Never, nullptr, /*max_bytes=*/4096));
  f.start();
  uint64_t largest = 0;
  for (int i = 0; i < 5000; ++i) {
    f.broker->room_forgotten("room-" + std::to_string(i), 0);
    f.run_until([&] { return !f.broker->compacting(); });  // checked after the forgetting
    largest = std::max(largest, f.broker->stats().storage_bytes);
  }
  EXPECT_FALSE(f.broker->unavailable());
  EXPECT_LE(largest, 2 * 4096u + 256);  // 5000 records would take about 200 KB
}

// A compaction's new file is written by a thread: with its write held, the loop goes on answering
// POSTs (each on disk before its answer, as always), and what they appended meanwhile is in the
// new file once it replaces the journal -- in two rounds when it is over a megabyte.
TEST(LocalBroker, PostsAreAnsweredWhileACompactionWritesAndEndUpInTheNewFile) {
  for (FsyncPolicy policy : {FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::Never}) {
    for (size_t text_bytes : {100u, 2000u}) {  // 600 of 2000 bytes: over a megabyte meanwhile
      SCOPED_TRACE(std::to_string(static_cast<int>(policy)) + " " + std::to_string(text_bytes));
      std::string dir = journal_temp_dir();
      FaultyIo io;
      std::vector<uint64_t> acknowledged;
      {
        Fixture f(broker_options(dir, policy, &io, /*max_bytes=*/20000), {1000, 1ull << 30, 1000});
        f.start();
        io.hold_compaction_write = true;
        std::string text(text_bytes, 'x');
        while (!f.broker->compacting()) {
          auto a = f.publish(text);
          ASSERT_TRUE(f.run_until([&] { return a->done; }));
          ASSERT_EQ(a->result.status, Status::Created);
          acknowledged.push_back(a->result.id);
        }
        while (io.compaction_writes_held == 0)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        for (int i = 0; i < 600; ++i) {
          auto a = f.publish(text, "n" + std::to_string(i), i % 2 ? "general" : "team");
          ASSERT_TRUE(f.run_until([&] { return a->done; }));
          ASSERT_EQ(a->result.status, Status::Created) << a->result.reason;
          acknowledged.push_back(a->result.id);
        }
        EXPECT_TRUE(f.broker->compacting());  // all of that while the new file was held
        io.hold_compaction_write = false;
        ASSERT_TRUE(f.run_until([&] { return !f.broker->compacting(); }));
        EXPECT_FALSE(f.broker->unavailable());
        // Streams and posts go on into the new file.
        PublishResult after = f.publish_and_wait("after");
        ASSERT_EQ(after.status, Status::Created);
        acknowledged.push_back(after.id);
        PublishResult retried = f.publish_and_wait(text, "n599", "general");
        EXPECT_EQ(retried.status, Status::Duplicate);
      }
      // Renamed over the journal with everything the hub keeps (here: all of it) in order.
      EXPECT_GE(io.rename_calls, 1);
      EXPECT_EQ(ids_after_restart(dir), acknowledged);
    }
  }
}

// Under --fsync always a message written while the compaction ran, still waiting for the disk
// when the new file replaced the journal, is cut from the new file at its new place when the
// directory sync then fails: nothing acknowledged is cut with it.
TEST(LocalBroker, AMessageWrittenDuringACompactionIsCutAtItsPlaceInTheNewFile) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  std::vector<uint64_t> acknowledged;
  std::string crashed = journal_temp_dir();
  {
    Fixture f(broker_options(dir, FsyncPolicy::Always, &io, /*max_bytes=*/2000),
              {2, 1ull << 30, 1000});  // the new file is much shorter than the old one
    f.start();
    io.hold_compaction_write = true;
    while (!f.broker->compacting()) {
      auto a = f.publish(std::string(300, 'a'));
      ASSERT_TRUE(f.run_until([&] { return a->done; }));
      acknowledged.push_back(a->result.id);
    }
    for (int i = 0; i < 3; ++i) {  // acknowledged while the compaction runs
      auto a = f.publish(std::string(500, 'b'));
      ASSERT_TRUE(f.run_until([&] { return a->done; }));
      acknowledged.push_back(a->result.id);
    }
    io.syncer_passes = 0;  // what is written now waits for the disk
    auto waiting = f.publish(std::string(500, 'c'));
    f.reactor.run_deferred();
    while (io.syncer_waiting == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    io.sync_dir_errno = EIO;
    io.hold_compaction_write = false;
    ASSERT_TRUE(f.run_until([&] { return waiting->done; }));
    EXPECT_EQ(waiting->result.status, Status::Unavailable);
    std::filesystem::copy_file(dir + "/journal", crashed + "/journal",
                               std::filesystem::copy_options::overwrite_existing);
    io.sync_dir_errno = 0;
    io.syncer_passes = -1;
  }
  std::vector<uint64_t> restored = ids_after_restart(crashed);  // a crash before any recovery
  ASSERT_GE(restored.size(), 3u);
  EXPECT_EQ(std::vector<uint64_t>(restored.end() - 3, restored.end()),
            std::vector<uint64_t>(acknowledged.end() - 3, acknowledged.end()));
  EXPECT_EQ(restored.back(), acknowledged.back());  // the refused one is gone, nothing else
}

// A failure while the compaction's thread writes abandons it: its file is removed, the journal in
// use keeps everything, and recovery works as after any failure.
TEST(LocalBroker, AFailureDuringACompactionAbandonsIt) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  std::vector<uint64_t> acknowledged;
  {
    Fixture f(broker_options(dir, FsyncPolicy::EverySec, &io, /*max_bytes=*/2000));
    f.start();
    io.hold_compaction_write = true;
    while (!f.broker->compacting()) {
      auto a = f.publish(std::string(300, 'a'));
      ASSERT_TRUE(f.run_until([&] { return a->done; }));
      acknowledged.push_back(a->result.id);
    }
    while (io.compaction_writes_held == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    io.write_errno = ENOSPC;  // the journal's next append fails (and the new file's, if it writes)
    io.hold_compaction_write = false;
    auto refused = f.publish("refused");
    ASSERT_TRUE(f.run_until([&] { return refused->done; }));
    EXPECT_EQ(refused->result.status, Status::Unavailable);
    EXPECT_FALSE(f.broker->compacting());
    EXPECT_FALSE(std::filesystem::exists(dir + "/journal.compact"));
    io.write_errno = 0;
    f.tick();
    ASSERT_FALSE(f.broker->unavailable());
    PublishResult after = f.publish_and_wait("after");
    ASSERT_EQ(after.status, Status::Created);
    acknowledged.push_back(after.id);
  }
  EXPECT_EQ(ids_after_restart(dir), acknowledged);
}

// The lock removed by hand, a second sse-chat takes the directory and acknowledges a message,
// then stops: the first one, recovering, reads what it wrote before rewriting the journal from its
// memory. That message is kept (and reaches its streams), and its id is never given again; also
// when the lock was given back between two ticks (nobody can tell whether anyone wrote).
TEST(LocalBroker, WhatAnotherServerAcknowledgedInTheDirectoryIsKeptByRecovery) {
  for (bool seen_taken : {true, false}) {
    SCOPED_TRACE(seen_taken ? "a tick found the lock taken" : "given back between two ticks");
    std::string dir = journal_temp_dir();
    Fixture a(broker_options(dir, FsyncPolicy::EverySec));
    a.start();
    ASSERT_EQ(a.publish_and_wait("from a").id, 1u);
    uint64_t by_b = post_as_another_server(dir, 1, 64 << 20, [&] {
                      if (seen_taken) a.tick();
                    }).front();
    if (!seen_taken) a.broker->tick();     // finds its lock gone
    ASSERT_TRUE(a.broker->unavailable());  // refuses until it has read what is there
    a.tick();                              // b is gone: a takes the directory back
    ASSERT_FALSE(a.broker->unavailable());
    EXPECT_EQ(a.sink.live, ids({1, by_b}));  // b's message reached a's streams
    EXPECT_EQ(a.history(0, 10, "team"), ids({by_b}));
    PublishResult next = a.publish_and_wait("from a again");
    EXPECT_GT(next.id, by_b);
    PublishResult retry = a.publish_and_wait(b_text(0), "nb0", "team");
    EXPECT_EQ(retry.status, Status::Duplicate);
    EXPECT_EQ(retry.id, by_b);
    a.broker.reset();
    EXPECT_EQ(ids_after_restart(dir), ids({1, by_b, next.id}));
  }
}

// The other server compacted its journal, which then starts with a floor carrying its highest id:
// every message it acknowledged is still kept.
TEST(LocalBroker, WhatAnotherServerAcknowledgedIsKeptAfterItCompacted) {
  std::string dir = journal_temp_dir();
  Fixture a(broker_options(dir, FsyncPolicy::EverySec));
  a.start();
  ASSERT_EQ(a.publish_and_wait("from a").id, 1u);
  std::vector<uint64_t> by_b = post_as_another_server(dir, 6, /*max_bytes=*/300, [&] {
    a.broker->tick();  // a finds the lock taken
    EXPECT_TRUE(a.broker->unavailable());
  });
  a.tick();  // b is gone: a takes the directory back
  ASSERT_FALSE(a.broker->unavailable());
  EXPECT_EQ(a.history(0, 10, "team"), by_b);
  a.broker.reset();
  std::vector<uint64_t> expected = {1};
  expected.insert(expected.end(), by_b.begin(), by_b.end());
  EXPECT_EQ(ids_after_restart(dir), expected);
}

// Recovery writes what memory keeps on the compaction's thread too: while that write is held, the
// loop goes on (a POST is answered 503 at once), and POSTs are accepted once it is done.
TEST(LocalBroker, RecoveryWritesOnTheCompactionThread) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  Fixture f(broker_options(dir, FsyncPolicy::EverySec, &io));
  f.start();
  ASSERT_EQ(f.publish_and_wait("kept").status, Status::Created);
  io.write_errno = EIO;
  ASSERT_EQ(f.publish_and_wait("refused").status, Status::Unavailable);
  io.write_errno = 0;
  io.hold_compaction_write = true;
  f.broker->tick();  // starts the recovery, whose write waits
  while (io.compaction_writes_held == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(f.broker->compacting());
  auto during = f.publish("during");
  ASSERT_TRUE(f.run_until([&] { return during->done; }));
  EXPECT_EQ(during->result.status, Status::Unavailable);
  f.broker->tick();  // a second tick does not start another
  io.hold_compaction_write = false;
  ASSERT_TRUE(f.run_until([&] { return !f.broker->unavailable(); }));
  expect_posting_again_and_kept_after_restart(f, dir, {1});
}

// An id this server used up on a refused POST was never given to anyone: the other sse-chat that
// took the directory may have given it, and that message is kept too.
TEST(LocalBroker, AnotherServersMessageOnAnIdThisOneRefusedIsKept) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  Fixture a(broker_options(dir, FsyncPolicy::EverySec, &io));
  a.start();
  ASSERT_EQ(a.publish_and_wait("from a").id, 1u);
  io.write_errno = EIO;
  ASSERT_EQ(a.publish_and_wait("refused").status, Status::Unavailable);  // id 2 used up
  io.write_errno = 0;
  uint64_t by_b = post_as_another_server(dir).front();
  a.tick();
  ASSERT_FALSE(a.broker->unavailable());
  EXPECT_EQ(a.history(0, 10, "team"), ids({by_b}));
  EXPECT_GT(a.publish_and_wait("next").id, by_b);
  a.broker.reset();
  std::vector<uint64_t> restored = ids_after_restart(dir);
  ASSERT_EQ(restored.size(), 3u);
  EXPECT_EQ(restored[1], by_b);
}

// A room forgotten (--max-rooms) while a recovery writes its window: its floor follows the window
// in the new journal, so the room's messages do not come back after a restart.
TEST(LocalBroker, ARoomForgottenDuringARecoveryStaysForgotten) {
  std::string dir = journal_temp_dir();
  sse::HubOptions one_room{100, 1ull << 30, 1};
  FaultyIo io;
  {
    Fixture f(broker_options(dir, FsyncPolicy::EverySec, &io), one_room);
    f.start();
    f.publish_and_wait("m", "", "x");
    io.write_errno = EIO;
    ASSERT_EQ(f.publish_and_wait("refused", "", "x").status, Status::Unavailable);
    io.write_errno = 0;
    io.hold_compaction_write = true;
    f.broker->tick();  // the recovery's window, with x, is taken now
    while (io.compaction_writes_held == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    KeepingSink sink;
    sse::Subscription y(f.sink.hub, sink, "");
    ASSERT_TRUE(f.sink.hub.subscribe(y, {"y"}, std::nullopt));  // forgets x
    io.hold_compaction_write = false;
    ASSERT_TRUE(f.run_until([&] { return !f.broker->compacting(); }));
    ASSERT_FALSE(f.broker->unavailable());
  }
  Fixture g(broker_options(dir, FsyncPolicy::EverySec), one_room);
  g.start();
  EXPECT_TRUE(g.history(0, 10, "x").empty());
}

// The data directory made again by a recovery whose sync of its parent failed: the next attempt
// still syncs the parent before accepting POSTs.
TEST(LocalBroker, AParentSyncThatFailedIsOwedToTheNextRecovery) {
  std::string parent = journal_temp_dir();
  std::string dir = parent + "/data";
  FaultyIo io;
  Fixture f(broker_options(dir, FsyncPolicy::EverySec, &io));
  f.start();
  ASSERT_EQ(f.publish_and_wait("one").status, Status::Created);
  std::filesystem::remove_all(dir);
  io.sync_dir_errno = EIO;
  f.tick();
  ASSERT_TRUE(f.broker->unavailable());
  ASSERT_TRUE(std::filesystem::exists(dir));
  io.sync_dir_errno = 0;
  {
    std::lock_guard<std::mutex> lock(io.synced_dirs_mu);
    io.synced_dirs.clear();
  }
  f.tick();
  ASSERT_FALSE(f.broker->unavailable());
  std::lock_guard<std::mutex> lock(io.synced_dirs_mu);
  EXPECT_NE(std::find(io.synced_dirs.begin(), io.synced_dirs.end(), parent), io.synced_dirs.end());
}

// The lock removed, and another sse-chat coming and going while a recovery writes (its start
// removes the recovery's file): the next recovery reads what it wrote.
TEST(LocalBroker, AnotherServerDuringARecoveryWriteIsReadByTheNext) {
  std::string dir = journal_temp_dir();
  FaultyIo io;
  Fixture a(broker_options(dir, FsyncPolicy::EverySec, &io));
  a.start();
  ASSERT_EQ(a.publish_and_wait("from a").id, 1u);
  io.datasync_errno = EIO;
  ASSERT_TRUE(a.run_until([&] { return a.broker->unavailable().has_value(); }, 5000));
  io.datasync_errno = 0;
  io.hold_compaction_write = true;
  a.broker->tick();
  while (io.compaction_writes_held == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  uint64_t by_b = post_as_another_server(dir).front();
  io.hold_compaction_write = false;
  ASSERT_TRUE(a.run_until([&] { return !a.broker->compacting(); }));
  a.tick();
  ASSERT_FALSE(a.broker->unavailable());
  EXPECT_EQ(a.history(0, 10, "team"), ids({by_b}));
  a.broker.reset();
  EXPECT_EQ(ids_after_restart(dir), ids({1, by_b}));
}
