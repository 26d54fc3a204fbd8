// Who may read and post where, when signed tokens are on (--jwt-key). A token (a JWT checked by
// jwt.h) names its bearer (`sub`, `name`) and its rooms (`rooms`: read and post, `read`: read
// only; an entry is a room name, a prefix ending in `*`, or `*` for every room). Rooms named by
// --public-rooms may be read by anyone. With tokens off everyone may do everything: today's open
// chat.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config.h"
#include "jwt.h"

namespace sse {

// A list of room patterns: "team-a" (that room), "team-*" (every room starting "team-"), "*".
class RoomPatterns {
 public:
  static constexpr size_t kMaxPatterns = 256;
  // Why `pattern` is not one, or nullopt.
  static std::optional<std::string> error(std::string_view pattern);
  // Adds `pattern`; the reason when it is not one (or the list is full).
  std::optional<std::string> add(std::string_view pattern);
  bool matches(std::string_view room) const;
  const std::vector<std::string>& list() const { return patterns_; }

 private:
  std::vector<std::string> patterns_;
};

// The bearer of a valid token.
struct Identity {
  std::string subject;  // sub
  std::string name;     // its messages' author and its presence name: the `name` claim, else sub
  RoomPatterns rooms;   // may read and post
  RoomPatterns read;    // may read only
  int64_t expires_s = 0;
  uint64_t key_id = 0;  // the key that verified the token (jwt::Key::id)

  bool may_read(std::string_view room) const { return rooms.matches(room) || read.matches(room); }
  bool may_post(std::string_view room) const { return rooms.matches(room); }
};

// What a request's token says: none, a valid bearer, or why it is refused.
struct Authentication {
  enum Kind { Anonymous, Valid, Invalid } kind = Anonymous;
  Identity identity;   // Valid
  std::string reason;  // Invalid: for the 401 ("token expired")
  const Identity* who() const { return kind == Valid ? &identity : nullptr; }
};

inline constexpr std::string_view kTokenCookie = "sse_chat_token";
inline constexpr size_t kMaxTokenNameChars = 64;
inline constexpr size_t kMaxSubjectBytes = 256;

class Access {
 public:
  // Loads --jwt-key for --jwt-alg and reads --public-rooms; false with `error` when they do not.
  bool configure(const Config& config, std::string& error);
  bool enabled() const { return !keys_.empty(); }
  // SIGHUP: reads the key files again (rotation). False + `error`, keeping the keys in use, when
  // any of them no longer loads.
  bool reload_keys(const Config& config, std::string& error);
  size_t key_count() const { return keys_.size(); }
  // Whether tokens verified by key `id` are still accepted.
  bool has_key(uint64_t id) const;

  // The token of a request: `Authorization: Bearer T`, else the sse_chat_token cookie (never the
  // URL), checked at `now_s` (Unix seconds).
  Authentication authenticate(std::string_view authorization, std::string_view cookie,
                              int64_t now_s) const;
  Authentication check_token(std::string_view token, int64_t now_s) const;

  bool is_public(std::string_view room) const { return public_rooms_.matches(room); }
  bool may_read(const Identity* who, std::string_view room) const {
    return !enabled() || is_public(room) || (who && who->may_read(room));
  }
  bool may_post(const Identity* who, std::string_view room) const {
    return !enabled() || (who && who->may_post(room));
  }
  const RoomPatterns& public_rooms() const { return public_rooms_; }

 private:
  static std::optional<std::string> read_bearer(const simdjson::dom::object& claims, Identity& id);
  static std::optional<std::string> read_lifetime(const simdjson::dom::object& claims,
                                                  int64_t now_s, Identity& id);
  std::optional<std::string> check_issuer_and_audience(const simdjson::dom::object& claims) const;
  jwt::Checked verify(std::string_view token, uint64_t& key_id) const;

  std::vector<std::unique_ptr<jwt::Key>> keys_;
  std::string issuer_;
  std::string audience_;
  RoomPatterns public_rooms_;
};

// What an Authorization header says when its scheme is Bearer (any case, RFC 9110 11.1): the
// token ("" when there is none), or nullopt for another scheme or no header.
std::optional<std::string_view> bearer_token(std::string_view authorization);

// The first non-empty value of cookie `name` in a Cookie header ("" when absent).
std::string_view cookie_value(std::string_view header, std::string_view name);

}  // namespace sse
