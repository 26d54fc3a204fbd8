// Command-line and environment configuration. Every flag --foo-bar may also come from the
// environment as SSE_CHAT_FOO_BAR (the command line wins), so a systemd EnvironmentFile= works.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sse {

enum class FsyncPolicy { Always, EverySec, Never };

// EventSource's reconnect delay at most (an hour): more, with its jitter, would not fit 32 bits.
constexpr uint32_t kMaxRetryMs = 3'600'000;

struct Config {
  std::string listen = "127.0.0.1:8080";
  std::string static_dir;                  // default: ./static, else the installed share directory
  size_t history = 1000;                   // messages kept per room
  uint64_t history_memory = 256ull << 20;  // bytes all kept messages may hold
  size_t max_rooms = 10000;
  size_t max_rooms_per_stream = 32;
  std::string data_dir = "./data";
  bool journal = true;
  FsyncPolicy fsync = FsyncPolicy::EverySec;
  uint64_t journal_max_bytes = 64ull << 20;
  // Several nodes sharing every room through Redis (redis_broker.h): off unless a URL is given.
  std::string redis;  // redis://[[user]:password@]host[:port][/db] or unix:///path
  std::string redis_prefix = "sse-chat";
  bool reuse_port = false;  // SO_REUSEPORT: several nodes on one machine share --listen
  bool io_uring = true;     // batch a loop iteration's sends (batch_writer.h) where the kernel can
  uint32_t heartbeat_s = 15;
  uint32_t retry_ms = 2000;
  size_t client_queue = 1024;          // frames queued per connection before it is a slow consumer
  size_t max_queued_bytes = 4u << 20;  // bytes queued per connection (answers or frames)
  // A message at its limits (2000 characters of text, a 32-character user, a nonce and a room)
  // takes about 25 KB when every character is escaped (\uD83D\uDE00, %F0%9F%98%80).
  size_t max_body = 32 * 1024;
  size_t max_connections = 0;  // 0: what RLIMIT_NOFILE allows minus a reserve
  // Connections one peer address (not a trusted proxy) may hold; nullopt ("auto"): a quarter of
  // the connection limit.
  std::optional<uint32_t> max_connections_per_ip;
  // Rooms the streams of one client address may read at once, each stream counting its rooms;
  // nullopt ("auto"): a quarter of max_rooms, at least max_rooms_per_stream.
  std::optional<uint32_t> max_room_reads_per_ip;
  // Streams one client address may hold; nullopt ("auto"): a quarter of the connection limit.
  std::optional<uint32_t> max_streams_per_ip;
  uint32_t request_timeout_s = 10;
  uint32_t keepalive_timeout_s = 60;
  uint32_t send_timeout_s = 30;
  // Per client address, sized for an office behind one NAT address (hundreds of people).
  double post_rate = 20;  // tokens per second per client IP; 0 disables
  double post_burst = 200;
  double subscribe_rate = 20;
  double subscribe_burst = 400;
  std::vector<std::string> trusted_proxies;
  std::string cors_origin;
  std::string publish_token;
  // Signed tokens (access.h): off unless jwt_keys names a key file. A token signed with any of
  // them is accepted (rotation: the new key first, the old one until its tokens have run out).
  std::vector<std::string> jwt_keys;
  std::string jwt_alg = "HS256";
  std::string jwt_issuer;
  std::string jwt_audience;
  std::vector<std::string> public_rooms;  // patterns anyone may read without a token
  uint32_t shutdown_timeout_s = 5;
  std::string log_level = "info";
  std::string log_file;    // empty: stderr
  std::string access_log;  // empty: none; "-": stderr
};

struct ParseOutcome {
  enum Kind { Run, Help, Version, Error } kind = Run;
  std::string message;
};

// Reads the environment first, then `argv`.
ParseOutcome parse_config(int argc, char** argv, Config& out);

std::string help_text();

// One command-line flag: `--name=value` (value given inline), `--name value`, or a switch.
struct FlagArg {
  std::string_view name;  // with its "--"
  std::optional<std::string_view> inline_value;
};
FlagArg split_flag(std::string_view arg);

// The value after the flag at argv[i], moving i past it; none when there is no next argument or
// it is a flag itself: `--data-dir --no-journal` forgot the directory (`--data-dir=--x` is how
// to mean one).
std::optional<std::string_view> take_next_value(int argc, char** argv, int& i);

}  // namespace sse
