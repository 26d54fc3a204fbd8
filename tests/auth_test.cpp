// Identity (signed tokens, --jwt-key) over real sockets against the real binary: which token gets
// which answer on POST /messages and GET /events (a table, with the exact status, challenge and
// reason), the author and presence name taken from the token, a stream ended when its token
// expires, RS256 and ES256 keys made by the openssl command line, the cookie as the token's other
// carrier, GET /rooms, /messages and /me, the per-subject POST limit, tokens off, and the
// configurations the server refuses to start with.
//
// Forged tokens are built here, by hand (libcrypto's base64 and HMAC), never with the server's
// own code; valid ones both by hand and with the real `sse-chat token` command.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "test_server.h"

using namespace testing_support;

namespace {

constexpr char kIssuer[] = "https://auth.example";
constexpr char kAudience[] = "sse-chat";
// 64 bytes: long enough for any HS algorithm, so an HS512-signed forgery is a fair one.
const std::string kSecret = "sse-chat auth test secret, 64 bytes long: 0123456789abcdefghijkl";
const std::string kOtherSecret = "another secret entirely, also long enough: 0123456789ABCDEFGHIJ";
const std::string kSignIn =
    "sign-in needed: send a token (Authorization: Bearer, or the sse_chat_token cookie)";
const std::string kBareBearer = "Authorization: Bearer needs a token";

// ---- tokens, by hand ----

// OpenSSL's standard base64 with the URL alphabet and no padding: an oracle apart from ours.
std::string b64url(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

std::string b64url_decode(std::string_view text) {
  std::string in(text);
  for (char& c : in) {
    if (c == '+' || c == '/' || c == '=') throw std::runtime_error("not base64url: " + in);
    c = c == '-' ? '+' : c == '_' ? '/' : c;
  }
  size_t pad = (4 - in.size() % 4) % 4;
  in.append(pad, '=');
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) throw std::runtime_error("not base64url: " + std::string(text));
  out.resize(static_cast<size_t>(n) - pad);  // EVP_DecodeBlock counts the padding as zero bytes
  return out;
}

std::string hmac(const EVP_MD* md, std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(md, key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len))
    throw std::runtime_error("HMAC failed");
  return std::string(reinterpret_cast<char*>(out), len);
}

// header.payload.signature, the signature an HMAC (with `md`) of header.payload under `secret`,
// whatever the header says.
std::string forge_hmac(const std::string& header_json, const std::string& payload,
                       std::string_view secret, const EVP_MD* md = EVP_sha256()) {
  std::string input = b64url(header_json) + "." + b64url(payload);
  return input + "." + b64url(hmac(md, secret, input));
}

const std::string kHs256Header = R"({"alg":"HS256","typ":"JWT"})";

std::string hs256(const std::string& payload, std::string_view secret = kSecret) {
  return forge_hmac(kHs256Header, payload, secret);
}

struct Parts {
  std::string header, payload, signature;  // as sent (base64url)
};
Parts split(const std::string& token) {
  size_t a = token.find('.'), b = token.find('.', a + 1);
  return {token.substr(0, a), token.substr(a + 1, b - a - 1), token.substr(b + 1)};
}

int64_t now_s() {
  return static_cast<int64_t>(std::time(nullptr));
}
std::string exp_in(int64_t seconds) {
  return "\"exp\":" + std::to_string(now_s() + seconds);
}
const std::string kIssAud = R"("iss":"https://auth.example","aud":"sse-chat")";
// Alice: may post to general and team-*, may read announce.
const std::string kAlice =
    R"("sub":"alice","name":"Alice","rooms":["general","team-*"],"read":["announce"])";

// Claims the HS server accepts: `fields`, its issuer and audience, an hour to live.
std::string claims(const std::string& fields = kAlice) {
  return "{" + fields + "," + kIssAud + "," + exp_in(3600) + "}";
}

// Changes one base64url character in the middle of `part` (never the last, whose spare bits
// would make it non-canonical instead of different).
std::string flip_char(std::string part) {
  char& c = part[part.size() / 2];
  c = c == 'A' ? 'B' : 'A';
  return part;
}

// ---- processes ----

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out) throw std::runtime_error("cannot write " + path);
}

struct Outcome {
  int status = -1;  // exit status, 128+signal if killed
  bool timed_out = false;
  std::string out, err;
};

// Runs `args` (argv[0] looked up in PATH) to its end, or kills it after `timeout_s`.
Outcome run(const std::vector<std::string>& args, int timeout_s = 30) {
  static const std::string dir = make_temp_dir();
  static int runs = 0;
  std::string out_path = dir + "/out" + std::to_string(runs);
  std::string err_path = dir + "/err" + std::to_string(runs++);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int in = open("/dev/null", O_RDONLY);
    int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(in, STDIN_FILENO);
    dup2(out, STDOUT_FILENO);
    dup2(err, STDERR_FILENO);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  Outcome o;
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      o.timed_out = true;
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  o.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  o.out = read_all(out_path);
  o.err = read_all(err_path);
  return o;
}

// A token printed by the real `sse-chat token …`.
std::string mint(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {binary_path(), "token"};
  argv.insert(argv.end(), args.begin(), args.end());
  Outcome o = run(argv);
  EXPECT_EQ(o.status, 0) << o.err;
  EXPECT_TRUE(o.err.empty()) << o.err;
  EXPECT_TRUE(!o.out.empty() && o.out.back() == '\n') << o.out;
  std::string token = o.out.substr(0, o.out.find('\n'));
  EXPECT_EQ(std::count(token.begin(), token.end(), '.'), 2) << token;
  return token;
}

// Key files, made once: the HS secret, and RSA and EC key pairs from the openssl command line.
struct Keys {
  std::string dir, secret, rsa_private, rsa_public, ec_private, ec_public, ec_other_private;
};

const Keys& keys() {
  static const Keys k = [] {
    Keys k;
    k.dir = make_temp_dir();
    k.secret = k.dir + "/hs.secret";
    write_file(k.secret, kSecret);
    k.rsa_private = k.dir + "/rsa.pem";
    k.rsa_public = k.dir + "/rsa.pub.pem";
    k.ec_private = k.dir + "/ec.pem";
    k.ec_public = k.dir + "/ec.pub.pem";
    k.ec_other_private = k.dir + "/ec-other.pem";
    std::vector<std::vector<std::string>> steps = {
        {"openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
         k.rsa_private},
        {"openssl", "pkey", "-in", k.rsa_private, "-pubout", "-out", k.rsa_public},
        {"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
         k.ec_private},
        {"openssl", "pkey", "-in", k.ec_private, "-pubout", "-out", k.ec_public},
        {"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
         k.ec_other_private},
    };
    for (const auto& step : steps) {
      Outcome o = run(step, 60);
      if (o.status != 0) throw std::runtime_error("openssl failed: " + o.err);
    }
    return k;
  }();
  return k;
}

std::vector<std::string> hs_server_args() {
  return {"--jwt-key",      keys().secret, "--jwt-issuer",   kIssuer,
          "--jwt-audience", kAudience,     "--public-rooms", "lobby,pub-*"};
}

// ---- requests ----

std::string bearer(const std::string& token) {
  return "Authorization: Bearer " + token + "\r\n";
}
std::string cookie(const std::string& value) {
  return "Cookie: " + value + "\r\n";
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}
std::string error_json(const std::string& reason) {
  return "{\"error\":" + json_string(reason) + "}";
}

HttpResponse post(uint16_t port, const std::string& body, const std::string& headers) {
  Client c(port);
  auto r = c.post_json(body, headers);
  return r ? *r : HttpResponse{};
}

HttpResponse post_to(uint16_t port, const std::string& room, const std::string& text,
                     const std::string& headers) {
  return post(port, R"({"user":"mallory","text":")" + text + R"(","room":")" + room + R"("})",
              headers);
}

