// Per-client-IP abuse controls: token buckets for POSTs and new streams, concurrent stream counts,
// and which proxies are trusted to name the real client (X-Forwarded-For / Forwarded).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "net.h"

namespace sse {

struct IpHash {
  size_t operator()(const net::IpAddress& ip) const {
    return std::hash<std::string_view>{}(
        std::string_view(reinterpret_cast<const char*>(ip.bytes), sizeof ip.bytes));
  }
};

struct Cidr {
  net::IpAddress base;
  int prefix_bits = 128;  // over the 16-byte (v4-mapped) form
  bool contains(const net::IpAddress& ip) const;
};
std::optional<Cidr> parse_cidr(std::string_view text);

class TokenBuckets {
 public:
  TokenBuckets(double rate_per_s, double burst)
      : rate_(rate_per_s), burst_(burst < 1 ? 1 : burst) {}
  bool enabled() const { return rate_ > 0; }
  // Takes one token; false (and the seconds until one is back) when the bucket is empty.
  bool take(const net::IpAddress& ip, int64_t now_ms, uint32_t& retry_after_s);
  // Forgets buckets that have refilled, so the table only holds recent clients.
  void prune(int64_t now_ms);
  size_t size() const { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens;
    int64_t updated_ms;
  };
  double refill(Bucket& b, int64_t now_ms) const;
  double rate_;
  double burst_;
  std::unordered_map<net::IpAddress, Bucket, IpHash> buckets_;
};

class StreamCounts {
 public:
  explicit StreamCounts(uint32_t max_per_ip) : max_(max_per_ip) {}
  void set_max(uint32_t max_per_ip) { max_ = max_per_ip; }
  bool acquire(const net::IpAddress& ip);
  void release(const net::IpAddress& ip);

 private:
  uint32_t max_;
  std::unordered_map<net::IpAddress, uint32_t, IpHash> counts_;
};

class ClientLimits {
 public:
  ClientLimits(double post_rate, double post_burst, double sub_rate, double sub_burst,
               uint32_t max_streams_per_ip, std::vector<Cidr> trusted)
      : posts(post_rate, post_burst),
        subscribes(sub_rate, sub_burst),
        streams(max_streams_per_ip),
        trusted_(std::move(trusted)) {}

  // The address the request speaks for: the peer, unless the peer is a trusted proxy, then the
  // nearest untrusted hop named by X-Forwarded-For (or Forwarded).
  net::IpAddress client_ip(const net::IpAddress& peer, std::string_view x_forwarded_for,
                           std::string_view forwarded) const;

  TokenBuckets posts;
  TokenBuckets subscribes;
  StreamCounts streams;

 private:
  bool trusted(const net::IpAddress& ip) const;
  std::vector<Cidr> trusted_;
};

}  // namespace sse
