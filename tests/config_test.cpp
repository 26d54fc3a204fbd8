// Command-line parsing: a number is taken only when its field can hold it, never cut down to fit
// (4294967297 seconds must not become a 1-second heartbeat).
#include "config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace {

sse::ParseOutcome parse(std::vector<std::string> args, sse::Config& config) {
  args.insert(args.begin(), "sse-chat");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return sse::parse_config(static_cast<int>(argv.size()), argv.data(), config);
}

}  // namespace

TEST(Config, ANumberTooLargeForItsFieldIsRefused) {
  sse::Config config;
  sse::ParseOutcome outcome = parse({"--heartbeat", "4294967297"}, config);
  EXPECT_EQ(outcome.kind, sse::ParseOutcome::Error);
  EXPECT_NE(outcome.message.find("--heartbeat"), std::string::npos) << outcome.message;
  EXPECT_EQ(config.heartbeat_s, sse::Config{}.heartbeat_s);
}

TEST(Config, TheLargestValueOfAFieldIsTaken) {
  sse::Config config;
  EXPECT_EQ(parse({"--heartbeat", "4294967295"}, config).kind, sse::ParseOutcome::Run);
  EXPECT_EQ(config.heartbeat_s, 4294967295u);
}

TEST(Config, BelowTheMinimumIsRefused) {
  sse::Config config;
  EXPECT_EQ(parse({"--history", "0"}, config).kind, sse::ParseOutcome::Error);
}

// The prefix is the Redis keys' hash tag: empty or with braces it would not keep them in one slot.
TEST(Config, ARedisPrefixIsANameWithoutBraces) {
  for (const char* bad : {"", "}x", "a{b", "{c}"}) {
    sse::Config config;
    sse::ParseOutcome outcome = parse({"--redis", "redis://r", "--redis-prefix", bad}, config);
    EXPECT_EQ(outcome.kind, sse::ParseOutcome::Error) << bad;
    EXPECT_NE(outcome.message.find("without braces"), std::string::npos) << outcome.message;
  }
  sse::Config config;
  EXPECT_EQ(parse({"--redis", "redis://r", "--redis-prefix", "chat-2"}, config).kind,
            sse::ParseOutcome::Run);
  EXPECT_EQ(config.redis_prefix, "chat-2");
  // Without Redis the prefix is not used: an empty one (SSE_CHAT_REDIS_PREFIX= in a shared
  // settings file) is no reason to refuse to start.
  sse::Config local;
  EXPECT_EQ(parse({"--redis-prefix", ""}, local).kind, sse::ParseOutcome::Run);
}

// The room limits of #13 and the history's memory: 32 rooms a stream, 10,000 rooms, 256 MiB of kept
// messages, both in what the server runs with and in what --help says.
TEST(Config, RoomAndHistoryMemoryDefaults) {
  for (const char* name :
       {"SSE_CHAT_MAX_ROOMS_PER_STREAM", "SSE_CHAT_MAX_ROOMS", "SSE_CHAT_HISTORY_MEMORY"})
    unsetenv(name);
  sse::Config config;
  ASSERT_EQ(parse({}, config).kind, sse::ParseOutcome::Run);
  EXPECT_EQ(config.max_rooms_per_stream, 32u);
  EXPECT_EQ(config.max_rooms, 10000u);
  EXPECT_EQ(config.history_memory, 256ull << 20);
  std::string help = sse::help_text();
  for (auto [option, shown] :
       std::vector<std::pair<std::string, std::string>>{{"--max-rooms-per-stream N", "32"},
                                                        {"--max-rooms N", "10000"},
                                                        {"--history-memory N", "268435456"}}) {
    size_t at = help.find("  " + option + " ");
    ASSERT_NE(at, std::string::npos) << option;
    std::string line = help.substr(at, help.find('\n', at) - at);
    EXPECT_TRUE(line.ends_with("(default: " + shown + ")")) << line;
  }
}

