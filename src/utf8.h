// UTF-8 checks used by validation: strict decoding (no overlongs, surrogates or values past
// U+10FFFF), code point counting and whitespace trimming.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace sse::utf8 {

bool is_valid(std::string_view s);

// Number of code points; `s` must be valid UTF-8.
size_t count_code_points(std::string_view s);

// Strips ASCII whitespace and the common Unicode spaces (NBSP, U+2000..U+200A, U+3000 ...) from
// both ends; `s` must be valid UTF-8.
std::string_view trim(std::string_view s);

// Decodes the code point starting at s[i] and advances i; `s` must be valid UTF-8.
char32_t decode(std::string_view s, size_t& i);

// ISO-8859-1 bytes as UTF-8: each byte is the code point of the same value.
std::string from_latin1(std::string_view s);

}  // namespace sse::utf8
