// The commit step: "a POST becomes a committed message with an id" happens here and nowhere else.
// A Broker assigns ids (64-bit, strictly increasing, never reused), de-duplicates nonces (also
// against messages not yet durable), persists, tells the rooms about every committed message
// through one CommitSink, and answers history reads. The routes know nothing of files.
//
// Both calls are asynchronous: the answer comes later, on the event loop, never from inside the
// call (the local journal under --fsync always waits for the disk; a Redis broker waits for Redis).
//
//   routes --publish(draft)--> Broker --on_committed(message)--> CommitSink (hub) --> streams
//          <--PublishDone(Created|Duplicate|Unavailable) on the loop--
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "frame.h"

namespace sse {

// A message as posted, validated but not yet committed.
struct Draft {
  std::string room;  // a valid room name
  std::string user;
  std::string text;
  std::string nonce;  // "" when the POST is not idempotent
  // The token subject that posted it ("" with tokens off): nonces are its own, so two bearers
  // with the same display name never share one.
  std::string subject;

  // What the nonce is kept under: its owner (the subject, else the user name) and the nonce.
  // '\x1e' never starts a user name (no control characters), so the two kinds never meet.
  std::string nonce_key() const {
    return (subject.empty() ? user : '\x1e' + subject) + '\x1f' + nonce;
  }
};

struct PublishResult {
  enum class Status {
    Created,      // committed and durable as configured: 201
    Duplicate,    // the same user+nonce was committed before, as `id`: 200
    Unavailable,  // storage cannot take it; nothing was acknowledged: 503
  };
  Status status;
  uint64_t id = 0;
  std::string reason;  // Unavailable: why, for a person
};
using PublishDone = std::function<void(const PublishResult&)>;

// Which of a room's kept messages a page holds (GET /messages): with `after`, the first `limit`
// whose ids are above it, paging forward; without, the newest `limit`; either way only ids below
// `before` when it is given, so a page before the oldest one has pages back.
struct PageRange {
  std::optional<uint64_t> after;
  std::optional<uint64_t> before;
  size_t limit = 100;
  // Whether its asker still waits for it (empty: always): a page that waited its turn for a
  // client that has gone is not read.
  std::function<bool()> wanted = {};
};

// The messages' JSON a page's answer holds at most (at least one message, however large).
inline constexpr size_t kMaxHistoryPageBytes = 1 << 20;
// Entries a listing (a history page, a room list) holds at most, whatever `limit` asks.
inline constexpr size_t kMaxListLimit = 1000;

// Kept messages, oldest first, as the frames streams were sent.
using HistoryDone = std::function<void(std::vector<FrameRef>)>;

// What a stream resuming one room from `after` needs from storage because the node's memory no
// longer (or never did) reach back that far: the room's messages with ids in (after, through].
struct Backfill {
  std::string room;
  uint64_t through = 0;
  std::vector<KeptFrame> messages;  // ids ascending; the newest ones when not all fit
  bool complete = false;            // nothing of the room after `after` is missing before them
  bool answered = false;            // storage answered (else nothing is known: try again later)

  // Takes `more`, read on from where this one ends (`through`), as one backfill.
  void read_on(Backfill more) {
    if (!more.answered) {
      answered = false;  // nothing is known: the stream ends unjoined, to come back
      return;
    }
    through = more.through;
    if (!more.complete) {
      // It does not reach back to where this one ends: a hole between them, which a reset from
      // this one's oldest would hide. The stream resets from the newer part's oldest instead.
      messages = std::move(more.messages);
      complete = false;
      return;
    }
    for (KeptFrame& m : more.messages) messages.push_back(std::move(m));
  }
};
using BackfillDone = std::function<void(Backfill)>;

// What `event: presence` lists at most: this many names, of these many bytes in all.
inline constexpr size_t kMaxPresenceNames = 100;
inline constexpr size_t kMaxPresenceNameBytes = 4096;
// How many of `names` (sorted) are shown: the first ones within both bounds.
inline size_t shown_presence_names(const std::vector<std::string_view>& names) {
  size_t shown = 0, bytes = 0;
  for (std::string_view name : names) {
    bytes += name.size();
    if (shown == kMaxPresenceNames || bytes > kMaxPresenceNameBytes) break;
    ++shown;
  }
  return shown;
}

// What a kept message costs against the byte bound on history (--history-memory): its frame, and
// this much beside it (frame header, allocator, deque slot).
inline constexpr size_t kKeptEntryOverhead = 64;
inline size_t kept_cost(const FrameRef& frame) {
  return frame->size() + kKeptEntryOverhead;
}

// Where committed messages go (the hub of rooms), and the messages it keeps in memory: one window
// of history that replay, paging and the local journal's compaction all read.
class CommitSink {
 public:
  virtual ~CommitSink() = default;
  // Called on the loop, in id order, once per message. `restored`: read back from storage at
  // start-up, not newly posted.
  virtual void on_committed(uint64_t id, std::string_view room, const FrameRef& frame,
                            bool restored) = 0;

  // Every kept message, ids ascending.
  using KeptVisitor = std::function<void(uint64_t id, std::string_view room, const FrameRef&)>;
  virtual void for_each_kept(const KeptVisitor& visit) const = 0;

