#include "log.h"

#include <unistd.h>

namespace sse::log {
namespace {
Level g_level = Level::Info;
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
  std::string out = line + "\n";
  // One write per line so lines from a crash or a concurrent reader never interleave.
  ssize_t ignored = ::write(STDERR_FILENO, out.data(), out.size());
  (void)ignored;
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
