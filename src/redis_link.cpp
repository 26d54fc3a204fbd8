#include "redis_link.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <charconv>

namespace sse {
namespace {

RedisLink* link_of(const redisAsyncContext* ctx) {
  return static_cast<RedisLink*>(ctx->ev.data);
}

bool parse_int(std::string_view s, int& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size() && !s.empty();
}

}  // namespace

std::optional<RedisEndpoint> parse_redis_url(std::string_view url, std::string& error) {
  RedisEndpoint e;
  if (url.starts_with("unix://")) {
    e.unix_path = std::string(url.substr(7));
    if (e.unix_path.empty() || e.unix_path[0] != '/') {
      error = "a unix:// Redis URL needs an absolute socket path";
      return std::nullopt;
    }
    return e;
  }
  if (!url.starts_with("redis://")) {
    error = "a Redis URL starts with redis:// or unix://";
    return std::nullopt;
  }
  std::string_view rest = url.substr(8);
  if (size_t at = rest.rfind('@'); at != std::string_view::npos) {  // [user]:password@
    std::string_view auth = rest.substr(0, at);
    size_t colon = auth.find(':');
    e.username = std::string(auth.substr(0, colon));
    e.password = colon == std::string_view::npos ? "" : std::string(auth.substr(colon + 1));
    rest = rest.substr(at + 1);
  }
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    std::string_view db = rest.substr(slash + 1);
    if (!db.empty() && (!parse_int(db, e.db) || e.db < 0)) {
      error = "the Redis database must be a number";
      return std::nullopt;
    }
    rest = rest.substr(0, slash);
  }
  std::string_view host = rest, port;
  if (rest.starts_with('[')) {  // [v6] or [v6]:port
    size_t end = rest.find(']');
    if (end == std::string_view::npos || (end + 1 < rest.size() && rest[end + 1] != ':')) {
      error = "a bracketed Redis host is [address] or [address]:port";
      return std::nullopt;
    }
    host = rest.substr(1, end - 1);
    port = end + 1 < rest.size() ? rest.substr(end + 2) : std::string_view{};
  } else if (size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (!port.empty() && (!parse_int(port, e.port) || e.port <= 0 || e.port > 65535)) {
    error = "the Redis port must be a number from 1 to 65535";
    return std::nullopt;
  }
  if (host.empty()) {
    error = "a Redis URL needs a host";
    return std::nullopt;
  }
  e.host = std::string(host);
  return e;
}

RedisLink::~RedisLink() {
  *alive_ = false;
  close();
}

void RedisLink::tell_down(std::string reason) {
  reactor_.defer([this, alive = std::weak_ptr<bool>(alive_), reason = std::move(reason)] {
    auto still = alive.lock();
    if (still && *still && on_down) on_down(reason);
  });
}

bool RedisLink::connect(const RedisEndpoint& endpoint, std::string& error) {
  close();
  redisAsyncContext* ctx = endpoint.unix_path.empty()
                               ? redisAsyncConnect(endpoint.host.c_str(), endpoint.port)
                               : redisAsyncConnectUnix(endpoint.unix_path.c_str());
  if (!ctx || ctx->err) {
    error = ctx ? ctx->errstr : "out of memory";
    if (ctx) redisAsyncFree(ctx);
    return false;
  }
  ctx_ = ctx;
  fd_ = ctx->c.fd;
  closing_ = false;
  ctx->ev.data = this;
  ctx->ev.addRead = add_read;
  ctx->ev.delRead = del_read;
  ctx->ev.addWrite = add_write;
  ctx->ev.delWrite = del_write;
  ctx->ev.cleanup = cleanup;
  redisAsyncSetConnectCallback(ctx, on_connected);
  redisAsyncSetDisconnectCallback(ctx, on_disconnected);
  // Queued now, sent once connected: the link is up when both are answered.
  std::string db = std::to_string(endpoint.db);
  auto refused = [this](const char* what) {
    return [this, what](redisReply* r) {
      if (r && r->type == REDIS_REPLY_ERROR) lost(std::string(what) + ": " + r->str);
    };
  };
  if (!endpoint.password.empty() && endpoint.username.empty())
    command({"AUTH", endpoint.password}, refused("AUTH"));
  else if (!endpoint.password.empty())
    command({"AUTH", endpoint.username, endpoint.password}, refused("AUTH"));
  command({"SELECT", db}, [this](redisReply* r) {
    if (!r) return;
    if (r->type == REDIS_REPLY_ERROR) return lost(std::string("SELECT: ") + r->str);
    up_ = true;
    if (on_up) on_up();
  });
  return true;
}

void RedisLink::close() {
  if (!ctx_) return;
  closing_ = true;
  redisAsyncContext* ctx = ctx_;
  redisAsyncFree(ctx);  // answers every waiting command with nullptr, then cleanup()
  ctx_ = nullptr;
  up_ = false;
}

// Ends the link from inside a hiredis callback: freeing the context there is not allowed, so
// hiredis is asked to disconnect, and on_down is told after this batch of events.
void RedisLink::lost(std::string reason) {
  if (!ctx_ || closing_) return;
  closing_ = true;
  up_ = false;
  redisAsyncDisconnect(ctx_);
  tell_down(std::move(reason));
}

bool RedisLink::command(const std::vector<std::string_view>& argv, ReplyFn done) {
  if (!ctx_ || closing_) return false;
  std::vector<const char*> args;
  std::vector<size_t> lengths;
  for (std::string_view a : argv) {
    args.push_back(a.data());
    lengths.push_back(a.size());
  }
  auto* fn = new ReplyFn(std::move(done));
  if (redisAsyncCommandArgv(ctx_, on_reply, fn, static_cast<int>(args.size()), args.data(),
                            lengths.data()) != REDIS_OK) {
    delete fn;
    return false;
  }
  ++waiting_;
  return true;
}

void RedisLink::on_reply(redisAsyncContext* ctx, void* reply, void* privdata) {
  auto* fn = static_cast<ReplyFn*>(privdata);
  RedisLink* self = link_of(ctx);
  if (self) --self->waiting_;
  (*fn)(static_cast<redisReply*>(reply));
  delete fn;
}

void RedisLink::on_connected(const redisAsyncContext* ctx, int status) {
  RedisLink* self = link_of(ctx);
  if (status == REDIS_OK || !self) return;
  // hiredis frees the context after this: forget it, and say why.
  std::string reason = ctx->errstr ? ctx->errstr : "cannot connect";
  self->ctx_ = nullptr;
  self->up_ = false;
  self->tell_down(reason);
}

void RedisLink::on_disconnected(const redisAsyncContext* ctx, int status) {
  RedisLink* self = link_of(ctx);
  if (!self) return;
  bool told = self->closing_;
  std::string reason = status == REDIS_OK ? "closed" : (ctx->errstr ? ctx->errstr : "lost");
  self->ctx_ = nullptr;
  self->up_ = false;
  if (told) return;  // close() or lost() already knows
  self->tell_down(reason);
}

void RedisLink::on_event(uint32_t events) {
  if (ctx_ && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) redisAsyncHandleRead(ctx_);
  if (ctx_ && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) redisAsyncHandleWrite(ctx_);
}

void RedisLink::set_interest(bool read, bool write) {
  want_read_ = read;
  want_write_ = write;
  uint32_t events = (read ? uint32_t{EPOLLIN} : 0u) | (write ? uint32_t{EPOLLOUT} : 0u);
  if (!registered_) {
    registered_ = reactor_.add(fd_, events, this);
  } else {
    reactor_.modify(fd_, events, this);
  }
}

void RedisLink::add_read(void* self) {
  auto* l = static_cast<RedisLink*>(self);
  l->set_interest(true, l->want_write_);
}
void RedisLink::del_read(void* self) {
  auto* l = static_cast<RedisLink*>(self);
  l->set_interest(false, l->want_write_);
}
void RedisLink::add_write(void* self) {
  auto* l = static_cast<RedisLink*>(self);
  l->set_interest(l->want_read_, true);
}
void RedisLink::del_write(void* self) {
  auto* l = static_cast<RedisLink*>(self);
  l->set_interest(l->want_read_, false);
}

void RedisLink::cleanup(void* self) {
  auto* l = static_cast<RedisLink*>(self);
  if (l->registered_) l->reactor_.remove(l->fd_);
  l->registered_ = false;
  l->want_read_ = l->want_write_ = false;
  l->fd_ = -1;
}

}  // namespace sse
