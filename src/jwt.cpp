#include "jwt.h"

#include <fcntl.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <simdjson.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <vector>

#include "base64url.h"

namespace sse::jwt {
namespace {

constexpr size_t kEs256Half = 32;  // r and s of a P-256 signature, each

const EVP_MD* digest_of(Alg alg) {
  switch (alg) {
    case Alg::HS384:
      return EVP_sha384();
    case Alg::HS512:
      return EVP_sha512();
    default:
      return EVP_sha256();
  }
}

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct SigFree {
  void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
using SigPtr = std::unique_ptr<ECDSA_SIG, SigFree>;

// A PEM key: public for verifying (a private key's public half will do), private for signing.
PkeyPtr read_pem(std::string_view pem, bool private_key) {
  auto read = [&](bool want_private) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    if (!bio) return PkeyPtr{};
    EVP_PKEY* key = want_private ? PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr)
                                 : PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    return PkeyPtr(key);
  };
  PkeyPtr key = read(private_key);
  if (!key && !private_key) key = read(true);
  return key;
}

std::optional<std::string> read_key_file(const std::string& path) {
  constexpr size_t kMaxKeyFileBytes = 64 * 1024;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  struct stat st;
  std::optional<std::string> bytes;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
      static_cast<size_t>(st.st_size) <= kMaxKeyFileBytes) {
    std::string buf(static_cast<size_t>(st.st_size), '\0');
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n == static_cast<ssize_t>(buf.size())) bytes = std::move(buf);
  }
  ::close(fd);
  return bytes;
}

// Whether `bytes` are a key or certificate in DER. Every DER format of them (SubjectPublicKeyInfo,
// PKCS#1, X.509, PKCS#8) is one SEQUENCE, which random bytes almost never are: followed by nothing
// but white space (a line end an editor or `echo` added), that says enough. Followed by more (a
// stray byte appended), it must parse as a key or certificate: text that happens to start like a
// SEQUENCE (a '0' and a letter) is no key.
bool is_der_key(std::string_view bytes) {
  auto start = reinterpret_cast<const unsigned char*>(bytes.data());
  auto length = static_cast<long>(bytes.size());
  const unsigned char* p = start;
  ASN1_SEQUENCE_ANY* seq = d2i_ASN1_SEQUENCE_ANY(nullptr, &p, length);
  if (!seq) return false;
  sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
  auto used = static_cast<size_t>(p - start);
  if (bytes.find_first_not_of(" \t\r\n", used) == std::string_view::npos) return true;
  // OpenSSL's decoders take milliseconds: only for a SEQUENCE as long as the smallest key.
  if (used < 64) return false;
  p = start;
  if (EVP_PKEY* key = d2i_PUBKEY(nullptr, &p, length)) return EVP_PKEY_free(key), true;
  p = start;
  if (X509* cert = d2i_X509(nullptr, &p, length)) return X509_free(cert), true;
  p = start;
  if (EVP_PKEY* key = d2i_PublicKey(EVP_PKEY_RSA, nullptr, &p, length))  // PKCS#1
    return EVP_PKEY_free(key), true;
  p = start;
  if (EVP_PKEY* key = d2i_AutoPrivateKey(nullptr, &p, length)) return EVP_PKEY_free(key), true;
  return false;
}

// The SSH wire form of a public key, which an authorized_keys line carries as base64: a
// length-prefixed algorithm name first.
bool is_ssh_key_blob(std::string_view b) {
  if (b.size() < 11) return false;
  auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(b[i])); };
  uint32_t n = byte(0) << 24 | byte(1) << 16 | byte(2) << 8 | byte(3);
  if (n < 7 || n > 64 || n > b.size() - 4) return false;
  std::string_view name = b.substr(4, n);
  return name.starts_with("ssh-") || name.starts_with("ecdsa-sha2-") || name.starts_with("sk-");
}

// An uncompressed point on P-256 (0x04, x, y): an EC public key without its DER around it. A
// random 65 bytes starting with 4 is on the curve with a chance of about 2^-256.
bool is_p256_point(std::string_view b) {
  if (b.size() != 65 || b[0] != 0x04) return false;
  EC_GROUP* group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
  EC_POINT* point = group ? EC_POINT_new(group) : nullptr;
  bool on_curve =
      point && EC_POINT_oct2point(group, point, reinterpret_cast<const unsigned char*>(b.data()),
                                  b.size(), nullptr) == 1;
  EC_POINT_free(point);
  EC_GROUP_free(group);
  return on_curve;
}

