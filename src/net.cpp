#include "net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>

#include "ascii.h"

namespace sse::net {

std::optional<Endpoint> parse_endpoint(std::string_view text) {
  Endpoint ep;
  std::string_view port_text;
  if (text.starts_with("[")) {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return std::nullopt;
    ep.host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else if (size_t colon = text.rfind(':'); colon != std::string_view::npos) {
    ep.host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  } else {
    port_text = text;
  }
  if (ep.host.empty()) ep.host = "0.0.0.0";
  if (ascii::iequals(ep.host, "localhost")) ep.host = "127.0.0.1";  // the one name: no resolver
  in6_addr any;
  if (inet_pton(AF_INET, ep.host.c_str(), &any) != 1 &&
      inet_pton(AF_INET6, ep.host.c_str(), &any) != 1)
    return std::nullopt;
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || end != port_text.data() + port_text.size() || port > 65535)
    return std::nullopt;
  ep.port = static_cast<uint16_t>(port);
  return ep;
}

int listen_tcp(const Endpoint& where, std::string& error, bool reuse_port) {
  sockaddr_storage addr{};
  socklen_t len;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, where.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(where.port);
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, where.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(where.port);
    len = sizeof *v6;
  } else {
    error = "not a numeric IP address: " + where.host;
    return -1;
  }
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("socket: ") + strerror(errno);
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    error = std::string("SO_REUSEPORT: ") + strerror(errno);
    close(fd);
    return -1;
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) < 0 || listen(fd, 65535) < 0) {
    error = std::string("bind/listen ") + where.host + ":" + std::to_string(where.port) + ": " +
            strerror(errno);
    close(fd);
    return -1;
  }
  return fd;
}

std::string local_address(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0) return "?";
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (addr.ss_family == AF_UNIX) {  // systemd's ListenStream=/run/...; '@' starts an abstract name
    auto* un = reinterpret_cast<sockaddr_un*>(&addr);
    size_t n = len - offsetof(sockaddr_un, sun_path);
    std::string path(un->sun_path, n);
    if (!path.empty() && path[0] == '\0') path[0] = '@';
    return "unix:" + path.substr(0, path.find('\0'));
  }
  if (addr.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
    port = ntohs(v4->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
  port = ntohs(v6->sin6_port);
  return "[" + std::string(host) + "]:" + std::to_string(port);
}

IpAddress ip_of(const sockaddr_storage& addr) {
  IpAddress ip;
  if (addr.ss_family == AF_INET) {
    ip.bytes[10] = ip.bytes[11] = 0xFF;
    std::memcpy(ip.bytes + 12, &reinterpret_cast<const sockaddr_in*>(&addr)->sin_addr, 4);
  } else if (addr.ss_family == AF_INET6) {
    std::memcpy(ip.bytes, &reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_addr, 16);
  }
  return ip;
}

std::optional<IpAddress> parse_ip(std::string_view text) {
  std::string s(text);
  IpAddress ip;
  in_addr v4;
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    ip.bytes[10] = ip.bytes[11] = 0xFF;
    std::memcpy(ip.bytes + 12, &v4, 4);
    return ip;
  }
  if (inet_pton(AF_INET6, s.c_str(), ip.bytes) == 1) return ip;
  return std::nullopt;
}

std::string IpAddress::to_string() const {
  char out[INET6_ADDRSTRLEN] = "?";
  bool v4_mapped = bytes[10] == 0xFF && bytes[11] == 0xFF &&
                   std::all_of(bytes, bytes + 10, [](unsigned char b) { return b == 0; });
  if (v4_mapped) {
    inet_ntop(AF_INET, bytes + 12, out, sizeof out);
  } else {
    inet_ntop(AF_INET6, bytes, out, sizeof out);
  }
  return out;
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void set_send_buffer(int fd, int bytes) {
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
}

long raise_fd_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return 1024;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  return static_cast<long>(lim.rlim_cur);
}

}  // namespace sse::net
