// Test support for LocalBroker tests: options for a journal in `dir`, a publish whose answer the
// test looks at later (a Broker answers on the loop, never inside the call), and a broker on a
// real reactor wired as Server::start wires it.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "broker.h"
#include "local_broker.h"
#include "reactor.h"
#include "recording_sink.h"
#include "run_loop.h"
#include "sse.h"

namespace testing_support {

// A fresh directory for a journal.
inline std::string journal_temp_dir() {
  char tmpl[] = "/tmp/sse-broker-XXXXXX";
  return mkdtemp(tmpl);
}

// Whether `fd` is a compaction's new file: its thread's calls are not the syncer's.
inline bool is_compaction_file(int fd) {
  char target[4096];
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = readlink(link.c_str(), target, sizeof target);
  return n > 0 && std::string_view(target, static_cast<size_t>(n)).ends_with(".compact");
}

struct PublishAnswer {
  bool done = false;
  sse::PublishResult result{sse::PublishResult::Status::Unavailable, 0, {}};
};

inline sse::LocalBrokerOptions broker_options(const std::string& dir, sse::FsyncPolicy fsync,
                                              sse::JournalIo* io = nullptr,
                                              uint64_t max_bytes = 64 << 20) {
  sse::LocalBrokerOptions o;
  o.data_dir = dir;
  o.fsync = fsync;
  o.io = io;
  o.journal_max_bytes = max_bytes;
  return o;
}

inline std::shared_ptr<PublishAnswer> publish_to(sse::Broker& broker, sse::Draft draft) {
  auto answer = std::make_shared<PublishAnswer>();
  broker.publish(std::move(draft), [answer](const sse::PublishResult& r) {
    answer->done = true;
    answer->result = r;
  });
  return answer;
}

// A Draft as the tests write them: alice posting to general unless they say otherwise.
inline sse::Draft draft(const std::string& text, const std::string& nonce = "",
                        const std::string& room = "general", const std::string& user = "alice",
                        const std::string& subject = "") {
  return sse::Draft{room, user, text, nonce, subject};
}

// A LocalBroker on a real reactor, committing into a RecordingSink; a room the hub forgets becomes
// a floor record in the journal, as Server::start wires it.
class BrokerFixture {
 public:
  explicit BrokerFixture(sse::LocalBrokerOptions options,
                         sse::HubOptions hub = {100, 1ull << 30, 1000})
      : sink(hub) {
    reactor.every(std::chrono::milliseconds(5), [] {});  // wakes the loop to re-check
    broker = std::make_unique<sse::LocalBroker>(reactor, sink, std::move(options));
    sink.hub.on_forgotten = [this](std::string_view room, uint64_t through) {
      broker->room_forgotten(room, through);
    };
  }
  bool start() {
    std::string error;
    bool ok = broker->start(error);
    EXPECT_TRUE(ok) << error;
    return ok;
  }
  bool run_until(const std::function<bool()>& cond, int timeout_ms = 20000) {
    return testing_support::run_until(reactor, cond, std::chrono::milliseconds(timeout_ms));
  }
  // The once-a-second tick, and the recovery (or compaction) it starts run to their end.
  void tick() {
    broker->tick();
    EXPECT_TRUE(run_until([&] { return !broker->compacting(); }));
  }
  std::shared_ptr<PublishAnswer> publish(sse::Draft d) { return publish_to(*broker, std::move(d)); }
  std::shared_ptr<PublishAnswer> publish(const std::string& text, const std::string& nonce = "",
                                         const std::string& room = "general") {
    return publish(draft(text, nonce, room));
  }
  // Answered, and any compaction it started finished, as a real loop polling on would.
  sse::PublishResult publish_and_wait(sse::Draft d) {
    auto answer = publish(std::move(d));
    EXPECT_TRUE(run_until([&] { return answer->done && !broker->compacting(); }));
    return answer->result;
  }
  sse::PublishResult publish_and_wait(const std::string& text, const std::string& nonce = "",
                                      const std::string& room = "general") {
    return publish_and_wait(draft(text, nonce, room));
  }
  // The ids of `room`'s kept messages after `after`, as GET /messages pages them.
  std::vector<uint64_t> history(std::optional<uint64_t> after = 0, size_t limit = 1000,
                                const std::string& room = "general") {
    std::vector<uint64_t> ids;
    bool done = false;
    broker->read_history(room, {after, std::nullopt, limit},
                         [&](std::vector<sse::FrameRef> frames) {
                           for (auto& f : frames) ids.push_back(sse::frame_id(*f.get()));
                           done = true;
                         });
    EXPECT_TRUE(run_until([&] { return done; }));
    return ids;
  }

  sse::Reactor reactor;
  RecordingSink sink;
  std::unique_ptr<sse::LocalBroker> broker;
};

// What a server restarted at this moment (kill -9, no recovery first) reads back.
inline std::vector<uint64_t> ids_after_restart(const std::string& dir) {
  BrokerFixture f(broker_options(dir, sse::FsyncPolicy::Never));
  f.start();
  return f.sink.restored_ids;
}

}  // namespace testing_support
