// JSON output encoding. Input JSON is parsed by simdjson (message.cpp); this is only the writer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sse::json {

// Appends `s` as a quoted JSON string. Escapes quotes, backslashes, every control character
// (C0, DEL, C1) and U+2028/U+2029, which JavaScript source and some JSON consumers treat as line
// breaks. `s` must be valid UTF-8.
void append_string(std::string& out, std::string_view s);

void append_uint(std::string& out, uint64_t v);

// {"error":"<reason>"}
std::string error_body(std::string_view reason);

}  // namespace sse::json
