#include "http_parser.h"

#include <gtest/gtest.h>

#include <vector>

using sse::HttpLimits;
using sse::Method;
using sse::RequestParser;

namespace {

struct Parsed {
  std::string method, path, query, body, content_type, last_event_id;
  bool keep_alive;
  bool operator==(const Parsed&) const = default;
};

struct Outcome {
  std::vector<Parsed> requests;
  int error_status = 0;
};

// Feeds `chunks` in order, collecting every complete request, as Connection does.
Outcome parse_chunks(const std::vector<std::string>& chunks, HttpLimits limits = {}) {
  RequestParser parser(limits);
  Outcome out;
  for (const std::string& chunk : chunks) {
    const char* data = chunk.data();
    size_t len = chunk.size();
    while (len > 0) {
      auto r = parser.feed(data, len);
      data += r.consumed;
      len -= r.consumed;
      if (r.event == RequestParser::Event::Error) {
        out.error_status = parser.error_status();
        return out;
      }
      if (r.event == RequestParser::Event::NeedMore) break;
      auto& q = parser.request();
      out.requests.push_back(
          {q.method_name, q.path, q.query, q.body, q.content_type, q.last_event_id, q.keep_alive});
      parser.next_request();
    }
  }
  return out;
}

const std::string kPipeline =
    "GET /events?lastEventId=4 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 41\r\n\r\n"
    "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
    "11\r\n\r\n{\"a\":\"bcd\"}"
    "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: "
    "chunked\r\n\r\n"
    "3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
    "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

const std::vector<Parsed> kExpected = {
    {"GET", "/events", "lastEventId=4", "", "", "41", true},
    {"POST", "/messages", "", "{\"a\":\"bcd\"}", "application/json", "", true},
    {"POST", "/messages", "", "abcde", "text/plain", "", true},
    {"HEAD", "/", "", "", "", "", false},
};

}  // namespace

TEST(HttpParser, PipelinedRequestsInOneChunk) {
  Outcome o = parse_chunks({kPipeline});
  EXPECT_EQ(o.error_status, 0);
  EXPECT_EQ(o.requests, kExpected);
}

TEST(HttpParser, EverySplitPoint) {
  for (size_t split = 1; split < kPipeline.size(); ++split) {
    Outcome o = parse_chunks({kPipeline.substr(0, split), kPipeline.substr(split)});
    ASSERT_EQ(o.requests, kExpected) << "split at " << split;
  }
}

TEST(HttpParser, OneByteAtATime) {
  std::vector<std::string> bytes;
  for (char c : kPipeline) bytes.emplace_back(1, c);
  EXPECT_EQ(parse_chunks(bytes).requests, kExpected);
}

TEST(HttpParser, AbsoluteFormTarget) {
  Outcome o = parse_chunks(
      {"GET http://example.com/messages?since=3 HTTP/1.1\r\nHost: example.com\r\n\r\n"});
  ASSERT_EQ(o.requests.size(), 1u);
  EXPECT_EQ(o.requests[0].path, "/messages");
  EXPECT_EQ(o.requests[0].query, "since=3");
}

// RFC 9112 3.2.2: the absolute-form's authority stands for Host, whatever the Host header says.
TEST(HttpParser, AbsoluteFormAuthorityIsTheHost) {
  struct Case {
    std::string target, host, path, query;
  } cases[] = {
      {"http://chat.example:8080/events?room=a", "chat.example:8080", "/events", "room=a"},
      {"HTTPS://Chat.Example/", "Chat.Example", "/", ""},
      {"http://chat.example", "chat.example", "/", ""},
      {"http://chat.example?since=2", "chat.example", "/", "since=2"},
      {"http://[::1]:9/messages", "[::1]:9", "/messages", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.target);
    RequestParser parser({});
    std::string input = "GET " + c.target + " HTTP/1.1\r\nHost: other.example\r\n\r\n";
    ASSERT_EQ(parser.feed(input.data(), input.size()).event, RequestParser::Event::RequestReady);
    EXPECT_EQ(parser.request().host, c.host);
    EXPECT_EQ(parser.request().path, c.path);
    EXPECT_EQ(parser.request().query, c.query);
  }
}

