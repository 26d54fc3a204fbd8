// application/x-www-form-urlencoded and URL percent-decoding.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sse::form {

// Decodes %XX escapes (and '+' as space when `plus_is_space`); nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space);

using Pairs = std::vector<std::pair<std::string, std::string>>;

// Splits "a=1&b=2" into decoded pairs; nullopt if any part is malformed.
std::optional<Pairs> parse(std::string_view body);

// The decoded value of `key` in a query string ("a=1&b=2"), if present and well-formed.
std::optional<std::string> query_value(std::string_view query, std::string_view key);
// The first value of `key` among pairs parse() gave.
std::optional<std::string> query_value(const Pairs& pairs, std::string_view key);

}  // namespace sse::form
