// Test support: drives a Reactor until a condition holds. The 20 s limit is a guard against a
// broken build hanging the suite, not a timing claim; the loop needs something that wakes it
// (a timer) for conditions that change without I/O.
#pragma once

#include <chrono>
#include <functional>

#include "reactor.h"

namespace testing_support {

// True once `done` holds, false when the guard ran out first. Calls already deferred run first.
inline bool run_until(sse::Reactor& reactor, const std::function<bool()>& done,
                      std::chrono::milliseconds guard = std::chrono::seconds(20)) {
  auto deadline = std::chrono::steady_clock::now() + guard;
  reactor.after_dispatch([&] {
    if (done() || std::chrono::steady_clock::now() > deadline) reactor.stop();
    return false;
  });
  reactor.run_deferred();
  if (!done()) reactor.run();
  reactor.after_dispatch(nullptr);
  return done();
}

}  // namespace testing_support
