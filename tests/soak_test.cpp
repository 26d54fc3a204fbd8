// Churn soak: for SOAK_SECONDS (default 60) thousands of connections open and close (streams,
// plain requests, half-sent requests) while messages flow; afterwards the server's open-fd count
// is back to its baseline, its RSS has not grown with the churn, and an honest subscriber
// connected throughout has every message.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "test_server.h"

using namespace testing_support;

namespace {

size_t open_fds(pid_t pid) {
  size_t n = 0;
  DIR* d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (!d) return 0;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      long kib;
      in >> kib;
      return kib;
    }
    in.ignore(4096, '\n');
  }
  return -1;
}

// One round of churn: a mix of streams, requests, half-sent requests and abrupt closes.
void churn_round(uint16_t port, int connections) {
  std::vector<Client> clients;
  clients.reserve(connections);
  for (int i = 0; i < connections; ++i) {
    clients.emplace_back(port, 5);
    Client& c = clients.back();
    switch (i % 4) {
      case 0:
        c.send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
        break;
      case 1:
        c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        break;
      case 2:
        c.send("POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"us");
        break;
      case 3:
        break;  // connect and vanish
    }
  }
  for (int i = 1; i < connections; i += 4) clients[i].read_response();
}

// The server's descriptor count once the probes' own connections are gone: the lowest of a few
// samples taken without touching the server.
size_t settled_fds(pid_t pid) {
  size_t lowest = SIZE_MAX;
  for (int i = 0; i < 20; ++i) {
    lowest = std::min(lowest, open_fds(pid));
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return lowest;
}

void wait_for_connections(uint16_t port, uint64_t want) {
  for (int i = 0; i < 500 && metric(port, "ssechat_open_connections") != want; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

}  // namespace

TEST(Soak, ChurnLeavesNoDescriptorsOrMemoryBehind) {
  int seconds = std::getenv("SOAK_SECONDS") ? std::atoi(std::getenv("SOAK_SECONDS")) : 60;
  // A small ASan quarantine, so freed memory is reused and RSS means something under sanitizers.
  ServerProcess server({"--keepalive-timeout", "5", "--request-timeout", "5"}, true,
                       {{"ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=8:malloc_"
                         "context_size=4"}});
  Subscription honest(server.port());
  ASSERT_TRUE(honest.ok);
  // Warm up: enough churn that allocator caches (and ASan's 8 MiB quarantine) are full before the
  // baseline, so what is measured afterwards is growth, not warm-up.
  for (int i = 0; i < 300; ++i) churn_round(server.port(), 100);
  wait_for_connections(server.port(), 2);  // the honest stream and the metrics request
  size_t base_fds = settled_fds(server.pid());
  long base_rss = rss_kib(server.pid());
  ASSERT_GT(base_fds, 0u);

  std::atomic<bool> stop{false};
  std::atomic<int> posted{0};
  std::atomic<long> churned{0};
  std::thread publisher([&] {
    Client c(server.port());
    while (!stop) {
      auto r = c.post_json(R"({"user":"soak","text":"flowing"})");
      if (!r || r->status != 201) return;
      ++posted;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::vector<std::thread> churners;
  for (int t = 0; t < 3; ++t) {
    churners.emplace_back([&] {
      while (!stop) {
        churn_round(server.port(), 100);
        churned += 100;
      }
    });
  }
  std::vector<std::string> got;
  std::atomic<int> received{0};
  std::thread reader([&] {
    while (auto ev = honest.reader.next_message()) {
      got.push_back(ev->id);
      ++received;
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  publisher.join();
  for (auto& t : churners) t.join();
  // The last messages on their way; then the reader stops waiting for more (heartbeats would keep
  // it waiting for good), while the stream stays open for the server's counts below.
  for (int i = 0; i < 3000 && received < posted; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ::shutdown(honest.client.fd(), SHUT_RD);
  reader.join();

  EXPECT_GT(churned.load(), 1000) << "the churn did not run";
  ASSERT_EQ(got.size(), static_cast<size_t>(posted.load()));
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], std::to_string(i + 1));

  wait_for_connections(server.port(), 2);
  EXPECT_EQ(settled_fds(server.pid()), base_fds)
      << "descriptors leaked over " << churned << " connections";
  long rss = rss_kib(server.pid());
  std::printf("soak: %ld connections, %d messages, fds %zu, RSS %ld -> %ld KiB\n", churned.load(),
              posted.load(), base_fds, base_rss, rss);
  // History grew by `posted` small messages; anything beyond a few MiB would be churn leaking.
  EXPECT_LE(rss, base_rss + 8 * 1024)
      << "RSS " << base_rss << " -> " << rss << " KiB after " << churned << " connections";
  EXPECT_TRUE(server.running());
}
