// libFuzzer target over signed tokens: the input is either a whole token (header, signature and
// base64url parsing) or, signed here with the server's key, a payload (the claims parser behind a
// valid signature). Besides crashes and sanitizer reports it checks oracles: base64url is
// canonical (decode then encode gives back the input), a forged token never verifies, and a valid
// token always names a subject and an author within the limits.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "access.h"
#include "base64url.h"
#include "utf8.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

constexpr int64_t kNow = 1764072000;

const sse::Access& access() {
  static sse::Access a = [] {
    std::string path = "/tmp/token_fuzzer_" + std::to_string(getpid()) + ".key";
    std::ofstream(path) << "0123456789abcdef0123456789abcdef-fuzz";
    sse::Config config;
    config.jwt_keys = {path};
    config.public_rooms = {"lobby"};
    sse::Access access;
    std::string error;
    check(access.configure(config, error));
    unlink(path.c_str());
    return access;
  }();
  return a;
}

void check_identity(const sse::Authentication& auth) {
  if (auth.kind != sse::Authentication::Valid) return;
  const sse::Identity& id = auth.identity;
  check(!id.subject.empty());
  check(sse::utf8::is_valid(id.name) && !id.name.empty());
  check(sse::utf8::count_code_points(id.name) <= sse::kMaxTokenNameChars);
  check(id.expires_s > kNow);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {  // a token as sent: without the key, nothing verifies
      sse::Authentication auth = access().check_token(input, kNow);
      check(auth.kind == sse::Authentication::Invalid);
      break;
    }
    case 1: {  // claims behind a valid signature
      static std::unique_ptr<sse::jwt::Key> key = [] {
        std::string error;
        return sse::jwt::Key::from_bytes("0123456789abcdef0123456789abcdef-fuzz",
                                         sse::jwt::Alg::HS256, true, error);
      }();
      check(key != nullptr);
      sse::Authentication auth = access().check_token(key->sign(input), kNow);
      check_identity(auth);
      if (auth.kind == sse::Authentication::Valid) {
        check(access().may_read(&auth.identity, "lobby"));
        check(!access().may_read(nullptr, "general"));
      }
      break;
    }
    default: {  // base64url round trips, and only canonical text decodes
      check(sse::base64url::decode(sse::base64url::encode(input)) == std::string(input));
      if (auto bytes = sse::base64url::decode(input))
        check(sse::base64url::encode(*bytes) == input);
      break;
    }
  }
  return 0;
}
