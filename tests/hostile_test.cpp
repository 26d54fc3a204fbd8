// Every hostile input in one table: each gets its exact status (or a close), and an honest
// subscriber connected throughout receives every message that was accepted, in order.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "test_server.h"

using namespace testing_support;

namespace {

constexpr int kClosed = -1;  // expected outcome: the connection ends without (another) answer

struct Hostile {
  const char* name;
  std::string bytes;
  std::vector<int> statuses;  // answers expected in order; kClosed last if the server hangs up
  bool half_close = false;    // shut our side after sending (for "shorter than Content-Length")
};

std::string post(const std::string& type, const std::string& body, const std::string& extra = "") {
  return "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: " + type + "\r\n" + extra +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}
std::string json(const std::string& body) {
  return post("application/json", body);
}
// A literal with embedded NULs, at its true length.
template <size_t N>
std::string bytes(const char (&literal)[N]) {
  return std::string(literal, N - 1);
}
std::string get(const std::string& target) {
  return "GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n";
}

}  // namespace

TEST(Hostile, EveryInputGetsItsStatusAndHonestClientsLoseNothing) {
  ServerProcess server({"--max-body", "4096", "--request-timeout", "2", "--post-rate", "0",
                        "--subscribe-rate", "0", "--max-streams-per-ip", "0"});
  Subscription honest(server.port());
  ASSERT_TRUE(honest.ok);
  const std::string ok_body = R"({"user":"h","text":"fine"})";
  std::vector<Hostile> table = {
      // Request line and headers.
      {"garbage request line",
       "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
       {400, kClosed}},
      {"no version", "GET /\r\n\r\n", {400, kClosed}},
      {"unsupported version", "GET / HTTP/7.1\r\n\r\n", {505, kClosed}},
      {"malformed version", "GET / HTTP/1.y\r\n\r\n", {400, kClosed}},
      {"space in target", "GET /a b HTTP/1.1\r\n\r\n", {400, kClosed}},
      {"control byte in target", "GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n", {400, kClosed}},
      {"NUL in header value",
       bytes("GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n"),
       {400, kClosed}},
      {"bad header name byte", "GET / HTTP/1.1\r\nHo(st: x\r\n\r\n", {400, kClosed}},
      {"header without colon", "GET / HTTP/1.1\r\nHost x\r\n\r\n", {400, kClosed}},
      // RFC 9112 lets a server accept obs-fold by reading it as a space; llhttp does.
      {"obsolete line folding",
       "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n",
       {200}},
      {"a Host folded into an invalid one",
       "GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
       {400}},
      {"chunk data not followed by CRLF",
       "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
       "Transfer-Encoding: chunked\r\n\r\nf\r\nuser=a&text=xx1XX0\r\n\r\n",
       {400}},
      {"whitespace before a header's colon",
       "GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin : y\r\n\r\n",
       {400}},
      {"a transfer coding other than chunked",
       "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
       "Transfer-Encoding: gzip, chunked\r\n\r\nf\r\nuser=a&text=xx1\r\n0\r\n\r\n",
       {501}},
      {"oversized header",
       "GET / HTTP/1.1\r\nHost: x\r\nX: " + std::string(9000, 'h') + "\r\n\r\n",
       {431, kClosed}},
      {"many headers",
       "GET / HTTP/1.1\r\n" +
           [] {
             std::string h;
             for (int i = 0; i < 2000; ++i) h += "X-" + std::to_string(i) + ": v\r\n";
             return h;
           }() +
           "\r\n",
       {431, kClosed}},
      {"oversized URL", get("/" + std::string(9000, 'u')), {414, kClosed}},
      // Bodies and framing.
      {"declared body over the limit",
       "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
       "999999\r\n\r\n",
       {413, kClosed}},
      {"body over the limit", json(std::string(5000, ' ')), {413, kClosed}},
      {"two Content-Lengths",
       "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
       {400, kClosed}},
      {"Content-Length and chunked",
       "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: "
       "chunked\r\n\r\n0\r\n\r\n",
       {400, kClosed}},
      {"negative Content-Length",
       "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
       {400, kClosed}},
      {"body shorter than Content-Length",
       "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
       "100\r\n\r\n{\"user\"",
       {408, kClosed}},
      {"body longer than Content-Length",
       json(ok_body) + "garbage after the body\r\n\r\n",
       {201, 400, kClosed}},
      {"broken chunk size",
       "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: "
       "chunked\r\n\r\nzz\r\n",
       {400, kClosed}},
      // Chunk data longer than its size: Debian's llhttp 8 takes the two bytes after the data as
      // the CRLF unchecked, so the rest is read as a chunk-size line, which is malformed.
      {"chunk data longer than its size",
       "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: "
       "chunked\r\n\r\n2\r\n{}}}}\r\n0\r\n\r\n",
       {400, kClosed}},
      {"chunks over the limit",
       "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: "
       "chunked\r\n\r\n" +
           std::string("1000\r\n") + std::string(4096, ' ') + "\r\n10\r\n" + std::string(16, ' ') +
           "\r\n0\r\n\r\n",
       {413, kClosed}},
      // Message content.
      {"overlong UTF-8", json("{\"user\":\"h\",\"text\":\"\xc0\xaf\"}"), {400}},
      {"surrogate UTF-8", json("{\"user\":\"h\",\"text\":\"\xed\xa0\x80\"}"), {400}},
      {"truncated UTF-8", json("{\"user\":\"h\",\"text\":\"\xe6\x97\"}"), {400}},
      {"invalid UTF-8 in form",
       post("application/x-www-form-urlencoded", "user=h&text=%ff%fe"),
       {400}},
      {"user is a number", json(R"({"user":7,"text":"x"})"), {400}},
      {"text is an object", json(R"({"user":"h","text":{"a":1}})"), {400}},
      {"body is an array", json(R"([{"user":"h","text":"x"}])"), {400}},
      {"deep nesting",
       json(R"({"user":"h","text":"x","n":)" + std::string(1000, '[') + std::string(1000, ']') +
            "}"),
       {400}},
      {"duplicate keys", json(R"({"user":"h","text":"x","user":"mallory"})"), {400}},
      {"NUL in text", json(R"({"user":"h","text":"a\u0000b"})"), {400}},
      {"raw NUL in JSON", json(bytes("{\"user\":\"h\",\"text\":\"a\0b\"}")), {400}},
      {"wrong content type", post("text/html", "<b>hi</b>"), {415}},
      // Paths.
      {"dot-dot", get("/../../etc/passwd"), {404}},
      {"encoded dot-dot", get("/%2e%2e/%2e%2e/etc/passwd"), {404}},
      {"encoded slash", get("/..%2f..%2fetc%2fpasswd"), {404}},
      {"absolute-form to a file outside",
       "GET http://x/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
       {404}},
      {"NUL in path", get("/index.html%00.png"), {404}},
      {"backslash traversal", get("/..\\..\\etc\\passwd"), {404}},
      {"wrong method", "PATCH /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", {405}},
      {"wrong method where there is a page", "DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", {405}},
      {"a method nobody implements", "BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", {501, kClosed}},
      {"a lowercase method", "get /healthz HTTP/1.1\r\nHost: x\r\n\r\n", {501, kClosed}},
      {"any method where nothing is",
       "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
       {404}},
  };
  int accepted = 0;
  for (const Hostile& h : table) {
    SCOPED_TRACE(h.name);
    Client c(server.port());
    ASSERT_TRUE(c.send(h.bytes));
    for (int want : h.statuses) {
      if (want == kClosed) {
        EXPECT_TRUE(c.wait_closed());
        break;
      }
      auto r = c.read_response();
      ASSERT_TRUE(r) << "no answer, expected " << want;
      EXPECT_EQ(r->status, want);
      if (want == 201) ++accepted;
      if (want >= 400) {
        EXPECT_NE(r->body.find("\"error\":"), std::string::npos) << r->body;
      }
    }
    // The server still serves everyone else.
    ASSERT_NE(post_message(server.port(), "h", "after"), 0u);
    ++accepted;
  }

  // Slowloris at one byte a second: the whole request never arrives within --request-timeout.
  {
    Client slow(server.port());
    std::string req = get("/");
    for (size_t i = 0; i < req.size(); ++i) {
      if (!slow.send(req.substr(i, 1))) break;
      std::this_thread::sleep_for(std::chrono::seconds(1));
      char c;
      if (recv(slow.fd(), &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0) break;  // the server answered
    }
    auto r = slow.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 408);
  }

  // Twice the connection limit, from a second server with a small limit: the extra ones are
  // closed unanswered, the rest are served.
  {
    ServerProcess small({"--max-connections", "20", "--max-connections-per-ip", "0"});
    std::vector<std::unique_ptr<Client>> clients;
    int served = 0, refused = 0;
    for (int i = 0; i < 40; ++i) {
      clients.push_back(std::make_unique<Client>(small.port(), 5));
      auto r = clients.back()->get("/healthz");
      (r && r->status == 200 ? served : refused)++;
    }
    EXPECT_EQ(served, 20);
    EXPECT_EQ(refused, 20);
  }

  // A POST flood over the rate, against a server with the default limits.
  {
    ServerProcess limited({"--post-rate", "5", "--post-burst", "20"});
    Client c(limited.port());
    int limited_count = 0;
    for (int i = 0; i < 40; ++i) limited_count += c.post_json(ok_body)->status == 429;
    EXPECT_GE(limited_count, 10);
  }

  for (int i = 1; i <= accepted; ++i) {
    auto ev = honest.reader.next_message();
    ASSERT_TRUE(ev);
    ASSERT_EQ(ev->id, std::to_string(i));
  }
}
