// Test support for LocalBroker tests: options for a journal in `dir`, and a publish whose answer
// the test looks at later (a Broker answers on the loop, never inside the call).
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <memory>
#include <string>

#include "broker.h"
#include "local_broker.h"

namespace testing_support {

// A fresh directory for a journal.
inline std::string journal_temp_dir() {
  char tmpl[] = "/tmp/sse-broker-XXXXXX";
  return mkdtemp(tmpl);
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

}  // namespace testing_support