bool is_key_bytes(std::string_view b) {
  return is_der_key(b) || is_ssh_key_blob(b) || is_p256_point(b);
}

// Standard base64 text (a PEM body without its armour) decoded, or nullopt.
std::optional<std::string> base64_text(std::string_view text) {
  std::string compact;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c))) compact += c;
  if (compact.empty() || compact.size() % 4 != 0 ||
      compact.find_first_not_of(
          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != std::string::npos)
    return std::nullopt;
  std::string out(compact.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(compact.data()),
                          static_cast<int>(compact.size()));
  if (n < 0) return std::nullopt;
  size_t padding = compact.size() - compact.find_last_not_of('=') - 1;
  out.resize(static_cast<size_t>(n) - std::min<size_t>(padding, 2));
  return out;
}

// Hex text decoded (white space, colons and a leading 0x aside, as tools print it), or nullopt.
std::optional<std::string> hex_text(std::string_view text) {
  text.remove_prefix(std::min(text.size(), text.find_first_not_of(" \t\r\n")));
  if (text.starts_with("0x") || text.starts_with("0X")) text.remove_prefix(2);
  std::string out;
  int high = -1;
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c)) || c == ':') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
    int digit = std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (c | 0x20) - 'a' + 10;
    if (high < 0) {
      high = digit;
    } else {
      out += static_cast<char>(high << 4 | digit);
      high = -1;
    }
  }
  if (high >= 0 || out.empty()) return std::nullopt;
  return out;
}

// A secret that is really a key or certificate is likely public: HS with it means anyone can
// sign tokens. The usual slip is an RS256/ES256 key given without --jwt-alg, in the forms keys
// come in: PEM, DER (raw, or as base64, base64url or hex text), OpenSSH or RFC 4716 text (or the
// base64 key of an authorized_keys line), OpenSSL's -text printout, a JWK, a bare EC point. (A
// bare RSA modulus is random bytes to look at: no check can tell it from a secret.)
bool looks_like_a_key(std::string_view bytes) {
  std::string_view text = bytes.substr(std::min(bytes.size(), bytes.find_first_not_of(" \t\r\n")));
  for (std::string_view marker : {"-----BEGIN", "---- BEGIN", "Public-Key:", "Modulus:",
                                  "ASN1 OID:", "Subject Public Key Info:"})
    if (bytes.find(marker) != std::string_view::npos) return true;
  for (std::string_view openssh : {"ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"})
    if (text.starts_with(openssh)) return true;
  if (text.starts_with('{'))  // a JWK or JWK Set, its "kty" left out or not
    for (std::string_view member : {"\"kty\"", "\"n\"", "\"crv\"", "\"x5c\""})
      if (text.find(member) != std::string_view::npos) return true;
  if (is_key_bytes(bytes)) return true;
  std::string compact;
  for (char c : bytes)
    if (!std::isspace(static_cast<unsigned char>(c))) compact += c;
  for (auto decoded : {base64_text(bytes), base64url::decode(compact), hex_text(bytes)})
    if (decoded && is_key_bytes(*decoded)) return true;
  return false;
}

// Why `key` does not suit `alg`, or "".
std::string unsuitable(EVP_PKEY* key, Alg alg) {
  if (alg == Alg::RS256) {
    if (!EVP_PKEY_is_a(key, "RSA")) return "RS256 needs an RSA key";
    if (EVP_PKEY_get_bits(key) < 2048) return "RS256 needs an RSA key of at least 2048 bits";
    return "";
  }
  char group[64] = {};
  size_t len = 0;
  if (!EVP_PKEY_is_a(key, "EC") || EVP_PKEY_get_group_name(key, group, sizeof group, &len) != 1 ||
      std::string_view(group, len) != "prime256v1")
    return "ES256 needs an EC key on the P-256 curve (prime256v1)";
  return "";
}

