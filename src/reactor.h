// A thin single-threaded epoll loop: poll -> dispatch -> deferred calls -> after-dispatch hook (the
// server flushes its writer set and reaps closed connections there) -> repeat. Timers and signals
// are file descriptors (timerfd, signalfd) dispatched like any socket.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

namespace sse {

class EventHandler {
 public:
  virtual ~EventHandler() = default;
  // EPOLLERR/EPOLLHUP arrive as readable|writable so the normal I/O path meets the error.
  virtual void on_event(uint32_t events) = 0;
};

class Reactor {
 public:
  Reactor();
  ~Reactor();
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  bool add(int fd, uint32_t events, EventHandler* handler);
  bool modify(int fd, uint32_t events, EventHandler* handler);
  void remove(int fd);

  // Calls `callback` every `interval` until the reactor is destroyed. False (nothing set up) when
  // the kernel gives no descriptor for it.
  bool every(std::chrono::milliseconds interval, std::function<void()> callback);
  // Blocks `signals` for the process and delivers them through the loop. False as every().
  [[nodiscard]] bool on_signals(std::vector<int> signals, std::function<void(int)> callback);
  // Runs once after every batch of events; returns true when work is left for the next
  // iteration (the loop then polls without blocking).
  void after_dispatch(std::function<bool()> hook) { after_dispatch_ = std::move(hook); }
  // Runs `call` after the current batch of events, before the after-dispatch hook: how a
  // completion reaches its caller without re-entering it (h2o's deferred callbacks, muduo's
  // queueInLoop). Calls deferred by a deferred call run in the same round, up to a bound.
  void defer(std::function<void()> call) { deferred_.push_back(std::move(call)); }
  // Runs what was deferred so far (the loop does this itself; tests driving no loop call it).
  void run_deferred();

  void run();
  void stop() { running_ = false; }
  bool running() const { return running_; }

  // Monotonic milliseconds, read once per wake-up.
  int64_t now_ms() const { return now_ms_; }
  // Each iteration's time from its wake-up to the next epoll_wait, for the event-loop lag metric.
  std::function<void(int64_t busy_us)> on_iteration;

 private:
  class TimerHandler;
  class SignalHandler;
  void update_clock();
  // Watches `fd` for reading with `handler`, kept until the reactor goes.
  bool own(int fd, std::unique_ptr<EventHandler> handler);

  int epfd_;
  bool running_ = false;
  int64_t now_ms_ = 0;
  std::function<bool()> after_dispatch_;
  std::vector<std::function<void()>> deferred_;
  std::vector<std::function<void()>> running_deferred_;
  bool work_left_ = false;
  std::vector<std::unique_ptr<EventHandler>> owned_;
};

int64_t monotonic_ms();
int64_t monotonic_us();  // the same clock in microseconds
int64_t wall_clock_ms();

}  // namespace sse
