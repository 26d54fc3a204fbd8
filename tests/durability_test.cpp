// The delivery guarantee when storage misbehaves, over real sockets against the real binary: a
// removed data directory, the same nonce racing the disk, ids at the top of the range. (Disk
// failures that need injection, such as EIO from fdatasync, are driven in local_broker_test.)
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <set>
#include <thread>

#include "test_server.h"

using namespace testing_support;

namespace {

std::vector<uint64_t> kept_ids(uint16_t port) {
  Client c(port);
  auto r = c.get("/messages?since=0&limit=1000");
  std::vector<uint64_t> ids;
  if (!r || r->status != 200) return ids;
  size_t p = 0;
  while ((p = r->body.find("{\"id\":", p)) != std::string::npos) {
    p += 6;
    ids.push_back(std::strtoull(r->body.c_str() + p, nullptr, 10));
  }
  return ids;
}

std::string post_body(const std::string& text, const std::string& nonce = "") {
  std::string body = "{\"user\":\"alice\",\"text\":\"" + text + "\"";
  if (!nonce.empty()) body += ",\"nonce\":\"" + nonce + "\"";
  return body + "}";
}

std::string post_request(const std::string& body) {
  return "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         "Content-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

TEST(Durability, SinceTheLargestIdListsNothing) {
  ServerProcess server;
  for (int i = 0; i < 3; ++i) ASSERT_NE(post_message(server.port(), "u", "m"), 0u);
  Client c(server.port());
  for (const char* since : {"18446744073709551615", "18446744073709551614"}) {
    auto r = c.get(std::string("/messages?since=") + since);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "[]") << since;
  }
  EXPECT_EQ(c.get("/messages?since=18446744073709551616")->status, 400);  // not a 64-bit id
}

TEST(Durability, RemovedDataDirectoryIsNeverAcknowledgedAndIsRebuilt) {
  std::string dir = make_temp_dir() + "/data";
  uint64_t before = 0, after = 0;
  {
    ServerProcess server({"--data-dir", dir}, false);
    before = post_message(server.port(), "alice", "before");
    ASSERT_NE(before, 0u);
    std::filesystem::remove_all(dir);
    Client c(server.port());
    auto refused = c.post_json(post_body("into the void"));
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 503);
    EXPECT_NE(refused->body.find("removed"), std::string::npos) << refused->body;
    EXPECT_FALSE(refused->header("retry-after").empty());
    // Recovery runs once a second: /healthz says why until then, and 200 after.
    std::optional<HttpResponse> health;
    for (int i = 0; i < 100; ++i) {
      health = c.get("/healthz");
      ASSERT_TRUE(health);
      if (health->status == 200) break;
      EXPECT_EQ(health->status, 503);
      EXPECT_NE(health->body.find("storage"), std::string::npos) << health->body;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_EQ(health->status, 200);
    EXPECT_TRUE(std::filesystem::exists(dir + "/journal"));
    after = post_message(server.port(), "alice", "after");
    ASSERT_GT(after, before);
    EXPECT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
  }
  ServerProcess restarted({"--data-dir", dir}, false);
  EXPECT_EQ(kept_ids(restarted.port()), (std::vector<uint64_t>{before, after}));
}

TEST(Durability, SameNonceOnTwoConnectionsWhileTheDiskSyncsIsStoredOnce) {
  std::string dir = make_temp_dir();
  ServerProcess server({"--data-dir", dir, "--fsync", "always"}, false);
  constexpr int kTries = 20;
  for (int i = 0; i < kTries; ++i) {
    std::string request = post_request(post_body("once", "nonce-" + std::to_string(i)));
    Client a(server.port()), b(server.port());
    ASSERT_TRUE(a.send(request));
    ASSERT_TRUE(b.send(request));
    auto ra = a.read_response(), rb = b.read_response();
    ASSERT_TRUE(ra && rb);
    std::multiset<int> statuses{ra->status, rb->status};
    EXPECT_EQ(statuses, (std::multiset<int>{200, 201})) << ra->body << " " << rb->body;
    EXPECT_EQ(json_id(ra->body), json_id(rb->body));
  }
  EXPECT_EQ(kept_ids(server.port()).size(), static_cast<size_t>(kTries));
}

TEST(Durability, AFileSizeLimitAnswers503InsteadOfKillingTheServer) {
  std::string dir = make_temp_dir();
  LaunchOptions launch;
  launch.max_file_bytes = 20000;  // as LimitFSIZE= or ulimit -f would set
  ServerProcess server({"--data-dir", dir, "--journal-max-bytes", "1000000"}, false, launch);
  Client c(server.port());
  std::vector<uint64_t> acknowledged;
  std::optional<HttpResponse> r;
  for (int i = 0; i < 200; ++i) {
    r = c.post_json(post_body(std::string(200, 'x') + std::to_string(i)));
    ASSERT_TRUE(r) << "the server died at POST " << i;
    if (r->status != 201) break;
    acknowledged.push_back(json_id(r->body));
  }
  EXPECT_EQ(r->status, 503);
  EXPECT_NE(r->body.find("File too large"), std::string::npos) << r->body;
  EXPECT_TRUE(server.running());
  server.stop(SIGKILL);
  ServerProcess restarted({"--data-dir", dir}, false);
  EXPECT_EQ(kept_ids(restarted.port()), acknowledged);
}

// A journal that no longer fits (a file size limit, a disk without room for the copy): each
// recovery's rewrite fails the same way, and the log says so once, not once a second.
TEST(Durability, ARecoveryFailingForTheSameReasonSaysSoOnce) {
  std::string dir = make_temp_dir();
  {
    ServerProcess before({"--data-dir", dir}, false);
    Client c(before.port());
    for (int i = 0; i < 100; ++i)
      ASSERT_EQ(c.post_json(post_body(std::string(300, 'x') + std::to_string(i)))->status, 201);
  }
  LaunchOptions launch;
  launch.max_file_bytes = 20000;  // under what the journal (and so its rewrite) holds
  ServerProcess server({"--data-dir", dir}, false, launch);
  auto refused = Client(server.port()).post_json(post_body("does not fit"));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));  // a few more retries
  EXPECT_EQ(occurrences(server.log(), "journal recovery failed"), 1u) << server.log();
}