HttpResponse get(uint16_t port, const std::string& path, const std::string& headers = "") {
  Client c(port);
  auto r = c.get(path, headers);
  return r ? *r : HttpResponse{};
}

// GET /events: the head (and, when refused, the body); on a 200 the stream stays readable.
struct Stream {
  Client client;
  SseReader reader;
  HttpResponse head;
  Stream(uint16_t port, const std::string& query, const std::string& headers = "")
      : client(port), reader(client) {
    if (!client.send("GET /events" + query +
                     " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n" + headers +
                     "\r\n"))
      return;
    auto h = client.read_head();
    if (!h) return;
    head = *h;
    if (head.status != 200) {
      size_t len =
          std::stoul(head.header("content-length").empty() ? "0" : head.header("content-length"));
      while (client.buffer().size() < len && client.fill()) {
      }
      head.body = client.buffer().substr(0, len);
    }
  }
  std::optional<SseEvent> next_of(const std::string& type) {
    while (auto e = reader.next())
      if (e->event == type) return e;
    return std::nullopt;
  }
};

std::set<std::string> room_names(const std::string& rooms_json) {
  std::set<std::string> names;
  size_t p = 0;
  while ((p = rooms_json.find("{\"room\":\"", p)) != std::string::npos) {
    p += 9;
    names.insert(rooms_json.substr(p, rooms_json.find('"', p) - p));
  }
  return names;
}

// ---- expected answers ----

enum class Challenge { None, Plain, InvalidToken, InsufficientScope };

struct Answer {
  int status;
  std::string reason;  // the body's {"error":…} (401 and 403)
  Challenge challenge = Challenge::None;
};

Answer created() {
  return {201, ""};
}
Answer streaming() {
  return {200, ""};
}
Answer invalid(const std::string& reason) {
  return {401, reason, Challenge::InvalidToken};
}
Answer sign_in(const std::string& reason = kSignIn) {
  return {401, reason, Challenge::Plain};
}
Answer scope(const std::string& reason) {
  return {403, reason, Challenge::InsufficientScope};
}
Answer no_post_to(const std::string& room) {
  return scope("your token does not allow posting to room " + room);
}
Answer no_read_of(const std::string& room) {
  return scope("your token does not allow reading room " + room);
}
Answer sign_in_to_read(const std::string& room) {
  return sign_in(kSignIn + " to read room " + room);
}

void expect_answer(const HttpResponse& r, const Answer& want, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(r.status, want.status) << r.body;
  std::string www = r.header("www-authenticate");
  switch (want.challenge) {
    case Challenge::None:
      EXPECT_EQ(r.headers.count("www-authenticate"), 0u) << www;
      break;
    case Challenge::Plain:
      EXPECT_EQ(www, R"(Bearer realm="sse-chat")");
      break;
    case Challenge::InvalidToken:
      EXPECT_EQ(www, R"(Bearer realm="sse-chat", error="invalid_token")");
      break;
    case Challenge::InsufficientScope:
      EXPECT_EQ(www, R"(Bearer realm="sse-chat", error="insufficient_scope")");
      break;
  }
  if (want.status == 201) {
    EXPECT_GT(json_id(r.body), 0u) << r.body;
    EXPECT_EQ(r.body, "{\"id\":" + std::to_string(json_id(r.body)) + "}");
  } else if (want.status == 200) {
    EXPECT_EQ(r.header("content-type"), "text/event-stream");
  } else {
    EXPECT_EQ(r.body, error_json(want.reason));
  }
}

}  // namespace

// ---- 1. which token gets which answer ----

