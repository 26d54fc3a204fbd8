#include "local_broker.h"

#include <algorithm>

#include "log.h"
#include "sse.h"

namespace sse {
namespace {
constexpr int64_t kFailedAgainSoonMs = 10000;  // a failure this soon after recovering backs off
constexpr int64_t kMaxRecoveryDelayMs = 60000;
}  // namespace

LocalBrokerOptions local_broker_options(const Config& config) {
  LocalBrokerOptions o;
  o.journal = config.journal;
  o.data_dir = config.data_dir;
  o.fsync = config.fsync;
  o.journal_max_bytes = config.journal_max_bytes;
  return o;
}

class LocalBroker::JournalWatcher final : public EventHandler {
 public:
  explicit JournalWatcher(LocalBroker& broker) : broker_(broker) {}
  void on_event(uint32_t) override { broker_.on_journal_notice(); }

 private:
  LocalBroker& broker_;
};

// A kept message as its journal record (its JSON read back from the frame it was sent as).
JournalRecord LocalBroker::record_of(const Kept& k) {
  return {k.id, k.nonce_key, k.room, std::string(frame_json(*k.frame.get()))};
}

LocalBroker::LocalBroker(Reactor& reactor, CommitSink& sink, LocalBrokerOptions options)
    : reactor_(reactor), sink_(sink), options_(std::move(options)) {}

LocalBroker::~LocalBroker() {
  if (journal_ && journal_->notify_fd() >= 0) reactor_.remove(journal_->notify_fd());
}

bool LocalBroker::start(std::string& error) {
  if (!options_.journal) return true;
  JournalLoad load;
  Journal::Options jo{options_.data_dir, options_.fsync, options_.io};
  journal_ = Journal::open(
      jo,
      [this](JournalRecord&& r) {
        next_id_ = std::max(next_id_, r.id + 1);
        if (r.floor) return restore_floor(r);
        FrameRef frame = message_frame(r.id, r.json);
        commit({r.id, std::move(r.nonce_key), std::move(r.room), std::move(frame)}, true);
      },
      load, error);
  if (!journal_) return false;
  sink_.restored();
  for (const std::string& w : load.warnings) log::warn(w, "data_dir", options_.data_dir);
  log::info("journal loaded", "records", load.records, "last_id", load.last_id, "data_dir",
            options_.data_dir);
  // As if memory's window had just been rewritten: twice the file as loaded let a server restarted
  // more often than its journal doubled never compact, and --journal-max-bytes alone would
  // rewrite at every start a window larger than it.
  compact_at_ = std::max(options_.journal_max_bytes, 2 * window_bytes());
  if (journal_->notify_fd() >= 0) {
    watcher_ = std::make_unique<JournalWatcher>(*this);
    reactor_.add(journal_->notify_fd(), EPOLLIN, watcher_.get());
  }
  compact_if_needed();
  return true;
}

// A floor read back at start-up. One without a room carries the highest id issued (the hub's too:
// a stream resuming from it is not "from the future" even when its message was not kept) and what
// every room lost that the file does not say otherwise: the hub's floor for rooms it no longer
// knew, or messages of unknown rooms lost to damage in the middle of the file.
void LocalBroker::restore_floor(const JournalRecord& floor) {
  if (floor.room.empty())
    sink_.restore_base(floor.id, floor.through);
  else
    sink_.restore_floor(floor.room, floor.through);
}

void LocalBroker::answer(PublishDone done, PublishResult result) {
  reactor_.defer([done = std::move(done), result = std::move(result)] { done(result); });
}

// A nonce seen before: answer with the original id, once that message is durable.
bool LocalBroker::join_duplicate(const std::string& nonce_key, PublishDone& done) {
  auto it = nonces_.find(nonce_key);
  if (it == nonces_.end()) return false;
  uint64_t id = it->second;
  if (id > last_committed_) {
    for (auto* list : {&pending_, &unwritten_})
      for (Pending& p : *list) {
        if (p.message.id != id) continue;
        p.waiting.push_back(std::move(done));
        return true;
      }
  }
  answer(std::move(done), {PublishResult::Status::Duplicate, id, {}});
  return true;
}

void LocalBroker::publish(Draft draft, PublishDone done) {
  std::string nonce_key = draft.nonce.empty() ? std::string() : draft.nonce_key();
  // A retry of a message already acknowledged gets its id while storage fails too: it is stored
  // (what failing refused forgot its nonce), and a 503 would say it was not.
  if (!nonce_key.empty() && join_duplicate(nonce_key, done)) return;
  if (!failure_.empty()) {
    return answer(std::move(done), {PublishResult::Status::Unavailable, 0, failure_});
  }
  // An id is used up once a write was tried: a failed write may still have left its record.
  uint64_t id = next_id_++;
  FrameRef frame =
      message_frame(id, message_json({id, draft.room, draft.user, draft.text, wall_clock_ms()}));
  Kept message{id, std::move(nonce_key), std::move(draft.room), std::move(frame)};
  if (!journal_) {
    commit(std::move(message), false);
    return answer(std::move(done), {PublishResult::Status::Created, id, {}});
  }
  // Written after every event of this loop iteration is handled: a burst of POSTs costs one
  // write and one check of the file instead of one each, and no answer goes out before it.
  if (unwritten_.empty())
    reactor_.defer([alive = std::weak_ptr<LocalBroker*>(self_)] {
      if (auto self = alive.lock()) (*self)->write_unwritten();
    });
  if (!message.nonce_key.empty()) nonces_[message.nonce_key] = id;
  unwritten_.push_back({std::move(message), {}});
  unwritten_.back().waiting.push_back(std::move(done));
}

void LocalBroker::write_unwritten() {
  if (unwritten_.empty()) return;  // refused meanwhile
  std::vector<JournalRecord> records;
  records.reserve(unwritten_.size());
  for (const Pending& p : unwritten_) records.push_back(record_of(p.message));
  uint64_t seq = 0;
  std::vector<uint64_t> starts;
  std::string error;
  if (!journal_->append(records, seq, error, &starts)) return fail(error);  // refuses unwritten_
  std::deque<Pending> written = std::move(unwritten_);
  unwritten_.clear();
  if (journal_->policy() == FsyncPolicy::Always) {
    // Acknowledged and broadcast only once the records are on disk; each keeps where its own
    // record starts, so a failure cuts the journal after the ones already acknowledged.
    for (size_t i = 0; i < written.size(); ++i) {
      written[i].seq = seq;
      written[i].offset = starts[i];
      pending_.push_back(std::move(written[i]));
    }
    return;
  }
  for (Pending& p : written) {
    uint64_t id = p.message.id;
    commit(std::move(p.message), false);
    answer_stored(id, p.waiting);
  }
  compact_if_needed();
}

// The first POST of a stored message gets 201, retries of its nonce that joined it the same id.
void LocalBroker::answer_stored(uint64_t id, std::vector<PublishDone>& waiting) {
  for (size_t i = 0; i < waiting.size(); ++i) {
    auto status = i == 0 ? PublishResult::Status::Created : PublishResult::Status::Duplicate;
    answer(std::move(waiting[i]), {status, id, {}});
  }
}

void LocalBroker::commit(Kept message, bool restored) {
  last_committed_ = message.id;
  remember_nonce(message.id, message.nonce_key);
  sink_.on_committed(message.id, message.room, message.frame, restored);
}

void LocalBroker::remember_nonce(uint64_t id, const std::string& nonce_key) {
  if (nonce_key.empty()) return;
  nonces_[nonce_key] = id;
  nonce_order_.emplace_back(id, nonce_key);
  while (nonce_order_.size() > options_.nonce_window) {
    auto& [old_id, old_key] = nonce_order_.front();
    auto it = nonces_.find(old_key);
    if (it != nonces_.end() && it->second == old_id) nonces_.erase(it);
    nonce_order_.pop_front();
  }
}

void LocalBroker::on_journal_notice() {
  journal_->drain_notifications();
  Journal::SyncState state = journal_->sync_state();
  bool committed = false;
  while (!pending_.empty() && pending_.front().seq <= state.durable_seq) {
    Pending p = std::move(pending_.front());
    pending_.pop_front();
    uint64_t id = p.message.id;
    commit(std::move(p.message), false);
    answer_stored(id, p.waiting);
    committed = true;
  }
  // A recovery under way replaces the file whose sync failed.
  if (state.error && failure_.empty()) return fail(*state.error);
  if (journal_->compaction_written()) finish_compaction();
  if (committed) compact_if_needed();
}

// Refuses from now on, and answers every POST still waiting for the disk (or not written yet) with
// the reason; their records are cut from the journal (best effort: recovery rewrites it without
// them anyway), so a restart before recovery does not bring back a message that was refused.
void LocalBroker::fail(const std::string& reason) {
  if (failure_.empty()) {
    schedule_recovery(reason);
    recovery_error_ = reason;  // logged just now: a recovery failing for it again says no more
  }
  failure_ = reason;
  journal_->abandon_compaction();  // recovery writes everything anyway
  if (!pending_.empty() && !journal_->truncate_to(pending_.front().offset))
    log::warn("could not cut refused messages from the journal; recovery will", "data_dir",
              options_.data_dir);
  for (auto* list : {&pending_, &unwritten_})
    for (Pending& p : *list) refuse(p, reason);
  pending_.clear();
  unwritten_.clear();
}

// At the next tick, unless storage failed again soon after it last recovered: then after 2 s,
// doubled each time it does so again, up to a minute.
void LocalBroker::schedule_recovery(const std::string& reason) {
  int64_t now = reactor_.now_ms();
  bool again_soon = recovered_at_ms_ >= 0 && now - recovered_at_ms_ < kFailedAgainSoonMs;
  recovery_delay_ms_ =
      again_soon ? std::clamp<int64_t>(recovery_delay_ms_ * 2, 2000, kMaxRecoveryDelayMs) : 0;
  next_recovery_ms_ = now + recovery_delay_ms_;
  log::error("journal failed; POSTs are refused until it recovers", "error", reason, "data_dir",
             options_.data_dir, "next_attempt_in_s", recovery_delay_ms_ / 1000);
}

void LocalBroker::refuse(Pending& p, const std::string& reason) {
  auto it = nonces_.find(p.message.nonce_key);
  if (it != nonces_.end() && it->second == p.message.id) nonces_.erase(it);
  for (PublishDone& done : p.waiting)
    answer(std::move(done), {PublishResult::Status::Unavailable, 0, reason});
}

void LocalBroker::tick() {
  if (journal_ && failure_.empty()) {
    if (auto error = journal_->sync_state().error) {
      fail(*error);
    } else if (auto removed = journal_->check_file()) {
      fail(*removed);  // found even when nobody posts, before a restart could start from nothing
    } else if (auto taken = journal_->check_lock()) {
      fail(*taken);  // another server writes here: acknowledging would hand out its ids twice
    } else if (auto cut = journal_->check_size()) {
      fail(*cut);  // recovery writes back what memory keeps before a restart could lose it
    }
  }
  if (!failure_.empty()) try_recover();
}

// The messages in memory are everything the journal must hold: writing them to a fresh file and
// syncing it and the directory makes storage whole again, whatever failed.
void LocalBroker::try_recover() {
  if (!journal_ || journal_->compacting()) return;  // a recovery's rewrite is under way
  if (reactor_.now_ms() < next_recovery_ms_) return;
  std::string error;
  // Ids this server used up on refused POSTs may have been given by the other one too, unless
  // those records may still be in the file.
  adopt_from_ = journal_->refused_left() ? next_id_ : last_committed_ + 1;
  auto adopt = [this](JournalRecord&& r) { adopt_record(std::move(r)); };
  if (!journal_->prepare_recovery(adopt, error) ||
      !journal_->start_compaction(compaction_window(), 0, error)) {
    return note_recovery_error(error);
  }
  floors_after_recovery_ = false;  // the window has every floor so far
}

// Each new reason once (another sse-chat holding the directory, say): it may not be the failure
// /healthz still names, which adds it.
void LocalBroker::note_recovery_error(const std::string& error) {
  if (error != recovery_error_)
    log::warn("journal recovery failed; POSTs are still refused", "error", error, "data_dir",
              options_.data_dir);
  else
    log::debug("journal still failing", "error", error);
  recovery_error_ = error;
}

// A record of the journal another sse-chat wrote while it held the data directory: the ids it
// gave past ours are messages it acknowledged, so they are committed here (and reach the streams)
// before the journal is rewritten from memory; ids are never given again.
void LocalBroker::adopt_record(JournalRecord&& r) {
  next_id_ = std::max(next_id_, r.id + 1);  // a floor's id: the highest the other one issued
  if (r.floor || r.id < adopt_from_ || r.id <= last_committed_) return;
  log::warn("adopting a message another sse-chat acknowledged in this data directory", "id", r.id,
            "room", r.room);
  FrameRef frame = message_frame(r.id, r.json);
  commit({r.id, std::move(r.nonce_key), std::move(r.room), std::move(frame)}, false);
}

// Rooms forgotten while a recovery wrote its window: their floors follow it in the new file.
bool LocalBroker::append_floors() {
  uint64_t seq = 0;
  std::string error;
  if (!journal_->append(floor_records(), seq, error)) {
    log::debug("journal still failing", "error", error);
    return false;
  }
  floors_after_recovery_ = false;
  return true;
}

// Started here, written by the journal's thread while the loop goes on, finished when it says so.
void LocalBroker::compact_if_needed() {
  if (!journal_ || !failure_.empty() || journal_->compacting() ||
      journal_->size_bytes() <= compact_at_)
    return;
  std::string error;
  if (!journal_->start_compaction(compaction_window(), pending_.size(), error))
    fail("journal compaction failed: " + error);
}

// While storage fails, the compaction under way is a recovery (a failure abandons any other): it
// syncs everything before POSTs are accepted again.
void LocalBroker::finish_compaction() {
  bool recovering = !failure_.empty();
  Journal::CompactionEnd end =
      journal_->finish_compaction(recovering || journal_->policy() == FsyncPolicy::Always);
  if (!end.finished) return;
  if (end.swapped) move_pending_offsets(end);
  if (!end.error.empty()) {
    if (recovering) return note_recovery_error(end.error);  // the rewrite failed
    return fail("journal compaction failed: " + end.error);
  }
  if (recovering && floors_after_recovery_ && !append_floors()) return;
  if (recovering) {
    journal_->recovered();
    recovered_at_ms_ = reactor_.now_ms();
    log::info("journal recovered; POSTs are accepted again", "last_id", last_committed_, "was",
              failure_);
    failure_.clear();
    recovery_error_.clear();  // the next failure's recoveries say why again
  }
  // Twice what the rewrite had to write, not what came meanwhile besides: the journal stays near
  // that however much arrives during rewrites, and each rewrite follows at least as many bytes
  // appended as it writes.
  compact_at_ = std::max(options_.journal_max_bytes, end.appended_at * 2);
  compact_if_needed();
}

// Once the new file is in use (even if syncing its directory then failed), a failure must cut
// the messages waiting for the disk where their records are now: those that waited when the
// compaction started are the last records it was given; those written since were appended to it
// in the same order.
void LocalBroker::move_pending_offsets(const Journal::CompactionEnd& end) {
  size_t carried = 0;
  while (carried < pending_.size() && pending_[carried].offset < end.origin) ++carried;
  size_t first = end.starts.size() - carried;
  for (size_t i = 0; i < pending_.size(); ++i)
    pending_[i].offset =
        i < carried ? end.starts[first + i] : end.appended_at + (pending_[i].offset - end.origin);
}

// The floors: the highest id issued with what every room the hub does not know lost, and how far
// back each room no longer reaches.
std::vector<JournalRecord> LocalBroker::floor_records() const {
  std::vector<JournalRecord> records;
  records.push_back(floor_record(next_id_ - 1, "", 0));
  sink_.for_each_floor([&](std::string_view room, uint64_t through) {
    if (room.empty())
      records.front().through = through;
    else
      records.push_back(floor_record(next_id_ - 1, std::string(room), through));
  });
  return records;
}

// What the hub keeps (with the nonces still remembered for those messages), then what waits for
// the disk: every message a rewritten journal must hold, in id order.
void LocalBroker::for_each_window_message(const WindowVisitor& visit) const {
  auto nonce = nonce_order_.begin();
  static const std::string kNoNonce;
  sink_.for_each_kept([&](uint64_t id, std::string_view room, const FrameRef& frame) {
    while (nonce != nonce_order_.end() && nonce->first < id) ++nonce;
    bool has_nonce = nonce != nonce_order_.end() && nonce->first == id;
    visit(id, has_nonce ? nonce->second : kNoNonce, room, frame);
  });
  for (const Pending& p : pending_)
    visit(p.message.id, p.message.nonce_key, p.message.room, p.message.frame);
}

// The floors and every message, each message's JSON left in its frame: the loop copies none.
// About what a rewrite of the window would write (each record's header, id, nonce and room
// lengths in 32 bytes), without building it.
uint64_t LocalBroker::window_bytes() const {
  uint64_t bytes = 0;
  for_each_window_message(
      [&](uint64_t, const std::string& nonce_key, std::string_view room, const FrameRef& frame) {
        bytes += 32 + nonce_key.size() + room.size() + frame_json(*frame.get()).size();
      });
  return bytes;
}

CompactionWindow LocalBroker::compaction_window() const {
  CompactionWindow window;
  window.floors = floor_records();
  for_each_window_message(
      [&](uint64_t id, const std::string& nonce_key, std::string_view room, const FrameRef& frame) {
        window.messages.push_back({id, nonce_key, std::string(room), frame_json(*frame.get())});
        window.frames.push_back(frame);
      });
  return window;
}

void LocalBroker::read_history(std::string room, PageRange range, HistoryDone done) {
  reactor_.defer([done = std::move(done), frames = sink_.kept_page(room, range)]() mutable {
    done(std::move(frames));
  });
}

void LocalBroker::read_backfill(std::string room, uint64_t /*after*/, uint64_t through,
                                size_t /*limit*/, size_t /*max_bytes*/, BackfillDone done) {
  reactor_.defer([done = std::move(done), room = std::move(room), through]() mutable {
    done({std::move(room), through, {}, false, true});
  });
}

void LocalBroker::room_forgotten(std::string_view room, uint64_t through) {
  if (!journal_) return;
  if (!failure_.empty()) {
    // The next recovery writes the floors; one under way has its window already.
    floors_after_recovery_ = floors_after_recovery_ || journal_->compacting();
    return;
  }
  uint64_t seq = 0;
  std::string error;
  if (!journal_->append(floor_record(next_id_ - 1, std::string(room), through), seq, error))
    return fail(error);
  // Streams alone make and forget rooms, each forgetting a record: without a POST the journal
  // must still be compacted. Not now: a room is forgotten while a message is being committed,
  // and until it is, the rewrite would leave it out.
  reactor_.defer([alive = std::weak_ptr<LocalBroker*>(self_)] {
    if (auto self = alive.lock()) (*self)->compact_if_needed();
  });
}

std::optional<std::string> LocalBroker::unavailable() const {
  if (failure_.empty()) return std::nullopt;
  // The failure may have been mended while something else now stops the recovery (another
  // sse-chat holding the directory, say): an operator needs both.
  if (recovery_error_.empty() || recovery_error_ == failure_) return failure_;
  return failure_ + "; recovery failing: " + recovery_error_;
}

BrokerStats LocalBroker::stats() const {
  return {last_committed_, journal_ ? journal_->size_bytes() : 0};
}

}  // namespace sse
