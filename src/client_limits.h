// Per-client-IP abuse controls: token buckets for POSTs and new streams, concurrent stream counts,
// and which proxies are trusted to name the real client (X-Forwarded-For / Forwarded).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "net.h"

namespace sse {

// What the per-client limits count as one client: an address, or for a global IPv6 address its /64
// (what one subscriber or office is given; counted one by one, each of its addresses would be a
// fresh budget for connections, streams, POSTs and rooms).
net::IpAddress client_block(const net::IpAddress& ip);

// Hash and equality of client blocks: every limit table keys by them.
struct IpHash {
  size_t operator()(const net::IpAddress& ip) const {
    net::IpAddress block = client_block(ip);
    return std::hash<std::string_view>{}(
        std::string_view(reinterpret_cast<const char*>(block.bytes), sizeof block.bytes));
  }
};
struct SameClient {
  bool operator()(const net::IpAddress& a, const net::IpAddress& b) const {
    return client_block(a) == client_block(b);
  }
};

struct Cidr {
  net::IpAddress base;
  int prefix_bits = 128;  // over the 16-byte (v4-mapped) form
  bool contains(const net::IpAddress& ip) const;
};
std::optional<Cidr> parse_cidr(std::string_view text);

// One token bucket per key (a client address, or a token's subject), created on first use.
template <typename Key, typename Hash = std::hash<Key>, typename Equal = std::equal_to<Key>>
class TokenBuckets {
 public:
  TokenBuckets(double rate_per_s, double burst)
      : rate_(rate_per_s), burst_(burst < 1 ? 1 : burst) {}
  bool enabled() const { return rate_ > 0; }
  // Takes one token; false (and the seconds until one is back) when the bucket is empty.
  bool take(const Key& key, int64_t now_ms, uint32_t& retry_after_s) {
    if (!enabled()) return true;
    auto [it, fresh] = buckets_.try_emplace(key, Bucket{burst_, now_ms});
    Bucket& b = it->second;
    if (!fresh) refill(b, now_ms);
    if (b.tokens >= 1.0) {
      b.tokens -= 1.0;
      return true;
    }
    retry_after_s =
        std::max<uint32_t>(1, static_cast<uint32_t>(std::ceil((1.0 - b.tokens) / rate_)));
    return false;
  }
  // Forgets buckets that have refilled, so the table only holds recent clients.
  void prune(int64_t now_ms) {
    for (auto it = buckets_.begin(); it != buckets_.end();)
      it = refill(it->second, now_ms) >= burst_ ? buckets_.erase(it) : std::next(it);
  }
  size_t size() const { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens;
    int64_t updated_ms;
  };
  double refill(Bucket& b, int64_t now_ms) const {
    double elapsed = static_cast<double>(now_ms - b.updated_ms) / 1000.0;
    b.tokens = std::min(burst_, b.tokens + elapsed * rate_);
    b.updated_ms = now_ms;
    return b.tokens;
  }
  double rate_;
  double burst_;
  std::unordered_map<Key, Bucket, Hash, Equal> buckets_;
};
using AddressBuckets = TokenBuckets<net::IpAddress, IpHash, SameClient>;

// How many of something (streams, connections) each address holds, at most `max_per_ip` (0: no
// limit); an address is forgotten when it holds none.
class AddressCounts {
 public:
  explicit AddressCounts(uint32_t max_per_ip) : max_(max_per_ip) {}
  void set_max(uint32_t max_per_ip) { max_ = max_per_ip; }
  bool acquire(const net::IpAddress& ip, uint32_t n = 1);
  void release(const net::IpAddress& ip, uint32_t n = 1);

 private:
  uint32_t max_;
  std::unordered_map<net::IpAddress, uint32_t, IpHash, SameClient> counts_;
};

// The distinct rooms each address's streams read, at most `max_per_ip` (0: no limit, nothing
// tracked). A room counts once however many of the address's streams read it, so an office behind
// one NAT address, whose people read the same rooms, costs its rooms, not people x rooms.
class AddressRooms {
 public:
  explicit AddressRooms(uint32_t max_per_ip) : max_(max_per_ip) {}
  void set_max(uint32_t max_per_ip) { max_ = max_per_ip; }
  // Counts `rooms` (distinct names) for `ip` when its distinct rooms stay within the limit; false,
  // counting nothing, otherwise. True with nothing counted when there is no limit.
  bool acquire(const net::IpAddress& ip, const std::vector<std::string>& rooms);
  void release(const net::IpAddress& ip, const std::vector<std::string>& rooms);
  bool limited() const { return max_ != 0; }

 private:
  uint32_t max_;
  std::unordered_map<net::IpAddress, std::unordered_map<std::string, uint32_t>, IpHash, SameClient>
      reads_;
};

class ClientLimits {
 public:
  ClientLimits(double post_rate, double post_burst, double sub_rate, double sub_burst,
               uint32_t max_streams_per_ip, std::vector<Cidr> trusted)
      : posts(post_rate, post_burst),
        subject_posts(post_rate, post_burst),
        subscribes(sub_rate, sub_burst),
        streams(max_streams_per_ip),
        trusted_(std::move(trusted)) {}

  // The address the request speaks for: the peer, unless the peer is a trusted proxy, then the
  // nearest untrusted hop named by X-Forwarded-For (or Forwarded).
  net::IpAddress client_ip(const net::IpAddress& peer, std::string_view x_forwarded_for,
                           std::string_view forwarded) const;

  // A peer whose X-Forwarded-For (or Forwarded) is believed: one of --trusted-proxy.
  bool trusted(const net::IpAddress& ip) const;

  AddressBuckets posts;
  // POSTs that carry a valid token count per subject instead, so people behind one NAT address
  // do not share one budget.
  TokenBuckets<std::string> subject_posts;
  AddressBuckets subscribes;
  AddressCounts streams;
  AddressRooms room_reads{0};  // distinct rooms read by an address's streams

 private:
  void note_untrusted_forwarding(const net::IpAddress& peer) const;

  std::vector<Cidr> trusted_;
  mutable bool told_untrusted_forwarding_ = false;  // said once a process
};

}  // namespace sse
