#include "log.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

namespace sse::log {
namespace {

Level g_level = Level::Info;

// An open log file, closed once its log is reopened and no line is being written to it (the
// writer thread may be in the middle of one).
struct OutFile {
  int fd;
  bool regular;  // a file on disk (else a pipe, socket or terminal, which a reader drains)
  explicit OutFile(int fd) : fd(fd) {
    struct stat st;
    regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  }
  ~OutFile() {
    if (fd != STDERR_FILENO) ::close(fd);
  }
  // Whether `bytes` can be written now without waiting for a reader: a pipe to journald that
  // nobody drains must not hold up the event loop. (A file on disk is written at once, as the
  // journal is.)
  bool takes_now(size_t bytes) const {
    if (regular) return true;
    pollfd p{fd, POLLOUT, 0};
    return bytes <= PIPE_BUF && ::poll(&p, 1, 0) == 1 && p.revents == POLLOUT;
  }
};
using OutFileRef = std::shared_ptr<const OutFile>;

// A line as its destination gets it: a file needs its own time (journald stamps stderr).
std::string with_newline_and_time(const OutFile& file, std::string_view line) {
  std::string out;
  if (file.fd != STDERR_FILENO) {
    char stamp[40];
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tm utc;
    gmtime_r(&ts.tv_sec, &utc);
    size_t n = strftime(stamp, sizeof stamp, "time=%Y-%m-%dT%H:%M:%S", &utc);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ ", ts.tv_nsec / 1000000);
    out = stamp;
  }
  out += line;
  out += '\n';
  return out;
}

enum SinkId { kMainLog, kAccessLog, kSinks };

// A line is written at once when its destination takes it and none of its lines wait; otherwise
// it waits for a thread of its own, so that a reader that stops reading holds up its log, never
// the event loop nor the other log. At most kMaxPending bytes wait in all; past that a log's lines
// are dropped, and its next line that fits says how many. Waiting lines go to their log's file
// as it is when they are written (a reopen leaves no old descriptor held by them).
class Writer {
 public:
  static constexpr size_t kMaxPending = 1 << 20;

  void set_file(SinkId sink, OutFileRef file) {
    std::lock_guard lock(mutex_);
    dests_[sink].file = std::move(file);
  }

  void push(SinkId sink, std::string_view line) {
    std::lock_guard lock(mutex_);
    Dest& d = dests_[sink];
    std::string text = with_newline_and_time(*d.file, line);
    if (d.waiting == 0 && d.dropped == 0 && writing_ != sink && d.file->takes_now(text.size()))
      return write_line(*d.file, text);
    if (pending_bytes_ + text.size() > kMaxPending || !start()) {
      ++d.dropped;
      return;
    }
    if (d.dropped > 0) {
      queue(sink,
            with_newline_and_time(*d.file,
                                  "level=warn msg=\"log lines dropped: the log was not read fast "
                                  "enough\" count=" +
                                      std::to_string(std::exchange(d.dropped, 0))));
    }
    queue(sink, std::move(text));
    ready_.notify_one();
  }

  // At exit: waits for what is pending to be written, a while at most (a reader that never
  // comes back must not keep the process from ending).
  void drain(std::chrono::milliseconds at_most) {
    std::unique_lock lock(mutex_);
    drained_.wait_for(lock, at_most, [this] { return pending_.empty() && writing_ == kSinks; });
  }

 private:
  struct Dest {
    OutFileRef file = std::make_shared<const OutFile>(STDERR_FILENO);
    size_t waiting = 0;  // its lines in pending_
    uint64_t dropped = 0;
  };
  struct Line {
    SinkId sink;
    std::string text;
  };

  static void write_line(const OutFile& file, const std::string& text) {
    // One write per line so lines never interleave with another writer's.
    ssize_t ignored = ::write(file.fd, text.data(), text.size());
    (void)ignored;
  }

