// Socket plumbing, in the manner of redis's anet.c: listen, accept, options, addresses.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <optional>
#include <string>
#include <string_view>

namespace sse::net {

struct Endpoint {
  std::string host;  // "127.0.0.1", "::1", "0.0.0.0"
  uint16_t port = 0;
};

// "127.0.0.1:8080", "[::1]:8080", ":8080" (all IPv4 interfaces), "8080".
std::optional<Endpoint> parse_endpoint(std::string_view text);

// A non-blocking listening socket with a large backlog; -1 with `error` set on failure.
// `reuse_port`: SO_REUSEPORT, so several processes listening on the same address share its
// connections (the kernel spreads them).
int listen_tcp(const Endpoint& where, std::string& error, bool reuse_port = false);

// "127.0.0.1:41234" for the socket's bound address.
std::string local_address(int fd);

// A peer's address with the port dropped, in 16 bytes (IPv4 as v4-mapped IPv6), for per-IP state.
struct IpAddress {
  unsigned char bytes[16] = {};
  bool operator==(const IpAddress&) const = default;
  std::string to_string() const;
};
IpAddress ip_of(const sockaddr_storage& addr);
std::optional<IpAddress> parse_ip(std::string_view text);

void set_nodelay(int fd);
// Fixes the kernel's send buffer (the kernel doubles it for bookkeeping), turning autotuning off.
void set_send_buffer(int fd, int bytes);

// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
long raise_fd_limit();

}  // namespace sse::net
