#include "hub.h"

#include <algorithm>
#include <iterator>
#include <queue>
#include <tuple>

#include "log.h"
#include "sse.h"

namespace sse {
Subscription::~Subscription() {
  hub_.leave(*this);
}

void Subscription::refill() {
  hub_.refill(*this);
}

Hub::~Hub() = default;

Room* Hub::find_mutable(std::string_view name) {
  auto it = rooms_.find(name);
  return it == rooms_.end() ? nullptr : it->second.get();
}

const Room* Hub::find(std::string_view name) const {
  auto it = rooms_.find(name);
  return it == rooms_.end() ? nullptr : it->second.get();
}

// ---- rooms: making, forgetting ----

// At most once every 10 s, with how many times it happened: another node's posts to new rooms can
// make it happen for every message.
void Hub::warn_over_max_rooms() {
  if (over_max_rooms_log_.allow())
    log::warn("more rooms than --max-rooms, every one of them read", "rooms", rooms_.size() + 1,
              "times", over_max_rooms_log_.times());
}

// `may_forget`: false while restoring from storage, which replays what was forgotten itself.
Room& Hub::open(const std::string& name, bool may_forget, bool for_commit) {
  if (Room* room = find_mutable(name)) return *room;
  // Its floor before any room is forgotten for it: a forgotten name dropping out then raises the
  // floor of the rooms still unknown, not of this one.
  uint64_t floor = take_floor(name);
  if (may_forget && rooms_.size() >= options_.max_rooms) forget_oldest_idle();
  // A POST checked can_open() before its commit, and a stream may take the idle room it counted
  // on meanwhile: the room is made anyway, and the next commit to make one forgets the excess too
  // (a stream forgets only as much as can_open() allowed it: a reader may not forget messages).
  while (for_commit && rooms_.size() >= options_.max_rooms && idle_count() > 0)
    forget_oldest_idle();
  if (may_forget && rooms_.size() >= options_.max_rooms)  // a commit's message must go somewhere
    warn_over_max_rooms();
  auto [it, inserted] = rooms_.emplace(name, std::make_unique<Room>(name, floor));
  Room& room = *it->second;
  room.made_ = ++rooms_made_;
  room.active_at_ = by_activity_.insert(&room).first;
  mark_idle(room);
  return room;
}

// The floor a room made now under `name` would get: what was remembered when it was forgotten
// (raised by any loss since), else that of every room the hub does not know.
uint64_t Hub::floor_for(std::string_view name) const {
  auto it = forgotten_.find(name);
  return it == forgotten_.end() ? unknown_floor_ : it->second.through;
}

// floor_for(name), which the room being made carries from now on.
uint64_t Hub::take_floor(const std::string& name) {
  auto it = forgotten_.find(name);
  if (it == forgotten_.end()) return unknown_floor_;
  uint64_t through = it->second.through;
  forgotten_order_.erase(it->second.order_at);
  forgotten_.erase(it);
  return through;
}

Hub::KeptLookup Hub::kept_message(std::string_view name, uint64_t id) const {
  if (id >= next_id_) return {};  // not committed here yet
  const Room* room = find(name);
  // A room that never reached `id`, and did not lose what reached it, never had the message.
  if (!room) return {floor_for(name) < id, nullptr};
  if (id <= room->dropped_through()) return {};
  if (id > room->last_id()) return {true, nullptr};
  size_t at = room->position_of(id);
  const auto& kept = room->history();
  bool here = at < kept.size() && kept[at].id == id;
  return {true, here ? &kept[at].frame : nullptr};
}

uint64_t Hub::newest_of(const std::vector<std::string>& rooms) const {
  uint64_t newest = 0;
  for (const std::string& name : rooms) {
    const Room* room = find(name);
    newest = std::max(newest, room ? room->gone_through() : floor_for(name));
  }
  return std::min(newest, next_id_ - 1);
}

bool Hub::can_open(const std::vector<std::string>& rooms, bool may_forget_kept) const {
  size_t missing = 0;
  size_t idle_asked = 0;  // idle rooms among those asked for cannot make space for the others
  for (const std::string& name : rooms) {
    const Room* room = find(name);
    missing += room == nullptr;
    idle_asked += room != nullptr && room->idle_in_ != nullptr &&
                  (may_forget_kept || room->idle_in_ == &idle_empty_);
  }
  size_t free = options_.max_rooms - std::min(options_.max_rooms, rooms_.size());
  size_t forgettable = may_forget_kept ? idle_count() : idle_empty_.size();
  return missing <= free + (forgettable - idle_asked);
}

// Drops a room nobody reads, with its kept messages; its name and last id are remembered so a
// stream resuming it from before gets a reset instead of silence.
void Hub::forget_oldest_idle() {
  if (!idle_empty_.empty())
    forget(*idle_empty_.front());
  else if (!idle_.empty())
    forget(*idle_.front());
}

void Hub::forget(Room& room) {
  ++stats_.rooms_forgotten;
  if (forgotten_log_.allow())
    log::info("room forgotten (--max-rooms)", "room", room.name(), "last_id", room.last_id(),
              "rooms", rooms_.size() - 1, "forgotten_since_last_line", forgotten_log_.times());
  uint64_t through = room.gone_through();
  if (on_forgotten) on_forgotten(room.name(), through);
  drop_room(room, through);
}

// Drops `room`, remembering that it may have had ids up to `through`.
void Hub::drop_room(Room& room, uint64_t through) {
  while (!room.history_.empty()) drop_oldest(room);
  if (room.idle_in_) room.idle_in_->erase(room.idle_at_);
  by_activity_.erase(room.active_at_);
  std::string name = room.name();
  rooms_.erase(name);
  remember_forgotten(name, through);
}

// `name` is forgotten, the newest name forgotten, and may have had ids up to `through`.
void Hub::remember_forgotten(const std::string& name, uint64_t through) {
  auto [it, inserted] = forgotten_.try_emplace(name, Forgotten{through, {}});
  if (!inserted) {
    it->second.through = std::max(it->second.through, through);
    forgotten_order_.erase(it->second.order_at);
  }
  it->second.order_at = forgotten_order_.insert(forgotten_order_.end(), name);
  if (!restoring_) trim_forgotten();
}

// Past max_rooms names the oldest drop out. What they may have had becomes the floor of every room
// the hub does not know, so a room made again with such a name still resets a stream that resumes
// from before (a genuinely new room may reset needlessly: never a silent gap).
void Hub::trim_forgotten() {
  while (forgotten_.size() > options_.max_rooms) {
    auto oldest = forgotten_.find(forgotten_order_.front());
    unknown_floor_ = std::max(unknown_floor_, oldest->second.through);
    forgotten_.erase(oldest);
    forgotten_order_.pop_front();
  }
}

// Puts `room` last in the forgetting order (it was just active, or nobody reads it any more).
void Hub::mark_idle(Room& room) {
  if (room.idle_in_) room.idle_in_->erase(room.idle_at_);
  room.idle_in_ = room.history_.empty() ? &idle_empty_ : &idle_;
  room.idle_at_ = room.idle_in_->insert(room.idle_in_->end(), &room);
}

void Hub::mark_busy(Room& room) {
  if (!room.idle_in_) return;
  room.idle_in_->erase(room.idle_at_);
  room.idle_in_ = nullptr;
}

// ---- history: the one window ----

// The room's last id is its key in by_activity_: it moves there with it.
void Hub::set_last_id(Room& room, uint64_t id) {
  if (room.last_id_ == id) return;
  if (room.active_at_ == by_activity_.begin() && id > room.last_id_) {
    room.last_id_ = id;  // first already, and more so now: its place holds (the busiest room)
    return;
  }
  auto node = by_activity_.extract(room.active_at_);
  room.last_id_ = id;
  // A new message's room goes first: the hint makes that O(1).
  room.active_at_ = by_activity_.insert(by_activity_.begin(), std::move(node));
}

void Hub::append(Room& room, uint64_t id, const FrameRef& frame) {
  if (room.history_.empty()) fronts_.emplace(id, &room);
  room.history_.push_back({id, frame});
  set_last_id(room, id);
  ++kept_messages_;
  kept_bytes_ += kept_cost(frame);
  if (room.history_.size() > options_.history_per_room) drop_oldest(room);
  while (kept_bytes_ > options_.history_bytes && !fronts_.empty())
    drop_oldest(*fronts_.begin()->second);
}

// The room no longer has its messages up to `through`.
void Hub::drop_through(Room& room, uint64_t through) {
  while (!room.history_.empty() && room.history_.front().id <= through) drop_oldest(room);
  room.dropped_through_ = std::max(room.dropped_through_, through);
}

void Hub::drop_oldest(Room& room) {
  const Room::Entry& oldest = room.history_.front();
  fronts_.erase({oldest.id, &room});
  // Not lower than a floor from a loss of unknown rooms' messages (restore_base) above it.
  room.dropped_through_ = std::max(room.dropped_through_, oldest.id);
  --kept_messages_;
  kept_bytes_ -= kept_cost(oldest.frame);
  room.history_.pop_front();
  if (!room.history_.empty()) fronts_.emplace(room.history_.front().id, &room);
}

void Hub::on_committed(uint64_t id, std::string_view room_name, const FrameRef& frame,
                       bool restored) {
  Room& room = open(std::string(room_name), !restored, /*for_commit=*/!restored);
  next_id_ = std::max(next_id_, id + 1);
  if (!restored) {
    ++stats_.messages;
    deliver_live(room, id, frame);
  }
  append(room, id, frame);
  if (room.idle_in_) mark_idle(room);  // active again: forgotten last
}

void Hub::deliver_live(Room& room, uint64_t id, const FrameRef& frame) {
  for (const Room::Seat& seat : room.seats_) {
    Subscription& sub = *seat.sub;
    // Catching up: it will read this from history. Or resumed from an id another node gave
    // before this one heard of it: it has this one already.
    if (!sub.live_ || id < sub.next_id_) continue;
    if (sub.sink().deliver(frame)) {
      sub.next_id_ = id + 1;
      ++stats_.deliveries;
    } else {
      ++stats_.slow_consumers;
    }
  }
}

void Hub::for_each_kept(const KeptVisitor& visit) const {
  // Merges the rooms' histories by id: (next id, room, position).
  using Cursor = std::tuple<uint64_t, const Room*, size_t>;
  std::priority_queue<Cursor, std::vector<Cursor>, std::greater<>> heads;
  for (const auto& [name, room] : rooms_)
    if (!room->history_.empty()) heads.emplace(room->history_.front().id, room.get(), 0);
  while (!heads.empty()) {
    auto [id, room, pos] = heads.top();
    heads.pop();
    visit(id, room->name(), room->history_[pos].frame);
    if (pos + 1 < room->history_.size()) heads.emplace(room->history_[pos + 1].id, room, pos + 1);
  }
}

std::vector<FrameRef> Hub::kept_page(std::string_view room_name, const PageRange& range) const {
  std::vector<FrameRef> frames;
  const Room* room = find(room_name);
  if (!room) return frames;
  const auto& history = room->history_;
  size_t end = range.before ? room->position_of(*range.before) : history.size();
  size_t begin = end - std::min(range.limit, end);
  if (range.after) {
    begin = *range.after == UINT64_MAX ? history.size() : room->position_of(*range.after + 1);
    end = std::max(begin, std::min(end, begin + range.limit));
  }
  frames.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) frames.push_back(history[i].frame);
  return frames;
}

