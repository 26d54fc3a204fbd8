// Test support: a CommitSink that is a real Hub and also writes down what a broker gave it, in
// order, for tests of brokers (local or Redis).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "broker.h"
#include "hub.h"
#include "sse.h"

namespace testing_support {

struct RecordingSink : sse::CommitSink {
  explicit RecordingSink(sse::HubOptions options = {100, 1ull << 30, 1000}) : hub(options) {}

  sse::Hub hub;
  std::vector<uint64_t> live;          // ids committed while running, in the order given
  std::vector<uint64_t> restored_ids;  // ids read back from storage at start-up
  std::vector<std::string> rooms;      // each message's room, live and restored alike
  std::vector<std::string> jsons;      // each message's JSON, likewise

  void on_committed(uint64_t id, std::string_view room, const sse::FrameRef& frame,
                    bool was_restored) override {
    (was_restored ? restored_ids : live).push_back(id);
    rooms.emplace_back(room);
    jsons.emplace_back(sse::frame_json(*frame.get()));
    hub.on_committed(id, room, frame, was_restored);
  }
  void for_each_kept(const KeptVisitor& visit) const override { hub.for_each_kept(visit); }
  std::vector<sse::FrameRef> kept_page(std::string_view room,
                                       const sse::PageRange& range) const override {
    return hub.kept_page(room, range);
  }
  void for_each_floor(const FloorVisitor& visit) const override { hub.for_each_floor(visit); }
  void restore_floor(std::string_view room, uint64_t through) override {
    hub.restore_floor(room, through);
  }
  void restored() override { hub.restored(); }
  void restore_base(uint64_t last_id, uint64_t lost_through) override {
    hub.restore_base(last_id, lost_through);
  }
  void set_remote_presence(std::string_view room, uint64_t online,
                           std::vector<std::string> names) override {
    hub.set_remote_presence(room, online, std::move(names));
  }
  void not_restored_through(uint64_t through) override { hub.not_restored_through(through); }
  void lose_through(std::string_view room, uint64_t through) override {
    hub.lose_through(room, through);
  }
  void lose_everywhere_through(uint64_t through, const std::vector<std::string>& except) override {
    hub.lose_everywhere_through(through, except);
  }
  void lose_skipped(uint64_t through) override { hub.lose_skipped(through); }
};

}  // namespace testing_support
