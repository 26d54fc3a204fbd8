// The machine's floor for SSE fan-out: the sender CPU of one write(2) of a frame of the same size
// to each of N loopback TCP sockets, with readers draining on another thread. A server that makes
// one syscall per delivery cannot beat this; results read as a multiple of it.
// With --batch K the same frames go out as io_uring sends, K to a submission (at most 256, as
// sse-chat's writer set does): the floor for a server that batches a broadcast's K sends.
// With --fanout F --rate R a round writes to the next F sockets only (a room's readers, the rooms
// taking turns), R rounds a second: the floor for many small broadcasts, whose readers wake for
// each one instead of once for a thousand deliveries.
//
//   floor [--sockets N] [--rounds R] [--frame-bytes B] [--batch K] [--fanout F --rate R]
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

double thread_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Sends `frame` to writers[from, from + count) in one io_uring submission; returns how many went.
long send_batch(io_uring& ring, const std::vector<int>& writers, size_t from, size_t count,
                const std::string& frame) {
  size_t to = std::min(writers.size(), from + count);
  for (size_t i = from; i < to; ++i)
    io_uring_prep_send(io_uring_get_sqe(&ring), writers[i], frame.data(), frame.size(),
                       MSG_DONTWAIT);
  io_uring_submit_and_wait(&ring, static_cast<unsigned>(to - from));
  long sent = 0;
  for (size_t i = from; i < to; ++i) {
    io_uring_cqe* cqe = nullptr;
    if (io_uring_wait_cqe(&ring, &cqe) != 0) break;
    sent += cqe->res > 0;
    io_uring_cqe_seen(&ring, cqe);
  }
  return sent;
}

// Sleeps until `start` + `round` intervals of a `rate` per second, or 1 ms after the last round
// when unpaced: each write finds the previous one drained.
void pace(const timespec& start, int round, int rate) {
  if (rate <= 0) {
    usleep(1000);
    return;
  }
  long long ns = static_cast<long long>(start.tv_nsec) + 1000000000LL * (round + 1) / rate;
  timespec due{start.tv_sec + static_cast<time_t>(ns / 1000000000LL), ns % 1000000000LL};
  clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  int sockets = 1000, rounds = 200, frame_bytes = 120, batch = 0, fanout = 0, rate = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    int v = std::atoi(argv[i + 1]);
    if (a == "--sockets")
      sockets = v;
    else if (a == "--rounds")
      rounds = v;
    else if (a == "--frame-bytes")
      frame_bytes = v;
    else if (a == "--batch")
      batch = v < 256 ? v : 256;
    else if (a == "--fanout")
      fanout = v;
    else if (a == "--rate")
      rate = v;
  }
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);

  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  listen(listener, 4096);
  socklen_t len = sizeof addr;
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);

  std::vector<int> readers, writers;
  for (int i = 0; i < sockets; ++i) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      std::perror("connect");
      return 1;
    }
    int s = accept(listener, nullptr, nullptr);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    readers.push_back(c);
    writers.push_back(s);
  }
  std::atomic<bool> done{false};
  std::thread drain([&] {
    int ep = epoll_create1(0);
    for (int fd : readers) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    epoll_event evs[512];
    char buf[65536];
    while (!done) {
      int n = epoll_wait(ep, evs, 512, 50);
      for (int k = 0; k < n; ++k)
        while (read(evs[k].data.fd, buf, sizeof buf) == static_cast<ssize_t>(sizeof buf)) {
        }
    }
  });
  std::string frame(static_cast<size_t>(frame_bytes), 'x');
  io_uring ring{};
  if (batch > 0 && io_uring_queue_init(256, &ring, 0) != 0) {
    std::fprintf(stderr, "io_uring is not available\n");
    return 1;
  }
  size_t per_round = fanout > 0 && fanout < sockets ? static_cast<size_t>(fanout) : writers.size();
  timespec started{};
  clock_gettime(CLOCK_MONOTONIC, &started);
  double start = thread_cpu_seconds();
  long writes = 0;
  size_t next = 0;  // the first socket of this round's share
  for (int r = 0; r < rounds; ++r) {
    size_t end = std::min(writers.size(), next + per_round);
    if (batch > 0) {
      for (size_t from = next; from < end; from += static_cast<size_t>(batch))
        writes += send_batch(ring, writers, from, std::min(end - from, static_cast<size_t>(batch)),
                             frame);
    } else {
      for (size_t i = next; i < end; ++i)
        writes += write(writers[i], frame.data(), frame.size()) > 0;
    }
    next = end == writers.size() ? 0 : end;
    pace(started, r, rate);
  }
  double cpu = thread_cpu_seconds() - start;
  done = true;
  drain.join();
  std::printf(
      "sockets=%d rounds=%d frame_bytes=%d batch=%d fanout=%zu rate=%d writes=%ld "
      "cpu_us_per_write=%.3f\n",
      sockets, rounds, frame_bytes, batch, per_round, rate, writes,
      cpu * 1e6 / static_cast<double>(writes));
  return 0;
}
