// base64url without padding (RFC 4648 §5), the encoding of a JWT's three parts.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sse::base64url {

std::string encode(std::string_view bytes);
// nullopt for any character outside the alphabet, padding, or an impossible length.
std::optional<std::string> decode(std::string_view text);

}  // namespace sse::base64url