TEST(Auth, EachTokenGetsItsExactAnswerOnPostAndOnTheStream) {
  const Keys& k = keys();
  ServerProcess hs(hs_server_args());
  ServerProcess rs({"--jwt-alg", "RS256", "--jwt-key", k.rsa_public});

  std::string minted =
      mint({"--jwt-key", k.secret, "--sub", "alice", "--name", "Alice", "--rooms", "general,team-*",
            "--read", "announce", "--jwt-issuer", kIssuer, "--jwt-audience", kAudience});
  std::string good = hs256(claims());
  Parts gp = split(good);
  std::string expired = hs256("{" + kAlice + "," + kIssAud + "," + exp_in(-60) + "}");
  std::string rs_minted = mint({"--jwt-alg", "RS256", "--jwt-key", k.rsa_private, "--sub", "rita",
                                "--rooms", "general,team-*"});
  std::string rsa_pem = read_all(k.rsa_public);
  ASSERT_NE(rsa_pem.find("BEGIN PUBLIC KEY"), std::string::npos);
  std::string rs_claims = R"({"sub":"rita","rooms":["general","team-*"],)" + exp_in(3600) + "}";
  Parts rp = split(rs_minted);

  enum Server { Hs, Rs };
  struct Row {
    std::string name;
    Server server;
    std::string token;  // "": no Authorization header
    std::string post_room;
    Answer post_answer;
    std::string events_query;
    Answer events_answer;
  };
  const std::string both = "?room=general&room=team-a";
  const std::string bad_sig = "token signature is not valid";
  const std::string none_alg = "token algorithm none is not accepted (only HS256)";
  std::vector<Row> rows = {
      {"valid token from sse-chat token", Hs, minted, "general", created(), both, streaming()},
      {"valid token forged by the test", Hs, good, "general", created(), both, streaming()},
      {"expired", Hs, expired, "general", invalid("token expired"), both, invalid("token expired")},
      {"nbf 10 s ahead, within the leeway", Hs,
       hs256("{" + kAlice + "," + kIssAud + ",\"nbf\":" + std::to_string(now_s() + 10) + "," +
             exp_in(3600) + "}"),
       "general", created(), both, streaming()},
      {"nbf 120 s ahead", Hs,
       hs256("{" + kAlice + "," + kIssAud + ",\"nbf\":" + std::to_string(now_s() + 120) + "," +
             exp_in(3600) + "}"),
       "general", invalid("token is not valid yet"), both, invalid("token is not valid yet")},
      {"signature with a character changed", Hs,
       gp.header + "." + gp.payload + "." + flip_char(gp.signature), "general", invalid(bad_sig),
       both, invalid(bad_sig)},
      {"payload changed after signing (rooms: *)", Hs,
       gp.header + "." +
           b64url("{\"sub\":\"alice\",\"rooms\":[\"*\"]," + kIssAud + "," + exp_in(3600) + "}") +
           "." + gp.signature,
       "ops", invalid(bad_sig), "?room=ops", invalid(bad_sig)},
      {"signed with another secret", Hs, hs256(claims(), kOtherSecret), "general", invalid(bad_sig),
       both, invalid(bad_sig)},
      {"alg none, empty signature", Hs,
       b64url(R"({"alg":"none","typ":"JWT"})") + "." + b64url(claims()) + ".", "general",
       invalid(none_alg), both, invalid(none_alg)},
      {"alg none, with a signature", Hs,
       forge_hmac(R"({"alg":"none","typ":"JWT"})", claims(), kSecret), "general", invalid(none_alg),
       both, invalid(none_alg)},
      {"alg HS512, signed with the secret", Hs,
       forge_hmac(R"({"alg":"HS512","typ":"JWT"})", claims(), kSecret, EVP_sha512()), "general",
       invalid("token algorithm HS512 is not accepted (only HS256)"), both,
       invalid("token algorithm HS512 is not accepted (only HS256)")},
      {"header without alg", Hs, forge_hmac(R"({"typ":"JWT"})", claims(), kSecret), "general",
       invalid("token header names no algorithm"), both,
       invalid("token header names no algorithm")},
      {"wrong issuer", Hs,
       hs256("{" + kAlice + R"(,"iss":"https://evil.example","aud":"sse-chat",)" + exp_in(3600) +
             "}"),
       "general", invalid("token issuer is not accepted"), both,
       invalid("token issuer is not accepted")},
      {"no issuer", Hs, hs256("{" + kAlice + R"(,"aud":"sse-chat",)" + exp_in(3600) + "}"),
       "general", invalid("token issuer is not accepted"), both,
       invalid("token issuer is not accepted")},
      {"wrong audience", Hs,
       hs256("{" + kAlice + R"(,"iss":"https://auth.example","aud":"other-app",)" + exp_in(3600) +
             "}"),
       "general", invalid("token audience is not accepted"), both,
       invalid("token audience is not accepted")},
      {"audience among several", Hs,
       hs256("{" + kAlice + R"(,"iss":"https://auth.example","aud":["x","sse-chat"],)" +
             exp_in(3600) + "}"),
       "general", created(), both, streaming()},
      {"missing sub", Hs,
       hs256(R"({"name":"Alice","rooms":["general"],)" + kIssAud + "," + exp_in(3600) + "}"),
       "general", invalid("token has no sub claim"), both, invalid("token has no sub claim")},
      {"missing exp", Hs, hs256("{" + kAlice + "," + kIssAud + "}"), "general",
       invalid("token has no exp claim"), both, invalid("token has no exp claim")},
      {"exp as a string", Hs,
       hs256("{" + kAlice + "," + kIssAud + ",\"exp\":\"" + std::to_string(now_s() + 3600) + "\"}"),
       "general", invalid("token has no exp claim"), both, invalid("token has no exp claim")},
      {"malformed base64url", Hs, gp.header + ".eyJzd!WIi." + gp.signature, "general",
       invalid("token is not valid base64url"), both, invalid("token is not valid base64url")},
      {"two parts only", Hs, gp.header + "." + gp.payload, "general",
       invalid("token is not a JWT (header.payload.signature)"), both,
       invalid("token is not a JWT (header.payload.signature)")},
      {"malformed JSON payload", Hs, hs256(R"({"sub":"alice","exp":)"), "general",
       invalid("token claims are not valid JSON"), both,
       invalid("token claims are not valid JSON")},
      {"payload a JSON array", Hs, hs256(R"(["sub","alice"])"), "general",
       invalid("token claims are not a JSON object"), both,
       invalid("token claims are not a JSON object")},
      {"name longer than 64 characters", Hs,
       hs256(
           claims(R"("sub":"alice","name":")" + std::string(65, 'n') + R"(","rooms":["general"])")),
       "general", invalid("token name (or sub) must be 1-64 characters without control characters"),
       both, invalid("token name (or sub) must be 1-64 characters without control characters")},
      {"rooms not an array", Hs, hs256(claims(R"("sub":"alice","rooms":"general")")), "general",
       invalid("token claim rooms must be an array of room patterns"), both,
       invalid("token claim rooms must be an array of room patterns")},
      {"room outside its claims", Hs, good, "ops", no_post_to("ops"), "?room=ops",
       no_read_of("ops")},
      {"one of two rooms outside its claims", Hs, good, "general", created(),
       "?room=general&room=ops", no_read_of("ops")},
      {"prefix team-* allows team-a", Hs, good, "team-a", created(), "?room=team-a", streaming()},
      {"prefix team-* refuses teams", Hs, good, "teams", no_post_to("teams"), "?room=teams",
       no_read_of("teams")},
      {"read-only room", Hs, good, "announce", no_post_to("announce"), "?room=announce",
       streaming()},
      {"public room, no token", Hs, "", "lobby", sign_in(), "?room=lobby", streaming()},
      {"public prefix pub-*, no token", Hs, "", "pub-news", sign_in(), "?room=pub-news",
       streaming()},
      {"public room, token not covering it", Hs, good, "lobby", no_post_to("lobby"),
       "?room=lobby&room=general", streaming()},
      {"public room, expired token (no anonymous fallback)", Hs, expired, "lobby",
       invalid("token expired"), "?room=lobby", invalid("token expired")},
      {"public room, forged token (no anonymous fallback)", Hs, hs256(claims(), kOtherSecret),
       "lobby", invalid(bad_sig), "?room=lobby", invalid(bad_sig)},
      {"no token, non-public room", Hs, "", "general", sign_in(), "?room=general",
       sign_in_to_read("general")},
      {"no token, no room named (general)", Hs, "", "general", sign_in(), "",
       sign_in_to_read("general")},
      {"token for every room (*)", Hs, hs256(claims(R"("sub":"root","rooms":["*"])")), "ops",
       created(), "?room=ops&room=anything", streaming()},
      {"token with no rooms at all", Hs, hs256(claims(R"("sub":"nobody")")), "general",
       no_post_to("general"), "?room=general", no_read_of("general")},
      // An RS256 server: the algorithm is its own, never the token's.
      {"RS256 token from sse-chat token", Rs, rs_minted, "team-b", created(), both, streaming()},
      {"HS256 signed with the RS256 public key PEM", Rs, hs256(rs_claims, rsa_pem), "general",
       invalid("token algorithm HS256 is not accepted (only RS256)"), both,
       invalid("token algorithm HS256 is not accepted (only RS256)")},
      {"RS256 header, HMAC with the public key PEM", Rs,
       forge_hmac(R"({"alg":"RS256","typ":"JWT"})", rs_claims, rsa_pem), "general",
       invalid(bad_sig), both, invalid(bad_sig)},
      {"RS256 signature with a character changed", Rs,
       rp.header + "." + rp.payload + "." + flip_char(rp.signature), "general", invalid(bad_sig),
       both, invalid(bad_sig)},
      {"RS256 server, alg none", Rs,
       b64url(R"({"alg":"none","typ":"JWT"})") + "." + b64url(rs_claims) + ".", "general",
       invalid("token algorithm none is not accepted (only RS256)"), both,
       invalid("token algorithm none is not accepted (only RS256)")},
      {"RS256 server, no token", Rs, "", "general", sign_in(), both, sign_in_to_read("general")},
  };

  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    uint16_t port = row.server == Hs ? hs.port() : rs.port();
    std::string headers = row.token.empty() ? "" : bearer(row.token);
    expect_answer(post_to(port, row.post_room, "row: " + row.name, headers), row.post_answer,
                  "POST /messages room=" + row.post_room);
    Stream s(port, row.events_query, headers);
    expect_answer(s.head, row.events_answer, "GET /events" + row.events_query);
  }
  EXPECT_TRUE(hs.running());
  EXPECT_TRUE(rs.running());
}

// ---- 2. the author ----

// A client that waits for 100 Continue before sending its body learns of a missing or bad token
// at once, before it sends the body (RFC 9110 10.1.1); with a good one, it is asked for it.
TEST(Auth, AnExpectingPostWithoutAValidTokenIsRefusedBeforeItsBody) {
  ServerProcess server(hs_server_args());
  std::string body = R"({"text":"waits for 100"})";
  auto head_of = [&](const std::string& auth) {
    Client c(server.port());
    EXPECT_TRUE(c.send("POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
                       auth + "Content-Length: " + std::to_string(body.size()) +
                       "\r\nExpect: 100-continue\r\n\r\n"));
    auto h = c.read_head();
    return h ? h->status : 0;
  };
  EXPECT_EQ(head_of(""), 401);
  EXPECT_EQ(head_of("Authorization: Bearer not.a.token\r\n"), 401);
  EXPECT_EQ(head_of(bearer(hs256(claims()))), 100);
}

