#include "metrics.h"

#include <cmath>
#include <cstdio>

namespace sse {
namespace {

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

// Counts as integers; fractions (seconds) to nine significant digits, not 2.4929999999999999.
void sample(std::string& out, const std::string& name, double value) {
  char buf[64];
  bool whole = std::fabs(value) < 1e18 && value == std::trunc(value);
  std::snprintf(buf, sizeof buf, whole ? " %.0f\n" : " %.9g\n", value);
  out += name;
  out += buf;
}

void scalar(std::string& out, const char* name, const char* type, const char* help, double value) {
  family(out, name, type, help);
  sample(out, name, value);
}

const char* reason_for(int status) {
  switch (status) {
    case 400:
      return "bad_request";
    case 408:
      return "timeout";
    case 413:
      return "body_too_large";
    case 414:
      return "uri_too_long";
    case 431:
      return "headers_too_large";
    case 501:
      return "not_implemented";
    case 505:
      return "version_not_supported";
    default:
      return "other";
  }
}

constexpr const char* kReasons[] = {"bad_request",
                                    "timeout",
                                    "body_too_large",
                                    "uri_too_long",
                                    "headers_too_large",
                                    "other",
                                    "not_implemented",
                                    "version_not_supported",
                                    "backfill_busy",
                                    "connections_per_ip",
                                    "cross_origin",
                                    "fd_exhausted",
                                    "forbidden",
                                    "invalid_message",
                                    "invalid_stream",
                                    "max_connections",
                                    "nonce_reused",
                                    "post_rate",
                                    "room_reads_per_ip",
                                    "storage_unavailable",
                                    "streams_per_ip",
                                    "subscribe_rate",
                                    "too_many_rooms",
                                    "unauthorized",
                                    "unsupported_media_type"};
constexpr int kUsualCodes[] = {200, 201, 204, 304, 400, 401, 403, 404,
                               405, 408, 413, 415, 422, 429, 431, 503};

}  // namespace

Metrics::Metrics() {
  for (const char* reason : kReasons) rejected_by_reason[reason] = 0;
  for (int code : kUsualCodes) responses_by_code[code] = 0;
}

void Metrics::count_rejection(int status) {
  count_rejected(reason_for(status));
}

void Metrics::observe_loop_busy(int64_t us) {
  size_t i = 0;
  while (i < kLagBucketsUs.size() && us > kLagBucketsUs[i]) ++i;
  ++lag_buckets[i];
  ++lag_count;
  lag_sum_seconds += static_cast<double>(us) / 1e6;
}

std::string render_metrics(const Metrics& m, const MetricsSnapshot& s) {
  std::string out;
  scalar(out, "ssechat_open_connections", "gauge", "Open TCP connections, streams included.",
         double(s.open_connections));
  scalar(out, "ssechat_sse_clients", "gauge",
         "Connected event streams (one per connection, however many rooms it reads).",
         double(s.sse_clients));
  scalar(out, "ssechat_connections_accepted_total", "counter", "Connections accepted.",
         double(m.connections_accepted));
  scalar(out, "ssechat_messages_total", "counter", "Chat messages published.", double(s.messages));
  scalar(out, "ssechat_deliveries_total", "counter",
         "Messages queued to subscribers (live and replayed).", double(s.deliveries));
  scalar(out, "ssechat_bytes_sent_total", "counter", "Bytes written to clients.",
         double(m.bytes_sent));
  scalar(out, "ssechat_slow_consumer_disconnects_total", "counter",
         "Subscribers closed because their queue filled.", double(m.slow_consumers));
  scalar(out, "ssechat_resets_total", "counter",
         "Reset events sent to subscribers whose Last-Event-ID was not retained.",
         double(s.resets));
  scalar(out, "ssechat_last_message_id", "gauge", "Id of the newest message.",
         double(s.last_message_id));
  scalar(out, "ssechat_history_messages", "gauge", "Messages held in memory for replay.",
         double(s.history_size));
  scalar(out, "ssechat_history_bytes", "gauge",
         "Memory the kept history is counted as (bounded by --history-memory).",
         double(s.history_bytes));
  scalar(out, "ssechat_rooms", "gauge", "Rooms in memory.", double(s.rooms));
  scalar(out, "ssechat_rooms_forgotten_total", "counter",
         "Rooms nobody read that were forgotten to stay within --max-rooms.",
         double(s.rooms_forgotten));
  scalar(out, "ssechat_journal_bytes", "gauge", "Size of the journal file.",
         double(s.journal_bytes));
  scalar(out, "ssechat_storage_up", "gauge",
         "1 while storage accepts messages, 0 while POSTs are refused with 503.",
         s.storage_ok ? 1.0 : 0.0);
  if (s.redis) {
    scalar(out, "ssechat_redis_up", "gauge",
           "1 while both Redis links are up and the node reads the shared log.",
           s.redis->redis_up ? 1.0 : 0.0);
    scalar(out, "ssechat_redis_link_failures_total", "counter",
           "Redis connections lost, refused or found stuck (each is retried with backoff).",
           double(s.redis->redis_reconnects));
    scalar(out, "ssechat_redis_gaps_filled_total", "counter",
           "Times the node found it had missed log entries and read them from the rooms.",
           double(s.redis->gaps_filled));
    scalar(out, "ssechat_redis_data_losses_total", "counter",
           "Times the shared log was found to start over below what the node had read.",
           double(s.redis->data_losses));
  }
  scalar(out, "ssechat_uptime_seconds", "gauge", "Seconds since the server started.",
         s.uptime_seconds);
  family(out, "ssechat_http_requests_total", "counter", "HTTP responses sent, by status code.");
  for (const auto& [code, n] : m.responses_by_code)
    sample(out, "ssechat_http_requests_total{code=\"" + std::to_string(code) + "\"}", double(n));
  family(out, "ssechat_rejected_total", "counter", "Requests refused, by reason.");
  for (const auto& [reason, n] : m.rejected_by_reason)
    sample(out, "ssechat_rejected_total{reason=\"" + reason + "\"}", double(n));
  family(out, "ssechat_event_loop_busy_seconds", "histogram",
         "Time the event loop spent per wake-up (its lag for whatever waits).");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < Metrics::kLagBucketsUs.size(); ++i) {
    cumulative += m.lag_buckets[i];
    char le[32];
    std::snprintf(le, sizeof le, "%g", double(Metrics::kLagBucketsUs[i]) / 1e6);
    sample(out, std::string("ssechat_event_loop_busy_seconds_bucket{le=\"") + le + "\"}",
           double(cumulative));
  }
  sample(out, "ssechat_event_loop_busy_seconds_bucket{le=\"+Inf\"}", double(m.lag_count));
  sample(out, "ssechat_event_loop_busy_seconds_sum", m.lag_sum_seconds);
  sample(out, "ssechat_event_loop_busy_seconds_count", double(m.lag_count));
  return out;
}

}  // namespace sse