// While rooms the hub does not know have a floor, a room that keeps messages writes its own down
// even when it is 0: restored, it gets that one back, not the floor of the unknown.
void Hub::for_each_floor(const FloorVisitor& visit) const {
  if (unknown_floor_ > 0) visit("", unknown_floor_);
  for (const auto& [name, room] : rooms_)
    if (room->dropped_through_ > 0 || (unknown_floor_ > 0 && !room->history_.empty()))
      visit(name, room->dropped_through_);
  for (const std::string& name : forgotten_order_)
    visit(name, forgotten_.find(name)->second.through);
}

void Hub::restore_floor(std::string_view room_name, uint64_t through) {
  restoring_ = true;
  Room* room = find_mutable(room_name);
  if (!room) return remember_forgotten(std::string(room_name), through);
  if (through >= room->last_id_)  // it was forgotten
    return drop_room(*room, std::max(through, room->gone_through()));
  drop_through(*room, through);
}

// Restoring made every room without forgetting any (storage replayed what was forgotten):
// a smaller --max-rooms than before applies now, and so does the bound on forgotten names.
void Hub::restored() {
  restoring_ = false;
  while (rooms_.size() > options_.max_rooms && idle_count() > 0) forget_oldest_idle();
  trim_forgotten();
}

void Hub::restore_base(uint64_t last_id, uint64_t lost_through) {
  restoring_ = true;
  next_id_ = std::max(next_id_, last_id + 1);
  if (lost_through == 0) return;
  for (auto& [name, room] : rooms_)
    room->dropped_through_ = std::max(room->dropped_through_, lost_through);
  raise_unmade_floors(lost_through);
}

