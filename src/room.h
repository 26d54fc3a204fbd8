// A chat room: the history of shared frames and the set of subscribers. Knows nothing of sockets:
// a subscriber is "something with a bounded queue" and a cursor (the next id it needs).
//
// Live and replayed messages take the same path: a subscriber whose cursor equals the next id is
// live and gets each new frame as it is published; one whose cursor is behind is catching up and
// is refilled from history whenever its queue has room (refill()), so a long replay is paced by
// the socket and never builds an unbounded buffer.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "frame.h"

namespace sse {

class Subscriber {
 public:
  virtual ~Subscriber() = default;
  // Queues `frame`; false when the queue is full (the subscriber then closes as a slow consumer).
  virtual bool deliver(const FrameRef& frame) = 0;
  virtual size_t free_slots() const = 0;

  uint64_t next_id = 0;  // first message id this subscriber has not been given
  size_t room_slot = SIZE_MAX;
};

struct RoomStats {
  uint64_t messages = 0;
  uint64_t deliveries = 0;
  uint64_t slow_consumers = 0;
  uint64_t resets = 0;
};

class Room {
 public:
  explicit Room(size_t history_limit) : history_limit_(history_limit) {}

  // Adds a message read back from the journal at start-up (ids ascending).
  void restore(uint64_t id, FrameRef frame, std::string nonce_key);

  // The id the next published message gets.
  uint64_t next_id() const { return next_id_; }

  // Stores the frame of message `id` (>= next_id()) in history and queues it for every live
  // subscriber.
  void publish(uint64_t id, FrameRef frame, std::string nonce_key);

  // The id of a message already posted with this user+nonce and still in history.
  std::optional<uint64_t> find_nonce(const std::string& nonce_key) const;

  // Joins `sub`; with `last_event_id`, replays what followed it (after a reset event when that id
  // is no longer, or not yet, retained).
  void subscribe(Subscriber& sub, std::optional<uint64_t> last_event_id);
  void unsubscribe(Subscriber& sub);
  bool catching_up(const Subscriber& sub) const { return sub.next_id < next_id_; }
  // Queues history frames for a catching-up subscriber while its queue has room.
  void refill(Subscriber& sub);

  // Queues a frame that carries no message (presence) on every subscriber with room for it.
  void broadcast_extra(const FrameRef& frame);

  size_t subscriber_count() const { return subscribers_.size(); }
  const std::vector<Subscriber*>& subscribers() const { return subscribers_; }

  struct Entry {
    uint64_t id;
    FrameRef frame;
  };
  const std::deque<Entry>& history() const { return history_; }
  const std::string& nonce_at(size_t position) const { return history_nonces_[position]; }
  // Index of the first history entry with id >= `id`.
  size_t position_of(uint64_t id) const;

  RoomStats& stats() { return stats_; }
  const RoomStats& stats() const { return stats_; }

 private:
  void append(uint64_t id, FrameRef frame, std::string nonce_key);
  void queue_reset(Subscriber& sub);

  size_t history_limit_;
  uint64_t next_id_ = 1;
  std::deque<Entry> history_;
  std::deque<std::string> history_nonces_;  // parallel to history_, "" when none
  std::unordered_map<std::string, uint64_t> nonces_;
  std::vector<Subscriber*> subscribers_;
  RoomStats stats_;
};

}  // namespace sse