// RFC 3986 6.2.2.2: an escaped unreserved character is that character; other escapes stay.
TEST(HttpParser, PathEscapesOfUnreservedCharactersAreDecoded) {
  struct Case {
    std::string target, path;
  } cases[] = {
      {"/%65vents", "/events"},
      {"/%6D%65%73%73%61%67%65%73", "/messages"},
      {"/a%2Fb%3F%20%25", "/a%2Fb%3F%20%25"},
      {"/%2565", "/%2565"},  // decoded once only
      {"/%7e%2d%2E%5f", "/~-._"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.target);
    Outcome o = parse_chunks({"GET " + c.target + " HTTP/1.1\r\nHost: x\r\n\r\n"});
    ASSERT_EQ(o.requests.size(), 1u);
    EXPECT_EQ(o.requests[0].path, c.path);
  }
}

// RFC 9112 2.2: empty lines before a request are skipped, within a bound (a client sending
// nothing else cost the loop a gigabyte of CRLFs per request timeout).
TEST(HttpParser, EmptyLinesBeforeARequestAreSkippedWithinABound) {
  Outcome o = parse_chunks({"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"});
  ASSERT_EQ(o.requests.size(), 1u);
  EXPECT_EQ(o.requests[0].path, "/");
  std::vector<std::string> chunks(513, "\r\n");  // 1026 bytes, fed as a client trickles them
  chunks.push_back("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  o = parse_chunks(chunks);
  EXPECT_TRUE(o.requests.empty());
  EXPECT_EQ(o.error_status, 400);
  // Also when the request's first bytes come in the same read.
  std::string many;
  for (int i = 0; i < 513; ++i) many += "\r\n";
  o = parse_chunks({many + "GET / HTTP/1.1\r\nHost: x\r\n\r\n"});
  EXPECT_TRUE(o.requests.empty());
  EXPECT_EQ(o.error_status, 400);
  o = parse_chunks({many.substr(0, 1024) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n"});
  EXPECT_EQ(o.requests.size(), 1u);
  // The bound is per request: as many again before the next one are fine.
  std::string crlfs;
  for (int i = 0; i < 500; ++i) crlfs += "\r\n";
  chunks.assign(2, crlfs);
  chunks.insert(chunks.begin() + 1, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  chunks.push_back("GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
  o = parse_chunks(chunks);
  ASSERT_EQ(o.requests.size(), 2u);
  EXPECT_EQ(o.requests[1].path, "/b");
  std::string joined;  // the same in one read
  for (const std::string& chunk : chunks) joined += chunk;
  o = parse_chunks({joined});
  ASSERT_EQ(o.requests.size(), 2u);
  EXPECT_EQ(o.requests[1].path, "/b");
}

TEST(HttpParser, Http10ClosesByDefault) {
  Outcome o = parse_chunks({"GET / HTTP/1.0\r\n\r\n"});  // no Host needed in HTTP/1.0
  ASSERT_EQ(o.requests.size(), 1u);
  EXPECT_FALSE(o.requests[0].keep_alive);
  o = parse_chunks({"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"});
  ASSERT_EQ(o.requests.size(), 1u);
  EXPECT_TRUE(o.requests[0].keep_alive);
  // RFC 9112 9.3: close wins, in HTTP/1.0 too (llhttp's keep-alive for 1.0 looks at keep-alive
  // only).
  for (std::string headers :
       {"Connection: keep-alive, close\r\n", "Connection: close, keep-alive\r\n",
        "Connection: keep-alive\r\nConnection: close\r\n"}) {
    SCOPED_TRACE(headers);
    o = parse_chunks({"GET / HTTP/1.0\r\n" + headers + "\r\n"});
    ASSERT_EQ(o.requests.size(), 1u);
    EXPECT_FALSE(o.requests[0].keep_alive);
  }
}

TEST(HttpParser, UpgradeIsIgnoredAndTheNextRequestParsesAsHttp) {
  Outcome o = parse_chunks(
      {"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
       "HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"});
  ASSERT_EQ(o.error_status, 0);
  ASSERT_EQ(o.requests.size(), 2u);
  EXPECT_EQ(o.requests[0].path, "/a");
  EXPECT_EQ(o.requests[1].path, "/b");
  EXPECT_EQ(o.requests[1].method, "GET");
}

TEST(HttpParser, TrailersNeverActAsHeaders) {
  Outcome o =
      parse_chunks({"POST /m HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nContent-Type: text/plain\r\n"
                    "Last-Event-ID: 9\r\n\r\n"});
  ASSERT_EQ(o.requests.size(), 1u);
  EXPECT_EQ(o.requests[0].content_type, "application/json");
  EXPECT_EQ(o.requests[0].last_event_id, "");
  EXPECT_EQ(o.requests[0].body, "{}");
}

TEST(HttpParser, ManyTinyHeaderLinesHitTheHeaderLimit) {
  std::string lines;
  for (int i = 0; i < 3000; ++i) lines += "A: \r\n";  // 3 bytes of name and value each
  Outcome o = parse_chunks({"GET / HTTP/1.1\r\nHost: x\r\n" + lines + "\r\n"});
  EXPECT_EQ(o.error_status, 431);
}

TEST(HttpParser, ChunkExtensionsAreAccepted) {
  Outcome o =
      parse_chunks({"POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "2;a=b\r\nhi\r\n1;name=\"quoted value\";flag\r\n!\r\n0\r\n\r\n"});
  ASSERT_EQ(o.error_status, 0);
  ASSERT_EQ(o.requests.size(), 1u);
  EXPECT_EQ(o.requests[0].body, "hi!");
}

TEST(HttpParser, Errors) {
  HttpLimits small;
  small.max_body = 10;
  struct Case {
    std::string input;
    int status;
  } cases[] = {
      {"GARBAGE\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400},
      // RFC 9110 15.6.6: a version that is well-formed but not 1.x is 505; a malformed one 400.
      {"GET / HTTP/9.9\r\n\r\n", 505},
      {"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
      {"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505},
      {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},  // HTTP/2's preface
      {"GET / HTTP/1.x\r\nHost: x\r\n\r\n", 400},
      {"GET /\x01 HTTP/1.1\r\n\r\n", 400},
      {"GET * HTTP/1.1\r\n\r\n", 400},
      {"GET /\r\n\r\n", 400},  // HTTP/0.9
      {"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", 413},
      {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n"
       "12345678\r\n",
       413},
      // A chunk's size line that would take the body past the limit: refused before its data.
      {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n", 413},
      {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n6\r\n", 413},
      {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n", 413},
      {"GET / HTTP/1.1\r\n\r\n", 400},                        // no Host
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},  // two
      {"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
       400},                                              // two credentials
      {"GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400},  // empty header name
      // RFC 9112 7.1: chunk data ends with CRLF; skipping any two bytes there is how requests
      // are smuggled past a proxy that frames them otherwise.
      {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: x\r\nHost : y\r\n\r\n", 400},    // whitespace before the colon
      {"GET / HTTP/1.1\r\nHost: x\r\nFoo Bar: y\r\n\r\n", 400},  // and inside a name
      {"GET / HTTP/1.1\r\nHost: a b/c@@\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\nLast-Event-ID: 2\r\n\r\n", 400},
      // Which of two would count is anybody's guess (a proxy may have appended one).
      {"POST / HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\nOrigin: http://x\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
      // An empty coding is not "no coding": never framed by Content-Length instead.
      {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\nContent-Length: 2\r\n\r\n{}", 400},
      {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  \r\n\r\n{}", 400},
      {"GET /%6 HTTP/1.1\r\nHost: x\r\n\r\n", 400},  // an escape cut short
      {"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET http://user@x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},  // userinfo
      {"GET http:///events HTTP/1.1\r\nHost: x\r\n\r\n", 400},  // no host
      {"GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET events HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET /" + std::string(9000, 'a') + " HTTP/1.1\r\n\r\n", 414},
      {"GET / HTTP/1.1\r\nX: " + std::string(9000, 'a') + "\r\n\r\n", 431},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.input.substr(0, 60));
    EXPECT_EQ(parse_chunks({c.input}, small).error_status, c.status);
  }
}

TEST(HttpParser, ChunksUpToTheBodyLimitAreRead) {
  HttpLimits small;
  small.max_body = 10;
  Outcome o = parse_chunks({"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                            "chunked\r\n\r\n4\r\n1234\r\n6\r\n567890\r\n0\r\n\r\n"},
                           small);
  EXPECT_EQ(o.error_status, 0);
  ASSERT_EQ(o.requests.size(), 1u);
  EXPECT_EQ(o.requests[0].body, "1234567890");
}

// RFC 9110 9.1: a method nobody implements here is 501, whatever the split of the input; a
// request line that starts with no method at all (a TLS hello, a bare word) stays a 400.
TEST(HttpParser, AnUnknownMethodIsNotImplemented) {
  for (std::string brew :
       {"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", "BREW HTTPS://x/pot HTTP/1.1\r\nHost: x\r\n\r\n",
        "BREW * HTTP/1.1\r\nHost: x\r\n\r\n"}) {
    for (size_t split = 0; split <= brew.size(); ++split) {
      SCOPED_TRACE(brew.substr(0, 12) + " split at " + std::to_string(split));
      EXPECT_EQ(parse_chunks({brew.substr(0, split), brew.substr(split)}).error_status, 501);
    }
  }
  Outcome after = parse_chunks({"GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\nget / HTTP/1.1\r\n\r\n"});
  EXPECT_EQ(after.requests.size(), 1u);
  EXPECT_EQ(after.error_status, 501);  // methods are case-sensitive
  for (std::string bad :
       {std::string("\x16\x03\x01\x02\x00\x01\x00"), std::string("GARBAGE\r\n\r\n"),
        std::string("GE(T / HTTP/1.1\r\n\r\n"), std::string(" GET / HTTP/1.1\r\n\r\n"),
        std::string("garbage after the body\r\n\r\n"), std::string("XGET  / HTTP/1.1\r\n\r\n"),
        std::string("BREW htt:/x HTTP/1.1\r\n\r\n")}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(parse_chunks({bad}).error_status, 400);
  }
}

// RFC 9112 5 and 5.2: whitespace around a value is not part of it, and an obs-fold is spaces.
TEST(HttpParser, HeaderValuesAreTrimmedAndUnfolded) {
  Outcome o = parse_chunks(
      {"GET / HTTP/1.1\r\nHost: x \r\nContent-Type: text/plain \t\r\nLast-Event-ID:\t 7 \r\n\r\n"
       "GET / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain;\r\n \t charset=utf-8\r\n\r\n"});
  ASSERT_EQ(o.error_status, 0);
  ASSERT_EQ(o.requests.size(), 2u);
  EXPECT_EQ(o.requests[0].content_type, "text/plain");
  EXPECT_EQ(o.requests[0].last_event_id, "7");
  EXPECT_EQ(o.requests[1].content_type, "text/plain;   charset=utf-8");
}

TEST(HttpParser, AnEmptyLastEventIdIsNoId) {
  RequestParser parser(HttpLimits{});
  std::string req = "GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \r\n\r\n";
  ASSERT_EQ(parser.feed(req.data(), req.size()).event, RequestParser::Event::RequestReady);
  EXPECT_FALSE(parser.request().has_last_event_id);
  // Nor is it a second one beside a real id, whichever comes first.
  for (std::string headers :
       {"Last-Event-ID: 7\r\nLast-Event-ID:\r\n", "Last-Event-ID:\r\nLast-Event-ID: 7\r\n"}) {
    RequestParser p(HttpLimits{});
    req = "GET /events HTTP/1.1\r\nHost: x\r\n" + headers + "\r\n";
    ASSERT_EQ(p.feed(req.data(), req.size()).event, RequestParser::Event::RequestReady) << headers;
    EXPECT_EQ(p.request().last_event_id, "7");
  }
}

// RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding is read, then the connection closes.
TEST(HttpParser, Http10WithTransferEncodingCloses) {
  Outcome o = parse_chunks(
      {"POST /m HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
       "2\r\nhi\r\n0\r\n\r\n"});
  ASSERT_EQ(o.requests.size(), 1u);
  EXPECT_EQ(o.requests[0].body, "hi");
  EXPECT_FALSE(o.requests[0].keep_alive);
}

// RFC 9110 10.1.1 and 15.2: a 1.0 client's Expect is ignored; it gets no 1xx.
TEST(HttpParser, Http10GetsNoContinue) {
  RequestParser parser(HttpLimits{});
  std::string head = "POST /m HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n";
  EXPECT_EQ(parser.feed(head.data(), head.size()).event, RequestParser::Event::NeedMore);
  EXPECT_FALSE(parser.wants_continue());
}

TEST(HttpParser, ExpectContinueIsReportedUntilBodyArrives) {
  RequestParser parser(HttpLimits{});
  std::string head =
      "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n";
  auto r = parser.feed(head.data(), head.size());
  EXPECT_EQ(r.event, RequestParser::Event::NeedMore);
  EXPECT_TRUE(parser.wants_continue());
  parser.mark_continue_sent();
  EXPECT_FALSE(parser.wants_continue());
  r = parser.feed("ok", 2);
  EXPECT_EQ(r.event, RequestParser::Event::RequestReady);
  EXPECT_EQ(parser.request().body, "ok");
}

// Splits `s` into the pieces a connection would read (16 KiB each).
std::vector<std::string> reads_of(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size(); i += 16384) out.push_back(s.substr(i, 16384));
  return out;
}

TEST(HttpParser, BytesTheCallbacksNeverSeeCountToo) {
  std::string spaces(100000, ' ');
  std::string padded = "GET / HTTP/1.1\r\nHost: x\r\nX-Pad:" + spaces + "v\r\n\r\n";
  EXPECT_EQ(parse_chunks(reads_of(padded)).error_status, 431);
  std::string folded = "GET / HTTP/1.1\r\nHost: x\r\nX-Fold: v";
  for (int i = 0; i < 10000; ++i) folded += "\r\n a";
  EXPECT_EQ(parse_chunks(reads_of(folded + "\r\n\r\n")).error_status, 431);
  std::string extended = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;a=" +
                         std::string(1 << 20, 'b') + "\r\nhi\r\n0\r\n\r\n";
  EXPECT_EQ(parse_chunks(reads_of(extended)).error_status, 413);
}

TEST(HttpParser, ATrailerCannotCloseTheConnection) {
  Outcome o = parse_chunks(
      {"POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
       "Connection: close\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n"});
  ASSERT_EQ(o.requests.size(), 2u);
  EXPECT_TRUE(o.requests[0].keep_alive);
  EXPECT_EQ(o.requests[1].path, "/next");
}

TEST(HttpParser, AsteriskFormIsForOptionsOnly) {
  Outcome options = parse_chunks({"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"});
  ASSERT_EQ(options.requests.size(), 1u);
  EXPECT_EQ(options.requests[0].path, "*");
  EXPECT_EQ(parse_chunks({"GET * HTTP/1.1\r\nHost: x\r\n\r\n"}).error_status, 400);
  EXPECT_EQ(parse_chunks({"OPTIONS *x HTTP/1.1\r\nHost: x\r\n\r\n"}).error_status, 400);
}
