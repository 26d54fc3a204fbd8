// Hostile tests of the writer set's batched sends (one io_uring submission per loop iteration),
// over real sockets, each run both ways (batched and --no-io-uring): results applied while other
// connections' pipelined POSTs broadcast into the same batch, streams catching up through partial
// sends and EPOLLOUT, peers that reset mid-batch, and a ring that fails in the middle of a
// broadcast to more connections than one submission holds.
//
// No assertion depends on timing. The server is sometimes paused (SIGSTOP) while requests are
// queued so that they are handled in one loop iteration: that only makes the batch bigger, the
// expected outcome is the same however the work is split.
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "test_server.h"

using namespace testing_support;

namespace {

// ---- a server whose io_uring_enter fails for big submissions ----
//
// With SSE_REVIEW_REAL_BIN set, this test binary is only a launcher: before main it installs a
// seccomp filter under which io_uring_enter fails with EAGAIN when asked to submit at least
// SSE_REVIEW_DENY_SUBMIT_FROM entries (io_uring_setup and smaller submissions still work), then
// execs the real server with the same arguments. The kernel may refuse a submission like this
// (EAGAIN, ENOMEM, EBUSY); the server must then go on with writev.

#if defined(__x86_64__)
constexpr uint32_t kAuditArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr uint32_t kAuditArch = AUDIT_ARCH_AARCH64;
#else
constexpr uint32_t kAuditArch = 0;
#endif

__attribute__((constructor)) void launch_real_server_if_asked(int, char** argv, char**) {
  const char* real = std::getenv("SSE_REVIEW_REAL_BIN");
  const char* from = std::getenv("SSE_REVIEW_DENY_SUBMIT_FROM");
  if (!real || !from) return;
  auto threshold = static_cast<uint32_t>(std::strtoul(from, nullptr, 10));
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kAuditArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 0, 3),
      // to_submit (the low word of the second argument, little-endian)
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[1])),
      BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, threshold, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
    _exit(126);
  std::string bin = real;
  unsetenv("SSE_REVIEW_REAL_BIN");
  unsetenv("SSE_REVIEW_DENY_SUBMIT_FROM");
  argv[0] = bin.data();
  execv(bin.c_str(), argv);
  _exit(127);
}

// Whether this process may install a seccomp filter (a container may forbid it): tried in a child.
bool seccomp_filters_allowed() {
  pid_t child = fork();
  if (child == 0) {
    sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    sock_fprog prog{1, allow};
    bool ok = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
              syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  return child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) &&
         WEXITSTATUS(status) == 0;
}

class SendModes : public testing::TestWithParam<std::vector<std::string>> {};

INSTANTIATE_TEST_SUITE_P(Batched, SendModes,
                         testing::Values(std::vector<std::string>{},
                                         std::vector<std::string>{"--no-io-uring"}),
                         [](const auto& info) {
                           return info.param.empty() ? "batched" : "writev";
                         });

