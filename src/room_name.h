// Room names: 1-64 characters of lowercase a-z, 0-9, '-', '_' and '.', so a name is safe in a URL
// fragment, a query string, a log line and a metric without escaping. A request that names no
// room means kDefaultRoom.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sse {

inline constexpr std::string_view kDefaultRoom = "general";
inline constexpr size_t kMaxRoomNameChars = 64;

// Why `name` is not a room name (for a 400), or nullopt when it is one.
inline std::optional<std::string> room_name_error(std::string_view name) {
  if (name.empty()) return "room must not be empty";
  if (name.size() > kMaxRoomNameChars) return "room must be at most 64 characters";
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return "room may only contain lowercase letters a-z, digits, '-', '_' and '.'";
  }
  return std::nullopt;
}

}  // namespace sse
