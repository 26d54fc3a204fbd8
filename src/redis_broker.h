// The Redis broker (--redis). Redis is the message log that several nodes share: a POST is one
// atomic script (redis_scripts.h) that gives the id and stores the message, and is answered 201
// only once Redis has replied; every node, the poster's included, delivers messages by reading
// the one ordered log from the last id it has, so all nodes see every message of a room in id
// order with the same ids.
//
//   publish --EVALSHA (cmd link)--> Redis --XREAD BLOCK (feed link)--> on_committed, in id order
//
// Starting, a node warms its hub from Redis (each room's newest messages, as the local journal
// does from disk) before it serves streams, so resuming works on any node from memory. Each log
// entry names the one before it: a node that finds it missed entries (the log was trimmed past
// them while it was away) fills them from the room streams before going on, and a room whose
// stream lost them too gets a reset. Redis back without its data is noticed the same way.
//
// Bounded: at most kMaxWaiting commands wait for Redis (past that POSTs get 503), a command
// unanswered for kDeadlineMs (a TIME each second when idle) drops the link, whose waiting POSTs
// then get 503, and links come back with backoff and jitter. A Redis past its maxmemory refuses
// every publish before it writes anything: POSTs get 503 and the broker says it is unavailable
// until a write goes through again.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "broker.h"
#include "reactor.h"
#include "redis_link.h"

namespace sse {

struct RedisBrokerOptions {
  std::string url;  // parsed (and its host name resolved, once) by start(); else `endpoint`
  RedisEndpoint endpoint;
  std::string prefix = "sse-chat";  // keys are {prefix}:…, one hash slot
  size_t history_per_room = 1000;   // a room's stream keeps at least this many
  size_t log_length = 100000;       // the shared log keeps at least this many
  uint32_t nonce_ttl_s = 86400;     // at least 1
  size_t max_rooms = 10000;         // rooms warmed at start, the most recently active
  // The hub's byte bound on kept messages: warming up holds about this much, not all it reads.
  uint64_t history_bytes = 256ull << 20;
};

class RedisBroker final : public Broker {
 public:
  static constexpr size_t kMaxWaiting = 10000;
  static constexpr size_t kRoomReadWindow = 16;  // room reads a warm-up or gap fill has waiting
  // History pages read from Redis at once (the rest wait their turn, one request per connection
  // at most), each kPagePart entries a command until the page is full: what Redis builds for
  // pages stays near kPagesAtOnce x kPagePart entries, however many ask and however long.
  static constexpr size_t kPagesAtOnce = 16;
  static constexpr size_t kPagePart = 100;
  static constexpr int64_t kDeadlineMs = 5000;
  // A publish script that Redis runs later than this after it was sent stores nothing: well
  // before kDeadlineMs, so a POST the node gave up on (503) does not turn up later.
  static constexpr int64_t kStaleAfterMs = 3000;
  // A BUSY or LOADING reply counts this long, unless a command goes through first (a probe asks
  // each second while it counts).
  static constexpr int64_t kRefusalMemoryMs = 2000;

  RedisBroker(Reactor& reactor, CommitSink& sink, RedisBrokerOptions options);
  ~RedisBroker() override;  // what still waits for Redis is dropped unanswered

  // Starts connecting; the broker is available once both links are up and the feed knows where
  // it starts (unavailable() says why not meanwhile). False for what no retry can mend.
  bool start(std::string& error) override;
  void publish(Draft draft, PublishDone done) override;
  // Pages the room's stream in Redis.
  void read_history(std::string room, PageRange range, HistoryDone done) override;
  bool keeps_more_than_memory() const override { return true; }
  // Reads the room's stream in Redis, with the entry after `after` to see that nothing between
  // is missing (its prev).
  void read_backfill(std::string room, uint64_t after, uint64_t through, size_t limit,
                     size_t max_bytes, BackfillDone done) override;
  std::optional<std::string> unavailable() const override;
  // History pages being read from Redis now (at most kPagesAtOnce), and those waiting their turn.
  size_t pages_reading() const { return pages_reading_; }
  size_t pages_waiting() const { return pages_waiting_.size(); }
  bool idle() const override { return cmd_.waiting() == 0; }
  bool warm() const override { return warmed_; }
  uint64_t first_id() const override { return first_id_; }
  // Once a second: deadlines, the idle PING, reconnects when their backoff is over.
  void tick() override;
  BrokerStats stats() const override;
  void room_forgotten(std::string_view, uint64_t) override {}  // Redis keeps every room
  // Writes this node's readers of `room` to Redis and tells the other nodes.
  void presence_changed(std::string_view room, uint64_t online,
                        const std::vector<std::string_view>& names) override;
  void withdraw_presence() override;