  void queue(SinkId sink, std::string text) {
    pending_bytes_ += text.size();
    ++dests_[sink].waiting;
    pending_.push_back({sink, std::move(text)});
  }

  // With every signal blocked: the loop takes SIGTERM and SIGHUP through its signalfd, which a
  // thread that let them through would take instead (and die of). False when no thread can be
  // made (a tasks limit): lines that would wait are dropped.
  bool start() {
    if (thread_.joinable()) return true;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
      thread_ = std::thread([this] { run(); });
    } catch (const std::system_error&) {
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return thread_.joinable();
  }

  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      ready_.wait(lock, [this] { return !pending_.empty(); });
      Line line = std::move(pending_.front());
      pending_.pop_front();
      writing_ = line.sink;
      OutFileRef file = dests_[line.sink].file;
      lock.unlock();
      write_line(*file, line.text);
      file.reset();  // a file reopened meanwhile is closed here, off the loop
      lock.lock();
      writing_ = kSinks;
      --dests_[line.sink].waiting;
      pending_bytes_ -= line.text.size();
      if (pending_.empty()) drained_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_, drained_;
  Dest dests_[kSinks];
  std::deque<Line> pending_;
  size_t pending_bytes_ = 0;
  SinkId writing_ = kSinks;  // the log whose line the thread writes (kSinks: none)
  std::thread thread_;
};

// Never destroyed: its thread may still be waiting for a reader when the process ends.
Writer& g_writer = *new Writer;

struct DrainAtExit {
  ~DrainAtExit() { g_writer.drain(std::chrono::seconds(2)); }
} g_drain_at_exit;

// A log destination: stderr, or a file that SIGHUP reopens.
struct Sink {
  SinkId id;
  std::string path;  // empty: stderr
  bool enabled = true;

  bool open(std::string& error) {
    if (path.empty() || path == "-") {
      g_writer.set_file(id, std::make_shared<const OutFile>(STDERR_FILENO));
      return true;
    }
    // Without O_NONBLOCK, a FIFO nobody reads would hold the loop in open() for good.
    int fresh = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0640);
    if (fresh < 0) {
      error = "cannot open " + path + ": " + strerror(errno);
      return false;
    }
    ::fcntl(fresh, F_SETFL, O_APPEND);  // the writer thread may wait for a slow reader
    g_writer.set_file(id, std::make_shared<const OutFile>(fresh));
    return true;
  }

  void write(const std::string& line) const { g_writer.push(id, line); }
};

Sink g_main{kMainLog, ""};
Sink g_access{kAccessLog, "", false};

}  // namespace

bool set_file(const std::string& path, std::string& error) {
  g_main.path = path;
  return g_main.open(error);
}

bool set_access_file(const std::string& path, std::string& error) {
  g_access.path = path;
  g_access.enabled = !path.empty();
  return !g_access.enabled || g_access.open(error);
}

bool access_enabled() {
  return g_access.enabled;
}

void access(const std::string& line) {
  if (g_access.enabled) g_access.write(line);
}

void reopen_files() {
  std::string error;
  if (!g_main.open(error))
    write_line(Level::Error, "level=error msg=\"cannot reopen log\" error=" + quote(error));
  if (g_access.enabled && !g_access.open(error))
    write_line(Level::Error, "level=error msg=\"cannot reopen access log\" error=" + quote(error));
}

void set_level(std::string_view name) {
  if (name == "debug")
    g_level = Level::Debug;
  else if (name == "warn")
    g_level = Level::Warn;
  else if (name == "error")
    g_level = Level::Error;
  else
    g_level = Level::Info;
}

bool enabled(Level level) {
  return level >= g_level;
}

void write_line(Level, const std::string& line) {
  g_main.write(line);
}

std::string quote(std::string_view value) {
  bool needs = value.empty() || value.find_first_of(" \"=\t\n") != std::string_view::npos;
  if (!needs) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace sse::log