TEST(Auth, TheAuthorIsTheTokensNameWhateverTheBodySays) {
  ServerProcess server(hs_server_args());
  std::string alice =
      hs256(claims(R"("sub":"alice-id","name":"Alice Liddell","rooms":["general"])"));
  std::string bob = hs256(claims(R"("sub":"bob","rooms":["general"])"));
  Stream s(server.port(), "?room=general", bearer(alice));
  ASSERT_EQ(s.head.status, 200);

  auto a = post(server.port(), R"({"user":"mallory","text":"from alice"})", bearer(alice));
  ASSERT_EQ(a.status, 201) << a.body;
  auto b = post(server.port(), R"({"text":"bob sent no user"})", bearer(bob));
  ASSERT_EQ(b.status, 201) << b.body;
  std::string a_id = std::to_string(json_id(a.body)), b_id = std::to_string(json_id(b.body));

  auto m1 = s.reader.next_message();
  ASSERT_TRUE(m1);
  EXPECT_EQ(m1->id, a_id);
  EXPECT_EQ(m1->data.find("{\"id\":" + a_id +
                          R"(,"room":"general","user":"Alice Liddell","text":"from alice")"),
            0u)
      << m1->data;
  auto m2 = s.reader.next_message();
  ASSERT_TRUE(m2);
  EXPECT_EQ(m2->id, b_id);
  EXPECT_EQ(m2->data.find("{\"id\":" + b_id +
                          R"(,"room":"general","user":"bob","text":"bob sent no user")"),
            0u)
      << m2->data;

  auto history = get(server.port(), "/messages?room=general", bearer(bob));
  ASSERT_EQ(history.status, 200) << history.body;
  EXPECT_EQ(ids_in(history.body), (std::vector<uint64_t>{json_id(a.body), json_id(b.body)}));
  EXPECT_NE(history.body.find(R"("user":"Alice Liddell","text":"from alice")"), std::string::npos)
      << history.body;
  EXPECT_NE(history.body.find(R"("user":"bob","text":"bob sent no user")"), std::string::npos)
      << history.body;
  EXPECT_EQ(history.body.find("mallory"), std::string::npos) << history.body;

  // A form POST too: its user field is ignored.
  Client c(server.port());
  std::string form = "user=mallory&text=by+form";
  ASSERT_TRUE(
      c.send("POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
             "application/x-www-form-urlencoded\r\n" +
             bearer(alice) + "Content-Length: " + std::to_string(form.size()) + "\r\n\r\n" + form));
  auto f = c.read_response();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->status, 201) << f->body;
  auto m3 = s.reader.next_message();
  ASSERT_TRUE(m3);
  EXPECT_EQ(field(m3->data, "user"), "Alice Liddell");
  EXPECT_EQ(field(m3->data, "text"), "by form");
}

// ---- 3. a stream ends when its token expires ----

TEST(Auth, AStreamEndsWithExpiredWhenItsTokenExpiresAndCannotReconnect) {
  ServerProcess server(hs_server_args());
  std::string token =
      hs256("{" + kAlice + "," + kIssAud + "," + exp_in(3) + "}");  // expires in 2-3 s
  auto started = std::chrono::steady_clock::now();
  Stream s(server.port(), "?room=general&room=lobby", bearer(token));
  ASSERT_EQ(s.head.status, 200) << s.head.body;
  // It still delivers while the token lasts.
  auto p = post_to(server.port(), "general", "before expiry", bearer(token));
  ASSERT_EQ(p.status, 201) << p.body;
  auto m = s.reader.next_message();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->id, std::to_string(json_id(p.body)));

  auto expired = s.next_of("expired");
  ASSERT_TRUE(expired) << "the stream ended without event: expired";
  EXPECT_EQ(expired->data, R"({"reason":"token expired"})");
  EXPECT_TRUE(s.client.wait_closed());
  // A generous guard only: the 20 s read timeout would have ended the wait anyway.
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(15));

  Stream again(server.port(), "?room=general&room=lobby", bearer(token));
  expect_answer(again.head, invalid("token expired"), "reconnect with the same token");
  expect_answer(post_to(server.port(), "general", "after expiry", bearer(token)),
                invalid("token expired"), "POST after expiry");
}

// Nothing posted at or after the token's exp reaches the stream, even before the once-a-second
// check ends it. Message times are the server's (`ts`); the allowance covers one loop iteration
// of the ASan build, whose clock the check reads.
TEST(Auth, NothingPostedAfterExpReachesTheStream) {
  ServerProcess server(hs_server_args());
  int64_t exp = now_s() + 2;
  std::string reader =
      hs256("{" + kAlice + "," + kIssAud + ",\"exp\":" + std::to_string(exp) + "}");
  std::string poster = hs256(claims());
  Stream s(server.port(), "?room=general", bearer(reader));
  ASSERT_EQ(s.head.status, 200) << s.head.body;
  int after = 0;
  while (now_s() <= exp + 1) {  // posts until well past exp
    auto p = post_to(server.port(), "general", "tick", bearer(poster));
    ASSERT_EQ(p.status, 201) << p.body;
    after += now_s() > exp;
    usleep(20 * 1000);
  }
  ASSERT_GT(after, 0);
  int delivered = 0;
  while (auto e = s.reader.next()) {
    if (e->event == "expired") break;
    if (!e->event.empty()) continue;
    ++delivered;
    EXPECT_LT(std::stoll(field(e->data, "ts")), exp * 1000 + 250) << e->data;
  }
  EXPECT_GT(delivered, 0);
  EXPECT_TRUE(s.client.wait_closed());
}

// With tokens on, a reader (without a token, or whose token may not post there) may make a room
// only where that forgets no kept messages: it can never wipe a private room's history.
TEST(Auth, AReaderWithoutATokenNeverWipesAPrivateRoom) {
  std::vector<std::string> args = hs_server_args();
  args.insert(args.end(), {"--max-rooms", "4"});
  ServerProcess server(args);
  uint16_t port = server.port();
  std::string alice = hs256(claims());
  ASSERT_EQ(post_to(port, "team-z", "secret plans", bearer(alice)).status, 201);
  std::vector<std::unique_ptr<Stream>> readers;
  for (const char* room : {"?room=pub-1", "?room=pub-2", "?room=pub-3"}) {
    readers.push_back(std::make_unique<Stream>(port, room));
    ASSERT_EQ(readers.back()->head.status, 200);
  }
  // Four rooms, three read: the fifth could only come by forgetting team-z. Nor may a token
  // that only reads (a hostile probe wiped a private room with a token of no rights at all).
  HttpResponse refused = get(port, "/events?room=pub-4");
  EXPECT_EQ(refused.status, 429) << refused.body;
  for (const char* fields : {R"("sub":"eve")", R"("sub":"eve","read":["pub-*"])",
                             R"("sub":"eve","rooms":["general"],"read":["pub-*"])"}) {
    HttpResponse reader = get(port, "/events?room=pub-4", bearer(hs256(claims(fields))));
    EXPECT_EQ(reader.status, 429) << fields << " " << reader.body;
  }
  HttpResponse kept = get(port, "/messages?room=team-z", bearer(alice));
  EXPECT_EQ(ids_in(kept.body).size(), 1u) << kept.body;
  EXPECT_EQ(post_to(port, "team-z", "still here", bearer(alice)).status, 201);
  // A room that keeps nothing may go: once pub-3 is left, pub-4 opens in its place.
  readers.pop_back();
  // (An EventSource refused for now also gets a 200, with only `retry:`: an opened stream is
  // told the room's presence.)
  bool opened = false;
  for (int i = 0; i < 100 && !opened; ++i) {  // until the server has seen pub-3's reader leave
    Stream s(port, "?room=pub-4");
    opened = s.head.status == 200 && s.next_of("presence").has_value();
    if (!opened) usleep(50 * 1000);
  }
  EXPECT_TRUE(opened);
  EXPECT_EQ(ids_in(get(port, "/messages?room=team-z", bearer(alice)).body).size(), 2u);
}

// ---- 4. RS256 and ES256 ----

