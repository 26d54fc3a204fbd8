#include "room.h"

#include <algorithm>

#include "sse.h"

namespace sse {

Subscription::~Subscription() {
  room_.unsubscribe(*this);
}

void Room::append(uint64_t id, FrameRef frame) {
  next_id_ = id + 1;
  history_.push_back(Entry{id, std::move(frame)});
  while (history_.size() > history_limit_ && !history_.empty()) history_.pop_front();
}

void Room::restore(uint64_t id, FrameRef frame) {
  append(id, std::move(frame));
}

void Room::publish(uint64_t id, FrameRef frame) {
  ++stats_.messages;
  for (Subscription* sub : subscribers_) {
    if (sub->next_id < next_id_) continue;  // catching up: it will read this from history
    if (sub->sink().deliver(frame)) {
      sub->next_id = id + 1;
      ++stats_.deliveries;
    } else {
      ++stats_.slow_consumers;
    }
  }
  append(id, std::move(frame));
}

size_t Room::position_of(uint64_t id) const {
  auto it = std::lower_bound(history_.begin(), history_.end(), id,
                             [](const Entry& e, uint64_t want) { return e.id < want; });
  return static_cast<size_t>(it - history_.begin());
}

void Room::queue_reset(Subscription& sub) {
  uint64_t oldest = history_.empty() ? next_id_ : history_.front().id;
  ++stats_.resets;
  (void)sub.sink().deliver(FrameRef(reset_event(oldest, next_id_ - 1)));
}

void Room::subscribe(Subscription& sub, std::optional<uint64_t> last_event_id) {
  sub.room_slot = subscribers_.size();
  subscribers_.push_back(&sub);
  sub.next_id = next_id_;
  if (!last_event_id) return;
  uint64_t oldest = history_.empty() ? next_id_ : history_.front().id;
  bool too_old = *last_event_id + 1 < oldest;
  bool from_the_future = *last_event_id >= next_id_;  // e.g. this server lost data
  if (too_old || from_the_future) {
    queue_reset(sub);
    sub.next_id = oldest;
  } else {
    sub.next_id = *last_event_id + 1;
  }
  refill(sub);
}

void Room::unsubscribe(Subscription& sub) {
  if (sub.room_slot >= subscribers_.size() || subscribers_[sub.room_slot] != &sub) return;
  Subscription* last = subscribers_.back();
  subscribers_[sub.room_slot] = last;
  last->room_slot = sub.room_slot;
  subscribers_.pop_back();
  sub.room_slot = SIZE_MAX;
}

void Room::refill(Subscription& sub) {
  if (!catching_up(sub)) return;
  size_t pos = position_of(sub.next_id);
  if (pos == 0 && !history_.empty() && sub.next_id < history_.front().id) {
    // What it still needed fell out of history while it caught up: say so, go on from the oldest.
    queue_reset(sub);
  }
  while (pos < history_.size() && sub.sink().free_slots() > 0) {
    const Entry& e = history_[pos++];
    if (!sub.sink().deliver(e.frame)) break;
    sub.next_id = e.id + 1;
    ++stats_.deliveries;
  }
  if (pos == history_.size()) sub.next_id = next_id_;  // ids skipped by journal damage
}

void Room::broadcast_extra(const FrameRef& frame) {
  for (Subscription* sub : subscribers_)
    if (sub->sink().free_slots() > 1) (void)sub->sink().deliver(frame);
}

}  // namespace sse
