#include "log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace sse::log {
namespace {

Level g_level = Level::Info;

// A log destination: stderr, or a file that SIGHUP reopens.
struct Sink {
  std::string path;  // empty: stderr
  int fd = STDERR_FILENO;
  bool enabled = true;

  bool open(std::string& error) {
    if (path.empty() || path == "-") {
      fd = STDERR_FILENO;
      return true;
    }
    int fresh = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fresh < 0) {
      error = "cannot open " + path + ": " + strerror(errno);
      return false;
    }
    if (fd != STDERR_FILENO) ::close(fd);
    fd = fresh;
    return true;
  }

  void write(const std::string& line) const {
    std::string out;
    if (fd != STDERR_FILENO) {  // journald stamps stderr; a file needs its own time
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
    // One write per line so lines never interleave with another writer's.
    ssize_t ignored = ::write(fd, out.data(), out.size());
    (void)ignored;
  }
};

Sink g_main;
Sink g_access{"", STDERR_FILENO, false};

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