std::vector<std::string> with(std::vector<std::string> args, std::vector<std::string> more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::string post_request(const std::string& user, const std::string& text, bool close = false) {
  std::string body = R"({"user":")" + user + R"(","text":")" + text + R"("})";
  return "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
         std::string(close ? "Connection: close\r\n" : "") +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// The "text" member of a message's JSON (texts here never hold quotes).
std::string text_of(const std::string& data) {
  size_t p = data.find("\"text\":\"");
  if (p == std::string::npos) return "";
  p += 8;
  return data.substr(p, data.find('"', p) - p);
}

// Holds the server still while requests pile up, so that one loop iteration finds them all.
struct Paused {
  pid_t pid;
  explicit Paused(pid_t p) : pid(p) { kill(pid, SIGSTOP); }
  ~Paused() { kill(pid, SIGCONT); }
};

}  // namespace

// A broadcast to more streams than one submission holds (BatchWriter::kMaxSends = 256), while the
// kernel refuses the full submission: the writer set must drop to writev for the rest of that
// broadcast too, not queue the next chunk on a ring it has just dropped.
TEST(BatchedSends, RingRefusedMidBroadcastStillReachesEveryStream) {
  const char* real = std::getenv("SSE_CHAT_BIN");
  ASSERT_NE(real, nullptr);
  if (!seccomp_filters_allowed()) GTEST_SKIP() << "seccomp filters are not allowed here";
  LaunchOptions launch;
  launch.env = {"SSE_CHAT_BIN=/proc/self/exe", std::string("SSE_REVIEW_REAL_BIN=") + real,
                "SSE_REVIEW_DENY_SUBMIT_FROM=256"};
  ServerProcess server({"--heartbeat", "3600"}, true, launch);
  if (server.log().find("io_uring") == std::string::npos)
    GTEST_SKIP() << "io_uring is not available here";
  constexpr int kStreams = 300;
  std::vector<std::unique_ptr<Subscription>> subs;
  for (int i = 0; i < kStreams; ++i) {
    subs.push_back(std::make_unique<Subscription>(server.port()));
    ASSERT_TRUE(subs.back()->ok) << i;
  }
  ASSERT_EQ(post_message(server.port(), "alice", "to-all"), 1u) << server.log();
  for (int i = 0; i < kStreams; ++i) {
    auto ev = subs[i]->reader.next_message();
    ASSERT_TRUE(ev) << "stream " << i << " lost; server running: " << server.running() << "\n"
                    << server.log();
    EXPECT_EQ(ev->id, "1");
    EXPECT_EQ(text_of(ev->data), "to-all");
  }
  EXPECT_TRUE(server.running()) << server.log();
}

// Several connections pipeline POSTs (past the pipelining pause, so the rest is parsed only once
// their answers are written: inside the writer set, while other connections' results are being
// applied) to streams of the same batch. Every stream gets every message once, in id order, each
// poster's in the order posted; every poster gets its answers in order, then a lingering close.
TEST_P(SendModes, PipelinedPostsAppliedMidBatchLoseAndRepeatNothing) {
  ServerProcess server(with(GetParam(), {"--client-queue", "4096", "--heartbeat", "3600"}));
  constexpr int kStreams = 24, kPosters = 8, kPosts = 40;
  std::vector<std::unique_ptr<Subscription>> subs;
  for (int i = 0; i < kStreams; ++i) {
    subs.push_back(std::make_unique<Subscription>(server.port()));
    ASSERT_TRUE(subs.back()->ok);
  }
  std::vector<std::unique_ptr<Client>> posters;
  for (int p = 0; p < kPosters; ++p) {
    posters.push_back(std::make_unique<Client>(server.port()));
    ASSERT_TRUE(posters.back()->connected());
    // Connected and idle before the pause, so that the requests below are all read at once.
    ASSERT_EQ(posters.back()->get("/healthz")->status, 200);
  }
  {
    Paused paused(server.pid());
    for (int p = 0; p < kPosters; ++p) {
      std::string all;
      for (int k = 0; k < kPosts; ++k)
        all += post_request("p" + std::to_string(p),
                            "p" + std::to_string(p) + "-" + std::to_string(k));
      all += "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
      ASSERT_TRUE(posters[p]->send(all));
    }
  }
  std::map<uint64_t, std::string> posted;  // id -> text
  for (int p = 0; p < kPosters; ++p) {
    uint64_t last = 0;
    for (int k = 0; k < kPosts; ++k) {
      auto r = posters[p]->read_response();
      ASSERT_TRUE(r) << "poster " << p << " answer " << k;
      ASSERT_EQ(r->status, 201) << r->body;
      uint64_t id = json_id(r->body);
      EXPECT_GT(id, last);
      last = id;
      EXPECT_TRUE(posted.emplace(id, "p" + std::to_string(p) + "-" + std::to_string(k)).second);
    }
    auto r = posters[p]->read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_TRUE(posters[p]->wait_closed());
  }
  ASSERT_EQ(posted.size(), static_cast<size_t>(kPosters * kPosts));
  EXPECT_EQ(posted.begin()->first, 1u);
  EXPECT_EQ(posted.rbegin()->first, static_cast<uint64_t>(kPosters * kPosts));
  for (int i = 0; i < kStreams; ++i) {
    for (const auto& [id, text] : posted) {
      auto ev = subs[i]->reader.next_message();
      ASSERT_TRUE(ev) << "stream " << i << " ended before id " << id;
      ASSERT_EQ(ev->id, std::to_string(id)) << "stream " << i;
      ASSERT_EQ(text_of(ev->data), text) << "stream " << i;
    }
  }
  EXPECT_TRUE(server.running());
}

// Streams catching up on a backlog several times their socket buffers (partial sends, -EAGAIN,
// EPOLLOUT), read a little at a time in turn, while live messages arrive mid-catch-up: each gets
// every byte of every message once and in order.
TEST_P(SendModes, PartialSendsAndLiveMessagesDuringCatchUpKeepEveryStreamExact) {
  ServerProcess server(with(GetParam(), {"--heartbeat", "3600"}));
  constexpr int kBacklog = 150, kLive = 60, kStreams = 24;
  auto big_text = [](int i) {
    std::string t = "m" + std::to_string(i) + "-";
    while (t.size() < 1900) t += static_cast<char>('a' + (i + t.size()) % 26);
    return t;
  };
  for (int i = 1; i <= kBacklog; ++i)
    ASSERT_EQ(post_message(server.port(), "alice", big_text(i)), static_cast<uint64_t>(i));
  std::vector<std::unique_ptr<Client>> streams;
  for (int s = 0; s < kStreams; ++s) {
    streams.push_back(std::make_unique<Client>(server.port()));
    ASSERT_TRUE(streams.back()->connected());
    int small = 32768;
    setsockopt(streams.back()->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  }
  {
    Paused paused(server.pid());
    for (auto& c : streams)
      ASSERT_TRUE(c->send("GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 0\r\n\r\n"));
  }
  std::vector<std::unique_ptr<SseReader>> readers;
  for (auto& c : streams) {
    auto head = c->read_head();
    ASSERT_TRUE(head);
    ASSERT_EQ(head->status, 200);
    readers.push_back(std::make_unique<SseReader>(*c));
  }
  std::vector<int> next(kStreams, 1);
  auto read_some = [&](int upto) {
    for (bool progress = true; progress;) {
      progress = false;
      for (int s = 0; s < kStreams; ++s) {
        if (next[s] > upto) continue;
        auto ev = readers[s]->next_message();
        ASSERT_TRUE(ev) << "stream " << s << " ended before id " << next[s];
        ASSERT_EQ(ev->id, std::to_string(next[s])) << "stream " << s;
        std::string want = next[s] <= kBacklog ? big_text(next[s]) : "live" + ev->id;
        ASSERT_EQ(text_of(ev->data), want) << "stream " << s << " id " << ev->id;
        ++next[s];
        progress = true;
      }
    }
  };
  read_some(20);  // each stream now has most of its backlog still to come
  for (int i = 1; i <= kLive; ++i) {
    std::string text = "live" + std::to_string(kBacklog + i);
    ASSERT_EQ(post_message(server.port(), "bob", text), static_cast<uint64_t>(kBacklog + i));
  }
  read_some(kBacklog + kLive);
  EXPECT_TRUE(server.running());
}

// Half the streams reset their connection while a POST waits in the same loop iteration: the
// other half get the message and everything after, the poster its answer, the server goes on.
TEST_P(SendModes, StreamsResetInTheBatchDoNotDisturbTheOthers) {
  ServerProcess server(with(GetParam(), {"--heartbeat", "3600"}));
  constexpr int kStreams = 40;
  std::vector<std::unique_ptr<Subscription>> subs;
  for (int i = 0; i < kStreams; ++i) {
    subs.push_back(std::make_unique<Subscription>(server.port()));
    ASSERT_TRUE(subs.back()->ok);
  }
  Client poster(server.port());
  ASSERT_EQ(poster.get("/healthz")->status, 200);
  {
    Paused paused(server.pid());
    for (int i = 0; i < kStreams; i += 2) {
      linger reset{1, 0};
      setsockopt(subs[i]->client.fd(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
      subs[i]->client.close();  // RST
    }
    ASSERT_TRUE(poster.send(post_request("alice", "one") + post_request("alice", "two")));
  }
  for (int k = 1; k <= 2; ++k) {
    auto r = poster.read_response();
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 201);
    EXPECT_EQ(json_id(r->body), static_cast<uint64_t>(k));
  }
  ASSERT_EQ(post_message(server.port(), "alice", "three"), 3u);
  for (int i = 1; i < kStreams; i += 2) {
    for (const char* want : {"one", "two", "three"}) {
      auto ev = subs[i]->reader.next_message();
      ASSERT_TRUE(ev) << "stream " << i;
      EXPECT_EQ(text_of(ev->data), want);
    }
  }
  EXPECT_TRUE(server.running());
}
