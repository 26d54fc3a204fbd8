#include "config.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "ascii.h"
#include "redis_scripts.h"

namespace sse {
namespace {

struct Option {
  const char* name;   // without "--"
  const char* value;  // placeholder for --help; nullptr for a switch
  const char* help;
  std::function<std::string(Config&)> show_default;
  std::function<bool(Config&, const std::string&)> set;  // false: bad value
  std::string expects = {};  // what a good value is, for the error; empty: the placeholder
  std::vector<std::string> Config::*list = nullptr;  // a list option's field
};

std::string expected_value(const Option& o) {
  if (!o.expects.empty()) return o.expects;
  return o.value ? o.value : "no value";
}

bool parse_uint(const std::string& s, uint64_t& out) {
  if (s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  char* end = nullptr;
  errno = 0;
  out = std::strtoull(s.c_str(), &end, 10);
  return errno == 0 && *end == '\0';
}

// Digits, optionally a dot and more digits: what strtod would take besides (signs, spaces, hex,
// exponents, inf) is a typo here.
bool parse_decimal(const std::string& s, double& out) {
  size_t dot = s.find('.');
  auto digits = [](std::string_view part) {
    return !part.empty() && part.find_first_not_of("0123456789") == std::string_view::npos;
  };
  std::string_view whole(s);
  if (!digits(whole.substr(0, dot)) || (dot != std::string::npos && !digits(whole.substr(dot + 1))))
    return false;
  out = std::strtod(s.c_str(), nullptr);
  return true;
}

template <typename T>
Option uint_option(const char* name, const char* help, T Config::*field, uint64_t min = 0,
                   uint64_t max = std::numeric_limits<T>::max()) {
  std::string expects = "a whole number";
  if (min > 0) expects += " of at least " + std::to_string(min);
  if (max < std::numeric_limits<uint64_t>::max())
    expects += (min > 0 ? " and at most " : " of at most ") + std::to_string(max);
  return {name,
          "N",
          help,
          [field](Config& c) { return std::to_string(c.*field); },
          [field, min, max](Config& c, const std::string& v) {
            uint64_t n;
            if (!parse_uint(v, n) || n < min || n > max) return false;
            c.*field = static_cast<T>(n);
            return true;
          },
          expects};
}

// N, or "auto" (unset: the server derives it).
Option auto_option(const char* name, const char* help, std::optional<uint32_t> Config::*field) {
  return {name, "N|auto", help,
          [field](Config& c) { return c.*field ? std::to_string(*(c.*field)) : "auto"; },
          [field](Config& c, const std::string& v) {
            uint64_t n;
            if (v == "auto") {
              (c.*field).reset();
            } else if (parse_uint(v, n) && n <= UINT32_MAX) {
              c.*field = static_cast<uint32_t>(n);
            } else {
              return false;
            }
            return true;
          }};
}

// A decimal number from `min` to `max`, or 0 when `zero_is_off`.
Option double_option(const char* name, const char* help, double Config::*field, double min,
                     double max, bool zero_is_off) {
  auto shown = [](double v) {
    std::string s = std::to_string(v);
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
    return s;
  };
  std::string expects = "a decimal number from " + shown(min) + " to " + shown(max);
  if (zero_is_off) expects += ", or 0 (no limit)";
  return {name,
          "N",
          help,
          [field, shown](Config& c) { return shown(c.*field); },
          [field, min, max, zero_is_off](Config& c, const std::string& v) {
            double n;
            if (!parse_decimal(v, n) || !((n >= min && n <= max) || (zero_is_off && n == 0)))
              return false;
            c.*field = n;
            return true;
          },
          expects};
}

// A repeatable option whose value is also a list (split at any of `separators`): every element
// is added. Shown joined with commas, or `none_shown` when empty.
Option list_option(const char* name, const char* value, const char* help,
                   std::vector<std::string> Config::*field, const char* separators,
                   const char* none_shown) {
  return {name,
          value,
          help,
          [field, none_shown](Config& c) {
            std::string s;
            for (auto& p : c.*field) s += (s.empty() ? "" : ",") + p;
            return s.empty() ? std::string(none_shown) : s;
          },
          [field, separators](Config& c, const std::string& v) {
            size_t start = 0;
            while (start <= v.size()) {
              size_t end = v.find_first_of(separators, start);
              if (end == std::string::npos) end = v.size();
              if (end > start) (c.*field).push_back(v.substr(start, end - start));
              start = end + 1;
            }
            return true;
          },
          {},
          field};
}

// A switch, given its value by the parser as "1" (on) or "0" (off): on sets `field` to
// `field_when_on` (a "no-…" switch turns its field off).
Option switch_option(const char* name, const char* help, bool Config::*field, bool field_when_on) {
  return {name, nullptr, help,
          [field, field_when_on](Config& c) { return c.*field == field_when_on ? "on" : "off"; },
          [field, field_when_on](Config& c, const std::string& on) {
            c.*field = (on == "1") == field_when_on;
            return true;
          }};
}

Option string_option(const char* name, const char* value, const char* help,
                     std::string Config::*field) {
  return {name, value, help, [field](Config& c) { return c.*field; },
          [field](Config& c, const std::string& v) {
            c.*field = v;
            return true;
          }};
}

// Bounds past any use, so that sums and products of them never wrap.
constexpr double kMinRate = 0.001;  // one a quarter of an hour: a Retry-After that still means it
constexpr double kMaxRate = 1e6;
constexpr uint64_t kMaxRooms = 100'000'000;
constexpr uint64_t kMaxHistory = 100'000'000;  // per room (Redis's script takes it as a number)
constexpr uint64_t kMaxRoomsPerStream = 100'000;
constexpr uint64_t kMaxClientQueue = 1u << 24;
constexpr uint64_t kMaxBody = 1u << 30;

const std::vector<Option>& options() {
  static const std::vector<Option> table = {
      string_option("listen", "HOST:PORT", "address to listen on; port 0 picks a free port",
                    &Config::listen),
      string_option("static-dir", "DIR",
                    "directory the chat page is served from (empty: ./static when it has "
                    "index.html, else the installed page)",
                    &Config::static_dir),
      uint_option("history", "messages kept per room, in memory and in the journal, for replay",
                  &Config::history, 1, kMaxHistory),
      uint_option("history-memory",
                  "bytes all rooms' kept messages may hold; the oldest are dropped first",
                  &Config::history_memory, 1u << 20),
      uint_option("max-rooms", "rooms at most; past it the room idle longest is forgotten",
                  &Config::max_rooms, 1, kMaxRooms),
      uint_option("max-rooms-per-stream", "rooms one GET /events may read",
                  &Config::max_rooms_per_stream, 1, kMaxRoomsPerStream),
      string_option("data-dir", "DIR", "where the journal lives", &Config::data_dir),
      switch_option("no-journal", "keep messages in memory only (lost on restart)",
                    &Config::journal, false),
      {"fsync", "always|everysec|never", "when the journal is flushed to disk",
       [](Config& c) {
         return c.fsync == FsyncPolicy::Always  ? "always"
                : c.fsync == FsyncPolicy::Never ? "never"
                                                : "everysec";
       },
       [](Config& c, const std::string& v) {
         if (v == "always")
           c.fsync = FsyncPolicy::Always;
         else if (v == "everysec")
           c.fsync = FsyncPolicy::EverySec;
         else if (v == "never")
           c.fsync = FsyncPolicy::Never;
         else
           return false;
         return true;
       }},
      uint_option("journal-max-bytes", "journal size that triggers compaction",
                  &Config::journal_max_bytes, 4096),
      string_option("redis", "URL",
                    "share every room with other nodes through Redis "
                    "(redis://[[user]:password@]host[:port][/db] or unix:///path); the journal "
                    "is then off",
                    &Config::redis),
      string_option("redis-prefix", "NAME", "the Redis keys are {NAME}:...", &Config::redis_prefix),
      switch_option("reuse-port", "let several nodes listen on one port (SO_REUSEPORT)",
                    &Config::reuse_port, true),
      switch_option("no-io-uring",
                    "write each connection with its own writev instead of one io_uring "
                    "submission per loop iteration",
                    &Config::io_uring, false),
      uint_option("heartbeat", "seconds between ': ping' comments on an idle stream",
                  &Config::heartbeat_s, 1),
      uint_option("retry", "reconnect delay (ms) sent to EventSource, plus per-connection jitter",
                  &Config::retry_ms, 0, kMaxRetryMs),
      uint_option("client-queue",
                  "frames queued per connection before it is closed as a slow consumer",
                  &Config::client_queue, 8, kMaxClientQueue),
      uint_option("max-queued-bytes",
                  "bytes of output queued per connection (answers or stream frames, most of "
                  "them shared) before it is closed",
                  &Config::max_queued_bytes, 2u << 20),  // a history page is up to 1 MiB
      uint_option("max-body", "largest request body in bytes", &Config::max_body, 64, kMaxBody),
      uint_option("max-connections", "open connections at most (0: the fd limit minus a reserve)",
                  &Config::max_connections),
      auto_option("max-connections-per-ip",
                  "open connections per peer address, trusted proxies aside (0: unlimited; auto: "
                  "a quarter of --max-connections)",
                  &Config::max_connections_per_ip),
      auto_option("max-streams-per-ip",
                  "concurrent event streams per client IP (0: unlimited; auto: a quarter of "
                  "--max-connections)",
                  &Config::max_streams_per_ip),
      auto_option("max-room-reads-per-ip",
                  "distinct rooms read at once by the streams of one client IP (0: unlimited; "
                  "auto: a quarter of --max-rooms, at least --max-rooms-per-stream)",
                  &Config::max_room_reads_per_ip),
      uint_option("request-timeout", "seconds a request may take to arrive",
                  &Config::request_timeout_s, 1),
      uint_option("keepalive-timeout", "seconds an idle keep-alive connection stays open",
                  &Config::keepalive_timeout_s, 1),
      uint_option("send-timeout",
                  "seconds queued output may wait for the client to read any of it before the "
                  "connection is closed",
                  &Config::send_timeout_s, 1),
      double_option("post-rate", "POSTs per second per client IP (0: no limit)", &Config::post_rate,
                    kMinRate, kMaxRate, true),
      double_option("post-burst", "POSTs a client IP may send at once", &Config::post_burst, 1,
                    kMaxRate, false),
      double_option("subscribe-rate", "new streams per second per client IP (0: no limit)",
                    &Config::subscribe_rate, kMinRate, kMaxRate, true),
      double_option("subscribe-burst", "new streams a client IP may open at once",
                    &Config::subscribe_burst, 1, kMaxRate, false),
      list_option("trusted-proxy", "CIDR",
                  "proxy whose X-Forwarded-For/Forwarded is believed (repeatable, or a list; "
                  "'unix' for the peers of a Unix socket)",
                  &Config::trusted_proxies, ", ", "none"),
      string_option("cors-origin", "ORIGIN",
                    "the one cross-site origin allowed (CORS off when empty)",
                    &Config::cors_origin),
      string_option("publish-token", "TOKEN", "require 'Authorization: Bearer TOKEN' on POST",
                    &Config::publish_token),
      list_option("jwt-key", "FILE",
                  "turn signed tokens on: the HS secret, or the PEM public key for RS256/ES256 "
                  "(repeatable: tokens signed with any are accepted; SIGHUP reads the files again)",
                  &Config::jwt_keys, ",", ""),
      string_option("jwt-alg", "HS256|HS384|HS512|RS256|ES256",
                    "the one algorithm tokens must be signed with", &Config::jwt_alg),
      string_option("jwt-issuer", "ISS", "when set, tokens must carry this iss",
                    &Config::jwt_issuer),
      string_option("jwt-audience", "AUD", "when set, tokens must carry this aud",
                    &Config::jwt_audience),
      list_option("public-rooms", "PATTERN,...",
                  "rooms anyone may read without a token (name, prefix*, or *; repeatable)",
                  &Config::public_rooms, ", ", "none"),
      uint_option("shutdown-timeout", "seconds to flush subscribers on SIGTERM",
                  &Config::shutdown_timeout_s),
      string_option("log-file", "PATH",
                    "write the log to PATH instead of stderr (SIGHUP reopens it)",
                    &Config::log_file),
      string_option("access-log", "PATH",
                    "one line per request to PATH, '-' for stderr (SIGHUP reopens it)",
                    &Config::access_log),
      {"log-level", "debug|info|warn|error", "least severe log level written",
       [](Config& c) { return c.log_level; },
       [](Config& c, const std::string& v) {
         if (v != "debug" && v != "info" && v != "warn" && v != "error") return false;
         c.log_level = v;
         return true;
       }},
  };
  return table;
}

std::string env_name(std::string_view flag) {
  std::string out = "SSE_CHAT_";
  for (char c : flag)
    out += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

const Option* find(std::string_view name) {
  for (const Option& o : options())
    if (name == o.name) return &o;
  return nullptr;
}

}  // namespace

std::string help_text() {
  Config defaults;
  std::string out =
      "Usage: sse-chat [options]\n"
      "       sse-chat token --jwt-key FILE --sub SUBJECT [...]   prints a signed token (token "
      "--help)\n"
      "A Server-Sent Events chat server. GET /events streams messages; POST /messages sends "
      "one.\n\n"
      "Options (each also read from the environment as SSE_CHAT_<NAME>, e.g. SSE_CHAT_LISTEN):\n";
  for (const Option& o : options()) {
    std::string left = std::string("  --") + o.name + (o.value ? std::string(" ") + o.value : "");
    if (left.size() < 34) left.resize(34, ' ');
    out += left + " " + o.help + " (default: " + o.show_default(defaults) + ")\n";
  }
  out += "  --help                             show this text\n";
  out += "  --version                          print the version\n";
  return out;
}

namespace {

constexpr const char* kSwitchValues = "1, true, yes or on; 0, false, no or off";

// A value that turns a switch on (true) or off (false), as systemd's boolean settings spell
// them (empty is off); nullopt for anything else.
std::optional<bool> switch_value(std::string_view env) {
  for (std::string_view on : {"1", "true", "yes", "on"})
    if (ascii::iequals(env, on)) return true;
  for (std::string_view off : {"0", "false", "no", "off", ""})
    if (ascii::iequals(env, off)) return false;
  return std::nullopt;
}

// A key or token given as nothing (an unset shell variable, an empty line of an environment
// file) would leave the server open to anyone: refused rather than taken for "off".
bool said_something(const Option& o, const std::string& value) {
  std::string_view name = o.name;
  if (name != "jwt-key" && name != "publish-token") return true;
  return value.find_first_not_of(", ") != std::string::npos;
}

std::string nothing_said(const std::string& name) {
  return name + " is empty: leave it out to run without it (an empty one would let anyone in)";
}

// The environment's settings (SSE_CHAT_*): an error, or nothing. An empty key or token there is
// noted in `said_empty` (an error unless the command line gives one).
std::optional<ParseOutcome> apply_environment(Config& out, std::string& said_empty) {
  for (const Option& o : options()) {
    const char* env = std::getenv(env_name(o.name).c_str());
    if (!env) continue;
    std::string value = env;
    if (!o.value) {  // a switch: on or off, and anything else is a mistake to say, not "off"
      auto on = switch_value(env);
      if (!on)
        return ParseOutcome{ParseOutcome::Error, "bad value in " + env_name(o.name) + ": " + env +
                                                     " (expected " + kSwitchValues + " or empty)"};
      value = *on ? "1" : "0";
    }
    if (!said_something(o, env)) {
      if (said_empty.empty()) said_empty = env_name(o.name);
      continue;
    }
    if (!o.set(out, value))
      return ParseOutcome{ParseOutcome::Error, "bad value in " + env_name(o.name) + ": " + env +
                                                   " (expected " + expected_value(o) + ")"};
  }
  return std::nullopt;
}

// argv[i], and its value (moving i past it), onto `out`: where parsing stops (an error, help,
// the version), or nothing. A list on the command line replaces the environment's, as single
// values do: a key, a public room or a trusted proxy nobody meant to keep must not stay because
// it was set somewhere else (`lists_given`: those replaced so far).
std::optional<ParseOutcome> apply_flag(int argc, char** argv, int& i, Config& out,
                                       std::vector<const Option*>& lists_given) {
  std::string_view arg = argv[i];
  if (arg == "--help" || arg == "-h") return ParseOutcome{ParseOutcome::Help, help_text()};
  if (arg == "--version") return ParseOutcome{ParseOutcome::Version, ""};
  if (!arg.starts_with("--"))
    return ParseOutcome{ParseOutcome::Error, "unexpected argument: " + std::string(arg)};
  FlagArg flag = split_flag(arg);
  arg = flag.name.substr(2);
  bool inline_value = flag.inline_value.has_value();
  std::string value(flag.inline_value.value_or(""));
  const Option* o = find(arg);
  if (!o)
    return ParseOutcome{ParseOutcome::Error,
                        "unknown option --" + std::string(arg) + " (see --help)"};
  if (!o->value) {  // --no-journal=false turns it off, whatever the environment said
    auto on = inline_value ? switch_value(value) : std::optional<bool>(true);
    if (!on || (inline_value && value.empty()))
      return ParseOutcome{ParseOutcome::Error, "bad value for --" + std::string(arg) + ": " +
                                                   value + " (expected " + kSwitchValues + ")"};
    value = *on ? "1" : "0";
  }
  if (o->value && !inline_value) {
    auto next = take_next_value(argc, argv, i);
    if (!next) return ParseOutcome{ParseOutcome::Error, "--" + std::string(arg) + " needs a value"};
    value = *next;
  }
  if (o->list && std::find(lists_given.begin(), lists_given.end(), o) == lists_given.end()) {
    lists_given.push_back(o);
    (out.*(o->list)).clear();
  }
  if (!said_something(*o, value))
    return ParseOutcome{ParseOutcome::Error, nothing_said("--" + std::string(arg))};
  if (!o->set(out, value))
    return ParseOutcome{ParseOutcome::Error, "bad value for --" + std::string(arg) + ": " + value +
                                                 " (expected " + expected_value(*o) + ")"};
  return std::nullopt;
}

}  // namespace

ParseOutcome parse_config(int argc, char** argv, Config& out) {
  // Under systemd (StateDirectory=) the journal goes where the unit says, unless told otherwise.
  if (const char* state = std::getenv("STATE_DIRECTORY"); state && *state) {
    std::string first = state;
    out.data_dir = first.substr(0, first.find(':'));
  }
  std::string said_empty;
  if (auto stop = apply_environment(out, said_empty)) return *stop;
  std::vector<const Option*> lists_given;
  for (int i = 1; i < argc; ++i)
    if (auto stop = apply_flag(argc, argv, i, out, lists_given)) return *stop;
  if (!said_empty.empty() && out.jwt_keys.empty() && out.publish_token.empty())
    return {ParseOutcome::Error, nothing_said(said_empty)};
  // Without --redis the prefix is unused.
  if (!out.redis.empty() && !redis_scripts::is_key_prefix(out.redis_prefix))
    return {ParseOutcome::Error, "bad value for --redis-prefix: " + out.redis_prefix +
                                     " (expected a name without braces)"};
  return {};
}

FlagArg split_flag(std::string_view arg) {
  size_t eq = arg.find('=');
  if (!arg.starts_with("--") || eq == std::string_view::npos) return {arg, std::nullopt};
  return {arg.substr(0, eq), arg.substr(eq + 1)};
}

std::optional<std::string_view> take_next_value(int argc, char** argv, int& i) {
  if (i + 1 >= argc || std::string_view(argv[i + 1]).starts_with("--")) return std::nullopt;
  return argv[++i];
}

}  // namespace sse