 private:
  struct Backoff {
    int64_t next_ms = 0;
    int64_t delay_ms = 0;
  };
  void connect(RedisLink& link, Backoff& backoff);
  void link_down(RedisLink& link, Backoff& backoff, const std::string& why);
  struct Warmup;
  struct Fill;
  using RangeFor = std::function<std::vector<std::string>(const std::string& room)>;
  using EachRoom = std::function<void(const std::string& room, struct redisReply* entries)>;
  struct RoomReads;
  void read_rooms(std::vector<std::string> list, RangeFor range, EachRoom each,
                  std::function<void()> done, std::function<void()> failed);
  void send_room_reads(const std::shared_ptr<RoomReads>& reads);
  void fail_room_reads(RoomReads& reads);
  // Why POSTs cannot be sent to Redis now (links, warm-up, script, clock), nullopt when they can.
  std::optional<std::string> not_ready() const;
  std::optional<std::string> stuck() const;
  std::optional<std::string> refusal() const;
  void learn_first_id();
  void tell_losses();
  void read_losses();
  void judge_losses();
  std::optional<bool> skipped(uint64_t after, uint64_t through) const;
  // Ids up to `id` were read, after `prev`: for skipped(), within kRecentEntries such spans.
  void remember_read(uint64_t prev, uint64_t id);
  void load_script();
  bool note_refusal(struct redisReply* r);
  void probe_refusal();
  void retry_setup();
  void probe_clock();
  void take_clock_reading(int64_t redis_us, int64_t sent_us, int64_t received_us);
  std::string publish_deadline() const;
  void note_memory(bool full, std::string_view error);
  void probe_memory();
  void note_if_back();
  void find_start();
  void maybe_warm();
  void finish_warmup(Warmup& warm);
  void read_feed();
  // False when it stopped at a gap (the fill reads on).
  bool deliver_entries(struct redisReply* reply);
  struct StreamPager;
  void read_stream_part(std::shared_ptr<StreamPager> pager);
  struct PageRead;
  void start_page(std::shared_ptr<PageRead> read);
  void finish_page(PageRead& read, std::vector<FrameRef> frames);
  struct BackfillRead;
  void finish_backfill(BackfillRead& read);
  void fill_gap(uint64_t through);
  void finish_fill(Fill& fill);
  void eval_publish(std::shared_ptr<std::vector<std::string>> args, bool by_sha, PublishDone done);
  PublishResult publish_result(struct redisReply* r);
  void write_presence(const std::string& room, bool announce);
  void read_presence(const std::string& room);
  void poll_presence();
  void refresh_presence();
  void read_presence_log();
  void start_presence();
  void read_presence_of(const std::vector<std::string>& rooms);
  std::string key(std::string_view name) const {
    return "{" + options_.prefix + "}:" + std::string(name);
  }