void Hub::not_restored_through(uint64_t through) {
  restoring_ = true;
  raise_unmade_floors(through);
}

// Rooms not made (unknown, or remembered as forgotten) have no messages in memory up to `through`.
void Hub::raise_unmade_floors(uint64_t through) {
  unknown_floor_ = std::max(unknown_floor_, through);
  for (auto& [name, forgotten] : forgotten_)
    forgotten.through = std::max(forgotten.through, through);
}

void Hub::lose_through(std::string_view room_name, uint64_t through) {
  Room* room = find_mutable(room_name);
  if (!room)  // its floor when made
    return remember_forgotten(std::string(room_name), std::max(floor_for(room_name), through));
  drop_through(*room, through);
  set_last_id(*room, std::max(room->last_id_, through));
  reset_behind(*room, through, /*carried_past=*/false);
}

void Hub::lose_everywhere_through(uint64_t through, const std::vector<std::string>& except) {
  lose_in_every_room(through, except, /*carried_past=*/false);
}

void Hub::lose_skipped(uint64_t through) {
  lose_in_every_room(through, {}, /*carried_past=*/true);
}

// The floor rises above what memory keeps (as restore_base() does), which stays: after its reset a
// stream replays it.
void Hub::lose_in_every_room(uint64_t through, const std::vector<std::string>& except,
                             bool carried_past) {
  // Rooms storage still has keep their floor even when not made yet (the messages about to be
  // committed make them): remembered with it, as a forgotten name would be.
  std::vector<std::pair<std::string, uint64_t>> spared;
  for (const std::string& name : except)
    if (!find(name)) spared.emplace_back(name, floor_for(name));
  raise_unmade_floors(through);
  for (auto& [name, floor] : spared) {
    if (auto it = forgotten_.find(name); it != forgotten_.end())
      it->second.through = floor;
    else
      remember_forgotten(name, floor);
  }
  std::vector<std::string> names;
  for (const auto& [name, room] : rooms_)
    if (std::find(except.begin(), except.end(), name) == except.end()) names.push_back(name);
  for (const std::string& name : names) {
    Room* room = find_mutable(name);  // a stream closing as it fills may forget a room
    if (!room) continue;
    room->dropped_through_ = std::max(room->dropped_through_, through);
    reset_behind(*room, through, carried_past);
  }
}