  // The kept messages of `room` within `range`, oldest first.
  virtual std::vector<FrameRef> kept_page(std::string_view room, const PageRange& range) const = 0;

  // Floors: how far back each room's kept messages no longer reach (what was dropped or forgotten
  // is gone: a stream resuming from before it gets a reset). Storage that drops messages writes
  // these down, and gives them back at start-up in the order they were written, between the
  // restored messages; after the last, restored() (bounds that need every room are applied then).
  using FloorVisitor = std::function<void(std::string_view room, uint64_t through)>;
  virtual void for_each_floor(const FloorVisitor& visit) const = 0;
  virtual void restore_floor(std::string_view room, uint64_t through) = 0;
  virtual void restored() = 0;

  // Storage that other nodes share (Redis) says, before anything is restored: ids up to
  // `last_id` were issued (a stream resuming from one is not "from the future"), and messages up
  // to `lost_through` are gone from it in every room, known or not (a resume from before them
  // gets a reset).
  virtual void restore_base(uint64_t last_id, uint64_t lost_through) = 0;
  // Storage keeps messages up to `through` of rooms it did not restore (it restores only the most
  // recently active): memory does not have them, so a stream resuming such a room from before
  // `through` needs storage's backfill (or gets a reset). Called before restored().
  virtual void not_restored_through(uint64_t through) = 0;
  // Storage lost messages of `room` up to `through` before this sink was given them: streams of
  // the room that still needed them get a reset now, then go on.
  virtual void lose_through(std::string_view room, uint64_t through) = 0;
  // Storage may have lost messages up to `through` of rooms it cannot name (it lost its data, or
  // dropped rooms): in every room but `except` (whose messages storage still has) a stream that
  // still needed them gets a reset now, then what memory keeps; a resume from before them gets a
  // reset too, and so do rooms made from now on.
  virtual void lose_everywhere_through(uint64_t through,
                                       const std::vector<std::string>& except) = 0;
  // Storage lost messages up to `through` that this sink was never given, while its streams went
  // on past them: every stream hears a reset for each of its rooms now, then goes on; a resume from
  // before `through` hears one too.
  virtual void lose_skipped(uint64_t through) = 0;

  // Readers of `room` on other nodes (sorted distinct names): presence counts them too, and a
  // room this node does not know is made (while there is room under --max-rooms) to list it.
  virtual void set_remote_presence(std::string_view room, uint64_t online,
                                   std::vector<std::string> names) = 0;
};

struct BrokerStats {
  uint64_t last_id = 0;        // newest committed id (0: none yet)
  uint64_t storage_bytes = 0;  // journal size
  // Redis (--redis) only:
  bool redis = false;
  bool redis_up = false;  // both links up and the feed reading
  uint64_t redis_reconnects = 0;
  uint64_t gaps_filled = 0;  // times the feed found it had missed entries and filled them
  uint64_t data_losses = 0;  // times the log was found to start over below what was read
};

class Broker {
 public:
  virtual ~Broker() = default;

  // Loads what storage keeps (feeding it to the sink). False + `error` if storage is unusable.
  virtual bool start(std::string& error) = 0;

  // Commits `draft`; `done` runs later on the loop.
  virtual void publish(Draft draft, PublishDone done) = 0;

  // The kept messages of `room` within `range`, oldest first.
  virtual void read_history(std::string room, PageRange range, HistoryDone done) = 0;

  // Whether storage keeps messages the node's memory does not (storage shared by several nodes):
  // a stream resuming from before a room's memory then reads them with read_backfill().
  virtual bool keeps_more_than_memory() const { return false; }
  // The newest `limit` messages of `room` with ids in (after, through], at most `max_bytes` of
  // frames; `done` runs later on the loop (not `answered` when storage cannot say now).
  virtual void read_backfill(std::string room, uint64_t after, uint64_t through, size_t limit,
                             size_t max_bytes, BackfillDone done) = 0;

  // Why POSTs are refused right now (storage failed), or nullopt while it works.
  virtual std::optional<std::string> unavailable() const = 0;

  // Nothing is waiting for storage (shutdown waits until then).
  virtual bool idle() const = 0;

  // The sink has what storage keeps, so streams may open (a Redis node warms up first).
  virtual bool warm() const { return true; }

  // The first id of storage's data set when ids below it were never given by it (0: none such):
  // a client's id under it comes from a data set lost before this node could tell.
  virtual uint64_t first_id() const { return 0; }

  // About once a second: retries failed storage, and the like.
  virtual void tick() = 0;

  virtual BrokerStats stats() const = 0;

  // The hub forgot `room` (--max-rooms), whose messages went up to `through`: storage that keeps
  // them may record it, so a restart neither brings the room back nor misses its reset.
  virtual void room_forgotten(std::string_view room, uint64_t through) = 0;

  // This node's readers of `room` changed (at most once a second per room): storage shared with
  // other nodes tells them. `names`: distinct, sorted (only the first kMaxPresenceNames within
  // kMaxPresenceNameBytes are ever shown, so no more need to be told).
  virtual void presence_changed(std::string_view /*room*/, uint64_t /*online*/,
                                const std::vector<std::string_view>& /*names*/) {}
  // The node is stopping: its readers leave the other nodes' presence now, not when their entries
  // expire, and later changes are not sent.
  virtual void withdraw_presence() {}
};

}  // namespace sse
