// ASCII helpers for HTTP tokens: header names and media types compare case-insensitively, and
// optional whitespace (spaces and tabs) surrounds list elements and parameters.
#pragma once

#include <algorithm>
#include <cctype>
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
// off the front of `list`, without the whitespace around it.
inline std::string_view take_element(std::string_view& list, char separator) {
  size_t end = list.find(separator);
  std::string_view element = trim_ows(list.substr(0, end));
  list = end == std::string_view::npos ? std::string_view{} : list.substr(end + 1);
  return element;
}

// A value without the double quotes around it, if it has them (no escapes are undone).
inline std::string_view unquote(std::string_view value) {
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
    return value.substr(1, value.size() - 2);
  return value;
}

}  // namespace sse::ascii
