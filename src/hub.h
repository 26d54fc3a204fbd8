// The rooms of the server and everything they share: the one window of kept history (per-room
// and byte bounds), the room limit, delivery of committed messages to streams, replay merged
// across a stream's rooms, and presence. The Broker commits messages into it (CommitSink) and
// reads its window back for paging and compaction.
//
// Bounds, all stated by HubOptions:
//   - each room keeps its newest `history_per_room` messages;
//   - all rooms together keep at most `history_bytes` (kept_cost() each), dropping
//     the globally oldest message first;
//   - at most `max_rooms` rooms: making one more forgets a room nobody reads, one that keeps no
//     messages first, else the one idle longest (a stream that later resumes it from before gets
//     a reset);
//   - forgotten rooms' last ids are remembered for the newest `max_rooms` names forgotten; a name
//     that drops out raises one floor for every room the hub does not otherwise know, so a room
//     made again with it still resets a stream resuming from before (as may a genuinely new room:
//     needless, never silent);
//   - presence lists at most 100 names and 4 KiB of them per room.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker.h"
#include "log.h"
#include "room.h"
#include "subscription.h"

namespace sse {

struct HubOptions {
  size_t history_per_room = 1000;
  uint64_t history_bytes = 256ull << 20;
  size_t max_rooms = 10000;
  // With storage shared by several nodes, an id up to this far above the newest this hub has
  // seen may be one another node just issued: a stream resuming from it waits for what comes
  // after it instead of being reset (0: every such id is one this server never issued).
  uint64_t ids_ahead_allowed = 0;
};

struct HubStats {
  uint64_t messages = 0;  // committed since start (not restored)
  uint64_t deliveries = 0;
  uint64_t slow_consumers = 0;
  uint64_t resets = 0;
  uint64_t rooms_forgotten = 0;
};

class Hub final : public CommitSink {
 public:
  explicit Hub(HubOptions options) : options_(options) {}
  ~Hub() override;
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  // CommitSink
  void on_committed(uint64_t id, std::string_view room, const FrameRef& frame,
                    bool restored) override;
  void for_each_kept(const KeptVisitor& visit) const override;
  std::vector<FrameRef> kept_page(std::string_view room, const PageRange& range) const override;
  // Visits the floor of every room the hub does not otherwise know (neither made nor remembered as
  // forgotten) as the room "", to be given back through restore_base(); then the rooms' floors,
  // then the forgotten names', oldest forgotten first.
  void for_each_floor(const FloorVisitor& visit) const override;
  // Until restored(), forgotten names are remembered without bound: the rooms that exist once
  // every record is read take their own floors back, and only then do the oldest names drop out.
  void restore_floor(std::string_view room, uint64_t through) override;
  void restored() override;
  // Also at any point of a restore: `lost_through` then holds for every room, made or not (messages
  // of unknown rooms were lost there).
  void restore_base(uint64_t last_id, uint64_t lost_through) override;
  void not_restored_through(uint64_t through) override;
  void lose_through(std::string_view room, uint64_t through) override;
  void lose_everywhere_through(uint64_t through, const std::vector<std::string>& except) override;
  void lose_skipped(uint64_t through) override;
  void set_remote_presence(std::string_view room, uint64_t online,
                           std::vector<std::string> names) override;

  // Told of this node's readers of a room when they changed (for other nodes to count them).
  std::function<void(std::string_view room, uint64_t online,
                     const std::vector<std::string_view>& names)>
      on_presence;

  // Told when a room is forgotten (for storage to record it).
  std::function<void(std::string_view room, uint64_t through)> on_forgotten;

  // Whether these rooms exist or can be made now (rooms past the limit make space only by
  // forgetting rooms nobody reads; with `may_forget_kept` false, only rooms that keep no
  // messages, so a reader without a token cannot wipe anybody's history).
  bool can_open(const std::vector<std::string>& rooms, bool may_forget_kept = true) const;
  // Joins `sub` to `rooms` (distinct, valid names; made when new). Without `last_event_id` it is
  // live at once; with it, it replays every kept message after that id from all its rooms in id
  // order first, with a reset for each room whose history no longer reaches back that far (or
  // for every room, when the id is one this server never issued). False, joining nothing, when
  // !can_open(rooms).
  //
  // `backfills`: messages storage keeps of some of the rooms from before what memory does (read
  // for rooms_short_of()); each replays ahead of the room's kept history, and the room gets a
  // reset only if its backfill is not complete or memory dropped more meanwhile.
  bool subscribe(Subscription& sub, const std::vector<std::string>& rooms,
                 std::optional<uint64_t> last_event_id, std::vector<Backfill> backfills = {});
  // The rooms of `rooms` whose kept history no longer reaches back to `last_event_id`, each with
  // the id storage is to be read up to (a Backfill's `through`): a little into what memory keeps
  // (kBackfillOverlap messages), so that what memory drops while the read is under way is in it
  // too; for a room memory does not have, the newest id the hub has.
  // Few: the overlap is read first and counts against the stream's share (newest first).
  static constexpr size_t kBackfillOverlap = 4;
  std::vector<std::pair<std::string, uint64_t>> rooms_short_of(
      const std::vector<std::string>& rooms, uint64_t last_event_id) const;
  void leave(Subscription& sub);
  void refill(Subscription& sub);

