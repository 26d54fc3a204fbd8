#include "client_limits.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <utility>

#include "ascii.h"
#include "log.h"

namespace sse {

std::optional<Cidr> parse_cidr(std::string_view text) {
  // A Unix socket's peers have no address: they are all "::", which no TCP peer can be.
  if (text == "unix") return Cidr{net::IpAddress{}, 128};
  size_t slash = text.find('/');
  auto ip = net::parse_ip(text.substr(0, slash));
  if (!ip) return std::nullopt;
  bool v4 = text.substr(0, slash).find(':') == std::string_view::npos;
  int bits = v4 ? 32 : 128;
  if (slash != std::string_view::npos) {
    std::string_view num = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), bits);
    if (ec != std::errc{} || end != num.data() + num.size() || bits < 0 || bits > (v4 ? 32 : 128))
      return std::nullopt;
  }
  return Cidr{*ip, v4 ? bits + 96 : bits};
}

bool Cidr::contains(const net::IpAddress& ip) const {
  int bits = prefix_bits;
  for (int i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
    unsigned mask = bits >= 8 ? 0xFFu : (0xFFu << (8 - bits)) & 0xFFu;
    if ((ip.bytes[i] & mask) != (base.bytes[i] & mask)) return false;
  }
  return true;
}

bool AddressCounts::acquire(const net::IpAddress& ip, uint32_t n) {
  auto it = counts_.find(ip);
  uint32_t held = it == counts_.end() ? 0 : it->second;
  if (max_ != 0 && (held >= max_ || n > max_ - held)) return false;
  if (n > 0) counts_[ip] = held + n;
  return true;
}

void AddressCounts::release(const net::IpAddress& ip, uint32_t n) {
  auto it = counts_.find(ip);
  if (it == counts_.end()) return;
  it->second -= std::min(it->second, n);
  if (it->second == 0) counts_.erase(it);
}

net::IpAddress client_block(const net::IpAddress& ip) {
  // Global unicast (2000::/3) only: IPv4 (mapped), NAT64, link-local, loopback and unique-local
  // addresses are one client each, and so is Teredo (2001::/32), which carries many behind one
  // prefix.
  bool global = (ip.bytes[0] & 0xE0) == 0x20;
  bool teredo = ip.bytes[0] == 0x20 && ip.bytes[1] == 0x01 && ip.bytes[2] == 0 && ip.bytes[3] == 0;
  if (!global || teredo) return ip;
  net::IpAddress block = ip;
  std::fill(block.bytes + 8, block.bytes + 16, 0);
  return block;
}

bool AddressRooms::acquire(const net::IpAddress& ip, const std::vector<std::string>& rooms) {
  if (max_ == 0) return true;
  auto& held = reads_[ip];
  size_t added = 0;
  for (const std::string& room : rooms) added += held.count(room) ? 0 : 1;
  if (held.size() + added > max_) {
    if (held.empty()) reads_.erase(ip);
    return false;
  }
  for (const std::string& room : rooms) ++held[room];
  return true;
}

void AddressRooms::release(const net::IpAddress& ip, const std::vector<std::string>& rooms) {
  auto it = reads_.find(ip);
  if (it == reads_.end()) return;
  for (const std::string& room : rooms) {
    auto r = it->second.find(room);
    if (r != it->second.end() && --r->second == 0) it->second.erase(r);
  }
  if (it->second.empty()) reads_.erase(it);
}

bool ClientLimits::trusted(const net::IpAddress& ip) const {
  return std::any_of(trusted_.begin(), trusted_.end(),
                     [&](const Cidr& c) { return c.contains(ip); });
}

namespace {

// The address a hop names: "[v6]:port", "[v6]", "v4:port" (some proxies add the port to
// X-Forwarded-For too) or a bare address.
std::string_view hop_address(std::string_view v) {
  if (!v.empty() && v.front() == '[') return v.substr(1, v.find(']') - 1);
  size_t colon = v.find(':');
  if (colon != std::string_view::npos && colon == v.rfind(':')) return v.substr(0, colon);
  return v;
}

// Addresses named by the header, nearest hop last.
std::vector<std::string_view> forwarded_hops(std::string_view xff, std::string_view forwarded) {
  std::vector<std::string_view> hops;
  if (!xff.empty()) {
    while (!xff.empty()) hops.push_back(hop_address(ascii::take_element(xff, ',')));
    return hops;
  }
  // Forwarded: for=192.0.2.1;proto=https, for="[2001:db8::1]:4711"
  while (!forwarded.empty()) {
    std::string_view element = ascii::take_element(forwarded, ',');
    while (!element.empty()) {
      std::string_view pair = ascii::take_element(element, ';');
      if (ascii::iequals(pair.substr(0, 4), "for="))
        hops.push_back(hop_address(ascii::unquote(pair.substr(4))));
    }
  }
  return hops;
}

}  // namespace

net::IpAddress ClientLimits::client_ip(const net::IpAddress& peer, std::string_view x_forwarded_for,
                                       std::string_view forwarded) const {
  if (!trusted(peer)) {
    if (!x_forwarded_for.empty() || !forwarded.empty()) note_untrusted_forwarding(peer);
    return peer;
  }
  net::IpAddress current = peer;
  auto hops = forwarded_hops(x_forwarded_for, forwarded);
  for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
    auto ip = net::parse_ip(*it);
    if (!ip) return current;  // unparseable hop: trust nothing further out
    current = *ip;
    if (!trusted(current)) return current;
  }
  return current;
}

// Behind a proxy that is not --trusted-proxy, everyone it serves is one address to the limits
// (one busy client can get them all 429): worth one line, for the operator who forgot the flag.
void ClientLimits::note_untrusted_forwarding(const net::IpAddress& peer) const {
  if (std::exchange(told_untrusted_forwarding_, true)) return;
  log::warn(
      "a request came with X-Forwarded-For or Forwarded from an address that is not a "
      "--trusted-proxy: the headers are ignored, and if it is your proxy, every client behind it "
      "counts as its address for the per-IP limits (start with --trusted-proxy to tell them "
      "apart)",
      "peer", peer.to_string());
}

}  // namespace sse
