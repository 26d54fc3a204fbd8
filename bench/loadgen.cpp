// sse-chat load generator (a tool, not a test): N SSE subscribers connected in waves, one
// publisher posting M messages at R per second (or unpaced), each carrying its sequence number and
// send time. Works against any server with the same API (sse-chat, nginx+nchan, the Node peer):
// it reads the "text" field out of each event's data line. Reports one key=value line.
//
// Several nodes sharing one log (sse-chat --redis): --port and --server-pid may be repeated.
// Subscriber i then reads from port i mod P, message k is posted to port k mod P (one publisher
// per port), and the server CPU is the sum over every --server-pid. --aux-pid names one more
// process (Redis) whose CPU over the same window is reported apart (aux_cpu_s).
//
//   loadgen --port P --subscribers N --messages M [--rate R | --unpaced] [--server-pid PID]
//           [--idle-seconds S]   (idle: connect N, hold, measure RSS per subscriber, no messages)
//           [--hostile H]        (H more connections that each pipeline 16 requests for the whole
//                                 history and never read, held open while the honest load runs)
//           [--rooms R]          (rooms r0..r{R-1}: subscriber i reads ?room=r{i mod R} and
//                                 message k goes to room r{k mod R}, so a message is expected by
//                                 its room's subscribers only)
//   loadgen --port P --server-pid PID --memory-rooms R --memory-messages M [--memory-spread K]
//           [--text-bytes B]     (memory: reads the server's RSS, posts one message of a B-byte
//                                 text to each of R new rooms, reads it again, posts M more over K
//                                 new rooms, reads it again; reports bytes per room and per kept
//                                 message. The server needs --max-rooms > R + K, --history >= M/K
//                                 and a --history-memory that holds them all.)
//   loadgen --port P --publish-seconds S [--publishers C] [--server-pid PID] [--aux-pid PID]
//                                (publish throughput: C keep-alive connections, spread over the
//                                 ports, each keeping 32 POSTs pipelined for S seconds; reports
//                                 the messages answered 201 per second. No subscribers.)
//
// Exit status 1 if any delivery is missing or duplicated (or, with --memory-*, if a post failed
// or the server did not keep every room and message; with --publish-seconds, if a POST was not
// answered 2xx or nothing was answered for 5 s).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct Options {
  std::vector<uint16_t> ports;  // empty: 8080
  int subscribers = 100;
  int messages = 100;
  double rate = 100;  // per second; 0 = unpaced
  std::vector<int> server_pids;
  int aux_pid = 0;
  int idle_seconds = 0;
  int wave = 500;
  int hostile = 0;
  int rooms = 0;  // 0: no room named anywhere (the server's default room), as before rooms
  std::string path = "/events";
  int memory_rooms = 0;  // > 0 or memory_messages > 0: the memory mode
  int memory_messages = 0;
  int memory_spread = 10;
  int text_bytes = 100;
  double publish_seconds = 0;  // > 0: the publish-throughput mode
  int publishers = 8;
};

// "<prefix><k>" (built by appending: GCC 12 warns falsely on "literal" + std::to_string).
std::string numbered(const char* prefix, int k) {
  return std::string(prefix).append(std::to_string(k));
}

std::string room_name(int k) {
  return numbered("r", k);
}

// Server CPU (user+system, seconds) and RSS (KiB) from /proc.
double proc_cpu_seconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  size_t close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields;
  size_t pos = close + 2;
  while (pos < line.size()) {
    size_t sp = line.find(' ', pos);
    fields.push_back(line.substr(pos, sp - pos));
    if (sp == std::string::npos) break;
    pos = sp + 1;
  }
  // fields[0] is state (field 3); utime is field 14, stime 15.
  double ticks = std::stod(fields[11]) + std::stod(fields[12]);
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Sums over several processes (the nodes of one run); 0 for none.
double cpu_seconds(const std::vector<int>& pids) {
  double sum = 0;
  for (int pid : pids) sum += proc_cpu_seconds(pid);
  return sum;
}

