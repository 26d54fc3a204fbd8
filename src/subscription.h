// A stream's interest in one room: the room, the sink that receives its frames, and a cursor (the
// next message id it needs). A connection holds one Subscription per room it streams, so rooms can
// be added without the room knowing anything of sockets.
#pragma once

#include <cstddef>
#include <cstdint>

#include "frame.h"

namespace sse {

class Room;

// Where a subscription's frames go: a bounded queue (a connection's ring, or a test's vector).
class Sink {
 public:
  virtual ~Sink() = default;
  // Queues `frame`; false when the queue is full (the sink then closes as a slow consumer).
  virtual bool deliver(const FrameRef& frame) = 0;
  virtual size_t free_slots() const = 0;
};

class Subscription {
 public:
  Subscription(Room& room, Sink& sink) : room_(room), sink_(sink) {}
  ~Subscription();  // leaves the room
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  Room& room() const { return room_; }
  Sink& sink() const { return sink_; }

  uint64_t next_id = 0;         // first message id this subscription has not been given
  size_t room_slot = SIZE_MAX;  // position in the room's list, for O(1) removal

 private:
  Room& room_;
  Sink& sink_;
};

}  // namespace sse
