// Counters and gauges for GET /metrics, rendered in the Prometheus text format.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "broker.h"

namespace sse {

struct Metrics {
  // Every reason and the usual codes start at 0, so that a rate() over them says 0, not "no data".
  Metrics();
  uint64_t connections_accepted = 0;
  uint64_t bytes_sent = 0;
  uint64_t slow_consumers = 0;
  std::map<int, uint64_t> responses_by_code;
  std::map<std::string, uint64_t> rejected_by_reason;
  // Event-loop busy time per wake-up, microseconds: bucket upper bounds below, plus +Inf.
  static constexpr std::array<int64_t, 8> kLagBucketsUs = {50,   100,  250,   500,
                                                           1000, 5000, 25000, 100000};
  std::array<uint64_t, kLagBucketsUs.size() + 1> lag_buckets{};
  uint64_t lag_count = 0;
  double lag_sum_seconds = 0;

  void count_response(int status) { ++responses_by_code[status]; }
  void count_rejection(int status);
  void count_rejected(const std::string& reason) { ++rejected_by_reason[reason]; }
  void observe_loop_busy(int64_t us);
};

struct MetricsSnapshot {
  uint64_t open_connections;
  uint64_t sse_clients;
  uint64_t messages;
  uint64_t deliveries;
  uint64_t resets;
  uint64_t last_message_id;
  uint64_t history_size;
  uint64_t history_bytes;
  uint64_t rooms;
  uint64_t rooms_forgotten;
  uint64_t journal_bytes;
  bool storage_ok;
  std::optional<BrokerStats> redis;  // with --redis
  double uptime_seconds;
};

std::string render_metrics(const Metrics& m, const MetricsSnapshot& s);

}  // namespace sse