long proc_rss_kib(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      long v;
      in >> v;
      return v;
    }
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

long rss_kib(const std::vector<int>& pids) {
  long sum = 0;
  for (int pid : pids) sum += proc_rss_kib(pid);
  return sum;
}

// write(2)/writev(2) calls the processes made (syscw in /proc/PID/io). Deliveries per call shows
// how many frames each writev coalesced: a server that lags coalesces more and spends less CPU per
// delivery, so CPU figures of two setups compare only with this beside them.
long write_calls(const std::vector<int>& pids) {
  long sum = 0;
  for (int pid : pids) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/io");
    std::string key;
    long v = 0;
    while (in >> key >> v)
      if (key == "syscw:") sum += v;
  }
  return sum;
}

int connect_to(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

struct Subscriber {
  int fd = -1;
  std::string buf;
  bool head_done = false;
  std::vector<uint8_t> seen;  // per sequence number
  long received = 0;
  long duplicates = 0;
};

struct Stats {
  std::vector<int64_t> latencies_ns;
  long deliveries = 0;
  long duplicates = 0;
};

// Parses complete events out of the subscriber's buffer.
void consume_events(Subscriber& s, Stats& st, int64_t now) {
  size_t start = 0;
  for (;;) {
    size_t end = s.buf.find("\n\n", start);
    if (end == std::string::npos) break;
    std::string_view block(s.buf.data() + start, end - start);
    start = end + 2;
    size_t data = block.find("data: ");
    if (data == std::string_view::npos) continue;
    size_t text = block.find("\"text\":\"", data);
    if (text == std::string_view::npos) continue;
    const char* p = block.data() + text + 8;
    char* e;
    long seq = std::strtol(p, &e, 10);
    long long sent = std::strtoll(e + 1, nullptr, 10);
    if (seq < 0 || seq >= static_cast<long>(s.seen.size())) continue;
    if (s.seen[seq]) {
      ++s.duplicates;
      ++st.duplicates;
      continue;
    }
    s.seen[seq] = 1;
    ++s.received;
    ++st.deliveries;
    st.latencies_ns.push_back(now - sent);
  }
  s.buf.erase(0, start);
}

bool read_head(Subscriber& s) {
  size_t end = s.buf.find("\r\n\r\n");
  if (end == std::string::npos) return false;
  if (s.buf.compare(0, 12, "HTTP/1.1 200") != 0) {
    std::fprintf(stderr, "subscribe refused: %s\n", s.buf.substr(0, s.buf.find('\r')).c_str());
    std::exit(2);
  }
  s.buf.erase(0, end + 4);
  s.head_done = true;
  return true;
}

// Posts messages over one keep-alive connection. Responses are read from the event loop like any
// other socket, so waiting for one never stops the subscribers from being read; in unpaced mode up
// to `window` POSTs are in flight (pipelined).
class Publisher {
 public:
  explicit Publisher(uint16_t port) : fd_(connect_to(port)) {}
  int fd() const { return fd_; }
  int in_flight() const { return in_flight_; }
  bool failed() const { return failed_; }
  long created() const { return created_; }  // answered 201

  // The message numbered `seq`, stamped with the time now, to `room` (empty: none named).
  bool send(int seq, const std::string& room = {}) {
    char body[192];
    int n = std::snprintf(body, sizeof body, "{\"user\":\"bench\",\"text\":\"%d %lld\"%s%s%s}", seq,
                          static_cast<long long>(now_ns()), room.empty() ? "" : ",\"room\":\"",
                          room.c_str(), room.empty() ? "" : "\"");
    return send_body(std::string_view(body, static_cast<size_t>(n)));
  }

  bool send_body(std::string_view body) {
    std::string req =
        "POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: " +
        std::to_string(body.size()) + "\r\n\r\n";
    req += body;
    if (::write(fd_, req.data(), req.size()) != static_cast<ssize_t>(req.size())) return false;
    ++in_flight_;
    return true;
  }

  // GET `path` on this connection once nothing is in flight; the body, or "" on failure.
  std::string get(const std::string& path) {
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if (in_flight_ != 0 || ::write(fd_, req.data(), req.size()) != static_cast<ssize_t>(req.size()))
      return "";
    ++in_flight_;
    last_body_.clear();
    while (in_flight_ > 0 && !failed_) on_readable();
    return failed_ ? "" : last_body_;
  }

  // Reads what is there and counts the complete responses; a non-2xx marks the run failed.
  void on_readable() {
    char tmp[16384];
    ssize_t n = ::read(fd_, tmp, sizeof tmp);
    if (n <= 0) {
      failed_ = true;
      return;
    }
    buf_.append(tmp, static_cast<size_t>(n));
    for (;;) {
      size_t end = buf_.find("\r\n\r\n");
      if (end == std::string::npos) return;
      size_t cl = buf_.find("Content-Length: ");
      if (cl == std::string::npos || cl > end) cl = buf_.find("content-length: ");
      size_t len = cl != std::string::npos && cl < end
                       ? std::strtoul(buf_.c_str() + cl + 16, nullptr, 10)
                       : 0;
      if (buf_.size() < end + 4 + len) return;
      if (buf_.compare(9, 1, "2") != 0) {
        if (!failed_)  // the first only: the rest of a pipeline usually fails the same way
          std::fprintf(stderr, "publish failed: %s\n", buf_.substr(0, buf_.find('\r')).c_str());
        failed_ = true;
      }
      if (buf_.compare(9, 3, "201") == 0) ++created_;
      last_body_ = buf_.substr(end + 4, len);
      buf_.erase(0, end + 4 + len);
      --in_flight_;
    }
  }

 private:
  int fd_;
  int in_flight_ = 0;
  long created_ = 0;
  bool failed_ = false;
  std::string buf_;
  std::string last_body_;
};

double percentile(std::vector<int64_t>& v, double p) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return static_cast<double>(v[i]) / 1000.0;  // µs
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(i + 1 < argc ? argv[++i] : "0"); };
    if (a == "--port")
      o.ports.push_back(static_cast<uint16_t>(std::stoi(next())));
    else if (a == "--subscribers")
      o.subscribers = std::stoi(next());
    else if (a == "--messages")
      o.messages = std::stoi(next());
    else if (a == "--rate")
      o.rate = std::stod(next());
    else if (a == "--unpaced")
      o.rate = 0;
    else if (a == "--server-pid")
      o.server_pids.push_back(std::stoi(next()));
    else if (a == "--aux-pid")
      o.aux_pid = std::stoi(next());
    else if (a == "--publish-seconds")
      o.publish_seconds = std::stod(next());
    else if (a == "--publishers")
      o.publishers = std::max(1, std::stoi(next()));
    else if (a == "--idle-seconds")
      o.idle_seconds = std::stoi(next());
    else if (a == "--wave")
      o.wave = std::stoi(next());
    else if (a == "--hostile")
      o.hostile = std::stoi(next());
    else if (a == "--path")
      o.path = next();
    else if (a == "--rooms")
      o.rooms = std::stoi(next());
    else if (a == "--memory-rooms")
      o.memory_rooms = std::stoi(next());
    else if (a == "--memory-messages")
      o.memory_messages = std::stoi(next());
    else if (a == "--memory-spread")
      o.memory_spread = std::max(1, std::stoi(next()));
    else if (a == "--text-bytes")
      o.text_bytes = std::stoi(next());
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      std::exit(2);
    }
  }
  if (o.ports.empty()) o.ports.push_back(8080);
  return o;
}