// Streams of `room` that still needed messages up to `through` (with `carried_past`, every one:
// each went on past them) catch up again, through refill's reset for the room.
void Hub::reset_behind(Room& room, uint64_t through, bool carried_past) {
  std::vector<Room::Seat> seats = room.seats_;  // a sink may close (and leave) as it fills
  for (const Room::Seat& seat : seats) {
    Subscription& sub = *seat.sub;
    if (carried_past)
      sub.members_[seat.member].reset_owed = true;
    else if (!sub.live_ || sub.next_id_ > through)
      continue;
    sub.live_ = false;
    refill(sub);
  }
}

std::vector<const Room*> Hub::rooms_by_activity(
    size_t limit, const std::function<bool(const Room&)>& keep) const {
  std::vector<const Room*> rooms;
  for (auto it = by_activity_.begin(); it != by_activity_.end() && rooms.size() < limit; ++it)
    if (!keep || keep(**it)) rooms.push_back(*it);
  return rooms;
}

// ---- streams ----

std::vector<std::pair<std::string, uint64_t>> Hub::rooms_short_of(
    const std::vector<std::string>& rooms, uint64_t last_event_id) const {
  std::vector<std::pair<std::string, uint64_t>> short_rooms;
  if (last_event_id >= next_id_) return short_rooms;  // not one of this hub's: subscribe() says
  for (const std::string& name : rooms) {
    const Room* room = find(name);
    uint64_t floor = room ? room->dropped_through_ : floor_for(name);
    if (last_event_id >= floor) continue;
    // Memory has none of a room it does not know, and its floor may rise before the stream joins
    // (forgotten names dropping out): storage is read up to the newest id the hub has. A busy
    // room drops its oldest while storage is read: the read goes on into what memory keeps.
    uint64_t through = next_id_ - 1;
    if (room) {
      const auto& kept = room->history_;
      through = kept.empty() ? floor : kept[std::min(kBackfillOverlap, kept.size()) - 1].id;
    }
    short_rooms.emplace_back(name, through);
  }
  return short_rooms;
}