TEST(Auth, Rs256ServerAcceptsItsKeysTokensOnly) {
  const Keys& k = keys();
  ServerProcess server({"--jwt-alg", "RS256", "--jwt-key", k.rsa_public});
  // --flag=value as the server takes it, too.
  std::string token = mint({"--jwt-alg=RS256", "--jwt-key", k.rsa_private, "--sub=rita", "--name",
                            "Rita", "--rooms=general"});
  EXPECT_EQ(b64url_decode(split(token).header), R"({"alg":"RS256","typ":"JWT"})");
  EXPECT_EQ(b64url_decode(split(token).signature).size(), 256u);  // 2048-bit RSA
  Stream s(server.port(), "?room=general", bearer(token));
  ASSERT_EQ(s.head.status, 200) << s.head.body;
  auto p = post(server.port(), R"({"text":"signed by RSA"})", bearer(token));
  expect_answer(p, created(), "RS256 POST");
  auto m = s.reader.next_message();
  ASSERT_TRUE(m);
  EXPECT_EQ(field(m->data, "user"), "Rita");
  auto me = get(server.port(), "/me", bearer(token));
  EXPECT_EQ(me.status, 200);
  EXPECT_EQ(field(me.body, "sub"), "rita");

  // The classic confusion: HS256 with the public key (which everyone has) as the secret.
  std::string pem = read_all(k.rsa_public);
  std::string payload = b64url_decode(split(token).payload);
  std::string confused = hs256(payload, pem);
  expect_answer(post(server.port(), R"({"text":"x"})", bearer(confused)),
                invalid("token algorithm HS256 is not accepted (only RS256)"), "HS256 + PEM POST");
  Stream refused(server.port(), "?room=general", bearer(confused));
  expect_answer(refused.head, invalid("token algorithm HS256 is not accepted (only RS256)"),
                "HS256 + PEM stream");
  // A token from an ES256 key names ES256: refused by algorithm before any signature work.
  std::string es = mint(
      {"--jwt-alg", "ES256", "--jwt-key", k.ec_private, "--sub", "rita", "--rooms", "general"});
  expect_answer(post(server.port(), R"({"text":"x"})", bearer(es)),
                invalid("token algorithm ES256 is not accepted (only RS256)"), "ES256 on RS256");
}

TEST(Auth, Es256ServerAcceptsItsKeysTokensOnly) {
  const Keys& k = keys();
  ServerProcess server({"--jwt-alg", "ES256", "--jwt-key", k.ec_public, "--public-rooms", "lobby"});
  std::string token = mint({"--jwt-alg", "ES256", "--jwt-key", k.ec_private, "--sub", "eve",
                            "--name", "Eve", "--rooms", "general,team-*"});
  Parts tp = split(token);
  EXPECT_EQ(b64url_decode(tp.header), R"({"alg":"ES256","typ":"JWT"})");
  std::string sig = b64url_decode(tp.signature);
  ASSERT_EQ(sig.size(), 64u);  // JOSE's r||s, not DER

  Stream s(server.port(), "?room=general&room=team-x", bearer(token));
  ASSERT_EQ(s.head.status, 200) << s.head.body;
  expect_answer(post_to(server.port(), "team-x", "signed by EC", bearer(token)), created(),
                "ES256 POST");
  auto m = s.reader.next_message();
  ASSERT_TRUE(m);
  EXPECT_EQ(field(m->data, "user"), "Eve");
  EXPECT_EQ(field(m->data, "room"), "team-x");

  const std::string bad_sig = "token signature is not valid";
  std::string input = tp.header + "." + tp.payload;
  // The same DER signature OpenSSL makes natively (what a naive signer sends).
  write_file(k.dir + "/input", input);
  Outcome der = run({"openssl", "dgst", "-sha256", "-sign", k.ec_private, "-out",
                     k.dir + "/sig.der", k.dir + "/input"});
  ASSERT_EQ(der.status, 0) << der.err;
  std::string der_sig = read_all(k.dir + "/sig.der");
  ASSERT_NE(der_sig.size(), 64u);
  struct Forgery {
    std::string name, token;
  };
  std::vector<Forgery> forged = {
      {"signature one byte too long", input + "." + b64url(sig + std::string(1, '\0'))},
      {"signature one byte too short", input + "." + b64url(sig.substr(0, 63))},
      {"signature r only", input + "." + b64url(sig.substr(0, 32))},
      {"empty signature", input + "."},
      {"DER signature", input + "." + b64url(der_sig)},
      {"s and r swapped", input + "." + b64url(sig.substr(32) + sig.substr(0, 32))},
      {"signed by another EC key", mint({"--jwt-alg", "ES256", "--jwt-key", k.ec_other_private,
                                         "--sub", "eve", "--rooms", "general,team-*"})},
  };
  for (const Forgery& f : forged) {
    SCOPED_TRACE(f.name);
    expect_answer(post(server.port(), R"({"text":"x"})", bearer(f.token)), invalid(bad_sig),
                  "POST");
    Stream refused(server.port(), "?room=lobby", bearer(f.token));
    expect_answer(refused.head, invalid(bad_sig), "stream of a public room");
  }
  std::string pem = read_all(k.ec_public);
  expect_answer(
      post(server.port(), R"({"text":"x"})", bearer(hs256(b64url_decode(tp.payload), pem))),
      invalid("token algorithm HS256 is not accepted (only ES256)"), "HS256 + EC PEM");
  // The real signature still works after all that.
  expect_answer(post(server.port(), R"({"text":"still fine"})", bearer(token)), created(),
                "valid again");
}

// ---- 5. the cookie ----

