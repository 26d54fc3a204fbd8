// HTTP/1.1 edge cases over real sockets against the real binary: Upgrade offers, chunked
// trailers, HTTP/1.0 keep-alive, half-close after pipelining, Host rules, tiny header lines, chunk
// extensions, 204 framing and HEAD /events.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdlib>
#include <ctime>

#include "test_server.h"

using namespace testing_support;

namespace {

std::string chunked_post(const std::string& origin_header, const std::string& trailers) {
  return "POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
         origin_header + "Transfer-Encoding: chunked\r\n\r\n" +
         "1b\r\n{\"user\":\"tom\",\"text\":\"hey\"}\r\n0\r\n" + trailers + "\r\n";
}

}  // namespace

TEST(Http11, AnUpgradeOfferGetsOneAnswerAndTheNextRequestItsOwn) {
  ServerProcess server;
  Client c(server.port());
  ASSERT_TRUE(
      c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
             "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
             "GET /messages HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  auto first = c.read_response();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(first->body, "ok\n");
  auto second = c.read_response();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 200);
  EXPECT_EQ(second->body, "[]");
}

TEST(Http11, TrailersNeverActAsHeaders) {
  ServerProcess server(
      {"--trusted-proxy", "127.0.0.1/32", "--post-rate", "1", "--post-burst", "1"});
  std::string same_site = "Origin: http://127.0.0.1\r\n";
  // A trailer cannot turn a cross-site POST into a same-site one...
  Client c(server.port());
  ASSERT_TRUE(c.send(chunked_post("Origin: http://evil.example\r\n", same_site)));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  // ...nor change the address the rate limit counts (the budget is one POST per address).
  for (int i = 0; i < 2; ++i) {
    Client d(server.port());
    ASSERT_TRUE(d.send(chunked_post("", "X-Forwarded-For: 10.9.8." + std::to_string(i) + "\r\n")));
    auto answer = d.read_response();
    ASSERT_TRUE(answer);
    EXPECT_EQ(answer->status, i == 0 ? 201 : 429) << i;
  }
}

TEST(Http11, Http10KeepAliveIsSaidAndKept) {
  ServerProcess server;
  Client c(server.port());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(c.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r) << "request " << i;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("connection"), "keep-alive");
  }
  ASSERT_TRUE(c.send("GET /healthz HTTP/1.0\r\n\r\n"));  // no keep-alive: closed after
  auto last = c.read_response();
  ASSERT_TRUE(last);
  EXPECT_EQ(last->header("connection"), "close");
  EXPECT_TRUE(c.wait_closed());
}

TEST(Http11, AHalfClosedClientGetsEveryPipelinedAnswer) {
  ServerProcess server;
  Client c(server.port());
  std::string wire;
  for (int i = 0; i < 5000; ++i) wire += "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  ASSERT_TRUE(c.send(wire));
  ASSERT_EQ(::shutdown(c.fd(), SHUT_WR), 0);
  int answers = 0;
  while (auto r = c.read_response()) {
    EXPECT_EQ(r->status, 200);
    ++answers;
  }
  EXPECT_EQ(answers, 5000);
}

TEST(Http11, HostIsRequiredOnceInHttp11) {
  ServerProcess server;
  const char* requests[] = {"GET /healthz HTTP/1.1\r\n\r\n",
                            "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"};
  for (const char* request : requests) {
    Client c(server.port());
    ASSERT_TRUE(c.send(request));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << request;
  }
}

TEST(Http11, TinyHeaderLinesCountAgainstTheHeaderLimit) {
  ServerProcess server;
  Client c(server.port());
  std::string lines;
  for (int i = 0; i < 200000; ++i) lines += ":\r\n";
  c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + lines + "\r\n");  // may be cut short
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->status == 431 || r->status == 400) << r->status;
  std::string tiny;
  for (int i = 0; i < 3000; ++i) tiny += "A: \r\n";
  Client d(server.port());
  d.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + tiny + "\r\n");
  r = d.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
}

TEST(Http11, ChunkExtensionsAreAccepted) {
  ServerProcess server;
  Client c(server.port());
  std::string body = "{\"user\":\"tom\",\"text\":\"hey\"}";
  ASSERT_TRUE(
      c.send("POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             "Transfer-Encoding: chunked\r\n\r\n2;a=b\r\n" +
             body.substr(0, 2) + "\r\n19;name=\"quoted\"\r\n" + body.substr(2) + "\r\n0\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201) << r->body;
}

TEST(Http11, NoContentCarriesNoContentLength) {
  ServerProcess server({"--cors-origin", "http://app.example"});
  Client c(server.port());
  ASSERT_TRUE(
      c.send("OPTIONS /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://app.example\r\n"
             "Access-Control-Request-Method: POST\r\n\r\n"));
  auto r = c.read_head();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(r->headers.count("content-length"), 0u);
  EXPECT_EQ(r->header("access-control-allow-methods"), "GET, HEAD, POST");
  ASSERT_TRUE(c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));  // framing holds
  auto next = c.read_response();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200);
}