// JOSE's ES256 signature is r||s, 32 bytes each; OpenSSL speaks DER.
std::optional<std::string> es256_raw_to_der(std::string_view raw) {
  if (raw.size() != 2 * kEs256Half) return std::nullopt;
  auto bytes = reinterpret_cast<const unsigned char*>(raw.data());
  SigPtr sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(bytes, kEs256Half, nullptr);
  BIGNUM* s = BN_bin2bn(bytes + kEs256Half, kEs256Half, nullptr);
  if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return std::nullopt;
  }
  unsigned char* der = nullptr;
  int len = i2d_ECDSA_SIG(sig.get(), &der);
  if (len <= 0) return std::nullopt;
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

std::string es256_der_to_raw(std::string_view der) {
  auto p = reinterpret_cast<const unsigned char*>(der.data());
  SigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig) return {};
  std::string out(2 * kEs256Half, '\0');
  auto bytes = reinterpret_cast<unsigned char*>(out.data());
  if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), bytes, kEs256Half) != kEs256Half ||
      BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), bytes + kEs256Half, kEs256Half) != kEs256Half)
    return {};
  return out;
}

// Why the header does not allow this token, or "".
std::string check_header(std::string_view header_json, Alg alg) {
  static simdjson::dom::parser parser;
  simdjson::dom::object header;
  if (parser.parse(header_json.data(), header_json.size(), true).get(header) != simdjson::SUCCESS)
    return "token header is not a JSON object";
  if (has_duplicate_names(header)) return "token header names a member twice";
  std::string_view name;
  if (header["alg"].get_string().get(name) != simdjson::SUCCESS)
    return "token header names no algorithm";
  if (name != alg_name(alg)) {
    // Named back only when short and plain, so the answer stays valid UTF-8 and short.
    bool plain = name.size() <= 16 && std::all_of(name.begin(), name.end(), [](char c) {
                   return c > ' ' && c < 0x7F && c != '"' && c != '\\';
                 });
    return "token algorithm " + (plain ? std::string(name) + " " : std::string()) +
           "is not accepted (only " + std::string(alg_name(alg)) + ")";
  }
  // RFC 7515 §4.1.11: extensions a recipient does not understand make the token invalid.
  if (header["crit"].error() != simdjson::NO_SUCH_FIELD)
    return "token header has critical extensions";
  return "";
}

}  // namespace

bool has_duplicate_names(const simdjson::dom::object& object) {
  std::vector<std::string_view> names;
  for (auto field : object) names.push_back(field.key);
  std::sort(names.begin(), names.end());
  return std::adjacent_find(names.begin(), names.end()) != names.end();
}

std::optional<Alg> parse_alg(std::string_view name) {
  for (Alg alg : {Alg::HS256, Alg::HS384, Alg::HS512, Alg::RS256, Alg::ES256})
    if (name == alg_name(alg)) return alg;
  return std::nullopt;
}

std::string_view alg_name(Alg alg) {
  switch (alg) {
    case Alg::HS256:
      return "HS256";
    case Alg::HS384:
      return "HS384";
    case Alg::HS512:
      return "HS512";
    case Alg::RS256:
      return "RS256";
    case Alg::ES256:
      return "ES256";
  }
  return "";
}

bool is_hmac(Alg alg) {
  return alg == Alg::HS256 || alg == Alg::HS384 || alg == Alg::HS512;
}

std::string hmac_signature(Alg alg, std::string_view secret, std::string_view signing_input) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(digest_of(alg), secret.data(), static_cast<int>(secret.size()),
            reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(), out,
            &len))
    return {};
  return std::string(reinterpret_cast<char*>(out), len);
}

struct Key::Impl {
  std::string secret;  // HS*
  PkeyPtr pkey;        // RS256, ES256
  bool can_sign = false;
  uint64_t id = 0;
};

Key::Key(Alg alg, std::unique_ptr<Impl> impl) : alg_(alg), impl_(std::move(impl)) {}
Key::~Key() = default;

uint64_t Key::id() const {
  return impl_->id;
}

std::unique_ptr<Key> Key::load(const std::string& path, Alg alg, bool private_key,
                               std::string& error) {
  auto bytes = read_key_file(path);
  if (!bytes) {
    error = "cannot read the key file " + path + " (a regular file of at most 64 KiB)";
    return nullptr;
  }
  return from_bytes(*bytes, alg, private_key, error);
}

