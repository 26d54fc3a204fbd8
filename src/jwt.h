// JSON Web Signatures (RFC 7515, compact form) for one configured algorithm: checks a token's
// header and signature and hands back its payload, or signs one. What the claims mean is
// access.h's business. The algorithm is the configuration's, never the token's: a header naming
// any other (`none`, or HS256 on a server that holds an RSA public key) is refused before any
// signature work. The signature work is OpenSSL's.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace simdjson::dom {
class object;
}

namespace sse::jwt {

enum class Alg { HS256, HS384, HS512, RS256, ES256 };

std::optional<Alg> parse_alg(std::string_view name);

// True when a JSON object names one member twice: RFC 7515 §5.2 and RFC 7519 §4 let a reader
// refuse it, and readers that keep the first and the last would see different tokens.
bool has_duplicate_names(const simdjson::dom::object& object);
std::string_view alg_name(Alg alg);
bool is_hmac(Alg alg);

// The reason a token is refused (for a 401), or the payload's JSON text.
struct Checked {
  std::optional<std::string> payload;
  std::string reason;
};

class Key {
 public:
  // For HS*: the file's bytes are the secret (at least as long as the hash). For RS256/ES256:
  // a PEM public key to verify with, or (`private_key`) a PEM private key to sign with.
  static std::unique_ptr<Key> load(const std::string& path, Alg alg, bool private_key,
                                   std::string& error);
  static std::unique_ptr<Key> from_bytes(std::string_view bytes, Alg alg, bool private_key,
                                         std::string& error);
  ~Key();
  Key(const Key&) = delete;
  Key& operator=(const Key&) = delete;

  Alg alg() const { return alg_; }
  // The same for the same key bytes (a key file read again unchanged), never 0.
  uint64_t id() const;
  Checked verify(std::string_view token) const;
  // header.payload.signature for `payload_json`, with the header {"alg":…,"typ":"JWT"}.
  std::string sign(std::string_view payload_json) const;

 private:
  struct Impl;
  Key(Alg alg, std::unique_ptr<Impl> impl);
  Alg alg_;
  std::unique_ptr<Impl> impl_;
};

// The raw HMAC of `signing_input` (header.payload, already encoded) under `secret`, with the
// hash of `alg` (an HS algorithm).
std::string hmac_signature(Alg alg, std::string_view secret, std::string_view signing_input);

}  // namespace sse::jwt