// The value of an unlabelled metric in a Prometheus text page (-1 when absent).
double metric(const std::string& page, std::string_view name) {
  for (size_t pos = page.find(name); pos != std::string::npos; pos = page.find(name, pos + 1)) {
    size_t after = pos + name.size();
    if ((pos == 0 || page[pos - 1] == '\n') && after < page.size() && page[after] == ' ')
      return std::strtod(page.c_str() + after + 1, nullptr);
  }
  return -1;
}

// Memory per room and per kept message, from the server's RSS (see the header).
int memory_mode(const Options& opt) {
  if (opt.server_pids.empty() || opt.memory_rooms <= 0 ||
      opt.memory_messages <= opt.memory_spread) {
    std::fprintf(stderr,
                 "memory mode needs --server-pid, --memory-rooms and --memory-messages "
                 "above --memory-spread\n");
    return 2;
  }
  Publisher pub(opt.ports[0]);
  if (pub.fd() < 0) {
    std::fprintf(stderr, "connect failed: %s\n", strerror(errno));
    return 2;
  }
  // A chat line's worth of words: printable, nothing JSON escapes.
  const std::string_view words = "the quick brown fox jumps over the lazy dog, then naps. ";
  std::string text;
  while (text.size() < static_cast<size_t>(opt.text_bytes)) text += words;
  text.resize(static_cast<size_t>(opt.text_bytes));
  // Posts `n` messages, message i to room_of(i), up to 32 in flight.
  auto post = [&](int n, auto room_of) {
    int sent = 0;
    while (sent < n || pub.in_flight() > 0) {
      while (sent < n && pub.in_flight() < 32) {
        std::string body =
            "{\"user\":\"bench\",\"text\":\"" + text + "\",\"room\":\"" + room_of(sent) + "\"}";
        if (!pub.send_body(body)) return false;
        ++sent;
      }
      pub.on_readable();
      if (pub.failed()) return false;
    }
    return true;
  };
  struct Point {
    long rss_kib;
    double rooms, messages, bytes;
  };
  auto measure = [&] {
    usleep(300000);
    std::string page = pub.get("/metrics");
    return Point{rss_kib(opt.server_pids), metric(page, "ssechat_rooms"),
                 metric(page, "ssechat_history_messages"), metric(page, "ssechat_history_bytes")};
  };
  const int rooms = opt.memory_rooms, messages = opt.memory_messages, spread = opt.memory_spread;
  // Warm-up, counted in no figure: the allocator's first arenas, the connection, one room.
  bool ok = post(1000, [](int) { return std::string("warmup"); });
  Point p0 = measure();
  ok = ok && post(rooms, [](int i) { return numbered("m", i); });
  Point p1 = measure();
  ok = ok && post(messages, [&](int i) { return numbered("k", i % spread); });
  Point p2 = measure();
  ok = ok && p1.rooms - p0.rooms == rooms && p2.rooms - p1.rooms == spread &&
       p1.messages - p0.messages == rooms && p2.messages - p1.messages == messages;
  // Step 1 costs rooms * (room + message); step 2 costs spread * room + messages * message.
  double a = static_cast<double>(p1.rss_kib - p0.rss_kib) * 1024;
  double b = static_cast<double>(p2.rss_kib - p1.rss_kib) * 1024;
  double per_message = (b - spread * a / rooms) / (messages - spread);
  double per_room = a / rooms - per_message;
  std::printf(
      "memory_rooms=%d memory_messages=%d memory_spread=%d text_bytes=%d rss0_kib=%ld rss1_kib=%ld "
      "rss2_kib=%ld bytes_per_room_with_message=%.0f bytes_per_idle_room=%.0f "
      "bytes_per_kept_message=%.0f counted_bytes_per_message=%.0f rooms_kept=%.0f "
      "messages_kept=%.0f ok=%d\n",
      rooms, messages, spread, opt.text_bytes, p0.rss_kib, p1.rss_kib, p2.rss_kib, a / rooms,
      per_room, per_message, (p2.bytes - p1.bytes) / messages, p2.rooms, p2.messages, ok ? 1 : 0);
  return ok ? 0 : 1;
}

