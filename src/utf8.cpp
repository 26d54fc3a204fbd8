#include "utf8.h"

namespace sse::utf8 {
namespace {

size_t sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;  // continuation byte, overlong lead (C0, C1) or past U+10FFFF (F5..FF)
}

bool is_continuation(unsigned char c) {
  return (c & 0xC0) == 0x80;
}

bool is_space(char32_t c) {
  switch (c) {
    case ' ':
    case '\t':
    case '\n':
    case '\r':
    case '\f':
    case '\v':
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
    case 0xFEFF:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

}  // namespace

char32_t decode(std::string_view s, size_t& i) {
  auto lead = static_cast<unsigned char>(s[i]);
  size_t len = sequence_length(lead);
  if (len <= 1) {
    ++i;
    return lead;
  }
  char32_t cp = lead & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

bool is_valid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto lead = static_cast<unsigned char>(s[i]);
    size_t len = sequence_length(lead);
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k)
      if (!is_continuation(static_cast<unsigned char>(s[i + k]))) return false;
    if (len >= 3) {
      auto second = static_cast<unsigned char>(s[i + 1]);
      if (lead == 0xE0 && second < 0xA0) return false;  // overlong 3-byte
      if (lead == 0xED && second > 0x9F) return false;  // UTF-16 surrogates
      if (lead == 0xF0 && second < 0x90) return false;  // overlong 4-byte
      if (lead == 0xF4 && second > 0x8F) return false;  // past U+10FFFF
    }
    i += len;
  }
  return true;
}

size_t count_code_points(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += !is_continuation(static_cast<unsigned char>(c));
  return n;
}

std::string_view trim(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    size_t next = begin;
    if (!is_space(decode(s, next))) break;
    begin = next;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && is_continuation(static_cast<unsigned char>(s[start]))) --start;
    size_t probe = start;
    if (!is_space(decode(s, probe))) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

std::string from_latin1(std::string_view s) {
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

}  // namespace sse::utf8
