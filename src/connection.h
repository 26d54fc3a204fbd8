// One client socket. Starts as an HTTP/1.1 connection (keep-alive, pipelining, requests handled in
// order) and may become an event stream. Every byte it sends, responses and stream frames alike,
// goes through one bounded FrameRing flushed by the server's writer set (writev, or a loop
// iteration's sends in one io_uring submission: batch_writer.h).
//
//   Http --GET /events--> Stream            (parser freed: a stream keeps no read state)
//   Http --error or "Connection: close", queue drained--> Lingering --EOF/timeout--> Closed
//   any --peer gone, write error, slow consumer--> Closed (freed after the event batch)
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "connection_host.h"
#include "frame.h"
#include "http_parser.h"
#include "http_response.h"
#include "hub.h"
#include "net.h"
#include "reactor.h"
#include "ring_buffer.h"
#include "subscription.h"

namespace sse {

class Connection final : public EventHandler, public Sink {
 public:
  enum class State { Http, Stream, Lingering, Closed };

  Connection(ConnectionHost& host, int fd, const net::IpAddress& peer);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void on_event(uint32_t events) override;

  // Sink: a stream frame (sse.h) for the stream; a full queue closes the connection (slow
  // consumer).
  bool deliver(const FrameRef& frame) override;
  size_t free_slots() const override;

  // Queues one HTTP response (closing after it when r.close).
  void respond(const http::Response& r);
  void send_bytes(std::string_view bytes);
  // Turns this connection into an event stream that starts with `head` (the response head) and the
  // event `opening`; `chunked`: its events go out as the chunks stream frames are (HTTP/1.1).
  void start_stream(std::string_view head, std::string_view opening, bool chunked);
  // Streams `rooms` (as Hub::subscribe, reading as `user`); false when the hub cannot open them.
  bool subscribe(Hub& hub, const std::vector<std::string>& rooms, std::string user,
                 std::optional<uint64_t> last_event_id, std::vector<Backfill> backfills = {});
  // Ends the stream at `deadline_ms` (the reactor's clock) with `event: expired`: a stream never
  // outlives the token that opened it.
  // `key_id` names the key that signed it (jwt::Key::id).
  void expire_at(int64_t deadline_ms, uint64_t key_id) {
    expires_at_ms_ = deadline_ms;
    token_key_id_ = key_id;
  }
  uint64_t token_key_id() const { return token_key_id_; }  // 0: no token
  // Ends the stream now: the key that signed its token is no longer accepted. False when there
  // was no stream to end (or it had ended already).
  bool withdraw_token();
  // Holds request processing while the host answers the current request later (a POST waiting
  // for the broker); release() after queueing that answer resumes pipelined requests.
  void hold() { held_ = true; }
  void release();
  // Closes (lingering) once everything queued is written.
  void finish_after_flush();

  // Writes what is queued, with one writev per round; called by the writer set.
  void flush();
  // The same in two steps, so the writer set can send for many connections at once
  // (BatchWriter): what to send now (0: nothing), then the send's result (bytes or -errno) for
  // the `requested` bytes; writing goes on with writev if more is queued.
  size_t prepare_write(iovec* iov, size_t max_iov);
  void finish_batched_write(ssize_t result, size_t requested);
  // After writing (or finding nothing to write): linger, resume parsing, update epoll interest.
  void finish_flush();
  // Shutdown: a stream closes once its queue drains, an idle connection at once, a request in
  // progress after its answer (which says Connection: close).
  void drain();
  // Marks the connection closed; the server frees it after the current batch of events.
  void close(std::string_view why);

  // Applies request and keep-alive timeouts; called about once a second.
  void check_timeouts(int64_t now_ms);

  State state() const { return state_; }
  uint32_t interest() const { return interest_; }  // the epoll events asked for
  bool closed() const { return state_ == State::Closed; }
  bool is_stream() const { return state_ == State::Stream; }
  // Ending: it closes once what is queued is written, and takes nothing new.
  bool finishing() const { return finishing_; }
  int fd() const { return fd_; }
  const net::IpAddress& peer() const { return peer_; }
  int64_t last_write_ms() const { return last_write_ms_; }
  // Nothing waits to be written (a stream that is idle, not one whose client stopped reading).
  bool idle_output() const { return out_.empty(); }
  std::string_view close_reason() const { return close_reason_; }

  // Host bookkeeping.
  bool queued_for_flush = false;
  bool counted_stream = false;             // holds a per-IP stream slot
  std::vector<std::string> counted_rooms;  // and these of its address's rooms (AddressRooms)
  uint64_t waiting_ticket = 0;  // the held request's ticket, while one waits for an answer
  net::IpAddress client_ip;     // peer, or the forwarded address from a trusted proxy
  Connection* prev = nullptr;
  Connection* next = nullptr;

 private:
  void on_readable();
  void feed(const char* data, size_t len);
  void count_stream_input(size_t bytes);
  void ask_for_body();
  void begin_linger();
  void expire(std::string_view event);
  // What of a stream frame this stream sends: the chunk, or the event alone (HTTP/1.0).
  std::pair<size_t, size_t> stream_span(const Frame& frame) const;
  void send_event(std::string_view event);
  void reject_and_close(int status, std::string_view reason);
  void resume_parsing();
  void finish_if_peer_done();
  bool client_is_reading(int64_t now_ms, int64_t timeout_ms);
  void update_interest();
  // `counted`: held against --max-queued-bytes (all but a Response::Part that is shared).
  void enqueue(const FrameRef& frame, size_t begin, size_t end, bool counted = true);
  void write_rounds(size_t& budget);
  bool apply_write(ssize_t result, size_t requested, size_t& budget);
  bool output_is_full() const;
  bool fits_bytes(size_t bytes) const;

  ConnectionHost& host_;
  int fd_;
  net::IpAddress peer_;
  State state_ = State::Http;
  uint32_t interest_ = 0;
  bool registered_ = false;  // added to epoll (interest_ may be 0 while paused)
  bool rdhup_seen_ = false;  // the peer half-closed; EPOLLRDHUP no longer watched
  bool want_write_ = false;
  bool finishing_ = false;  // close once the queue drains
  bool held_ = false;
  bool peer_eof_ = false;
  bool reset_on_close_ = false;  // output is abandoned: the kernel drops it too (RST, not FIN)
  std::unique_ptr<RequestParser> parser_;
  std::string pending_input_;  // pipelined bytes not parsed yet (waiting for output to drain)
  FrameRing out_;
  std::unique_ptr<Subscription> subscription_;
  int64_t request_started_ms_ = 0;
  int64_t last_activity_ms_ = 0;
  int64_t last_write_ms_ = 0;
  int64_t last_progress_ms_ = 0;  // the client last took some output, or had nothing pending
  uint64_t bytes_written_ = 0;    // to the kernel, ever
  uint64_t stream_input_ = 0;     // bytes a stream's peer sent after its request
  uint64_t written_at_check_ = 0;
  int64_t kernel_unsent_ = 0;  // SIOCOUTQ at the last check
  int64_t linger_started_ms_ = 0;
  int64_t expires_at_ms_ = 0;  // 0: never
  uint64_t token_key_id_ = 0;
  bool chunked_ = false;  // a stream whose events go out as chunks
  bool served_ = false;   // a request has completed on this connection
  std::string_view close_reason_;
};

}  // namespace sse
