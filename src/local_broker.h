// The embedded Broker: ids and nonces in memory, messages made durable by the local journal
// (--data-dir); or memory only with --no-journal. The messages themselves are kept by the
// CommitSink (the hub's window): compaction and recovery write exactly what it keeps.
//
// A storage error is never acknowledged: a failed write, sync, compaction or recovery puts the
// broker in a failed state where every publish answers Unavailable (503) with the reason, until a
// recovery (tried once a second from tick()) rewrites the journal from the messages in memory and
// syncs it. Messages acknowledged before the failure stay readable and survive a restart.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker.h"
#include "config.h"
#include "journal.h"
#include "reactor.h"

namespace sse {

struct LocalBrokerOptions {
  bool journal = true;
  std::string data_dir;
  FsyncPolicy fsync = FsyncPolicy::EverySec;
  uint64_t journal_max_bytes = 64ull << 20;
  size_t nonce_window = 100000;  // the newest idempotent POSTs whose nonces are remembered
  JournalIo* io = nullptr;       // tests inject disk failures here
};

LocalBrokerOptions local_broker_options(const Config& config);

class LocalBroker final : public Broker {
 public:
  LocalBroker(Reactor& reactor, CommitSink& sink, LocalBrokerOptions options);
  ~LocalBroker() override;

  bool start(std::string& error) override;
  void publish(Draft draft, PublishDone done) override;
  void read_history(std::string room, PageRange range, HistoryDone done) override;
  // Memory holds all this node keeps: nothing more to read.
  void read_backfill(std::string room, uint64_t after, uint64_t through, size_t limit,
                     size_t max_bytes, BackfillDone done) override;
  std::optional<std::string> unavailable() const override;
  // A compaction under way counts: a graceful stop lets it finish rather than leave the journal
  // at its longest.
  bool idle() const override { return pending_.empty() && unwritten_.empty() && !compacting(); }
  // A compaction's thread is writing the new file (the loop finishes it when told).
  bool compacting() const { return journal_ && journal_->compacting(); }
  void tick() override;
  BrokerStats stats() const override;
  void room_forgotten(std::string_view room, uint64_t through) override;

 private:
  class JournalWatcher;
  struct Kept {
    uint64_t id;
    std::string nonce_key;
    std::string room;
    FrameRef frame;
  };
  // A message accepted but not acknowledged yet: first waiting to be written with the rest of its
  // loop iteration (unwritten_), then, under --fsync always, written and waiting for the disk
  // (pending_). `waiting` are the POSTs to answer once it is stored: the first one's, then
  // duplicates that arrived meanwhile.
  struct Pending {
    Kept message;
    std::vector<PublishDone> waiting;
    uint64_t seq = 0;     // once written: the journal write that holds it
    uint64_t offset = 0;  // once written: where its record starts in the journal
  };

  static JournalRecord record_of(const Kept& k);
  void restore_floor(const JournalRecord& floor);
  void answer(PublishDone done, PublishResult result);
  void answer_stored(uint64_t id, std::vector<PublishDone>& waiting);
  void write_unwritten();
  void refuse(Pending& message, const std::string& reason);
  void schedule_recovery(const std::string& reason);
  bool join_duplicate(const std::string& nonce_key, PublishDone& done);
  void commit(Kept message, bool restored);
  void remember_nonce(uint64_t id, const std::string& nonce_key);
  void on_journal_notice();
  void fail(const std::string& reason);
  void try_recover();
  void note_recovery_error(const std::string& error);
  void adopt_record(JournalRecord&& r);
  bool append_floors();
  void compact_if_needed();
  void finish_compaction();
  void move_pending_offsets(const Journal::CompactionEnd& end);
  std::vector<JournalRecord> floor_records() const;
  using WindowVisitor = std::function<void(uint64_t id, const std::string& nonce_key,
                                           std::string_view room, const FrameRef& frame)>;
  void for_each_window_message(const WindowVisitor& visit) const;
  CompactionWindow compaction_window() const;
  uint64_t window_bytes() const;

  Reactor& reactor_;
  CommitSink& sink_;
  LocalBrokerOptions options_;
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<JournalWatcher> watcher_;
  std::deque<Pending> unwritten_;                     // ids ascending, above every pending one
  std::deque<Pending> pending_;                       // ids ascending, all above the committed ones
  std::unordered_map<std::string, uint64_t> nonces_;  // of nonce_order_, pending_ and unwritten_
  std::deque<std::pair<uint64_t, std::string>> nonce_order_;  // committed (id, key), ascending
  uint64_t next_id_ = 1;
  uint64_t last_committed_ = 0;
  uint64_t compact_at_ = 0;
  uint64_t adopt_from_ = 0;  // while recovering: ids from here on were not given by this server
  bool floors_after_recovery_ = false;  // a room was forgotten while a recovery wrote
  std::string failure_;                 // empty while storage works
  std::string recovery_error_;          // why the last recovery failed (logged when it changes)
  // A fault that comes back as soon as storage recovers (a file size limit) is retried less and
  // less often, so that the log and /healthz do not flap once a second.
  int64_t recovered_at_ms_ = -1;
  int64_t recovery_delay_ms_ = 0;
  int64_t next_recovery_ms_ = 0;
  // Deferred calls hold it weakly: one left on the loop after the broker is gone does nothing.
  std::shared_ptr<LocalBroker*> self_ = std::make_shared<LocalBroker*>(this);
};

}  // namespace sse