// Clears the data directory's lock by hand and takes it, as another process would (after `before`
// each try); the server retakes it within a second, so this races it. The held fd, or -1.
static int take_lock_from_server(
    const std::string& dir, const std::function<void()>& before = [] {}) {
  for (int i = 0; i < 50; ++i) {
    before();
    std::filesystem::remove(dir + "/lock");
    int fd = open((dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0) return fd;
    if (fd >= 0) close(fd);
  }
  return -1;
}

// Another process took the data directory's lock after it was cleared by hand: POSTs are refused
// until it lets go, and the log says why once, neither on every retry nor only at debug level.
TEST(Durability, ARecoveryBlockedByAnotherHolderOfTheLockSaysWhyOnce) {
  std::string dir = make_temp_dir();
  ServerProcess server({"--data-dir", dir}, false);
  ASSERT_EQ(post_message(server.port(), "alice", "before"), 1u);
  int held = take_lock_from_server(dir);
  ASSERT_GE(held, 0);
  // As the failure itself, or as what stops the recovery from mending another one.
  const std::string why = "is in use by another sse-chat";
  auto count = [&](const std::string& text) { return occurrences(server.log(), text); };
  for (int i = 0; i < 100 && count(why) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Client c(server.port());
  auto refused = c.post_json(R"({"user":"alice","text":"while held"})");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // a few more retries
  EXPECT_EQ(count(why), 1u) << server.log();
  close(held);
  uint64_t after = 0;
  for (int i = 0; i < 200 && !(after = post_message(server.port(), "alice", "after")); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_GT(after, 1u);
}

// The journal renamed away, and another process holding the directory's lock before the server's
// next check: /healthz names the first failure and what now stops the recovery, not only the first.
TEST(Durability, HealthNamesWhatStopsTheRecoveryBesidesTheFirstFailure) {
  std::string dir = make_temp_dir();
  ServerProcess server({"--data-dir", dir}, false);
  ASSERT_EQ(post_message(server.port(), "alice", "before"), 1u);
  int held = take_lock_from_server(dir, [&] {
    std::error_code ignored;  // gone already after the first try
    std::filesystem::rename(dir + "/journal", dir + "/journal.moved", ignored);
  });
  ASSERT_GE(held, 0);
  Client c(server.port());
  std::optional<HttpResponse> health;
  for (int i = 0; i < 100; ++i) {
    health = c.get("/healthz");
    ASSERT_TRUE(health);
    if (health->body.find("recovery failing") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(health->status, 503);
  EXPECT_TRUE(health->body.starts_with("storage failing: the journal file was removed"))
      << health->body;
  EXPECT_NE(health->body.find("; recovery failing: data dir " + dir + " is in use by another"),
            std::string::npos)
      << health->body;
  close(held);
  uint64_t after = 0;
  for (int i = 0; i < 200 && !(after = post_message(server.port(), "alice", "after")); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_GT(after, 1u);
  health = c.get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200) << health->body;
}

// A lock file cleared by hand ("stale lock") is taken again within a second, so a second server
// started on the same data directory afterwards is still refused instead of handing out the
// same ids as the first.
TEST(Durability, ARemovedLockFileIsTakenAgain) {
  std::string dir = make_temp_dir();
  ServerProcess first({"--data-dir", dir}, false);
  ASSERT_EQ(post_message(first.port(), "alice", "before"), 1u);
  ASSERT_TRUE(std::filesystem::remove(dir + "/lock"));
  for (int i = 0; i < 200 && !std::filesystem::exists(dir + "/lock"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(std::filesystem::exists(dir + "/lock"));
  // `timeout` ends a second server that wrongly started (exit 124); a refused one exits 1.
  std::string command = "timeout 10 " + binary_path() + " --listen 127.0.0.1:0 --data-dir " + dir +
                        " > /dev/null 2>&1";
  int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_EQ(post_message(first.port(), "alice", "after"), 2u);  // the first goes on
}