TEST(Auth, TheCookieCarriesATokenAndAuthorizationComesFirst) {
  ServerProcess server(hs_server_args());
  std::string alice = hs256(claims());
  std::string bob = hs256(claims(R"("sub":"bob","name":"Bob","rooms":["general"])"));
  uint16_t port = server.port();

  Stream s(port, "?room=general", cookie("sse_chat_token=" + alice));
  ASSERT_EQ(s.head.status, 200) << s.head.body;
  auto by_cookie = post(port, R"({"text":"cookie"})", cookie("sse_chat_token=" + alice));
  expect_answer(by_cookie, created(), "POST with the cookie");
  auto m = s.reader.next_message();
  ASSERT_TRUE(m);
  EXPECT_EQ(field(m->data, "user"), "Alice");

  expect_answer(post(port, R"({"text":"among others"})",
                     cookie("theme=dark; sse_chat_token=" + alice + "; lang=en")),
                created(), "cookie among other cookies");
  expect_answer(post(port, R"({"text":"quoted"})", cookie("a=1;sse_chat_token=\"" + alice + "\"")),
                created(), "quoted cookie value");
  Stream among(port, "?room=team-a", cookie("x=1; sse_chat_token=" + alice + "; y=2"));
  expect_answer(among.head, streaming(), "stream, cookie among others");

  // Authorization first: its token is used, the cookie's not even looked at.
  auto both = post(port, R"({"text":"who am i"})", bearer(bob) + cookie("sse_chat_token=" + alice));
  expect_answer(both, created(), "Bearer bob + cookie alice");
  auto who = s.reader.next_message();
  while (who && field(who->data, "text") != "who am i") who = s.reader.next_message();
  ASSERT_TRUE(who);
  EXPECT_EQ(field(who->data, "user"), "Bob");
  expect_answer(
      post(port, R"({"text":"x"})", bearer("garbage") + cookie("sse_chat_token=" + alice)),
      invalid("token is not a JWT (header.payload.signature)"), "bad Bearer + good cookie");
  expect_answer(post(port, R"({"text":"x"})",
                     bearer(alice) + cookie("sse_chat_token=" + hs256(claims(), kOtherSecret))),
                created(), "good Bearer + forged cookie");

  // Another scheme (Basic from a proxy that guards the site) is not ours: the cookie, or no
  // token, decides.
  std::string basic = "Authorization: Basic YWxpY2U6cGFzc3dvcmQ=\r\n";
  expect_answer(post(port, R"({"text":"x"})", basic), sign_in(), "Basic POST");
  expect_answer(post(port, R"({"text":"x"})", basic + cookie("sse_chat_token=" + alice)), created(),
                "Basic + good cookie POST");
  Stream basic_stream(port, "?room=lobby", basic);
  expect_answer(basic_stream.head, streaming(), "Basic stream of a public room");
  Stream bare_bearer(port, "?room=general", "Authorization: Bearer\r\n");
  expect_answer(bare_bearer.head, invalid(kBareBearer), "Bearer without a token");
  expect_answer(post(port, R"({"text":"x"})", "Authorization: bearer " + alice + "\r\n"), created(),
                "the scheme is case-insensitive");

  // Other carriers are not: a cookie of another name, the URL.
  expect_answer(post(port, R"({"text":"x"})", cookie("xsse_chat_token=" + alice)), sign_in(),
                "cookie of another name");
  Stream in_url(port, "?room=general&access_token=" + alice + "&token=" + alice);
  expect_answer(in_url.head, sign_in_to_read("general"), "token in the URL");
  {
    Client c(port);
    std::string body = R"({"text":"x"})";
    ASSERT_TRUE(c.send("POST /messages?access_token=" + alice +
                       " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       "Content-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    expect_answer(*r, sign_in(), "POST with the token in the URL");
  }
  // An empty Authorization header is no Authorization: the cookie counts.
  expect_answer(
      post(port, R"({"text":"x"})", "Authorization: \r\n" + cookie("sse_chat_token=" + alice)),
      created(), "empty Authorization + good cookie");
  // The cookie does not make a cross-site POST (a form on another site) acceptable.
  {
    Client c(port);
    std::string form = "text=csrf";
    ASSERT_TRUE(
        c.send("POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
               "Content-Type: application/x-www-form-urlencoded\r\n" +
               cookie("sse_chat_token=" + alice) +
               "Content-Length: " + std::to_string(form.size()) + "\r\n\r\n" + form));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << r->body;
    EXPECT_EQ(r->body, error_json("posting from another site is not allowed"));
  }
  // The identity is each request's own, never the connection's.
  {
    Client c(port);
    auto first = c.post_json(R"({"text":"keep-alive 1"})", bearer(alice));
    ASSERT_TRUE(first);
    expect_answer(*first, created(), "first request on the connection, with a token");
    auto second = c.post_json(R"({"text":"keep-alive 2"})");
    ASSERT_TRUE(second);
    expect_answer(*second, sign_in(), "second request on the connection, without");
    auto third = c.get("/me");
    ASSERT_TRUE(third);
    EXPECT_EQ(third->status, 401);
  }
  // An empty cookie (signed out) is no token: a public room still reads.
  Stream signed_out(port, "?room=lobby", cookie("sse_chat_token="));
  expect_answer(signed_out.head, streaming(), "empty cookie, public room");
  expect_answer(post(port, R"({"text":"x"})", cookie("sse_chat_token=")), sign_in(),
                "empty cookie POST");
  Stream bad_cookie(port, "?room=lobby", cookie("sse_chat_token=" + hs256(claims(), kOtherSecret)));
  expect_answer(bad_cookie.head, invalid("token signature is not valid"),
                "forged cookie, public room");
}

// ---- 6. GET /rooms, GET /messages, GET /me ----

TEST(Auth, RoomsMessagesAndMeFollowTheReadRules) {
  ServerProcess server(hs_server_args());
  uint16_t port = server.port();
  std::string root = hs256(claims(R"("sub":"root","rooms":["*"])"));
  std::map<std::string, uint64_t> ids;
  for (std::string room : {"lobby", "general", "team-a", "ops", "announce", "pub-news"}) {
    auto r = post_to(port, room, "in " + room, bearer(root));
    ASSERT_EQ(r.status, 201) << room << " " << r.body;
    ids[room] = json_id(r.body);
  }
  std::string alice = hs256(claims());
  std::string expired = hs256("{" + kAlice + "," + kIssAud + "," + exp_in(-5) + "}");

  using Names = std::set<std::string>;
  auto rooms_for = [&](const std::string& headers) {
    auto r = get(port, "/rooms", headers);
    EXPECT_EQ(r.status, 200) << r.body;
    return room_names(r.body);
  };
  EXPECT_EQ(rooms_for(""), (Names{"lobby", "pub-news"}));
  EXPECT_EQ(rooms_for(bearer(alice)),
            (Names{"lobby", "pub-news", "general", "team-a", "announce"}));
  EXPECT_EQ(rooms_for(cookie("sse_chat_token=" + alice)),
            (Names{"lobby", "pub-news", "general", "team-a", "announce"}));
  EXPECT_EQ(rooms_for(bearer(root)),
            (Names{"lobby", "pub-news", "general", "team-a", "ops", "announce"}));
  expect_answer(get(port, "/rooms", bearer(expired)), invalid("token expired"), "/rooms expired");
  EXPECT_EQ(rooms_for("Authorization: Basic eDp5\r\n"), (Names{"lobby", "pub-news"}));

  auto history = [&](const std::string& room, const std::string& headers) {
    return get(port, "/messages?room=" + room, headers);
  };
  auto lobby = history("lobby", "");
  EXPECT_EQ(lobby.status, 200);
  EXPECT_EQ(ids_in(lobby.body), std::vector<uint64_t>{ids["lobby"]});
  expect_answer(history("ops", ""), sign_in_to_read("ops"), "/messages ops, no token");
  expect_answer(get(port, "/messages"), sign_in_to_read("general"), "/messages, no token");
  expect_answer(history("ops", bearer(alice)), no_read_of("ops"), "/messages ops, alice");
  expect_answer(history("lobby", bearer(expired)), invalid("token expired"),
                "/messages lobby, expired");
  for (std::string room : {"announce", "team-a", "general", "lobby"}) {
    auto r = history(room, bearer(alice));
    EXPECT_EQ(r.status, 200) << room << " " << r.body;
    EXPECT_EQ(ids_in(r.body), std::vector<uint64_t>{ids[room]}) << room;
  }
  auto ops = history("ops", bearer(root));
  EXPECT_EQ(ids_in(ops.body), std::vector<uint64_t>{ids["ops"]});

  // GET /me: the bearer, its rooms and the public ones.
  const std::string pub = R"("public":["lobby","pub-*"])";
  const std::string kLimit = R"(,"max_rooms_per_stream":32)";
  std::string alice_exp = field(b64url_decode(split(alice).payload), "exp");
  auto me = get(port, "/me", bearer(alice));
  EXPECT_EQ(me.status, 200);
  EXPECT_EQ(me.body, R"({"auth":true,"sub":"alice","name":"Alice","rooms":["general","team-*"],)"
                     R"("read":["announce"],)" +
                         pub + ",\"exp\":" + alice_exp + kLimit + "}");
  EXPECT_EQ(me.header("cache-control"), "no-store");
  std::string carol = mint({"--jwt-key", keys().secret, "--sub", "carol", "--rooms", "general",
                            "--jwt-issuer", kIssuer, "--jwt-audience", kAudience, "--ttl", "600"});
  std::string carol_claims = b64url_decode(split(carol).payload);
  int64_t carol_exp = std::stoll(field(carol_claims, "exp"));
  EXPECT_EQ(carol_exp - std::stoll(field(carol_claims, "iat")), 600);
  auto me_carol = get(port, "/me", cookie("sse_chat_token=" + carol));
  EXPECT_EQ(me_carol.status, 200);
  EXPECT_EQ(me_carol.body, R"({"auth":true,"sub":"carol","name":"carol","rooms":["general"],)"
                           R"("read":[],)" +
                               pub + ",\"exp\":" + std::to_string(carol_exp) + kLimit + "}");

  auto anon = get(port, "/me");
  EXPECT_EQ(anon.status, 401);
  EXPECT_EQ(anon.header("www-authenticate"), R"(Bearer realm="sse-chat")");
  EXPECT_EQ(anon.body, "{\"error\":" + json_string(kSignIn) + "," + pub + kLimit + "}");
  auto bad = get(port, "/me", bearer(expired));
  EXPECT_EQ(bad.status, 401);
  EXPECT_EQ(bad.header("www-authenticate"), R"(Bearer realm="sse-chat", error="invalid_token")");
  EXPECT_EQ(bad.body, R"({"error":"token expired",)" + pub + kLimit + "}");
  auto forged = get(port, "/me", bearer(hs256(claims(), kOtherSecret)));
  EXPECT_EQ(forged.status, 401);
  EXPECT_EQ(forged.body, R"({"error":"token signature is not valid",)" + pub + kLimit + "}");
}

// ---- 7. presence ----

TEST(Auth, PresenceNamesComeFromTokens) {
  ServerProcess server(hs_server_args());
  uint16_t port = server.port();
  std::string alice = hs256(claims());
  std::string bob = hs256(claims(R"("sub":"bob","rooms":["team-*"])"));
  // A user= too long to be a name (400 with tokens off) is not even looked at.
  Stream a(port, "?room=team-a&user=" + std::string(40, 'm'), bearer(alice));
  Stream b(port, "?room=team-a&user=eve", cookie("sse_chat_token=" + bob));
  ASSERT_EQ(a.head.status, 200);
  ASSERT_EQ(b.head.status, 200);
  std::optional<SseEvent> p;
  do {  // presence comes at most once a second per room: read until it counts both
    p = a.next_of("presence");
    ASSERT_TRUE(p);
  } while (field(p->data, "online") != "2");
  EXPECT_EQ(p->data, R"({"room":"team-a","online":2,"users":["Alice","bob"]})");

  // In a public room an anonymous reader counts, but its ?user= names nobody.
  Stream anon(port, "?room=lobby&user=eve");
  Stream named(port, "?room=lobby&user=mallory", bearer(alice));
  ASSERT_EQ(anon.head.status, 200);
  ASSERT_EQ(named.head.status, 200);
  do {
    p = anon.next_of("presence");
    ASSERT_TRUE(p);
  } while (field(p->data, "online") != "2");
  EXPECT_EQ(p->data, R"({"room":"lobby","online":2,"users":["Alice"]})");
}

// ---- 8. the POST limit counts per subject ----

TEST(Auth, PostLimitsCountPerTokenSubjectNotPerAddress) {
  // Burst 2, refilled at one POST per 5 s: the third POST in a row is over, however slow the host.
  std::vector<std::string> args = hs_server_args();
  args.insert(args.end(), {"--post-rate", "0.2", "--post-burst", "2"});
  ServerProcess server(args);
  uint16_t port = server.port();
  std::string alice = hs256(claims());
  std::string bob = hs256(claims(R"("sub":"bob","rooms":["general"])"));
  std::string alice_again = hs256(claims(R"("sub":"alice","name":"Other Alice","rooms":["*"])"));
  expect_answer(post(port, R"({"text":"a1"})", bearer(alice)), created(), "alice 1");
  expect_answer(post(port, R"({"text":"a2"})", bearer(alice)), created(), "alice 2");
  auto over = post(port, R"({"text":"a3"})", bearer(alice));
  EXPECT_EQ(over.status, 429) << over.body;
  EXPECT_FALSE(over.header("retry-after").empty());
  // Bob, from the same address, has a burst of his own.
  expect_answer(post(port, R"({"text":"b1"})", bearer(bob)), created(), "bob 1");
  expect_answer(post(port, R"({"text":"b2"})", bearer(bob)), created(), "bob 2");
  EXPECT_EQ(post(port, R"({"text":"b3"})", bearer(bob)).status, 429);
  // The budget is the subject's, not the token's: another token for alice shares hers.
  EXPECT_EQ(post(port, R"({"text":"a4"})", bearer(alice_again)).status, 429);
  // Refused requests (no token, bad token) are answered 401 before any budget is spent.
  expect_answer(post(port, R"({"text":"x"})", ""), sign_in(), "no token");
  expect_answer(post(port, R"({"text":"x"})", bearer(hs256(claims(), kOtherSecret))),
                invalid("token signature is not valid"), "forged token");
  std::string carol = hs256(claims(R"("sub":"carol","rooms":["general"])"));
  expect_answer(post(port, R"({"text":"c1"})", bearer(carol)), created(), "carol 1");
}

// ---- 9. tokens off ----

TEST(Auth, WithTokensOffEverythingIsAsBefore) {
  ServerProcess server;
  uint16_t port = server.port();
  auto me = get(port, "/me");
  EXPECT_EQ(me.status, 200);
  EXPECT_EQ(me.body, R"({"auth":false,"max_rooms_per_stream":32})");
  auto me_garbage = get(port, "/me", bearer("garbage"));
  EXPECT_EQ(me_garbage.status, 200);
  EXPECT_EQ(me_garbage.body, R"({"auth":false,"max_rooms_per_stream":32})");

  std::string some_token = hs256(claims());
  std::string junk = bearer("not.a.token") + cookie("sse_chat_token=junk");
  Stream s(port, "?room=ops&user=dora", junk);
  ASSERT_EQ(s.head.status, 200);
  auto r = post(port, R"({"user":"dora","text":"as before","room":"ops"})", junk);
  expect_answer(r, created(), "POST with junk credentials, tokens off");
  auto m = s.reader.next_message();
  ASSERT_TRUE(m);
  EXPECT_EQ(field(m->data, "user"), "dora");
  // A well-formed token changes nothing either: the user is the body's.
  auto r2 = post(port, R"({"user":"dora","text":"again","room":"ops"})", bearer(some_token));
  expect_answer(r2, created(), "POST with a token, tokens off");
  EXPECT_EQ(field(s.reader.next_message()->data, "user"), "dora");
  auto basic = post(port, R"({"user":"dora","text":"basic"})", "Authorization: Basic eDp5\r\n");
  expect_answer(basic, created(), "POST with Basic, tokens off");
  auto no_user = post(port, R"({"text":"who?"})", bearer(some_token));
  EXPECT_EQ(no_user.status, 400) << no_user.body;
  auto history = get(port, "/messages?room=ops", junk);
  EXPECT_EQ(history.status, 200);
  EXPECT_EQ(ids_in(history.body), (std::vector<uint64_t>{json_id(r.body), json_id(r2.body)}));
  EXPECT_EQ(history.body.find("Alice"), std::string::npos);
  auto rooms = get(port, "/rooms", junk);
  EXPECT_EQ(rooms.status, 200);
  EXPECT_EQ(room_names(rooms.body), (std::set<std::string>{"ops", "general"}));
}

// Key rotation: the server accepts tokens of every --jwt-key; SIGHUP reads the files again. A key
// whose file changed no longer verifies anything, and the streams its tokens opened end with
// `event: expired` at once; the other key's streams go on. A file that no longer loads keeps the
// keys in use (and says so in the log).
TEST(Auth, SighupRotatesTheKeysAndEndsTheStreamsOfAWithdrawnOne) {
  std::string dir = make_temp_dir();
  std::string current = dir + "/current.key", previous = dir + "/previous.key";
  write_file(current, kSecret);
  write_file(previous, kOtherSecret);
  ServerProcess server({"--jwt-key", current, "--jwt-key", previous, "--jwt-issuer", kIssuer,
                        "--jwt-audience", kAudience});
  std::string by_current = hs256(claims());
  std::string by_previous = hs256(claims(), kOtherSecret);
  Stream kept(server.port(), "?room=general", bearer(by_current));
  Stream withdrawn(server.port(), "?room=general", bearer(by_previous));
  ASSERT_EQ(kept.head.status, 200) << kept.head.body;
  ASSERT_EQ(withdrawn.head.status, 200) << withdrawn.head.body;
  expect_answer(post_to(server.port(), "general", "both keys", bearer(by_previous)), created(),
                "a POST with the second key's token");

  const std::string next_secret = "the next secret, rotated in: 0123456789abcdefghijklmnopqrstuv";
  write_file(previous, next_secret);
  ASSERT_EQ(kill(server.pid(), SIGHUP), 0);
  auto ended = withdrawn.next_of("expired");
  ASSERT_TRUE(ended) << "the withdrawn key's stream did not end";
  EXPECT_EQ(ended->data, R"({"reason":"token key withdrawn"})");
  // A stream ended is counted once, though it lingers until its client closes.
  auto reloads = [&] { return occurrences(server.log(), "token keys reloaded"); };
  ASSERT_TRUE(eventually([&] { return reloads() == 1; }));
  EXPECT_NE(server.log().find("streams_ended=1"), std::string::npos) << server.log();
  ASSERT_EQ(kill(server.pid(), SIGHUP), 0);
  ASSERT_TRUE(eventually([&] { return reloads() == 2; }));
  EXPECT_NE(server.log().find("streams_ended=0"), std::string::npos) << server.log();
  EXPECT_TRUE(withdrawn.client.wait_closed());
  expect_answer(post_to(server.port(), "general", "old key", bearer(by_previous)),
                invalid("token signature is not valid"), "a POST with the withdrawn key's token");
  auto p =
      post_to(server.port(), "general", "after rotation", bearer(hs256(claims(), next_secret)));
  expect_answer(p, created(), "a POST with the new key's token");
  auto delivered = kept.reader.next_message();  // the first key's stream saw both messages
  ASSERT_TRUE(delivered);
  delivered = kept.reader.next_message();
  ASSERT_TRUE(delivered);
  EXPECT_EQ(delivered->id, std::to_string(json_id(p.body)));

  write_file(previous, "too short");
  ASSERT_EQ(kill(server.pid(), SIGHUP), 0);
  for (int i = 0; i < 200 && server.log().find("keys not reloaded") == std::string::npos; ++i)
    usleep(50 * 1000);
  EXPECT_NE(server.log().find("keys not reloaded"), std::string::npos) << server.log();
  expect_answer(post_to(server.port(), "general", "still", bearer(hs256(claims(), next_secret))),
                created(), "the keys in use stay when a file no longer loads");
}

// ---- 10. configurations the server refuses to start with ----

TEST(Auth, BadTokenConfigurationsRefuseToStart) {
  const Keys& k = keys();
  std::string short_secret = k.dir + "/short.secret";
  write_file(short_secret, std::string(31, 's'));
  std::string secret48 = k.dir + "/48.secret";
  write_file(secret48, std::string(48, 's'));
  std::string empty = k.dir + "/empty.secret";
  write_file(empty, "");
  struct Refusal {
    std::string name;
    std::vector<std::string> args;
    std::string says;  // on stderr
  };
  std::vector<Refusal> refusals = {
      {"missing key file", {"--jwt-key", k.dir + "/no-such-file"}, "cannot read the key file"},
      {"HS256 secret of 31 bytes",
       {"--jwt-key", short_secret},
       "HS256 needs a secret of at least 32 bytes"},
      {"empty HS256 secret", {"--jwt-key", empty}, "HS256 needs a secret of at least 32 bytes"},
      {"HS512 secret of 48 bytes",
       {"--jwt-alg", "HS512", "--jwt-key", secret48},
       "HS512 needs a secret of at least 64 bytes"},
      {"RS256 given an EC key",
       {"--jwt-alg", "RS256", "--jwt-key", k.ec_public},
       "RS256 needs an RSA key"},
      {"ES256 given an RSA key",
       {"--jwt-alg", "ES256", "--jwt-key", k.rsa_public},
       "ES256 needs an EC key on the P-256 curve"},
      {"RS256 given an HS secret", {"--jwt-alg", "RS256", "--jwt-key", k.secret}, "not a PEM"},
      {"unknown --jwt-alg", {"--jwt-alg", "none", "--jwt-key", k.secret}, "bad --jwt-alg"},
      {"unknown --jwt-alg without a key yet", {"--jwt-alg", "HS257"}, "bad --jwt-alg"},
      {"--publish-token with --jwt-key",
       {"--jwt-key", k.secret, "--publish-token", "s3cret"},
       "--publish-token and --jwt-key cannot be used together"},
      {"--public-rooms without --jwt-key", {"--public-rooms", "lobby"}, "need --jwt-key"},
      {"--jwt-issuer without --jwt-key", {"--jwt-issuer", kIssuer}, "need --jwt-key"},
      {"bad --public-rooms pattern",
       {"--jwt-key", k.secret, "--public-rooms", "lobby,Not A Room"},
       "bad --public-rooms"},
  };
  for (const Refusal& r : refusals) {
    SCOPED_TRACE(r.name);
    std::vector<std::string> argv = {binary_path(),  "--listen",     "127.0.0.1:0",
                                     "--no-journal", "--static-dir", static_dir()};
    argv.insert(argv.end(), r.args.begin(), r.args.end());
    Outcome o = run(argv, 10);
    EXPECT_FALSE(o.timed_out) << "it started and kept running: " << o.out;
    EXPECT_NE(o.status, 0);
    EXPECT_EQ(o.out.find("listening on"), std::string::npos) << o.out;
    EXPECT_NE(o.err.find(r.says), std::string::npos) << o.err;
  }
  // The boundary: a secret of exactly 32 bytes starts, and its tokens are accepted.
  std::string secret32 = std::string(32, 'k');
  write_file(k.dir + "/32.secret", secret32);
  ServerProcess server({"--jwt-key", k.dir + "/32.secret"});
  std::string token = hs256(R"({"sub":"zed","rooms":["general"],)" + exp_in(60) + "}", secret32);
  expect_answer(post(server.port(), R"({"text":"32 bytes"})", bearer(token)), created(),
                "32-byte secret");
  // `sse-chat token` refuses the same bad keys.
  Outcome t = run({binary_path(), "token", "--jwt-key", short_secret, "--sub", "x"});
  EXPECT_NE(t.status, 0);
  EXPECT_TRUE(t.out.empty()) << t.out;
  EXPECT_NE(t.err.find("HS256 needs a secret of at least 32 bytes"), std::string::npos) << t.err;
  Outcome pub =
      run({binary_path(), "token", "--jwt-alg", "RS256", "--jwt-key", k.rsa_public, "--sub", "x"});
  EXPECT_NE(pub.status, 0) << "signed with a public key? " << pub.out;
  EXPECT_TRUE(pub.out.empty()) << pub.out;
  // Nor does it print a token that no request could carry within its 8 KiB of headers (each
  // would be a 431): 200 rooms named one by one.
  std::string rooms;
  for (int i = 0; i < 200; ++i)
    rooms += (i ? ",a-project-room-with-a-long-name-" : "a-project-room-with-a-long-name-") +
             std::to_string(i);
  Outcome big = run(
      {binary_path(), "token", "--jwt-key", k.dir + "/32.secret", "--sub", "x", "--rooms", rooms});
  EXPECT_NE(big.status, 0);
  EXPECT_TRUE(big.out.empty()) << big.out.size() << " bytes";
  EXPECT_NE(big.err.find("name rooms by prefix"), std::string::npos) << big.err;
  Outcome fits = run({binary_path(), "token", "--jwt-key", k.dir + "/32.secret", "--sub", "x",
                      "--rooms", "a-project-room-with-a-long-name-*"});
  EXPECT_EQ(fits.status, 0) << fits.err;
  // A flag is no value: `--sub --name x` forgot the subject (a token for "--name" is no one's).
  Outcome forgot =
      run({binary_path(), "token", "--jwt-key", k.dir + "/32.secret", "--sub", "--name", "Zed"});
  EXPECT_NE(forgot.status, 0);
  EXPECT_TRUE(forgot.out.empty()) << forgot.out;
  EXPECT_NE(forgot.err.find("--sub needs a value"), std::string::npos) << forgot.err;
}
