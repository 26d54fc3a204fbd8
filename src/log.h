// One line per event on stderr as "level=info msg=... key=value" (journald adds the time).
#pragma once

#include <chrono>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

namespace sse::log {

enum class Level { Debug, Info, Warn, Error };

void set_level(std::string_view name);
bool enabled(Level level);
void write_line(Level level, const std::string& line);

// Sends the log to `path` instead of stderr (empty: stderr). File lines start with time=.
bool set_file(const std::string& path, std::string& error);
// Enables the access log, one line per answered request, at `path` ("-": stderr).
bool set_access_file(const std::string& path, std::string& error);
bool access_enabled();
void access(const std::string& line);
// SIGHUP: reopens both files, so logrotate can move them away.
void reopen_files();

// Quotes a value that contains spaces, quotes or '=' (logfmt).
std::string quote(std::string_view value);

template <typename V>
void append_value(std::ostringstream& os, const V& v) {
  if constexpr (std::is_convertible_v<const V&, std::string_view>) {
    os << quote(std::string_view(v));
  } else {
    os << v;
  }
}

inline void append_pairs(std::ostringstream&) {}

template <typename K, typename V, typename... Rest>
void append_pairs(std::ostringstream& os, const K& key, const V& value, const Rest&... rest) {
  os << ' ' << key << '=';
  append_value(os, value);
  append_pairs(os, rest...);
}

template <typename... KV>
void emit(Level level, std::string_view msg, const KV&... kv) {
  if (!enabled(level)) return;
  static constexpr const char* kNames[] = {"debug", "info", "warn", "error"};
  std::ostringstream os;
  os << "level=" << kNames[static_cast<int>(level)] << " msg=" << quote(msg);
  append_pairs(os, kv...);
  write_line(level, os.str());
}

// At most one line a `period` for something a client can make happen again and again: the times
// in between are counted, and the next line says how many there were.
class Throttle {
 public:
  explicit Throttle(std::chrono::seconds period) : period_(period) {}
  // True when a line may be written now; times() is then how many it stands for (itself included).
  bool allow() {
    auto now = std::chrono::steady_clock::now();
    ++pending_;
    if (written_ && now - last_ < period_) return false;
    written_ = true;
    last_ = now;
    times_ = std::exchange(pending_, 0);
    return true;
  }
  uint64_t times() const { return times_; }

 private:
  std::chrono::seconds period_;
  std::chrono::steady_clock::time_point last_{};
  bool written_ = false;
  uint64_t pending_ = 0, times_ = 0;
};

template <typename... KV>
void debug(std::string_view msg, const KV&... kv) {
  emit(Level::Debug, msg, kv...);
}
template <typename... KV>
void info(std::string_view msg, const KV&... kv) {
  emit(Level::Info, msg, kv...);
}
template <typename... KV>
void warn(std::string_view msg, const KV&... kv) {
  emit(Level::Warn, msg, kv...);
}
template <typename... KV>
void error(std::string_view msg, const KV&... kv) {
  emit(Level::Error, msg, kv...);
}

}  // namespace sse::log
