#include "client_limits.h"

#include <gtest/gtest.h>

using namespace sse;

TEST(TokenBuckets, BurstThenRate) {
  AddressBuckets b(5, 20);
  auto ip = *net::parse_ip("192.0.2.1");
  uint32_t retry = 0;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(b.take(ip, 0, retry));
  EXPECT_FALSE(b.take(ip, 0, retry));
  EXPECT_EQ(retry, 1u);
  EXPECT_TRUE(b.take(ip, 200, retry));  // 0.2 s later: one token back
  EXPECT_FALSE(b.take(ip, 200, retry));
  auto other = *net::parse_ip("192.0.2.2");
  EXPECT_TRUE(b.take(other, 200, retry));  // buckets are per address
}

TEST(TokenBuckets, ZeroRateDisables) {
  AddressBuckets b(0, 1);
  uint32_t retry;
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(b.take(*net::parse_ip("::1"), 0, retry));
}

TEST(Cidr, Matches) {
  auto c = *parse_cidr("10.0.0.0/8");
  EXPECT_TRUE(c.contains(*net::parse_ip("10.1.2.3")));
  EXPECT_FALSE(c.contains(*net::parse_ip("11.0.0.1")));
  auto one = *parse_cidr("127.0.0.1");
  EXPECT_TRUE(one.contains(*net::parse_ip("127.0.0.1")));
  EXPECT_FALSE(one.contains(*net::parse_ip("127.0.0.2")));
  auto v6 = *parse_cidr("2001:db8::/32");
  EXPECT_TRUE(v6.contains(*net::parse_ip("2001:db8::5")));
  EXPECT_FALSE(parse_cidr("10.0.0.0/33"));
  EXPECT_FALSE(parse_cidr("nonsense"));
}

TEST(ClientIp, ForwardedHeadersOnlyFromTrustedProxies) {
  ClientLimits limits(0, 1, 0, 1, 0, {*parse_cidr("127.0.0.1/32")});
  auto proxy = *net::parse_ip("127.0.0.1");
  auto stranger = *net::parse_ip("198.51.100.7");
  EXPECT_EQ(limits.client_ip(proxy, "203.0.113.9", "").to_string(), "203.0.113.9");
  EXPECT_EQ(limits.client_ip(proxy, "6.6.6.6, 203.0.113.9", "").to_string(),
            "203.0.113.9");  // rightmost untrusted
  EXPECT_EQ(limits.client_ip(proxy, "", "for=\"[2001:db8::1]:4711\";proto=https").to_string(),
            "2001:db8::1");
  EXPECT_EQ(limits.client_ip(proxy, "", "For=203.0.113.4:80").to_string(), "203.0.113.4");
  // Some proxies put the port in X-Forwarded-For too.
  EXPECT_EQ(limits.client_ip(proxy, "10.0.0.1:1234", "").to_string(), "10.0.0.1");
  EXPECT_EQ(limits.client_ip(proxy, "[2001:db8::2]:443, 127.0.0.1:9", "").to_string(),
            "2001:db8::2");
  EXPECT_EQ(limits.client_ip(proxy, "2001:db8::3", "").to_string(), "2001:db8::3");
  EXPECT_EQ(limits.client_ip(stranger, "203.0.113.9", "").to_string(),
            "198.51.100.7");  // not trusted: ignored
}

// An IPv6 client is its /64: hopping across the addresses of its prefix buys no fresh budget.
// IPv4 addresses stay one by one.
TEST(ClientBlocks, AnIpv6SlashSixtyFourIsOneClient) {
  AddressCounts streams(2);
  EXPECT_TRUE(streams.acquire(*net::parse_ip("2001:db8:1:2::1")));
  EXPECT_TRUE(streams.acquire(*net::parse_ip("2001:db8:1:2:aaaa::7")));
  EXPECT_FALSE(streams.acquire(*net::parse_ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
  EXPECT_TRUE(streams.acquire(*net::parse_ip("2001:db8:1:3::1")));  // another /64
  streams.release(*net::parse_ip("2001:db8:1:2::99"));              // any of it frees one
  EXPECT_TRUE(streams.acquire(*net::parse_ip("2001:db8:1:2::5")));

  AddressBuckets posts(1, 1);
  uint32_t retry = 0;
  EXPECT_TRUE(posts.take(*net::parse_ip("2001:db8::1"), 0, retry));
  EXPECT_FALSE(posts.take(*net::parse_ip("2001:db8::2"), 0, retry));
  EXPECT_TRUE(posts.take(*net::parse_ip("192.0.2.1"), 0, retry));
  EXPECT_TRUE(posts.take(*net::parse_ip("192.0.2.2"), 0, retry));
  // Only global unicast groups: a LAN's link-local hosts, Teredo's many clients behind one
  // prefix, NAT64 (IPv4 inside) and loopback stay one address each.
  for (auto [a, b] :
       {std::pair{"fe80::1", "fe80::2"}, std::pair{"2001:0:4136::1", "2001:0:4136::2"},
        std::pair{"64:ff9b::c000:201", "64:ff9b::c000:202"}, std::pair{"::1", "::2"}}) {
    SCOPED_TRACE(a);
    EXPECT_TRUE(posts.take(*net::parse_ip(a), 0, retry));
    EXPECT_TRUE(posts.take(*net::parse_ip(b), 0, retry));
  }
}