bool Hub::subscribe(Subscription& sub, const std::vector<std::string>& rooms,
                    std::optional<uint64_t> last_event_id, std::vector<Backfill> backfills) {
  if (!can_open(rooms)) return false;
  for (const std::string& name : rooms)  // so that making the new ones cannot forget these
    if (Room* room = find_mutable(name)) mark_busy(*room);
  for (const std::string& name : rooms) {
    Room& room = open(name);
    mark_busy(room);
    Subscription::Member& member = sub.members_.emplace_back();
    member.room = &room;
    member.seat = room.seats_.size();
    room.seats_.push_back({&sub, sub.members_.size() - 1});
    if (!sub.user().empty()) ++room.names_[sub.user()];
    mark_presence(room);
  }
  sub.joined_ = true;
  ++streams_;
  sub.next_id_ = next_id_;
  sub.live_ = true;
  if (!last_event_id) return true;
  sub.live_ = false;
  if (*last_event_id >= next_id_ && *last_event_id - next_id_ < options_.ids_ahead_allowed) {
    sub.next_id_ = *last_event_id + 1;  // another node's newest: this one will hear of it soon
    sub.live_ = true;
    return true;
  }
  if (*last_event_id >= next_id_) {
    // An id this server never issued (it lost data, or the client is confused): every room says
    // so, then replays all it keeps.
    for (Subscription::Member& member : sub.members_) member.reset_owed = true;
    sub.next_id_ = 0;
  } else {
    sub.next_id_ = *last_event_id + 1;
    for (Backfill& backfill : backfills) take_backfill(sub, backfill);
  }
  refill(sub);
  return true;
}

// Puts what storage kept of one of the stream's rooms ahead of that room's kept history.
void Hub::take_backfill(Subscription& sub, Backfill& backfill) {
  auto member = std::find_if(sub.members_.begin(), sub.members_.end(),
                             [&](const auto& m) { return m.room->name() == backfill.room; });
  if (member == sub.members_.end()) return;
  // Only what the stream still needs, and not what the hub has not committed yet (it comes live).
  std::erase_if(backfill.messages,
                [&](const KeptFrame& m) { return m.id < sub.next_id_ || m.id >= next_id_; });
  member->reset_owed = !backfill.complete;
  member->reset_through = backfill.through;  // memory's drops up to there are in the backfill
  for (const KeptFrame& m : backfill.messages) backfill_bytes_ += m.frame->size();
  member->backfill = std::move(backfill.messages);
  member->backfill_at = 0;
}

