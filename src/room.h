// A chat room: the recent frames (for replay) and the subscriptions. Knows nothing of sockets or
// storage: a subscription is "a sink with a bounded queue" and a cursor (the next id it needs);
// messages arrive already committed, with ids the broker assigned.
//
// Live and replayed messages take the same path: a subscription whose cursor is past the newest
// message is live and gets each new frame as it is published; one whose cursor is behind is
// catching up and is refilled from history whenever its sink has room (refill()), so a long
// replay is paced by the socket and never builds an unbounded buffer.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "broker.h"
#include "frame.h"
#include "subscription.h"

namespace sse {

struct RoomStats {
  uint64_t messages = 0;
  uint64_t deliveries = 0;
  uint64_t slow_consumers = 0;
  uint64_t resets = 0;
};

class Room final : public CommitSink {
 public:
  explicit Room(size_t history_limit) : history_limit_(history_limit) {}

  // CommitSink: the broker's one path for every committed message.
  void on_committed(uint64_t id, const FrameRef& frame, bool restored) override {
    if (restored)
      restore(id, frame);
    else
      publish(id, frame);
  }

  // Adds a message read back from storage at start-up (ids ascending); nobody is subscribed yet.
  void restore(uint64_t id, FrameRef frame);

  // One past the newest id the room has seen (a cursor, not an allocator: the broker assigns ids).
  uint64_t next_id() const { return next_id_; }

  // Keeps the frame of committed message `id` (>= next_id()) and queues it for every live
  // subscription.
  void publish(uint64_t id, FrameRef frame);

  // Joins `sub`; with `last_event_id`, replays what followed it (after a reset event when that id
  // is no longer, or not yet, retained).
  void subscribe(Subscription& sub, std::optional<uint64_t> last_event_id);
  void unsubscribe(Subscription& sub);
  bool catching_up(const Subscription& sub) const { return sub.next_id < next_id_; }
  // Queues history frames for a catching-up subscription while its sink has room.
  void refill(Subscription& sub);

  // Queues a frame that carries no message (presence) on every sink with room for it.
  void broadcast_extra(const FrameRef& frame);

  size_t subscriber_count() const { return subscribers_.size(); }

  struct Entry {
    uint64_t id;
    FrameRef frame;
  };
  const std::deque<Entry>& history() const { return history_; }
  // Index of the first history entry with id >= `id`.
  size_t position_of(uint64_t id) const;

  RoomStats& stats() { return stats_; }
  const RoomStats& stats() const { return stats_; }

 private:
  void append(uint64_t id, FrameRef frame);
  void queue_reset(Subscription& sub);

  size_t history_limit_;
  uint64_t next_id_ = 1;
  std::deque<Entry> history_;
  std::vector<Subscription*> subscribers_;
  RoomStats stats_;
};

}  // namespace sse
