// One asynchronous Redis connection (hiredis) driven by our own reactor: hiredis says when it
// wants to read or write through its adapter hooks, the reactor's readiness calls back into
// hiredis, and no call ever blocks the loop. What a reply means is the caller's business (the
// Redis broker); this only carries commands and replies, in order, and says when the link is up
// or lost.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "reactor.h"

struct redisAsyncContext;
struct redisReply;

namespace sse {

// Where Redis is: redis://[[user]:password@]host[:port][/db] (host may be [v6]) or
// unix:///path/to/socket.
struct RedisEndpoint {
  std::string host;
  int port = 6379;
  std::string unix_path;  // set for unix://
  std::string username;   // Redis 6 ACL user; none: the default user
  std::string password;
  int db = 0;
};

// The endpoint `url` names, or nullopt with the reason in `error`.
std::optional<RedisEndpoint> parse_redis_url(std::string_view url, std::string& error);

class RedisLink {
 public:
  // `reply` is nullptr when the link went down before the answer came.
  using ReplyFn = std::function<void(redisReply* reply)>;
  struct Socket;  // one hiredis context's socket on the loop

  explicit RedisLink(Reactor& reactor) : reactor_(reactor) {}
  ~RedisLink();  // waiting commands get nullptr; on_down is not called
  RedisLink(const RedisLink&) = delete;
  RedisLink& operator=(const RedisLink&) = delete;

  // Starts connecting (AUTH and SELECT as the endpoint says); on_up once they are answered,
  // on_down with the reason when the attempt or the link fails. False when it cannot even start.
  bool connect(const RedisEndpoint& endpoint, std::string& error);
  // Drops the link now: every command still waiting gets nullptr (no on_down: the caller knows).
  // Safe from inside a reply callback.
  void close();
  bool up() const { return up_; }
  // Connected or connecting.
  bool active() const { return ctx_ != nullptr; }

  // Queues one command (binary-safe arguments); false when there is no link.
  bool command(const std::vector<std::string_view>& argv, ReplyFn done);
  // Commands sent and not yet answered, and how long the oldest has waited (0: none).
  size_t waiting() const { return waiting_; }
  int64_t oldest_wait_ms(int64_t now_ms) const;

  std::function<void()> on_up;
  std::function<void(const std::string& reason)> on_down;

 private:
  static void cleanup(void* socket);
  static void on_connected(const redisAsyncContext* ctx, int status);
  static void on_disconnected(const redisAsyncContext* ctx, int status);
  static void on_reply(redisAsyncContext* ctx, void* reply, void* privdata);

  void detach();
  static void context_lost(Socket* socket, const redisAsyncContext* ctx, const char* fallback);
  void lost(std::string reason);
  // Tells on_down later; never after this link is gone.
  void tell_down(std::string reason);

  Reactor& reactor_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  redisAsyncContext* ctx_ = nullptr;
  Socket* socket_ = nullptr;
  bool up_ = false;
  size_t waiting_ = 0;
  std::deque<int64_t> sent_ms_;  // when each waiting command was sent, oldest first
};

}  // namespace sse