// A switch set in the environment (as in /etc/default/sse-chat) is on or off as systemd spells
// booleans; anything else stops the start with an error instead of silently meaning "off".
TEST(Config, SwitchesFromTheEnvironmentAreOnOffOrAnError) {
  for (const char* on : {"1", "true", "yes", "on", "TRUE", "Yes"}) {
    setenv("SSE_CHAT_NO_JOURNAL", on, 1);
    sse::Config config;
    EXPECT_EQ(parse({}, config).kind, sse::ParseOutcome::Run) << on;
    EXPECT_FALSE(config.journal) << on;
  }
  for (const char* off : {"0", "false", "no", "off", "", "OFF"}) {
    setenv("SSE_CHAT_NO_JOURNAL", off, 1);
    sse::Config config;
    EXPECT_EQ(parse({}, config).kind, sse::ParseOutcome::Run) << off;
    EXPECT_TRUE(config.journal) << off;
  }
  for (const char* bad : {"2", "enabled", "y es"}) {
    setenv("SSE_CHAT_NO_JOURNAL", bad, 1);
    sse::Config config;
    auto outcome = parse({}, config);
    EXPECT_EQ(outcome.kind, sse::ParseOutcome::Error) << bad;
    EXPECT_NE(outcome.message.find("SSE_CHAT_NO_JOURNAL"), std::string::npos) << outcome.message;
  }
  unsetenv("SSE_CHAT_NO_JOURNAL");
}

// Token keys: repeatable, a comma-separated list in the environment, and keys on the command line
// replace the environment's (a forgotten key must not stay accepted beside the ones given).
TEST(Config, TokenKeysAreAListTheCommandLineReplaces) {
  setenv("SSE_CHAT_JWT_KEY", "/etc/a.key,/etc/b.key", 1);
  sse::Config from_env;
  ASSERT_EQ(parse({}, from_env).kind, sse::ParseOutcome::Run);
  EXPECT_EQ(from_env.jwt_keys, (std::vector<std::string>{"/etc/a.key", "/etc/b.key"}));
  sse::Config given;
  ASSERT_EQ(parse({"--jwt-key", "/k/new", "--jwt-key=/k/old"}, given).kind, sse::ParseOutcome::Run);
  EXPECT_EQ(given.jwt_keys, (std::vector<std::string>{"/k/new", "/k/old"}));
  unsetenv("SSE_CHAT_JWT_KEY");
}

TEST(Config, SwitchesOnTheCommandLineSayOnOrOff) {
  sse::Config kept, off;
  ASSERT_EQ(parse({"--no-journal=false"}, kept).kind, sse::ParseOutcome::Run);
  EXPECT_TRUE(kept.journal);
  ASSERT_EQ(parse({"--no-journal=yes"}, off).kind, sse::ParseOutcome::Run);
  EXPECT_FALSE(off.journal);
  for (const char* bad : {"--no-journal=", "--no-journal=2", "--reuse-port=maybe"}) {
    sse::Config config;
    EXPECT_EQ(parse({bad}, config).kind, sse::ParseOutcome::Error) << bad;
  }
}

// An empty key or token is a mistake (an unset variable), not "off": refused, never open.
TEST(Config, AnEmptyKeyOrTokenIsRefused) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"--jwt-key", ""}, {"--jwt-key", ","}, {"--publish-token="}}) {
    sse::Config config;
    auto outcome = parse(args, config);
    EXPECT_EQ(outcome.kind, sse::ParseOutcome::Error) << args[0];
    EXPECT_NE(outcome.message.find("empty"), std::string::npos) << outcome.message;
  }
  setenv("SSE_CHAT_PUBLISH_TOKEN", "", 1);
  sse::Config config;
  EXPECT_EQ(parse({}, config).kind, sse::ParseOutcome::Error);
  unsetenv("SSE_CHAT_PUBLISH_TOKEN");
}

TEST(Config, TrustedProxiesAreAListAndRetryFitsWithItsJitter) {
  setenv("SSE_CHAT_TRUSTED_PROXY", "127.0.0.1/32, ::1", 1);
  sse::Config config;
  ASSERT_EQ(parse({}, config).kind, sse::ParseOutcome::Run);
  EXPECT_EQ(config.trusted_proxies, (std::vector<std::string>{"127.0.0.1/32", "::1"}));
  // As for keys, the command line's list replaces the environment's: narrowing whom to believe
  // there must not leave the wider setting in force.
  sse::Config given;
  ASSERT_EQ(parse({"--trusted-proxy", "unix", "--trusted-proxy=10.0.0.0/8"}, given).kind,
            sse::ParseOutcome::Run);
  EXPECT_EQ(given.trusted_proxies, (std::vector<std::string>{"unix", "10.0.0.0/8"}));
  unsetenv("SSE_CHAT_TRUSTED_PROXY");
  setenv("SSE_CHAT_PUBLIC_ROOMS", "*", 1);
  sse::Config rooms;
  ASSERT_EQ(parse({"--public-rooms", "general"}, rooms).kind, sse::ParseOutcome::Run);
  EXPECT_EQ(rooms.public_rooms, (std::vector<std::string>{"general"}));
  unsetenv("SSE_CHAT_PUBLIC_ROOMS");
  sse::Config retry;
  EXPECT_EQ(parse({"--retry", "3600001"}, retry).kind, sse::ParseOutcome::Error);
  EXPECT_EQ(parse({"--retry", "3600000"}, retry).kind, sse::ParseOutcome::Run);
}

