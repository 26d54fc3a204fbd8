// A stream's interest in one or more rooms: the sink that receives its frames, the rooms, and one
// cursor (the next message id it needs). Ids are global, so one cursor places the stream in every
// room: replay merges the rooms' histories in id order and then goes live, and a stream resumed
// from its Last-Event-ID misses nothing in any of them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "frame.h"

namespace sse {

class Hub;
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
  // `user`: the reader's name for presence ("" for none).
  Subscription(Hub& hub, Sink& sink, std::string user)
      : hub_(hub), sink_(sink), user_(std::move(user)) {}
  ~Subscription();  // leaves every room
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  struct Member {
    Room* room = nullptr;
    size_t seat = 0;  // position in the room's seats, for O(1) removal
    // The room's dropped_through() this stream was told of, or need not be: its backfill holds
    // the messages up to there.
    uint64_t reset_through = 0;
    bool reset_owed = false;  // a reset to send before anything more of this room
    // The room's readers changed while this stream's queue was full: it gets the room's presence
    // as it is once the queue has room again (else its list of who is online would stay stale).
    bool presence_owed = false;
    // Messages of the room from before what memory keeps, read from storage for this stream
    // (ids ascending), and how many of them it has had.
    std::vector<KeptFrame> backfill;
    size_t backfill_at = 0;
  };

  Sink& sink() const { return sink_; }
  const std::string& user() const { return user_; }
  const std::vector<Member>& members() const { return members_; }
  // Caught up: every new message of its rooms goes straight to the sink.
  bool live() const { return live_; }
  uint64_t next_id() const { return next_id_; }

  // Queues replayed messages while the sink has room (a catching-up stream is paced by its
  // socket, never buffered without bound).
  void refill();

 private:
  friend class Hub;

  Hub& hub_;
  Sink& sink_;
  std::string user_;
  std::vector<Member> members_;
  uint64_t next_id_ = 0;  // first message id not given yet
  bool live_ = true;
  bool joined_ = false;
};

}  // namespace sse
