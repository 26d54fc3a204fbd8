// One conversation: the messages memory keeps of it (for replay and paging), the streams that read
// it, and their names for presence. A room is data: the Hub creates, fills, bounds and forgets
// rooms, so every bound is kept in one place. Nothing here knows of sockets or storage.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "frame.h"

namespace sse {

class Subscription;
class Room;

// The hub's list of rooms, most recently active first: the newest last_id() first, rooms with
// equal last ids (those without messages: 0) in the order they were made.
struct MostRecentlyActiveFirst {
  bool operator()(const Room* a, const Room* b) const;
};

class Room {
 public:
  using Entry = KeptFrame;
  // A subscription reading this room; `member` is this room's index in the subscription.
  struct Seat {
    Subscription* sub;
    size_t member;
  };

  // `forgotten_through`: the newest id this room may have had before it was forgotten (or before
  // this server knew of it), so a stream that resumes from before it hears those messages are gone.
  Room(std::string name, uint64_t forgotten_through)
      : name_(std::move(name)), last_id_(forgotten_through), dropped_through_(forgotten_through) {}

  const std::string& name() const { return name_; }
  const std::deque<Entry>& history() const { return history_; }
  // The newest message id the room has had (0: none).
  uint64_t last_id() const { return last_id_; }
  // The newest id dropped from history (0: none): a stream that still needed it gets a reset.
  uint64_t dropped_through() const { return dropped_through_; }
  // The id replay goes on from after a reset: the oldest kept, or one past the newest.
  uint64_t oldest_kept() const { return history_.empty() ? last_id_ + 1 : history_.front().id; }
  // Index of the first history entry with id >= `id`.
  size_t position_of(uint64_t id) const {
    auto it = std::lower_bound(history_.begin(), history_.end(), id,
                               [](const Entry& e, uint64_t want) { return e.id < want; });
    return static_cast<size_t>(it - history_.begin());
  }
  size_t subscriber_count() const { return seats_.size(); }
  // Readers on every node, as this one last heard from the others (its own alone without Redis).
  uint64_t online() const { return seats_.size() + remote_online_; }
  const std::vector<Seat>& seats() const { return seats_; }
  // Distinct reader names, sorted, with how many of the room's streams use each.
  const std::map<std::string, uint32_t>& names() const { return names_; }

 private:
  friend class Hub;
  friend struct MostRecentlyActiveFirst;

  // What a stream resuming this room must hear is gone once the room is forgotten.
  uint64_t gone_through() const { return std::max(last_id_, dropped_through_); }

  std::string name_;
  uint64_t made_ = 0;  // the hub's count of rooms made when this one was
  uint64_t last_id_;
  uint64_t dropped_through_;
  std::deque<Entry> history_;
  std::vector<Seat> seats_;
  std::map<std::string, uint32_t> names_;
  bool presence_dirty_ = false;
  // Readers on other nodes (nodes sharing Redis): how many, and their distinct names, sorted.
  uint64_t remote_online_ = 0;
  std::vector<std::string> remote_names_;
  std::list<Room*>* idle_in_ = nullptr;  // no subscribers: the hub's forgetting order it is in
  std::list<Room*>::iterator idle_at_;   // valid while idle_in_
  std::set<Room*, MostRecentlyActiveFirst>::iterator active_at_;  // in the hub's list
};

inline bool MostRecentlyActiveFirst::operator()(const Room* a, const Room* b) const {
  if (a->last_id_ != b->last_id_) return a->last_id_ > b->last_id_;
  return a->made_ < b->made_;
}

}  // namespace sse
