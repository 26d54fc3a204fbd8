// Decoding and validating the body of POST /messages (JSON through simdjson, or a urlencoded form).
// Pure functions: no sockets, no room.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace sse {

struct ChatInput {
  std::string user;   // trimmed, 1..32 code points, no control characters
  std::string text;   // trimmed, 1..2000 code points, no control characters but \n and \t
  std::string nonce;  // optional, <= 64 characters, for idempotent retries
  std::string room;   // a valid room name (room_name.h); "general" when the body names none
};

struct Rejection {
  int status;          // 400 or 415
  std::string reason;  // for a person: "text must be at most 2000 characters"
};

inline constexpr size_t kMaxUserChars = 32;
inline constexpr size_t kMaxTextChars = 2000;
inline constexpr size_t kMaxNonceChars = 64;

using PostResult = std::variant<ChatInput, Rejection>;

// `content_type` is the raw header value (parameters such as charset are allowed). With an
// `author` (a signed token's name) the body's "user" is neither needed nor believed.
// The 415 a POST gets for `content_type`, known before its body is read; nullopt when it is JSON
// or a form.
std::optional<Rejection> unsupported_media_type(std::string_view content_type);

// `query_room`: the room the request's query string names (POST /messages?room=R), taken when
// the body names none; a body naming another one is refused.
PostResult decode_post(std::string_view content_type, std::string_view body,
                       std::optional<std::string_view> author = std::nullopt,
                       std::optional<std::string_view> query_room = std::nullopt);

// Checks a user name (as a message's "user": 1..max_chars code points, no control characters) and
// trims it in place; the reason when it is not one.
std::optional<std::string> check_user(std::string& user, size_t max_chars = kMaxUserChars);

// Validates and normalises fields already decoded (trims, CRLF -> LF).
PostResult validate(std::string user, std::string text, std::string nonce);

}  // namespace sse
