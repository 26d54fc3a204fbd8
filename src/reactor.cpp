#include "reactor.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace sse {

int64_t monotonic_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int64_t wall_clock_ms() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int64_t monotonic_us() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

class Reactor::TimerHandler final : public EventHandler {
 public:
  TimerHandler(int fd, std::function<void()> cb) : fd_(fd), cb_(std::move(cb)) {}
  ~TimerHandler() override { close(fd_); }
  void on_event(uint32_t) override {
    uint64_t expirations;
    if (read(fd_, &expirations, sizeof expirations) == sizeof expirations) cb_();
  }

 private:
  int fd_;
  std::function<void()> cb_;
};

class Reactor::SignalHandler final : public EventHandler {
 public:
  SignalHandler(int fd, std::function<void(int)> cb) : fd_(fd), cb_(std::move(cb)) {}
  ~SignalHandler() override { close(fd_); }
  void on_event(uint32_t) override {
    signalfd_siginfo info;
    while (read(fd_, &info, sizeof info) == sizeof info) cb_(static_cast<int>(info.ssi_signo));
  }

 private:
  int fd_;
  std::function<void(int)> cb_;
};

Reactor::Reactor() : epfd_(epoll_create1(EPOLL_CLOEXEC)) {
  if (epfd_ < 0) {
    perror("epoll_create1");
    std::abort();  // the loop itself cannot exist
  }
  update_clock();
}

Reactor::~Reactor() {
  owned_.clear();
  close(epfd_);
}

bool Reactor::add(int fd, uint32_t events, EventHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  return epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0;
}

bool Reactor::modify(int fd, uint32_t events, EventHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  return epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) == 0;
}

void Reactor::remove(int fd) {
  epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
}

bool Reactor::every(std::chrono::milliseconds interval, std::function<void()> callback) {
  int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) return false;
  itimerspec spec{};
  spec.it_interval.tv_sec = interval.count() / 1000;
  spec.it_interval.tv_nsec = (interval.count() % 1000) * 1000000;
  spec.it_value = spec.it_interval;
  timerfd_settime(fd, 0, &spec, nullptr);
  return own(fd, std::make_unique<TimerHandler>(fd, std::move(callback)));
}

bool Reactor::on_signals(std::vector<int> signals, std::function<void(int)> callback) {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : signals) sigaddset(&mask, s);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  int fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) return false;
  return own(fd, std::make_unique<SignalHandler>(fd, std::move(callback)));
}

bool Reactor::own(int fd, std::unique_ptr<EventHandler> handler) {
  if (!add(fd, EPOLLIN, handler.get())) return false;  // the handler closes fd
  owned_.push_back(std::move(handler));
  return true;
}

void Reactor::run_deferred() {
  // Bounded rounds: a chain of calls that keeps deferring more (a pipelined POST answered, the
  // next one parsed and committed) yields to the loop after a while instead of starving it.
  constexpr int kMaxRounds = 64;
  for (int round = 0; round < kMaxRounds && !deferred_.empty(); ++round) {
    running_deferred_.swap(deferred_);
    for (auto& call : running_deferred_) call();
    running_deferred_.clear();
  }
}

void Reactor::update_clock() {
  now_ms_ = monotonic_ms();
}

void Reactor::run() {
  constexpr int kMaxEvents = 256;
  epoll_event events[kMaxEvents];
  running_ = true;
  while (running_) {
    int n = epoll_wait(epfd_, events, kMaxEvents, work_left_ ? 0 : -1);
    int64_t woke_us = monotonic_us();
    update_clock();
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("epoll_wait");
      std::abort();
    }
    for (int i = 0; i < n; ++i) {
      uint32_t ev = events[i].events;
      if (ev & (EPOLLERR | EPOLLHUP)) ev |= EPOLLIN | EPOLLOUT;
      static_cast<EventHandler*>(events[i].data.ptr)->on_event(ev);
    }
    run_deferred();
    work_left_ = after_dispatch_ && after_dispatch_();
    work_left_ = work_left_ || !deferred_.empty();
    if (on_iteration) on_iteration(monotonic_us() - woke_us);
  }
}

}  // namespace sse
