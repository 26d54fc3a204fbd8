#include "access.h"

#include <simdjson.h>

#include <algorithm>

#include "ascii.h"
#include "json_numbers.h"
#include "message.h"
#include "room_name.h"

namespace sse {
namespace {

// Clocks of the issuer and this server may differ a little: a token issued "now" there must not
// be refused as not yet valid here.
constexpr int64_t kNotBeforeLeewayS = 30;

Authentication refuse(std::string reason) {
  Authentication a;
  a.kind = Authentication::Invalid;
  a.reason = std::move(reason);
  return a;
}

// Fills `out` from the claim `name` (an array of patterns), if present; the reason if malformed.
std::optional<std::string> read_patterns(simdjson::dom::object claims, const char* name,
                                         RoomPatterns& out) {
  simdjson::dom::element value;
  if (claims[name].get(value) != simdjson::SUCCESS) return std::nullopt;
  simdjson::dom::array list;
  if (value.get_array().get(list) != simdjson::SUCCESS)
    return std::string("token claim ") + name + " must be an array of room patterns";
  for (simdjson::dom::element entry : list) {
    std::string_view pattern;
    if (entry.get_string().get(pattern) != simdjson::SUCCESS)
      return std::string("token claim ") + name + " must be an array of room patterns";
    if (auto err = out.add(pattern)) return std::string("token claim ") + name + ": " + *err;
  }
  return std::nullopt;
}

bool audience_matches(simdjson::dom::element aud, std::string_view want) {
  std::string_view one;
  if (aud.get_string().get(one) == simdjson::SUCCESS) return one == want;
  simdjson::dom::array many;
  if (aud.get_array().get(many) != simdjson::SUCCESS) return false;
  for (simdjson::dom::element entry : many)
    if (entry.get_string().get(one) == simdjson::SUCCESS && one == want) return true;
  return false;
}

// The algorithm --jwt-alg names, or why it names none.
std::optional<jwt::Alg> configured_alg(const Config& config, std::string& error) {
  auto alg = jwt::parse_alg(config.jwt_alg);
  if (!alg) error = "bad --jwt-alg: " + config.jwt_alg + " (HS256, HS384, HS512, RS256 or ES256)";
  return alg;
}

}  // namespace

std::optional<std::string> RoomPatterns::error(std::string_view pattern) {
  if (pattern == "*") return std::nullopt;
  bool prefix = pattern.ends_with('*');
  std::string_view name = prefix ? pattern.substr(0, pattern.size() - 1) : pattern;
  if (auto err = room_name_error(name)) {
    // Named back only when short and plain ASCII, so the answer stays valid UTF-8.
    bool plain = pattern.size() <= 70 && std::all_of(pattern.begin(), pattern.end(),
                                                     [](char c) { return c >= ' ' && c < 0x7F; });
    return plain ? "\"" + std::string(pattern) + "\" is not a room name or prefix*"
                 : "an entry is not a room name or prefix*";
  }
  return std::nullopt;
}

std::optional<std::string> RoomPatterns::add(std::string_view pattern) {
  if (auto err = error(pattern)) return err;
  if (patterns_.size() >= kMaxPatterns)
    return "at most " + std::to_string(kMaxPatterns) + " room patterns";
  patterns_.emplace_back(pattern);
  return std::nullopt;
}

bool RoomPatterns::matches(std::string_view room) const {
  for (const std::string& p : patterns_) {
    if (p.ends_with('*') ? room.starts_with(std::string_view(p).substr(0, p.size() - 1))
                         : room == p)
      return true;
  }
  return false;
}

bool Access::configure(const Config& config, std::string& error) {
  for (const std::string& pattern : config.public_rooms) {
    if (auto err = public_rooms_.add(pattern)) {
      error = "bad --public-rooms: " + *err;
      return false;
    }
  }
  if (!configured_alg(config, error)) return false;  // a typo is one with or without keys yet
  if (config.jwt_keys.empty()) {
    if (!config.public_rooms.empty() || !config.jwt_issuer.empty() ||
        !config.jwt_audience.empty()) {
      error = "--public-rooms, --jwt-issuer and --jwt-audience need --jwt-key";
      return false;
    }
    return true;
  }
  if (!config.publish_token.empty()) {
    error = "--publish-token and --jwt-key cannot be used together (tokens replace it)";
    return false;
  }
  if (!reload_keys(config, error)) return false;
  issuer_ = config.jwt_issuer;
  audience_ = config.jwt_audience;
  return true;
}

bool Access::reload_keys(const Config& config, std::string& error) {
  if (config.jwt_keys.empty()) return true;
  auto alg = configured_alg(config, error);
  if (!alg) return false;
  std::vector<std::unique_ptr<jwt::Key>> keys;
  for (const std::string& path : config.jwt_keys) {
    std::string why;
    keys.push_back(jwt::Key::load(path, *alg, false, why));
    if (!keys.back()) {
      error = "bad --jwt-key: " + why;
      return false;
    }
  }
  keys_ = std::move(keys);
  return true;
}

bool Access::has_key(uint64_t id) const {
  return std::any_of(keys_.begin(), keys_.end(), [id](const auto& k) { return k->id() == id; });
}

// Every key in turn: during a rotation tokens of the old key and the new are both valid. A refusal
// says why the first key refused (the others differ only in the signature).
jwt::Checked Access::verify(std::string_view token, uint64_t& key_id) const {
  jwt::Checked first = keys_.front()->verify(token);
  key_id = keys_.front()->id();
  for (size_t i = 1; !first.payload && i < keys_.size(); ++i) {
    jwt::Checked other = keys_[i]->verify(token);
    if (!other.payload) continue;
    key_id = keys_[i]->id();
    return other;
  }
  return first;
}

Authentication Access::authenticate(std::string_view authorization, std::string_view cookie,
                                    int64_t now_s) const {
  if (!enabled()) return {};
  // Another scheme (Basic from a proxy that guards the site, say) is not ours to judge.
  if (auto bearer = bearer_token(authorization)) {
    if (bearer->empty()) return refuse("Authorization: Bearer needs a token");
    return check_token(*bearer, now_s);
  }
  std::string_view token = cookie_value(cookie, kTokenCookie);
  if (token.empty()) return {};  // no cookie, or one cleared on sign-out
  return check_token(token, now_s);
}

Authentication Access::check_token(std::string_view token, int64_t now_s) const {
  if (!enabled()) return refuse("tokens are off");
  uint64_t key_id = 0;
  jwt::Checked checked = verify(token, key_id);
  if (!checked.payload) return refuse(std::move(checked.reason));
  static simdjson::dom::parser parser;
  simdjson::dom::element doc;
  simdjson::error_code error = parser.parse(*checked.payload).get(doc);
  // A claim we do not read may hold a number beyond 64 bits (a large numeric id): valid JSON. Such
  // a number in exp or nbf reads as ±1e308, as far in the future (or past) as it meant.
  std::string tamed;
  if (error != simdjson::SUCCESS && error != simdjson::DEPTH_ERROR) {
    tamed = json::tame_unreadable_numbers(*checked.payload);
    error = parser.parse(tamed).get(doc);
  }
  if (error != simdjson::SUCCESS) return refuse("token claims are not valid JSON");
  simdjson::dom::object claims;
  if (doc.get_object().get(claims) != simdjson::SUCCESS)
    return refuse("token claims are not a JSON object");
  if (jwt::has_duplicate_names(claims)) return refuse("token claims name a member twice");
  Authentication a;
  a.kind = Authentication::Valid;
  Identity& id = a.identity;
  id.key_id = key_id;
  if (auto err = read_bearer(claims, id)) return refuse(*err);
  if (auto err = read_lifetime(claims, now_s, id)) return refuse(*err);
  if (auto err = check_issuer_and_audience(claims)) return refuse(*err);
  if (auto err = read_patterns(claims, "rooms", id.rooms)) return refuse(*err);
  if (auto err = read_patterns(claims, "read", id.read)) return refuse(*err);
  return a;
}

// sub, and name (else sub) as the author.
std::optional<std::string> Access::read_bearer(const simdjson::dom::object& claims, Identity& id) {
  std::string_view text;
  if (claims["sub"].get_string().get(text) != simdjson::SUCCESS || text.empty())
    return "token has no sub claim";
  if (text.size() > kMaxSubjectBytes) return "token sub is longer than 256 bytes";
  id.subject = std::string(text);
  auto name = claims["name"];
  if (name.error() == simdjson::NO_SUCH_FIELD) {
    id.name = id.subject;
  } else if (name.get_string().get(text) == simdjson::SUCCESS) {
    id.name = std::string(text);
  } else {
    return "token claim name must be a string";
  }
  if (check_user(id.name, kMaxTokenNameChars))
    return "token name (or sub) must be 1-64 characters without control characters";
  return std::nullopt;
}

// exp (required) and nbf (when present), at `now_s`.
std::optional<std::string> Access::read_lifetime(const simdjson::dom::object& claims, int64_t now_s,
                                                 Identity& id) {
  double exp = 0;
  if (claims["exp"].get_double().get(exp) != simdjson::SUCCESS) return "token has no exp claim";
  if (static_cast<double>(now_s) >= exp) return "token expired";
  id.expires_s = static_cast<int64_t>(std::min(exp, 1e12));  // far future, without overflow
  auto nbf_claim = claims["nbf"];
  if (nbf_claim.error() == simdjson::NO_SUCH_FIELD) return std::nullopt;
  double nbf = 0;
  if (nbf_claim.get_double().get(nbf) != simdjson::SUCCESS)
    return "token claim nbf must be a number";
  if (static_cast<double>(now_s + kNotBeforeLeewayS) < nbf) return "token is not valid yet";
  return std::nullopt;
}

std::optional<std::string> Access::check_issuer_and_audience(
    const simdjson::dom::object& claims) const {
  std::string_view text;
  if (!issuer_.empty() &&
      (claims["iss"].get_string().get(text) != simdjson::SUCCESS || text != issuer_))
    return "token issuer is not accepted";
  simdjson::dom::element aud;
  if (!audience_.empty() &&
      (claims["aud"].get(aud) != simdjson::SUCCESS || !audience_matches(aud, audience_)))
    return "token audience is not accepted";
  return std::nullopt;
}

std::optional<std::string_view> bearer_token(std::string_view authorization) {
  authorization = ascii::trim_ows(authorization);
  size_t space = authorization.find(' ');
  if (!ascii::iequals(authorization.substr(0, space), "Bearer")) return std::nullopt;
  if (space == std::string_view::npos) return std::string_view();
  return ascii::trim_ows(authorization.substr(space + 1));
}

std::string_view cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    std::string_view pair = ascii::take_element(header, ';');
    size_t eq = pair.find('=');
    if (eq == std::string_view::npos || ascii::trim_ows(pair.substr(0, eq)) != name) continue;
    std::string_view value = ascii::unquote(ascii::trim_ows(pair.substr(eq + 1)));
    if (!value.empty()) return value;  // a cleared one (another Path) may come first
  }
  return {};
}

}  // namespace sse