std::unique_ptr<Key> Key::from_bytes(std::string_view bytes, Alg alg, bool private_key,
                                     std::string& error) {
  auto impl = std::make_unique<Impl>();
  if (is_hmac(alg)) {
    // RFC 7518 §3.2: a key at least as long as the hash output.
    size_t min = static_cast<size_t>(EVP_MD_get_size(digest_of(alg)));
    if (bytes.size() < min) {
      error = std::string(alg_name(alg)) + " needs a secret of at least " + std::to_string(min) +
              " bytes";
      return nullptr;
    }
    if (looks_like_a_key(bytes)) {
      error = "the " + std::string(alg_name(alg)) +
              " secret is a key or certificate, which others may know; for a public key use "
              "--jwt-alg RS256 or ES256";
      return nullptr;
    }
    impl->secret = std::string(bytes);
    impl->can_sign = true;
  } else {
    impl->pkey = read_pem(bytes, private_key);
    if (!impl->pkey) {
      error = std::string("not a PEM ") + (private_key ? "private" : "public") + " key";
      return nullptr;
    }
    if (std::string why = unsuitable(impl->pkey.get(), alg); !why.empty()) {
      error = why;
      return nullptr;
    }
    impl->can_sign = private_key;
  }
  impl->id = std::hash<std::string_view>{}(bytes) | 1;
  return std::unique_ptr<Key>(new Key(alg, std::move(impl)));
}

Checked Key::verify(std::string_view token) const {
  size_t first = token.find('.');
  size_t second = first == std::string_view::npos ? first : token.find('.', first + 1);
  if (second == std::string_view::npos || token.find('.', second + 1) != std::string_view::npos)
    return {std::nullopt, "token is not a JWT (header.payload.signature)"};
  auto header = base64url::decode(token.substr(0, first));
  auto payload = base64url::decode(token.substr(first + 1, second - first - 1));
  auto signature = base64url::decode(token.substr(second + 1));
  if (!header || !payload || !signature) return {std::nullopt, "token is not valid base64url"};
  if (std::string why = check_header(*header, alg_); !why.empty()) return {std::nullopt, why};
  std::string_view signing_input = token.substr(0, second);
  bool valid = false;
  if (is_hmac(alg_)) {
    std::string expected = hmac_signature(alg_, impl_->secret, signing_input);
    valid = !expected.empty() && expected.size() == signature->size() &&
            CRYPTO_memcmp(expected.data(), signature->data(), expected.size()) == 0;
  } else {
    std::optional<std::string> der =
        alg_ == Alg::ES256 ? es256_raw_to_der(*signature) : std::optional(*signature);
    MdCtxPtr ctx(EVP_MD_CTX_new());
    valid =
        der && ctx &&
        EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, impl_->pkey.get()) == 1 &&
        EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(der->data()),
                         der->size(), reinterpret_cast<const unsigned char*>(signing_input.data()),
                         signing_input.size()) == 1;
  }
  if (!valid) return {std::nullopt, "token signature is not valid"};
  return {std::move(*payload), ""};
}

std::string Key::sign(std::string_view payload_json) const {
  if (!impl_->can_sign) return {};
  std::string input =
      base64url::encode("{\"alg\":\"" + std::string(alg_name(alg_)) + "\",\"typ\":\"JWT\"}") + "." +
      base64url::encode(payload_json);
  std::string signature;
  if (is_hmac(alg_)) {
    signature = hmac_signature(alg_, impl_->secret, input);
  } else {
    MdCtxPtr ctx(EVP_MD_CTX_new());
    size_t len = 0;
    auto data = reinterpret_cast<const unsigned char*>(input.data());
    if (!ctx ||
        EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, impl_->pkey.get()) != 1 ||
        EVP_DigestSign(ctx.get(), nullptr, &len, data, input.size()) != 1)
      return {};
    signature.resize(len);
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &len, data,
                       input.size()) != 1)
      return {};
    signature.resize(len);
    if (alg_ == Alg::ES256) signature = es256_der_to_raw(signature);
  }
  if (signature.empty()) return {};
  return input + "." + base64url::encode(signature);
}

}  // namespace sse::jwt