TEST(Http11, HeadOfTheStreamGoesThroughTheReplyPath) {
  ServerProcess server({"--cors-origin", "http://app.example"});
  Client c(server.port());
  ASSERT_TRUE(
      c.send("HEAD /events HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://app.example\r\n\r\n"));
  auto r = c.read_response(/*head=*/true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "text/event-stream");
  EXPECT_EQ(r->header("access-control-allow-origin"), "http://app.example");
  EXPECT_EQ(r->headers.count("content-length"), 0u);
  ASSERT_TRUE(c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  auto next = c.read_response();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "ok\n");
}

// OPTIONS on a resource says its methods (RFC 9110 9.3.7), the ones a 405 there names.
TEST(Http11, EveryResourceAnswersOptionsWithItsMethods) {
  ServerProcess server;
  Client c(server.port());
  for (const auto& [path, allow] :
       std::vector<std::pair<std::string, std::string>>{{"/messages", "GET, HEAD, POST, OPTIONS"},
                                                        {"/events", "GET, HEAD, OPTIONS"},
                                                        {"/", "GET, HEAD, OPTIONS"},
                                                        {"/rooms", "GET, HEAD, OPTIONS"}}) {
    ASSERT_TRUE(c.send("OPTIONS " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    auto r = c.read_head();
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 204) << path;
    EXPECT_EQ(r->header("allow"), allow) << path;
  }
  ASSERT_TRUE(c.send("OPTIONS /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  auto missing = c.read_response();
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  auto next = c.get("/healthz");  // framing holds
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "ok\n");
}

// A preflight from the allowed origin is the resource's OPTIONS: its methods, 404 where nothing is.
TEST(Http11, APreflightAllowsWhatTheResourceDoesAndNothingWhereNothingIs) {
  ServerProcess server({"--cors-origin", "http://app.example"});
  Client c(server.port());
  auto preflight = [&](const std::string& path) {
    EXPECT_TRUE(c.send("OPTIONS " + path +
                       " HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://app.example\r\n"
                       "Access-Control-Request-Method: GET\r\n\r\n"));
    return c.read_response(/*head=*/true);
  };
  auto events = preflight("/events");
  ASSERT_TRUE(events);
  EXPECT_EQ(events->status, 204);
  EXPECT_EQ(events->header("allow"), "GET, HEAD, OPTIONS");
  EXPECT_EQ(events->header("access-control-allow-methods"), "GET, HEAD");
  auto nowhere = preflight("/nowhere");
  ASSERT_TRUE(nowhere);
  EXPECT_EQ(nowhere->status, 404);
  EXPECT_EQ(nowhere->header("access-control-allow-methods"), "");
}

// A media type is case-insensitive: an EventSource's Accept in capitals still gets the refusal an
// EventSource retries (200 with event: refused), not a 429 that would end it.
TEST(Http11, AStreamRefusalReadsAcceptCaseInsensitively) {
  ServerProcess server({"--max-streams-per-ip", "1", "--subscribe-rate", "0"});
  Subscription first(server.port());
  ASSERT_TRUE(first.ok);
  Client c(server.port());
  ASSERT_TRUE(
      c.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: TEXT/EVENT-STREAM\r\n\r\n"));
  auto r = c.read_head();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "text/event-stream");
}

// With CORS on, an answer depends on Origin even when the request sent none (a shared cache must
// not give that copy to the allowed site's page); with CORS off, nothing varies.
TEST(Http11, WithCorsOnEveryAnswerVariesByOrigin) {
  ServerProcess cors({"--cors-origin", "http://app.example", "--max-body", "64"});
  ServerProcess plain;
  auto head = [](int port, const std::string& request) {
    Client c(port);
    EXPECT_TRUE(c.send(request));
    auto r = c.read_head();
    EXPECT_TRUE(r) << request;
    return r ? *r : HttpResponse{};
  };
  const std::string origin = "Origin: http://app.example\r\n";
  for (std::string path : {"/", "/healthz", "/messages", "/events"}) {
    std::string get = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    auto bare = head(cors.port(), get + "\r\n");
    EXPECT_EQ(bare.header("vary"), "Origin") << path;
    EXPECT_EQ(bare.headers.count("access-control-allow-origin"), 0u) << path;
    auto from_site = head(cors.port(), get + origin + "\r\n");
    EXPECT_EQ(from_site.header("vary"), "Origin") << path;
    EXPECT_EQ(from_site.header("access-control-allow-origin"), "http://app.example") << path;
    EXPECT_EQ(head(plain.port(), get + origin + "\r\n").headers.count("vary"), 0u) << path;
  }
  auto too_large = head(cors.port(),
                        "POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                        "application/json\r\nContent-Length: 99\r\n\r\n");
  EXPECT_EQ(too_large.status, 413);
  EXPECT_EQ(too_large.header("vary"), "Origin");
}

// HEAD /events says what GET /events would: the same framing (chunked, or for HTTP/1.0 a body
// that ends with the connection), type and CORS headers.
TEST(Http11, HeadOfTheStreamIsTheHeadOfTheStream) {
  ServerProcess server({"--cors-origin", "http://app.example"});
  for (std::string version : {"HTTP/1.1", "HTTP/1.0"}) {
    auto head_of = [&](std::string method) {
      Client c(server.port());
      EXPECT_TRUE(c.send(method + " /events " + version +
                         "\r\nHost: 127.0.0.1\r\nOrigin: http://app.example\r\n\r\n"));
      auto r = method == "HEAD" ? c.read_response(/*head=*/true) : c.read_head();
      EXPECT_TRUE(r) << method << version;
      auto headers = r ? r->headers : decltype(r->headers){};
      headers.erase("date");
      // HTTP/1.0's stream ends with its connection; a HEAD's connection may go on.
      if (version == "HTTP/1.0") headers.erase("connection");
      return headers;
    };
    auto got = head_of("GET");
    EXPECT_EQ(head_of("HEAD"), got) << version;
    EXPECT_EQ(got.count("transfer-encoding"), version == "HTTP/1.1" ? 1u : 0u) << version;
    EXPECT_EQ(got.count("access-control-allow-origin"), 1u) << version;
  }
}

namespace {

// Seconds between an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") and now; -1 when malformed.
long date_skew_s(const std::string& value) {
  struct tm utc {};
  const char* end = strptime(value.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &utc);
  if (!end || *end != '\0' || value.size() != 29) return -1;
  return std::labs(static_cast<long>(timegm(&utc) - std::time(nullptr)));
}

}  // namespace

TEST(Http11, EveryAnswerCarriesTheDate) {
  ServerProcess server;
  Client c(server.port());
  for (const char* path : {"/healthz", "/nowhere"}) {
    auto r = c.get(path);
    ASSERT_TRUE(r) << path;
    long skew = date_skew_s(r->header("date"));
    EXPECT_GE(skew, 0) << path << r->header("date");
    EXPECT_LE(skew, 60) << path << r->header("date");
  }
  ASSERT_TRUE(c.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  auto stream = c.read_head();
  ASSERT_TRUE(stream);
  EXPECT_EQ(stream->status, 200);
  long skew = date_skew_s(stream->header("date"));
  EXPECT_GE(skew, 0) << stream->header("date");
  EXPECT_LE(skew, 60) << stream->header("date");
}

TEST(Http11, OptionsAsteriskSaysWhatTheServerAllows) {
  ServerProcess server;
  Client c(server.port());
  ASSERT_TRUE(c.send("OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  auto r = c.read_head();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(r->header("allow"), "GET, HEAD, POST, OPTIONS");
  auto next = c.get("/healthz");  // framing holds
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "ok\n");
}

TEST(Http11, AStreamHeadSaysTheConnectionOptionTheClientChose) {
  ServerProcess server;
  for (const auto& [asked, said] : std::vector<std::pair<std::string, std::string>>{
           {"", "keep-alive"}, {"Connection: close\r\n", "close"}}) {
    Client c(server.port());
    ASSERT_TRUE(c.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n" + asked + "\r\n"));
    auto head = c.read_head();
    ASSERT_TRUE(head);
    EXPECT_EQ(head->status, 200);
    EXPECT_EQ(head->header("connection"), said) << asked;
  }
}

// RFC 9112 3.2.2: an absolute-form target's authority is the host a POST's Origin must match,
// whatever the Host header says; RFC 3986 6.2.2.2: "%65" is "e" in a path.
TEST(Http11, AbsoluteFormNamesTheHostAndEscapedPathsAreRouted) {
  ServerProcess server;
  std::string body = R"({"user":"tom","text":"hey"})";
  auto post = [&](const std::string& target, const std::string& host) {
    return post_status(server.port(), target,
                       "Host: " + host + "\r\nOrigin: http://chat.example\r\n", body);
  };
  EXPECT_EQ(post("http://chat.example/messages", "other.example"), 201);
  EXPECT_EQ(post("http://other.example/messages", "chat.example"), 403);
  EXPECT_EQ(post("/%6Dessages", "chat.example"), 201);
  EXPECT_EQ(post("/messages%2F", "chat.example"), 404);
  EXPECT_EQ(post("/%6", "chat.example"), 400);
  Client c(server.port());
  auto listed = c.get("/%6D%65ssages?since=0");
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->status, 200);
  EXPECT_NE(listed->body.find("\"id\":2"), std::string::npos) << listed->body;
}
