#include "token_command.h"

#include <charconv>
#include <cstdlib>
#include <ctime>
#include <string_view>
#include <vector>

#include "access.h"
#include "config.h"
#include "json.h"
#include "jwt.h"
#include "message.h"

namespace sse {
namespace {

constexpr std::string_view kUsage =
    "Usage: sse-chat token --jwt-key FILE --sub SUBJECT [--name NAME] [--rooms 'general,team-*']\n"
    "                      [--read 'announcements'] [--ttl SECONDS] [--jwt-alg HS256]\n"
    "                      [--jwt-issuer ISS] [--jwt-audience AUD]\n"
    "Prints a token the server started with the same --jwt-key and --jwt-alg accepts (for RS256\n"
    "and ES256, FILE is the private key). --rooms may be read and posted to, --read only read;\n"
    "an entry is a room, a prefix ending in '*', or '*' for every room. --ttl defaults to 3600.\n"
    "--jwt-key, --jwt-alg, --jwt-issuer and --jwt-audience also come from SSE_CHAT_JWT_KEY etc.\n";

constexpr uint64_t kMaxTtlS = 10ull * 366 * 24 * 3600;
// A request's header lines hold at most 8 KiB (HttpLimits::max_headers): a token larger than this
// leaves too little for the browser's own headers beside its cookie, and every request would be a
// 431 (an EventSource's first one included, and it would give up for good).
constexpr size_t kMaxTokenBytes = 6144;

struct TokenRequest {
  std::string key_file, alg = "HS256", sub, name, issuer, audience;
  std::vector<std::string> rooms, read;
  uint64_t ttl_s = 3600;
};

std::string env_or(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

// Splits "a,b c" into patterns; the reason when one is not a pattern.
std::optional<std::string> split_patterns(std::string_view list, std::vector<std::string>& out) {
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find_first_of(", ", start);
    if (end == std::string_view::npos) end = list.size();
    std::string_view item = list.substr(start, end - start);
    if (!item.empty()) {
      if (auto err = RoomPatterns::error(item)) return err;
      if (out.size() == RoomPatterns::kMaxPatterns)
        return "at most " + std::to_string(RoomPatterns::kMaxPatterns) + " room patterns";
      out.emplace_back(item);
    }
    start = end + 1;
  }
  return std::nullopt;
}

std::optional<std::string> parse_args(int argc, char** argv, TokenRequest& t) {
  t.key_file = env_or("SSE_CHAT_JWT_KEY", "");
  t.key_file =
      t.key_file.substr(0, t.key_file.find(','));  // the server's list: sign with the first
  t.alg = env_or("SSE_CHAT_JWT_ALG", t.alg);
  t.issuer = env_or("SSE_CHAT_JWT_ISSUER", "");
  t.audience = env_or("SSE_CHAT_JWT_AUDIENCE", "");
  for (int i = 1; i < argc; ++i) {
    auto [flag, inline_value] = split_flag(argv[i]);  // --sub=alice, as the server takes flags
    auto given = inline_value ? inline_value : take_next_value(argc, argv, i);
    if (!given) return std::string(flag) + " needs a value";  // `--sub --name x` forgot the subject
    std::string_view value = *given;
    if (flag == "--jwt-key") {
      t.key_file = value;
    } else if (flag == "--jwt-alg") {
      t.alg = value;
    } else if (flag == "--sub") {
      t.sub = value;
    } else if (flag == "--name") {
      t.name = value;
    } else if (flag == "--jwt-issuer") {
      t.issuer = value;
    } else if (flag == "--jwt-audience") {
      t.audience = value;
    } else if (flag == "--rooms" || flag == "--read") {
      if (auto err = split_patterns(value, flag == "--rooms" ? t.rooms : t.read))
        return std::string(flag) + ": " + *err;
    } else if (flag == "--ttl") {
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), t.ttl_s);
      if (ec != std::errc{} || end != value.data() + value.size() || t.ttl_s == 0 ||
          t.ttl_s > kMaxTtlS)
        return "--ttl must be a whole number of seconds, from 1 to ten years";
    } else {
      return "unknown option " + std::string(flag);
    }
  }
  if (t.key_file.empty()) return "--jwt-key is required";
  if (t.sub.empty()) return "--sub is required";
  if (t.sub.size() > kMaxSubjectBytes) return "--sub must be at most 256 bytes";
  std::string author = t.name.empty() ? t.sub : t.name;
  if (check_user(author, kMaxTokenNameChars))
    return "--name (or --sub) must be 1-64 characters without control characters";
  return std::nullopt;
}

void append_list(std::string& out, const char* claim, const std::vector<std::string>& list) {
  out += ",\"";
  out += claim;
  out += "\":[";
  for (size_t i = 0; i < list.size(); ++i) {
    if (i > 0) out += ',';
    json::append_string(out, list[i]);
  }
  out += ']';
}

std::string claims_of(const TokenRequest& t) {
  uint64_t now = static_cast<uint64_t>(std::time(nullptr));
  std::string out = "{\"sub\":";
  json::append_string(out, t.sub);
  if (!t.name.empty()) {
    out += ",\"name\":";
    json::append_string(out, t.name);
  }
  append_list(out, "rooms", t.rooms);
  if (!t.read.empty()) append_list(out, "read", t.read);
  if (!t.issuer.empty()) {
    out += ",\"iss\":";
    json::append_string(out, t.issuer);
  }
  if (!t.audience.empty()) {
    out += ",\"aud\":";
    json::append_string(out, t.audience);
  }
  out += ",\"iat\":" + std::to_string(now) + ",\"exp\":" + std::to_string(now + t.ttl_s) + "}";
  return out;
}

}  // namespace

int token_command(int argc, char** argv, std::string& out, std::string& err) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      out = kUsage;
      return 0;
    }
  }
  TokenRequest t;
  if (auto why = parse_args(argc, argv, t)) {
    err = "sse-chat token: " + *why + "\n" + std::string(kUsage);
    return 2;
  }
  auto alg = jwt::parse_alg(t.alg);
  if (!alg) {
    err = "sse-chat token: bad --jwt-alg " + t.alg + " (HS256, HS384, HS512, RS256 or ES256)\n";
    return 2;
  }
  std::string why;
  auto key = jwt::Key::load(t.key_file, *alg, /*private_key=*/true, why);
  if (!key) {
    err = "sse-chat token: bad --jwt-key: " + why + "\n";
    return 1;
  }
  std::string token = key->sign(claims_of(t));
  if (token.empty()) {
    err = "sse-chat token: signing failed\n";
    return 1;
  }
  if (token.size() > kMaxTokenBytes) {
    err = "sse-chat token: the token would be " + std::to_string(token.size()) +
          " bytes, more than the " + std::to_string(kMaxTokenBytes) +
          " that fit in a request's 8 KiB of headers; name rooms by prefix (team-*) instead of "
          "one by one\n";
    return 1;
  }
  out = token + "\n";
  return 0;
}

}  // namespace sse