// Lets go of the backfill's frames not sent yet.
void Hub::drop_backfill(Subscription::Member& member) {
  for (size_t i = member.backfill_at; i < member.backfill.size(); ++i)
    backfill_bytes_ -= member.backfill[i].frame->size();
  member.backfill.clear();
  member.backfill.shrink_to_fit();
  member.backfill_at = 0;
}

void Hub::leave(Subscription& sub) {
  if (!sub.joined_) return;
  sub.joined_ = false;
  --streams_;
  for (Subscription::Member& member : sub.members_) {
    drop_backfill(member);
    Room& room = *member.room;
    Room::Seat moved = room.seats_.back();
    room.seats_[member.seat] = moved;
    moved.sub->members_[moved.member].seat = member.seat;
    room.seats_.pop_back();
    if (!sub.user().empty()) {
      auto it = room.names_.find(sub.user());
      if (--it->second == 0) room.names_.erase(it);
    }
    mark_presence(room);
    if (room.seats_.empty() && room.remote_online_ == 0) mark_idle(room);
  }
  sub.members_.clear();
}

bool Hub::queue_reset(Subscription& sub, Subscription::Member& member) {
  const Room& room = *member.room;
  member.reset_through = std::max(member.reset_through, room.dropped_through_);
  member.reset_owed = false;
  ++stats_.resets;
  uint64_t oldest = room.oldest_kept();
  if (member.backfill_at < member.backfill.size())
    oldest = std::min(oldest, member.backfill[member.backfill_at].id);
  return sub.sink().deliver(stream_frame(reset_event(room.name(), oldest, room.last_id())));
}

void Hub::refill(Subscription& sub) {
  if (!sub.joined_) return;
  send_owed_presence(sub);
  if (sub.live_) return;
  for (Subscription::Member& member : sub.members_) {
    // What it still needed of this room fell out of history: say so before going on.
    const Room& room = *member.room;
    bool lost =
        sub.next_id_ <= room.dropped_through_ && member.reset_through < room.dropped_through_;
    if (!lost && !member.reset_owed) continue;
    // A backfill that no longer joins up with memory would leave a hole after the reset: the
    // reset says memory's oldest instead.
    if (lost) drop_backfill(member);
    if (sub.sink().free_slots() == 0 || !queue_reset(sub, member)) return;
  }
  replay(sub);
}

// Queues the kept messages from the stream's cursor on, merged across its rooms by id (each
// room's backfill first, then its kept history), while the sink has room; live once nothing is
// left.
void Hub::replay(Subscription& sub) {
  std::vector<size_t> pos(sub.members_.size());
  for (size_t i = 0; i < pos.size(); ++i) {
    pos[i] = sub.members_[i].room->position_of(sub.next_id_);
    pass_backfill(sub.members_[i], sub.next_id_);
  }
  while (sub.sink().free_slots() > 0) {
    const KeptFrame* next = nullptr;
    size_t from = 0;
    auto consider = [&](const KeptFrame& candidate, size_t i) {
      if (next && candidate.id >= next->id) return;
      next = &candidate;
      from = i;
    };
    for (size_t i = 0; i < pos.size(); ++i) {
      const Subscription::Member& member = sub.members_[i];
      if (member.backfill_at < member.backfill.size())
        consider(member.backfill[member.backfill_at], i);
      const auto& history = member.room->history_;
      if (pos[i] < history.size()) consider(history[pos[i]], i);
    }
    if (!next) {
      sub.live_ = true;
      sub.next_id_ = next_id_;
      return;
    }
    if (!sub.sink().deliver(next->frame)) return;
    sub.next_id_ = next->id + 1;
    // Ids are global: only its own room has this one, in memory, its backfill or both.
    const auto& history = sub.members_[from].room->history_;
    while (pos[from] < history.size() && history[pos[from]].id < sub.next_id_) ++pos[from];
    pass_backfill(sub.members_[from], sub.next_id_);
    ++stats_.deliveries;
  }
}