  // Sends `event: presence` to the subscribers of each room whose readers changed since the last
  // call (called once a second, so at most once a second per room).
  void send_presence();

  const Room* find(std::string_view name) const;
  // Message `id` as room `name` keeps it; `known` false when the hub cannot tell whether the room
  // had it (the id is not committed here yet, or the room no longer keeps it): else a missing
  // frame means the message was not of that room.
  struct KeptLookup {
    bool known = false;
    const FrameRef* frame = nullptr;
  };
  KeptLookup kept_message(std::string_view name, uint64_t id) const;
  // Up to `limit` rooms, most recently active first: the highest last_id() first (a room made
  // again after it was forgotten has its old one; one without messages, the floor it started
  // from), then in the order they were made. O(limit), or O(rooms) when `keep` passes over some.
  std::vector<const Room*> rooms_by_activity(
      size_t limit, const std::function<bool(const Room&)>& keep = nullptr) const;

  size_t room_count() const { return rooms_.size(); }
  size_t max_rooms() const { return options_.max_rooms; }
  const HubOptions& options() const { return options_; }
  size_t stream_count() const { return streams_; }
  size_t kept_messages() const { return kept_messages_; }
  uint64_t kept_bytes() const { return kept_bytes_; }
  uint64_t next_id() const { return next_id_; }
  // The newest id these rooms know of, or the floor they start from when that is higher, which
  // a stream that does not resume opens with: no higher, so that it tells nothing of other rooms.
  // Coming back from it misses nothing; floors that rise later (forgotten names dropping out)
  // may cost a needless reset, never a silent gap.
  uint64_t newest_of(const std::vector<std::string>& rooms) const;
  // Frame bytes streams hold in backfills not yet sent.
  uint64_t backfill_bytes() const { return backfill_bytes_; }
  const HubStats& stats() const { return stats_; }

 private:
  Room* find_mutable(std::string_view name);
  Room& open(const std::string& name, bool may_forget = true, bool for_commit = false);
  uint64_t floor_for(std::string_view name) const;
  uint64_t take_floor(const std::string& name);
  void raise_unmade_floors(uint64_t through);
  void warn_over_max_rooms();
  void lose_in_every_room(uint64_t through, const std::vector<std::string>& except,
                          bool carried_past);
  void reset_behind(Room& room, uint64_t through, bool carried_past);
  void forget_oldest_idle();
  void drop_room(Room& room, uint64_t through);
  void forget(Room& room);
  void remember_forgotten(const std::string& name, uint64_t through);
  void trim_forgotten();
  void set_last_id(Room& room, uint64_t id);
  void append(Room& room, uint64_t id, const FrameRef& frame);
  void drop_through(Room& room, uint64_t through);
  void drop_oldest(Room& room);
  void deliver_live(Room& room, uint64_t id, const FrameRef& frame);
  void mark_idle(Room& room);
  void mark_busy(Room& room);
  void mark_presence(Room& room);
  void send_room_presence(Room& room, const std::vector<std::string_view>& local);
  FrameRef presence_frame(const Room& room, const std::vector<std::string_view>& local) const;
  void send_owed_presence(Subscription& sub);
  size_t idle_count() const { return idle_.size() + idle_empty_.size(); }
  bool queue_reset(Subscription& sub, Subscription::Member& member);
  void take_backfill(Subscription& sub, Backfill& backfill);
  void drop_backfill(Subscription::Member& member);
  void pass_backfill(Subscription::Member& member, uint64_t next_id);
  void replay(Subscription& sub);

  HubOptions options_;
  // Looked up by string_view without making a string (a message's room, every commit).
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view name) const { return std::hash<std::string_view>{}(name); }
  };
  std::unordered_map<std::string, std::unique_ptr<Room>, NameHash, std::equal_to<>> rooms_;
  // Rooms nobody reads, longest idle first: those that keep no messages are forgotten first.
  std::list<Room*> idle_empty_;
  std::list<Room*> idle_;
  std::set<Room*, MostRecentlyActiveFirst> by_activity_;
  std::set<std::pair<uint64_t, Room*>> fronts_;  // each room's oldest kept id: global order
  // Rooms forgotten and not made again: the newest id each may have had, and its place in
  // forgotten_order_ (oldest forgotten first). At most max_rooms, except while restoring.
  struct Forgotten {
    uint64_t through;
    std::list<std::string>::iterator order_at;
  };
  std::unordered_map<std::string, Forgotten, NameHash, std::equal_to<>> forgotten_;
  std::list<std::string> forgotten_order_;
  std::vector<std::string> presence_dirty_;
  size_t kept_messages_ = 0;
  uint64_t kept_bytes_ = 0;
  uint64_t backfill_bytes_ = 0;
  uint64_t next_id_ = 1;  // one past the newest committed id
  // The floor of every room neither made nor in forgotten_: raised by storage (restore_base) and
  // by forgotten names dropping out of forgotten_.
  uint64_t unknown_floor_ = 0;
  bool restoring_ = false;  // between the first restore_*() call and restored()
  uint64_t rooms_made_ = 0;
  log::Throttle over_max_rooms_log_{std::chrono::seconds(10)};
  log::Throttle forgotten_log_{std::chrono::seconds(60)};  // streams alone can forget rooms
  size_t streams_ = 0;
  HubStats stats_;
};

}  // namespace sse
