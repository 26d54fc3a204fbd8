// Numbers that JSON allows and simdjson refuses (beyond 64 bits, or a double's range).
#pragma once

#include <string>
#include <string_view>

namespace sse::json {

// `text` with every such number written as ±1e308 (padded with spaces, so offsets stay), for a
// second parse when the first failed. Only a well-formed number where a value starts is replaced,
// and only one simdjson cannot read: anything else stays as it was. One pass: each run of number
// characters is looked at once.
std::string tame_unreadable_numbers(std::string_view text);

}  // namespace sse::json
