#include "json_numbers.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "ascii.h"

namespace sse::json {
namespace {

// Whether `s` is one JSON number (RFC 8259's grammar), nothing before or after it.
bool is_json_number(std::string_view s) {
  size_t i = 0;
  auto digits = [&] {
    size_t from = i;
    while (i < s.size() && ascii::is_digit(s[i])) ++i;
    return i > from;
  };
  if (i < s.size() && s[i] == '-') ++i;
  if (i < s.size() && s[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < s.size() && s[i] == '.' && (++i, !digits())) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == s.size();
}

bool is_number_char(char c) {
  return ascii::is_digit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

// Integers within 64 bits (signed, or unsigned when positive) and finite doubles.
bool simdjson_reads(std::string_view number) {
  if (number.find_first_of(".eE") != std::string_view::npos)
    return std::isfinite(std::strtod(std::string(number).c_str(), nullptr));
  const char* end = number.data() + number.size();
  if (number.front() == '-') {
    int64_t v;
    return std::from_chars(number.data(), end, v).ec == std::errc{};
  }
  uint64_t v;
  return std::from_chars(number.data(), end, v).ec == std::errc{};
}

// What an unreadable number becomes: the largest double of its sign, so that a claim read as a
// time (exp, nbf) keeps its meaning (far in the future or past). Any such number has at least as
// many characters ("2e308", 20 digits beyond 64 bits), padded with spaces so offsets stay.
std::string stand_in(std::string_view number) {
  std::string_view largest = number.front() == '-' ? "-1e308" : "1e308";
  if (number.size() < largest.size()) return "0" + std::string(number.size() - 1, ' ');
  return std::string(largest) + std::string(number.size() - largest.size(), ' ');
}

}  // namespace

std::string tame_unreadable_numbers(std::string_view text) {
  std::string out(text);
  bool in_string = false;
  char before = ',';  // the last character outside strings that is not whitespace
  for (size_t i = 0; i < out.size(); ++i) {
    char c = out[i];
    if (in_string) {
      if (c == '\\') ++i;
      if (c == '"') in_string = false;
      continue;
    }
    if (c == '-' || ascii::is_digit(c)) {
      size_t end = i;
      while (end < out.size() && is_number_char(out[end])) ++end;
      std::string_view run(out.data() + i, end - i);
      if ((before == ',' || before == ':' || before == '[') && is_json_number(run) &&
          !simdjson_reads(run))
        out.replace(i, run.size(), stand_in(run));
      i = end - 1;
    } else if (c == '"') {
      in_string = true;
    }
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') before = c;
  }
  return out;
}

}  // namespace sse::json