  Reactor& reactor_;
  CommitSink& sink_;
  RedisBrokerOptions options_;
  uint64_t rng_;
  std::string script_sha_;
  bool loading_script_ = false;  // SCRIPT LOAD sent, not answered
  std::string last_error_;
  std::string last_logged_error_;  // each new reason of one outage is logged once
  // Redis answers, but refuses every command for now (BUSY: another client's script runs long;
  // LOADING: it is reading its data set after a restart): its reply and when it last came.
  std::string refusing_;
  int64_t refused_at_ms_ = -1;
  int64_t refusal_logged_ms_ = -1;  // once a minute at most, and when the kind changes
  std::string refusal_logged_kind_;
  bool probing_refusal_ = false;
  uint64_t last_seen_ = 0;  // the newest id given to the sink
  uint64_t first_id_ = 0;   // {p}:since as warming up read it, or the first entry a node on an
                            // empty data set read (or, after a gap fill, {p}:since again)
  bool asking_first_id_ = false;
  bool losses_known_ = false;  // Redis recorded a loss, or this node found one
  uint64_t last_given_ = 0;    // the newest id a POST here was answered with (the feed may lag)
  bool have_start_ = false;    // the feed knows the id it starts after (last_seen_)
  bool finding_start_ = false;
  bool warming_ = false;
  bool warmed_ = false;  // the hub has what Redis kept; the feed may deliver
  bool reading_ = false;
  bool filling_ = false;
  uint64_t reconnects_ = 0;
  uint64_t gaps_filled_ = 0;
  uint64_t data_losses_ = 0;
  // Ids this node read that Redis lost since (it restarted from an older AOF, say): a resume's
  // read from Redis over them cannot tell they were there. One span, covering every such loss.
  uint64_t lost_after_ = UINT64_MAX;
  uint64_t lost_through_ = 0;
  // Losses other nodes found ({p}:losses, an entry "after A through T" per loss a node saw): a
  // node that never read the lost ids cannot tell otherwise. Read each tick, from the newest
  // entry there when this node was warm; one this node cannot judge yet waits (at most 100).
  std::string losses_read_;  // the id of the last entry read ("" until known)
  bool reading_losses_ = false;
  std::vector<std::pair<uint64_t, uint64_t>> unjudged_losses_;
  std::vector<std::pair<uint64_t, uint64_t>> untold_losses_;  // found here, not yet written
  bool telling_ = false;
  // (prev, id) of the newest log entries read, oldest first: whether this node read past a loss.
  std::deque<std::pair<uint64_t, uint64_t>> recent_;
  // Redis's clock minus ours (microseconds), from TIME on the command link (each idle second),
  // and the round trip of the reading it came from; unknown again when the link drops (the Redis
  // behind the next one may run on another machine).
  int64_t clock_offset_us_ = 0;
  int64_t clock_round_trip_us_ = 0;
  bool clock_known_ = false;
  size_t pages_reading_ = 0;
  std::deque<std::shared_ptr<PageRead>> pages_waiting_;
  bool out_of_memory_ = false;  // Redis refused a publish past its maxmemory, and nothing since
  bool probing_memory_ = false;
  // Presence across nodes: {p}:presence:<room> is a hash of node -> "<expires ms>\n<online>\n
  // <name>\n…", refreshed every kPresenceRefreshMs; {p}:presence-log names rooms whose hash
  // changed, read each tick; {p}:presence-rooms scores each room by when its newest entry
  // expires, so a node that starts learns of readers whose rooms have not changed for long.
  // What this node last wrote, for rooms it has readers of:
  struct LocalPresence {
    uint64_t online = 0;
    std::vector<std::string> names;
  };
  std::unordered_map<std::string, LocalPresence> presence_;
  std::string node_id_;
  std::string presence_cursor_;  // empty until start_presence() found the log's end
  int64_t presence_refresh_ms_ = 0;
  bool presence_reading_ = false;
  bool presence_withdrawn_ = false;
  // Rooms where other nodes had readers at the last read (at most max_rooms): read again at each
  // refresh, so readers of a node that died stop counting on every node.
  std::unordered_set<std::string> remote_rooms_;
  std::vector<std::string> presence_rereads_;  // what is left of them to read before the refresh
  size_t presence_reread_slice_ = 1;           // read each tick
  Backoff cmd_backoff_;
  Backoff feed_backoff_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  RedisLink cmd_;   // scripts, history reads, the idle PING
  RedisLink feed_;  // the blocking read of the log
};

}  // namespace sse