// The command line wins over the environment, also to turn a switch off or to give the key an
// empty variable left out.
TEST(Config, TheCommandLineOverridesTheEnvironmentBothWays) {
  setenv("SSE_CHAT_NO_JOURNAL", "1", 1);
  sse::Config journal_on;
  ASSERT_EQ(parse({"--no-journal=false"}, journal_on).kind, sse::ParseOutcome::Run);
  EXPECT_TRUE(journal_on.journal);
  unsetenv("SSE_CHAT_NO_JOURNAL");
  setenv("SSE_CHAT_JWT_KEY", "", 1);
  sse::Config keyed;
  ASSERT_EQ(parse({"--jwt-key", "/k"}, keyed).kind, sse::ParseOutcome::Run);
  EXPECT_EQ(keyed.jwt_keys, (std::vector<std::string>{"/k"}));
  sse::Config open;
  EXPECT_EQ(parse({}, open).kind, sse::ParseOutcome::Error);
  unsetenv("SSE_CHAT_JWT_KEY");
}

// Rates and bursts are plain decimals within bounds; what strtod would also take (hex, signs,
// spaces, exponents, inf) is a typo, and a rate so small that its Retry-After overflows is one too.
TEST(Config, RatesArePlainDecimalsWithinBounds) {
  for (const char* good : {"0", "0.001", "20", "2.5", "1000000"}) {
    sse::Config config;
    EXPECT_EQ(parse({"--post-rate", good}, config).kind, sse::ParseOutcome::Run) << good;
  }
  for (const char* bad : {"0x10", "+10", " 10", "10 ", "1e3", "inf", "1e309", "-0", "0.0001",
                          "1000001", ".5", "5.", "", "nan"}) {
    sse::Config config;
    auto outcome = parse({"--post-rate", bad}, config);
    EXPECT_EQ(outcome.kind, sse::ParseOutcome::Error) << bad;
    EXPECT_NE(outcome.message.find("a decimal number from 0.001 to 1000000, or 0"),
              std::string::npos)
        << outcome.message;
  }
  sse::Config burst;
  EXPECT_EQ(parse({"--post-burst", "0"}, burst).kind, sse::ParseOutcome::Error);
  EXPECT_EQ(parse({"--subscribe-burst", "0.5"}, burst).kind, sse::ParseOutcome::Error);
  EXPECT_EQ(parse({"--subscribe-burst", "1"}, burst).kind, sse::ParseOutcome::Run);
}

// Bounds past any use keep sums of them from wrapping: a queue of 2^63 frames hung the server
// on its first connection, a body limit of 2^64-1 refused 48 KB.
TEST(Config, SizesHaveMaxima) {
  for (auto [flag, too_big, largest] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"--client-queue", "16777217", "16777216"},
           {"--max-body", "1073741825", "1073741824"},
           {"--max-rooms", "100000001", "100000000"},
           {"--max-rooms-per-stream", "100001", "100000"},
           {"--history", "100000001", "100000000"}}) {
    sse::Config config;
    auto outcome = parse({flag, too_big}, config);
    EXPECT_EQ(outcome.kind, sse::ParseOutcome::Error) << flag;
    EXPECT_NE(outcome.message.find("at most " + largest), std::string::npos) << outcome.message;
    EXPECT_EQ(parse({flag, largest}, config).kind, sse::ParseOutcome::Run) << flag;
  }
  sse::Config heartbeat;
  auto outcome = parse({"--heartbeat", "4294967296"}, heartbeat);
  EXPECT_NE(outcome.message.find("at least 1 and at most 4294967295"), std::string::npos)
      << outcome.message;
}

// A flag that takes a value, followed by another flag, forgot its value: `--data-dir --no-journal`
// must not journal into a directory named --no-journal.
TEST(Config, AFlagIsNotTakenForTheValueBeforeIt) {
  sse::Config config;
  auto outcome = parse({"--data-dir", "--no-journal"}, config);
  EXPECT_EQ(outcome.kind, sse::ParseOutcome::Error);
  EXPECT_NE(outcome.message.find("--data-dir needs a value"), std::string::npos) << outcome.message;
  EXPECT_EQ(parse({"--data-dir=--odd-name"}, config).kind, sse::ParseOutcome::Run);
  EXPECT_EQ(config.data_dir, "--odd-name");
}
