#include "redis_link.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <charconv>

#include "form.h"

namespace sse {
namespace {

bool parse_int(std::string_view s, int& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size() && !s.empty();
}

// "[user][:password]" before a URL's '@', percent-escapes decoded.
bool parse_userinfo(std::string_view auth, RedisEndpoint& e, std::string& error) {
  size_t colon = auth.find(':');
  auto user = form::percent_decode(auth.substr(0, colon), false);
  auto password = form::percent_decode(
      colon == std::string_view::npos ? std::string_view{} : auth.substr(colon + 1), false);
  if (!user || !password) {
    error = "a malformed %-escape in the Redis URL's user or password";
    return false;
  }
  e.username = std::move(*user);
  e.password = std::move(*password);
  return true;
}

bool parse_db(std::string_view db, RedisEndpoint& e, std::string& error) {
  if (!parse_int(db, e.db) || e.db < 0) {
    error = "the Redis database must be a number";
    return false;
  }
  return true;
}

// unix://[[user][:password]@]/path/to/socket[?db=N] (the query may also say password= and
// user=, as other clients write them).
std::optional<RedisEndpoint> parse_unix_url(std::string_view rest, std::string& error) {
  RedisEndpoint e;
  std::string_view query;
  if (size_t mark = rest.find('?'); mark != std::string_view::npos) {
    query = rest.substr(mark + 1);
    rest = rest.substr(0, mark);
  }
  if (size_t at = rest.find('@'); at != std::string_view::npos && at < rest.find('/')) {
    if (!parse_userinfo(rest.substr(0, at), e, error)) return std::nullopt;
    rest = rest.substr(at + 1);
  }
  auto pairs = form::parse(query);
  if (!pairs) {
    error = "a malformed query in the Redis URL";
    return std::nullopt;
  }
  for (auto& [key, value] : *pairs) {
    if (key == "db") {
      if (!parse_db(value, e, error)) return std::nullopt;
    } else if (key == "password") {
      e.password = std::move(value);
    } else if (key == "user" || key == "username") {
      e.username = std::move(value);
    } else {
      error = "a unix:// Redis URL takes db, password and user in its query, not " + key;
      return std::nullopt;
    }
  }
  e.unix_path = std::string(rest);
  if (e.unix_path.empty() || e.unix_path[0] != '/') {
    error = "a unix:// Redis URL needs an absolute socket path";
    return std::nullopt;
  }
  return e;
}

}  // namespace

std::optional<RedisEndpoint> parse_redis_url(std::string_view url, std::string& error) {
  if (url.starts_with("unix://")) return parse_unix_url(url.substr(7), error);
  if (!url.starts_with("redis://")) {
    error = "a Redis URL starts with redis:// or unix://";
    return std::nullopt;
  }
  RedisEndpoint e;
  std::string_view rest = url.substr(8);
  if (size_t at = rest.rfind('@'); at != std::string_view::npos) {  // [user][:password]@
    if (!parse_userinfo(rest.substr(0, at), e, error)) return std::nullopt;
    rest = rest.substr(at + 1);
  }
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    std::string_view db = rest.substr(slash + 1);
    if (!db.empty() && !parse_db(db, e, error)) return std::nullopt;
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

// One hiredis context's socket: its epoll registration and interest. It lives as long as the
// context (hiredis's cleanup hook ends it) and is freed after the batch of events, so a stale
// event for it finds nothing to do; the link lets go of it (link = nullptr) when it closes, so a
// context being freed never touches a link that has moved on to another one.
struct RedisLink::Socket final : EventHandler {
  Socket(Reactor& r, redisAsyncContext* c, RedisLink* l) : reactor(r), ctx(c), link(l) {}
  Reactor& reactor;
  redisAsyncContext* ctx;
  RedisLink* link;
  bool registered = false;
  bool want_read = false;
  bool want_write = false;

  void on_event(uint32_t events) override {
    if (ctx && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) redisAsyncHandleRead(ctx);
    if (ctx && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) redisAsyncHandleWrite(ctx);
  }
  void set_interest(bool read, bool write) {
    if (!ctx) return;
    want_read = read;
    want_write = write;
    uint32_t events = (read ? uint32_t{EPOLLIN} : 0u) | (write ? uint32_t{EPOLLOUT} : 0u);
    if (registered)
      reactor.modify(ctx->c.fd, events, this);
    else
      registered = reactor.add(ctx->c.fd, events, this);
  }
};

namespace {

RedisLink::Socket* socket_of(const redisAsyncContext* ctx) {
  return static_cast<RedisLink::Socket*>(ctx->ev.data);
}

void add_read(void* s) {
  auto* k = static_cast<RedisLink::Socket*>(s);
  k->set_interest(true, k->want_write);
}
void del_read(void* s) {
  auto* k = static_cast<RedisLink::Socket*>(s);
  k->set_interest(false, k->want_write);
}
void add_write(void* s) {
  auto* k = static_cast<RedisLink::Socket*>(s);
  k->set_interest(k->want_read, true);
}
void del_write(void* s) {
  auto* k = static_cast<RedisLink::Socket*>(s);
  k->set_interest(k->want_read, false);
}

}  // namespace

RedisLink::~RedisLink() {
  on_up = nullptr;
  on_down = nullptr;
  close();
}

void RedisLink::tell_down(std::string reason) {
  reactor_.defer([this, alive = std::weak_ptr<bool>(alive_), reason = std::move(reason)] {
    if (!alive.expired() && on_down) on_down(reason);
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
  socket_ = new Socket(reactor_, ctx, this);
  ctx->ev.data = socket_;
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
  // A user without a password is an ACL user that needs none (nopass): AUTH names it anyway.
  if (!endpoint.username.empty())
    command({"AUTH", endpoint.username, endpoint.password}, refused("AUTH"));
  else if (!endpoint.password.empty())
    command({"AUTH", endpoint.password}, refused("AUTH"));
  command({"SELECT", db}, [this](redisReply* r) {
    if (!r) return;
    if (r->type == REDIS_REPLY_ERROR) return lost(std::string("SELECT: ") + r->str);
    up_ = true;
    if (on_up) on_up();
  });
  return true;
}

// Lets go of the context first (so nothing it does from here reaches this link), then frees it:
// every waiting command gets nullptr. From inside one of its callbacks hiredis frees it once the
// callback returns.
void RedisLink::close() {
  if (!ctx_) return;
  redisAsyncContext* ctx = ctx_;
  detach();
  redisAsyncFree(ctx);
}

void RedisLink::detach() {
  if (socket_) socket_->link = nullptr;
  socket_ = nullptr;
  ctx_ = nullptr;
  up_ = false;
  waiting_ = 0;
  sent_ms_.clear();
}

void RedisLink::lost(std::string reason) {
  if (!ctx_) return;
  close();
  tell_down(std::move(reason));
}

bool RedisLink::command(const std::vector<std::string_view>& argv, ReplyFn done) {
  if (!ctx_) return false;
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
  sent_ms_.push_back(monotonic_ms());
  return true;
}

int64_t RedisLink::oldest_wait_ms(int64_t now_ms) const {
  return sent_ms_.empty() ? 0 : now_ms - sent_ms_.front();
}

void RedisLink::on_reply(redisAsyncContext* ctx, void* reply, void* privdata) {
  auto* fn = static_cast<ReplyFn*>(privdata);
  Socket* socket = socket_of(ctx);
  if (RedisLink* self = socket ? socket->link : nullptr) {  // replies come in order
    --self->waiting_;
    if (!self->sent_ms_.empty()) self->sent_ms_.pop_front();
  }
  (*fn)(static_cast<redisReply*>(reply));
  delete fn;
}

// The context is going (hiredis frees it after this): a link still holding it lets go, and is
// told why, once, whichever of hiredis's callbacks comes first.
void RedisLink::context_lost(Socket* socket, const redisAsyncContext* ctx, const char* fallback) {
  RedisLink* self = socket->link;
  if (!self) return;  // close() let go of it first: nothing to tell
  self->detach();
  self->tell_down(ctx->err && ctx->errstr ? ctx->errstr : fallback);
}

void RedisLink::on_connected(const redisAsyncContext* ctx, int status) {
  if (status != REDIS_OK) context_lost(socket_of(ctx), ctx, "cannot connect");
}

void RedisLink::on_disconnected(const redisAsyncContext* ctx, int) {
  context_lost(socket_of(ctx), ctx, "closed by Redis");
}

// hiredis frees the context (in 0.14 before the disconnect callback, on an error): its socket
// leaves the loop now and is freed after this batch (or with the loop).
void RedisLink::cleanup(void* s) {
  auto* socket = static_cast<Socket*>(s);
  if (socket->ctx) {
    if (socket->registered) socket->reactor.remove(socket->ctx->c.fd);
    context_lost(socket, socket->ctx, "connection lost");
  }
  socket->registered = false;
  socket->ctx = nullptr;
  socket->reactor.defer([owned = std::shared_ptr<Socket>(socket)] {});
}

}  // namespace sse
