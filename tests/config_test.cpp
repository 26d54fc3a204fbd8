// Command-line parsing: a number is taken only when its field can hold it, never cut down to fit
// (4294967297 seconds must not become a 1-second heartbeat).
#include "config.h"

#include <gtest/gtest.h>

#include <string>
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
