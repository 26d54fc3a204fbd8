// ASCII helpers for HTTP tokens: header names and media types compare case-insensitively, and
// optional whitespace (spaces and tabs) surrounds list elements and parameters.
#pragma once

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace sse::ascii {

inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Whether `needle` occurs in `hay`, case aside (a media type in an Accept list).
inline bool icontains(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size()) return false;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i)
    if (iequals(hay.substr(i, needle.size()), needle)) return true;
  return false;
}

inline bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Strips spaces and tabs from both ends.
inline std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Takes the next element of a `separator`-delimited list (a header's parameters, cookies, hops)
// off the front of `list`, without the whitespace around it. With `quoted_strings` (RFC 9110
// 5.6.4: a media type's parameters) a separator inside a quoted string, escapes and all, is not
// one. Cookies are split as browsers split them, and forwarding hops as proxies append them (a
// client's unbalanced quote must not swallow the hops its proxies add), at every separator.
inline std::string_view take_element(std::string_view& list, char separator,
                                     bool quoted_strings = false) {
  size_t end = 0;
  bool quoted = false;
  for (; end < list.size(); ++end) {
    char c = list[end];
    if (c == separator && !quoted) break;
    if (!quoted_strings) continue;
    if (c == '"') quoted = !quoted;
    if (c == '\\' && quoted) ++end;  // the escaped character, whatever it is
  }
  end = std::min(end, list.size());
  std::string_view element = trim_ows(list.substr(0, end));
  list = end >= list.size() ? std::string_view{} : list.substr(end + 1);
  return element;
}

// A value without the double quotes around it, if it has them (no escapes are undone).
inline std::string_view unquote(std::string_view value) {
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
    return value.substr(1, value.size() - 2);
  return value;
}

// As unquote, with the escapes of a quoted string undone ("utf\\-8" is utf-8).
inline std::string unquote_escaped(std::string_view value) {
  std::string_view inner = unquote(value);
  if (inner.size() == value.size()) return std::string(value);
  std::string out;
  for (size_t i = 0; i < inner.size(); ++i) {
    if (inner[i] == '\\' && i + 1 < inner.size()) ++i;
    out.push_back(inner[i]);
  }
  return out;
}

}  // namespace sse::ascii