// Lets go of the member's backfilled messages before `next_id` (sent, or not needed).
void Hub::pass_backfill(Subscription::Member& member, uint64_t next_id) {
  auto& backfill = member.backfill;
  while (member.backfill_at < backfill.size() && backfill[member.backfill_at].id < next_id) {
    backfill_bytes_ -= backfill[member.backfill_at].frame->size();
    backfill[member.backfill_at++].frame = FrameRef();
  }
  if (!backfill.empty() && member.backfill_at == backfill.size()) drop_backfill(member);
}

// ---- presence ----

namespace {

// This node's readers' distinct names, sorted.
std::vector<std::string_view> local_names(const Room& room) {
  std::vector<std::string_view> names;
  for (const auto& [user, count] : room.names()) names.push_back(user);
  return names;
}

}  // namespace

void Hub::mark_presence(Room& room) {
  if (room.presence_dirty_) return;
  room.presence_dirty_ = true;
  presence_dirty_.push_back(room.name());
}

void Hub::set_remote_presence(std::string_view room_name, uint64_t online,
                              std::vector<std::string> names) {
  Room* room = find_mutable(room_name);
  // A room read on other nodes only is listed here too, but never at the cost of a kept one.
  if (!room && online > 0 && rooms_.size() < options_.max_rooms)
    room = &open(std::string(room_name), /*may_forget=*/false);
  if (!room || (room->remote_online_ == online && room->remote_names_ == names)) return;
  room->remote_online_ = online;
  room->remote_names_ = std::move(names);
  mark_presence(*room);
  // Read on another node: not this node's to forget either (Redis keeps it for that reader).
  if (online > 0)
    mark_busy(*room);
  else if (room->seats_.empty() && !room->idle_in_)
    mark_idle(*room);
}

void Hub::send_presence() {
  std::vector<std::string> dirty = std::move(presence_dirty_);
  presence_dirty_.clear();
  for (const std::string& name : dirty) {
    Room* room = find_mutable(name);
    if (!room || !room->presence_dirty_) continue;  // forgotten (and maybe made again) meanwhile
    room->presence_dirty_ = false;
    std::vector<std::string_view> local = local_names(*room);
    if (on_presence) on_presence(room->name(), room->seats_.size(), local);
    if (room->seats_.empty()) continue;
    send_room_presence(*room, local);
  }
}

void Hub::send_room_presence(Room& room, const std::vector<std::string_view>& local) {
  FrameRef frame = presence_frame(room, local);
  for (const Room::Seat& seat : room.seats_) {
    Subscription::Member& member = seat.sub->members_[seat.member];
    member.presence_owed = seat.sub->sink().free_slots() <= 1;
    if (!member.presence_owed) (void)seat.sub->sink().deliver(frame);
  }
}

// `event: presence` with every node's readers: their count, and their distinct names (sorted,
// at most kMaxPresenceNames and kMaxPresenceNameBytes of them).
FrameRef Hub::presence_frame(const Room& room, const std::vector<std::string_view>& local) const {
  std::vector<std::string_view> all;
  std::set_union(local.begin(), local.end(), room.remote_names_.begin(), room.remote_names_.end(),
                 std::back_inserter(all));
  all.resize(shown_presence_names(all));
  return stream_frame(presence_event(room.name(), room.online(), all));
}

// What a full queue kept from this stream: each such room's presence as it is now.
void Hub::send_owed_presence(Subscription& sub) {
  for (Subscription::Member& member : sub.members_) {
    if (!member.presence_owed || sub.sink().free_slots() <= 1) continue;
    member.presence_owed = false;
    (void)sub.sink().deliver(presence_frame(*member.room, local_names(*member.room)));
  }
}

}  // namespace sse