// Publish throughput (see the header): POSTs answered 201 per second while every connection
// always has kWindow of them waiting, which is how a busy node's clients would load it.
int publish_mode(const Options& opt) {
  constexpr int kWindow = 32;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<Publisher> pubs;
  for (int j = 0; j < opt.publishers; ++j) {
    pubs.emplace_back(opt.ports[static_cast<size_t>(j) % opt.ports.size()]);
    if (pubs.back().fd() < 0) {
      std::fprintf(stderr, "connect failed: %s\n", strerror(errno));
      return 2;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(j);
    epoll_ctl(ep, EPOLL_CTL_ADD, pubs.back().fd(), &ev);
  }
  auto in_flight = [&] {
    int n = 0;
    for (auto& p : pubs) n += p.in_flight();
    return n;
  };
  double cpu_before = cpu_seconds(opt.server_pids);
  double aux_before = opt.aux_pid ? proc_cpu_seconds(opt.aux_pid) : 0;
  int64_t start = now_ns();
  int64_t stop = start + static_cast<int64_t>(opt.publish_seconds * 1e9);
  int seq = 0;
  bool failed = false;
  epoll_event events[64];
  while (!failed && (now_ns() < stop || in_flight() > 0)) {
    for (auto& p : pubs)
      while (p.in_flight() < kWindow && now_ns() < stop && p.send(seq)) ++seq;
    int n = epoll_wait(ep, events, 64, 5000);
    failed = n <= 0;  // nothing answered for 5 s
    for (int k = 0; k < n; ++k) {
      Publisher& p = pubs[events[k].data.u32];
      p.on_readable();
      failed = failed || p.failed();
    }
  }
  double elapsed = static_cast<double>(now_ns() - start) / 1e9;
  double cpu = cpu_seconds(opt.server_pids) - cpu_before;
  double aux = opt.aux_pid ? proc_cpu_seconds(opt.aux_pid) - aux_before : 0;
  long created = 0;
  for (auto& p : pubs) created += p.created();
  std::printf(
      "publishers=%d sent=%d published=%ld elapsed_s=%.3f publish_per_s=%.0f server_cpu_s=%.3f "
      "cpu_us_per_publish=%.3f aux_cpu_s=%.3f failed=%d\n",
      opt.publishers, seq, created, elapsed, static_cast<double>(created) / elapsed, cpu,
      created ? cpu * 1e6 / static_cast<double>(created) : 0.0, aux, failed ? 1 : 0);
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse(argc, argv);
  if (opt.memory_rooms > 0 || opt.memory_messages > 0) return memory_mode(opt);
  if (opt.publish_seconds > 0) return publish_mode(opt);
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);

  // With rooms, subscriber i reads room i mod R and message k goes to room k mod R: a message is
  // expected once by each subscriber of its room.
  std::vector<long> room_subscribers(static_cast<size_t>(std::max(opt.rooms, 1)), 0);
  for (int i = 0; i < opt.subscribers; ++i)
    ++room_subscribers[static_cast<size_t>(opt.rooms > 0 ? i % opt.rooms : 0)];
  long expected = 0;
  for (int k = 0; k < opt.messages; ++k)
    expected += room_subscribers[static_cast<size_t>(opt.rooms > 0 ? k % opt.rooms : 0)];

  int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<Subscriber> subs(static_cast<size_t>(opt.subscribers));
  Stats st;
  st.latencies_ns.reserve(static_cast<size_t>(expected));
  long rss_before = rss_kib(opt.server_pids);
  auto port_of = [&](int i) { return opt.ports[static_cast<size_t>(i) % opt.ports.size()]; };

  // Connect in waves, each wave waiting for its 200 heads, so the listener's backlog never drops.
  int64_t connect_start = now_ns();
  auto subscribe_request = [&](int i) {
    std::string path = opt.path;
    if (opt.rooms > 0)
      path +=
          (path.find('?') == std::string::npos ? "?room=" : "&room=") + room_name(i % opt.rooms);
    return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n";
  };
  epoll_event events[1024];
  for (int base = 0; base < opt.subscribers; base += opt.wave) {
    int end = std::min(opt.subscribers, base + opt.wave);
    for (int i = base; i < end; ++i) {
      Subscriber& s = subs[static_cast<size_t>(i)];
      std::string req = subscribe_request(i);
      s.seen.assign(static_cast<size_t>(opt.messages), 0);
      s.fd = connect_to(port_of(i));
      if (s.fd < 0 || ::write(s.fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
        std::fprintf(stderr, "connect failed at subscriber %d: %s\n", i, strerror(errno));
        return 2;
      }
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u32 = static_cast<uint32_t>(i);
      epoll_ctl(ep, EPOLL_CTL_ADD, s.fd, &ev);
    }
    int pending = end - base;
    while (pending > 0) {
      int n = epoll_wait(ep, events, 1024, 10000);
      if (n <= 0) {
        std::fprintf(stderr, "timed out waiting for stream heads\n");
        return 2;
      }
      for (int k = 0; k < n; ++k) {
        Subscriber& s = subs[events[k].data.u32];
        char tmp[8192];
        ssize_t r = ::read(s.fd, tmp, sizeof tmp);
        if (r <= 0) {
          std::fprintf(stderr, "a subscriber was closed while connecting\n");
          return 2;
        }
        s.buf.append(tmp, static_cast<size_t>(r));
        if (!s.head_done && read_head(s)) --pending;
      }
    }
  }
  double connect_s = static_cast<double>(now_ns() - connect_start) / 1e9;
  for (auto& s : subs) s.buf.clear();  // drop the retry/presence lines that came with the head

  // Slow readers that pipeline: each asks for the whole history 16 times and never reads a byte.
  std::vector<int> hostile;
  std::string ask;
  for (int i = 0; i < 16; ++i)
    ask += "GET /messages?since=0&limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n";
  for (int i = 0; i < opt.hostile; ++i) {
    int fd = connect_to(port_of(i));
    int small = 4096;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    if (fd < 0 || ::write(fd, ask.data(), ask.size()) != static_cast<ssize_t>(ask.size())) {
      std::fprintf(stderr, "hostile connection %d failed: %s\n", i, strerror(errno));
      return 2;
    }
    hostile.push_back(fd);
  }
  if (opt.hostile > 0) sleep(1);  // let the server take all their requests in

  if (opt.idle_seconds > 0) {
    sleep(static_cast<unsigned>(opt.idle_seconds));
    long rss_after = rss_kib(opt.server_pids);
    std::printf("subscribers=%d connect_s=%.3f rss_per_sub_kib=%.3f\n", opt.subscribers, connect_s,
                static_cast<double>(rss_after - rss_before) / opt.subscribers);
    return 0;
  }

  // One publisher per port; message k goes out through publisher k mod P. Publisher j's events
  // carry the tag UINT32_MAX - j, above every subscriber's index.
  std::vector<Publisher> pubs;
  for (uint16_t port : opt.ports) {
    pubs.emplace_back(port);
    epoll_event pev{};
    pev.events = EPOLLIN;
    pev.data.u32 = UINT32_MAX - static_cast<uint32_t>(pubs.size() - 1);
    epoll_ctl(ep, EPOLL_CTL_ADD, pubs.back().fd(), &pev);
  }
  const uint32_t first_publisher_tag = UINT32_MAX - static_cast<uint32_t>(pubs.size() - 1);
  auto publisher_failed = [&] {
    return std::any_of(pubs.begin(), pubs.end(), [](const Publisher& p) { return p.failed(); });
  };
  const int window = opt.rate > 0 ? 64 : 32;

  double cpu_before = cpu_seconds(opt.server_pids);
  double aux_before = opt.aux_pid ? proc_cpu_seconds(opt.aux_pid) : 0;
  long writes_before = write_calls(opt.server_pids);
  int64_t start = now_ns();
  int64_t interval = opt.rate > 0 ? static_cast<int64_t>(1e9 / opt.rate) : 0;
  int sent = 0;
  int64_t last_progress = now_ns();
  long last_deliveries = 0;
  while (st.deliveries + st.duplicates < expected && !publisher_failed()) {
    while (sent < opt.messages && now_ns() >= start + sent * interval) {
      Publisher& pub = pubs[static_cast<size_t>(sent) % pubs.size()];
      if (pub.in_flight() >= window ||
          !pub.send(sent, opt.rooms > 0 ? room_name(sent % opt.rooms) : std::string()))
        break;
      ++sent;
    }
    int64_t timeout_ns = 100000000;
    if (sent < opt.messages && interval > 0) {
      int64_t due = start + sent * interval - now_ns();
      timeout_ns = std::max<int64_t>(due, 0);
    } else if (sent < opt.messages) {
      timeout_ns =
          pubs[static_cast<size_t>(sent) % pubs.size()].in_flight() < window ? 0 : 100000000;
    }
    timespec timeout{timeout_ns / 1000000000, timeout_ns % 1000000000};
    int n = epoll_pwait2(ep, events, 1024, &timeout, nullptr);
    int64_t t = now_ns();
    for (int k = 0; k < n; ++k) {
      if (events[k].data.u32 >= first_publisher_tag) {
        pubs[UINT32_MAX - events[k].data.u32].on_readable();
        continue;
      }
      Subscriber& s = subs[events[k].data.u32];
      char tmp[65536];
      ssize_t r = ::read(s.fd, tmp, sizeof tmp);
      if (r <= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, s.fd, nullptr);
        continue;
      }
      s.buf.append(tmp, static_cast<size_t>(r));
      consume_events(s, st, t);
    }
    if (st.deliveries != last_deliveries) {
      last_deliveries = st.deliveries;
      last_progress = t;
    } else if (sent == opt.messages && t - last_progress > 5000000000LL) {
      break;  // nothing for 5 s after the last message: the rest is missing
    }
  }
  bool publish_ok = !publisher_failed() && sent == opt.messages;
  double elapsed = static_cast<double>(now_ns() - start) / 1e9;
  double cpu = cpu_seconds(opt.server_pids) - cpu_before;
  double aux = opt.aux_pid ? proc_cpu_seconds(opt.aux_pid) - aux_before : 0;
  long writes = write_calls(opt.server_pids) - writes_before;
  long missing = expected - st.deliveries;
  std::printf(
      "subscribers=%d messages=%d sent=%d deliveries=%ld missing=%ld duplicates=%ld elapsed_s=%.3f "
      "deliveries_per_s=%.0f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f connect_s=%.3f "
      "server_cpu_s=%.3f cpu_us_per_delivery=%.3f hostile=%zu rooms=%d nodes=%zu aux_cpu_s=%.3f "
      "aux_cpu_us_per_delivery=%.3f server_write_calls=%ld\n",
      opt.subscribers, opt.messages, sent, st.deliveries, missing, st.duplicates, elapsed,
      static_cast<double>(st.deliveries) / elapsed, percentile(st.latencies_ns, 0.50),
      percentile(st.latencies_ns, 0.90), percentile(st.latencies_ns, 0.99),
      percentile(st.latencies_ns, 1.0), connect_s, cpu,
      st.deliveries ? cpu * 1e6 / static_cast<double>(st.deliveries) : 0.0, hostile.size(),
      opt.rooms, opt.ports.size(), aux,
      st.deliveries ? aux * 1e6 / static_cast<double>(st.deliveries) : 0.0, writes);
  return (missing != 0 || st.duplicates != 0 || !publish_ok) ? 1 : 0;
}
