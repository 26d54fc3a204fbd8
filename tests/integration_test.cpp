// The core server over real sockets: broadcast, HTTP/1.1 behaviour, every error status, static
// files, slow consumers and shutdown.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "test_server.h"

using namespace testing_support;

namespace {

std::string text_n(int i) {
  return "message " + std::to_string(i);
}

// The writer set's two ways of sending: one io_uring submission per loop iteration (the default,
// where the kernel has io_uring) and one writev per connection.
class SendModes : public testing::TestWithParam<std::vector<std::string>> {};

}  // namespace

INSTANTIATE_TEST_SUITE_P(Core, SendModes,
                         testing::Values(std::vector<std::string>{},
                                         std::vector<std::string>{"--no-io-uring"}),
                         [](const auto& info) {
                           return info.param.empty() ? "batched" : "writev";
                         });

TEST_P(SendModes, FiftySubscribersReceiveTwoHundredMessagesCompleteAndInOrder) {
  ServerProcess server(GetParam());
  std::vector<std::unique_ptr<Subscription>> subs;
  for (int i = 0; i < 50; ++i) {
    subs.push_back(std::make_unique<Subscription>(server.port()));
    ASSERT_TRUE(subs.back()->ok);
  }
  // Wait until the server counts all 50 before posting, so every one is live for message 1.
  EXPECT_TRUE(eventually([&] {
    auto m = Client(server.port()).get("/metrics");
    return m && m->body.find("ssechat_sse_clients 50\n") != std::string::npos;
  }));
  Client poster(server.port());
  for (int i = 1; i <= 200; ++i) {
    auto r = poster.post_json("{\"user\":\"alice\",\"text\":\"" + text_n(i) + "\"}");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 201);
    ASSERT_EQ(json_id(r->body), static_cast<uint64_t>(i));
  }
  for (auto& sub : subs) {
    for (int i = 1; i <= 200; ++i) {
      auto ev = sub->reader.next_message();  // presence events are interleaved; skipped
      ASSERT_TRUE(ev);
      ASSERT_EQ(ev->id, std::to_string(i));
      ASSERT_NE(ev->data.find("\"text\":\"" + text_n(i) + "\""), std::string::npos) << ev->data;
      ASSERT_NE(ev->data.find("\"user\":\"alice\""), std::string::npos);
    }
  }
}

TEST(Core, StreamHeadAndFormat) {
  ServerProcess server({"--retry", "3000"});
  Client c(server.port());
  c.send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  auto head = c.read_head();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("content-type"), "text/event-stream");
  EXPECT_EQ(head->header("cache-control"), "no-cache");
  EXPECT_EQ(head->header("x-accel-buffering"), "no");
  EXPECT_EQ(head->header("content-length"), "");
  EXPECT_EQ(head->header("transfer-encoding"), "chunked");  // each event one chunk
  while (c.buffer().find("\n\n") == std::string::npos) ASSERT_TRUE(c.fill());
  ASSERT_TRUE(c.buffer().starts_with("retry: "));
  int retry = std::stoi(c.buffer().substr(7));
  EXPECT_GE(retry, 3000);  // jittered upwards, up to half again
  EXPECT_LE(retry, 4500);
  // A stream that resumes from nowhere is told where it starts: nothing is posted yet.
  EXPECT_EQ(c.buffer().substr(0, c.buffer().find("\n\n") + 2),
            "retry: " + std::to_string(retry) + "\nid: 0\nevent: ready\ndata: {\"newest\":0}\n\n");
  ASSERT_NE(post_message(server.port(), "bob", "hi \\u2028 \\\"there\\\""), 0u);
  SseReader reader(c);
  std::optional<SseEvent> ev = reader.next_message();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, "1");
  EXPECT_TRUE(ev->raw.starts_with(
      "id: 1\ndata: {\"id\":1,\"room\":\"general\",\"user\":\"bob\",\"text\":\"hi \\u2028 "
      "\\\"there\\\"\",\"ts\":"))
      << ev->raw;
}

// Message 2 is posted while a client that left after message 1 is away; coming back with
// `last_id` it gets message 2 first.
void expect_back_with_what_was_posted_away(uint16_t port, const std::string& last_id) {
  ASSERT_EQ(post_message(port, "u", "while away"), 2u);
  Subscription back(port, last_id);
  ASSERT_TRUE(back.ok);
  auto ev = back.reader.next_message();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, "2");
}

// An EventSource that loses its stream before any message came comes back with the id the
// stream opened with, and misses nothing posted while it was away.
TEST(Core, AStreamOpenedFromNowhereResumesFromWhereItStarted) {
  ServerProcess server;
  ASSERT_EQ(post_message(server.port(), "u", "before"), 1u);
  std::string opened_at;
  {
    Subscription fresh(server.port());
    ASSERT_TRUE(fresh.ok);
    auto presence = fresh.reader.next();  // the opening block is read with the first event
    ASSERT_TRUE(presence);
    opened_at = fresh.reader.last_event_id();
  }
  EXPECT_EQ(opened_at, "1");
  expect_back_with_what_was_posted_away(server.port(), opened_at);
}

// Clients built on eventsource-parser (npm `eventsource` 3 and 4) take an id only from an event
// they dispatch, one with data: the opening id comes with such an event (`ready`), so they too
// come back from where the stream started and miss nothing posted while they were away.
TEST(Core, TheOpeningIdComesWithAnEventThatHasData) {
  ServerProcess server;
  ASSERT_EQ(post_message(server.port(), "u", "before"), 1u);
  std::string taken;
  {
    Client c(server.port());
    ASSERT_TRUE(c.send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_TRUE(c.read_head());
    std::string& buf = c.buffer();
    while (taken.empty()) {  // blocks, as such a client reads them, up to the first with data
      size_t end;
      while ((end = buf.find("\n\n")) == std::string::npos) ASSERT_TRUE(c.fill());
      std::string block = "\n" + buf.substr(0, end) + "\n";
      buf.erase(0, end + 2);
      if (block.find("\ndata: ") == std::string::npos) continue;
      EXPECT_NE(block.find("\nevent: ready\ndata: {\"newest\":1}\n"), std::string::npos) << block;
      size_t id = block.find("\nid: ");
      ASSERT_NE(id, std::string::npos) << "the first event dispatched has no id: " << block;
      taken = block.substr(id + 5, block.find('\n', id + 5) - id - 5);
    }
  }
  EXPECT_EQ(taken, "1");
  expect_back_with_what_was_posted_away(server.port(), taken);
}

TEST(Core, FormPostAndUnicode) {
  ServerProcess server;
  Subscription sub(server.port());
  ASSERT_TRUE(sub.ok);
  Client c(server.port());
  auto r = c.post_form("user=%E6%97%A5%E6%9C%AC&text=caf%C3%A9+%F0%9F%98%80");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->body, "{\"id\":1}");
  EXPECT_EQ(r->header("content-type"), "application/json");
  std::optional<SseEvent> ev = sub.reader.next_message();
  ASSERT_TRUE(ev);
  EXPECT_NE(ev->data.find("\"user\":\"日本\",\"text\":\"café 😀\""), std::string::npos) << ev->data;
}

// Java's Apache HttpClient 4 sends every form as ISO-8859-1 and says so: é is %E9, one byte.
TEST(Core, ALatin1FormIsConvertedToUtf8) {
  ServerProcess server;
  Subscription sub(server.port());
  ASSERT_TRUE(sub.ok);
  Client c(server.port());
  std::string body = "user=Ren%E9&text=caf%E9+%FC";
  ASSERT_TRUE(
      c.send("POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
             "application/x-www-form-urlencoded; charset=ISO-8859-1\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\n\r\n" + body));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201) << r->body;
  std::optional<SseEvent> ev = sub.reader.next_message();
  ASSERT_TRUE(ev);
  EXPECT_NE(ev->data.find("\"user\":\"René\",\"text\":\"café ü\""), std::string::npos) << ev->data;
}

// The default --max-body takes any message within the documented limits, however its client
// escapes it: 2000 emoji are 24,000 bytes as \uD83D\uDE00 in JSON or %F0%9F%98%80 in a form.
TEST(Core, AMessageAtItsLimitsFitsTheDefaultBodyLimitHoweverItIsEscaped) {
  ServerProcess server;
  std::string user_json, user_form, text_json, text_form;
  for (int i = 0; i < 32; ++i) user_json += "\\u00e9", user_form += "%C3%A9";
  for (int i = 0; i < 2000; ++i) text_json += "\\uD83D\\uDE00", text_form += "%F0%9F%98%80";
  std::string nonce(64, 'n');
  Client c(server.port());
  auto json =
      c.post_json("{\"user\":\"" + user_json + "\",\"text\":\"" + text_json + "\",\"nonce\":\"" +
                  nonce + "\",\"room\":\"" + std::string(64, 'r') + "\"}");
  ASSERT_TRUE(json);
  EXPECT_EQ(json->status, 201) << json->body;
  auto form = c.post_form("user=" + user_form + "&text=" + text_form +
                          "&nonce=" + std::string(64, 'm') + "&room=" + std::string(64, 'r'));
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 201) << form->body;
}

TEST(Core, KeepAliveAndPipeliningAnswerInOrder) {
  ServerProcess server;
  Client c(server.port());
  std::string batch;
  for (int i = 1; i <= 5; ++i) {
    std::string body = "{\"user\":\"p\",\"text\":\"t" + std::to_string(i) + "\"}";
    batch +=
        "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    batch += "GET /nope" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n";
  }
  batch += "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  batch += "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(c.send(batch));
  for (int i = 1; i <= 5; ++i) {
    auto post = c.read_response();
    ASSERT_TRUE(post);
    EXPECT_EQ(post->status, 201);
    EXPECT_EQ(json_id(post->body), static_cast<uint64_t>(i));
    auto missing = c.read_response();
    ASSERT_TRUE(missing);
    EXPECT_EQ(missing->status, 404);
    EXPECT_NE(missing->body.find("/nope" + std::to_string(i)), std::string::npos);
  }
  auto head = c.read_response(true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("content-length"), "3");
  auto get = c.read_response();
  ASSERT_TRUE(get);
  EXPECT_EQ(get->body, "ok\n");
  // The connection is still open for more.
  auto again = c.get("/healthz");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
}

TEST(Core, ManyPipelinedRequestsBeyondTheQueueDepth) {
  ServerProcess server;
  Client c(server.port());
  std::string batch;
  for (int i = 0; i < 300; ++i) batch += "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(c.send(batch));
  for (int i = 0; i < 300; ++i) {
    auto r = c.read_response();
    ASSERT_TRUE(r) << i;
    ASSERT_EQ(r->status, 200);
  }
}

TEST(Core, ChunkedBodyAndExpectContinue) {
  ServerProcess server;
  Client c(server.port());
  std::string body = "{\"user\":\"c\",\"text\":\"chunked\"}";
  std::string req =
      "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: "
      "chunked\r\n\r\n";
  req += "5\r\n" + body.substr(0, 5) + "\r\n";
  char hex[16];
  snprintf(hex, sizeof hex, "%zx", body.size() - 5);
  req += std::string(hex) + "\r\n" + body.substr(5) + "\r\n0\r\n\r\n";
  ASSERT_TRUE(c.send(req));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);

  Client e(server.port());
  ASSERT_TRUE(e.send(
      "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\nExpect: 100-continue\r\n\r\n"));
  auto interim = e.read_head();
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->status, 100);
  ASSERT_TRUE(e.send(body));
  r = e.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);

  // A request refused from its headers gets its final answer instead of 100 Continue, and the
  // connection closes (the body is never read).
  struct Refused {
    std::string line, headers;
    int status;
  };
  for (const Refused& c : std::vector<Refused>{
           {"POST /messages", "Content-Type: text/plain\r\n", 415},
           {"POST /messages", "Content-Type: application/json\r\nOrigin: https://evil.example\r\n",
            403},
           {"POST /events", "Content-Type: application/json\r\n", 405},
           {"PUT /messages", "Content-Type: application/json\r\n", 405},
           {"POST /nowhere", "Content-Type: application/json\r\n", 404}}) {
    Client refused(server.port());
    ASSERT_TRUE(refused.send(c.line + " HTTP/1.1\r\nHost: x\r\n" + c.headers + "Content-Length: " +
                             std::to_string(body.size()) + "\r\nExpect: 100-continue\r\n\r\n"));
    auto answer = refused.read_response();
    ASSERT_TRUE(answer) << c.line;
    EXPECT_EQ(answer->status, c.status) << c.line << " " << c.headers;
    EXPECT_EQ(answer->header("connection"), "close");
    EXPECT_TRUE(refused.wait_closed());
  }
  // One 100-continue among several Expect headers is still asked for.
  Client twice(server.port());
  ASSERT_TRUE(twice.send(
      "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\nExpect: 100-continue\r\nExpect: x-other\r\n\r\n"));
  auto asked = twice.read_head();
  ASSERT_TRUE(asked);
  EXPECT_EQ(asked->status, 100);
}

struct ErrorCase {
  const char* name;
  std::string request;
  int status;
  const char* header = nullptr;  // a header the answer must carry
  const char* header_value = nullptr;
};

TEST(Core, EveryErrorStatusAndTheServerKeepsServing) {
  ServerProcess server({"--max-body", "1024"});
  Subscription honest(server.port());
  ASSERT_TRUE(honest.ok);
  auto post = [](const std::string& type, const std::string& body) {
    return "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: " + type +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  };
  std::vector<ErrorCase> cases = {
      {"invalid json", post("application/json", "{nope"), 400},
      {"empty text", post("application/json", R"({"user":"a","text":" "})"), 400},
      {"user too long",
       post("application/json", R"({"user":")" + std::string(33, 'u') + R"(","text":"x"})"), 400},
      {"malformed request", "BLAH\r\n\r\n", 400},
      {"unknown path", "GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n", 404},
      {"wrong method on messages", "DELETE /messages HTTP/1.1\r\nHost: x\r\n\r\n", 405, "allow",
       "GET, HEAD, POST, OPTIONS"},
      {"wrong method on events", "POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
       405, "allow", "GET, HEAD, OPTIONS"},
      {"wrong method where no page is",
       "PUT /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: "
       "0\r\n\r\n",
       404},
      {"asterisk-form outside OPTIONS", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"wrong method on a page", "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405,
       "allow", "GET, HEAD, OPTIONS"},
      {"body over the limit", post("application/json", std::string(2000, ' ')), 413},
      {"declared length over the limit",
       "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
       "99999999\r\n\r\n",
       413},
      {"text/plain", post("text/plain", "hello"), 415, "accept-post",
       "application/json, application/x-www-form-urlencoded"},
      {"url too long", "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
      {"headers too large",
       "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(9000, 'b') + "\r\n\r\n", 431},
  };
  int accepted = 0;
  for (const ErrorCase& ec : cases) {
    SCOPED_TRACE(ec.name);
    Client c(server.port());
    ASSERT_TRUE(c.send(ec.request));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, ec.status);
    EXPECT_NE(r->body.find("\"error\":\""), std::string::npos) << r->body;
    if (ec.header) {
      EXPECT_EQ(r->header(ec.header), ec.header_value);
    }
    // And the server still serves: a good POST right after.
    ASSERT_NE(post_message(server.port(), "ok", "after " + std::string(ec.name)), 0u);
    ++accepted;
  }
  // The honest subscriber received every accepted message, in order.
  for (int i = 1; i <= accepted; ++i) {
    std::optional<SseEvent> ev = honest.reader.next_message();
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->id, std::to_string(i));
  }
}

// A static file is read once and kept; once it changes (contents of the same size too, as its
// modification time says), the next answer is the new file.
TEST(Core, AChangedStaticFileIsServedAnew) {
  std::string root = make_temp_dir();
  std::ofstream(root + "/a.txt") << "one";
  ServerProcess server({"--static-dir", root});
  Client c(server.port());
  EXPECT_EQ(c.get("/a.txt")->body, "one");
  EXPECT_EQ(c.get("/a.txt")->body, "one");
  std::ofstream(root + "/a.txt") << "two, longer";
  EXPECT_EQ(c.get("/a.txt")->body, "two, longer");
  std::ofstream(root + "/a.txt") << "six, longer";  // the same size
  struct timespec times[2] = {{0, UTIME_OMIT}, {1577836800, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, (root + "/a.txt").c_str(), times, 0), 0);
  EXPECT_EQ(c.get("/a.txt")->body, "six, longer");
  // The same size and the same modification time as the copy kept (cp -p, rsync -a, a reused
  // inode): the change time still tells.
  std::ofstream(root + "/a.txt") << "ten, longer";
  ASSERT_EQ(utimensat(AT_FDCWD, (root + "/a.txt").c_str(), times, 0), 0);
  EXPECT_EQ(c.get("/a.txt")->body, "ten, longer");
}

// A browser confirms the copy it has (Cache-Control: no-cache) with the ETag or the date it was
// given: 304 and no body while the file is the same, the new file once it changed. If-None-Match
// decides when sent (RFC 9110 13.2.2), compared weakly; If-Modified-Since counts only without it.
TEST(Core, AStaticFileAsBrowsersRevalidateIt) {
  std::string root = make_temp_dir();
  std::ofstream(root + "/a.txt") << "one";
  ServerProcess server({"--static-dir", root});
  Client c(server.port());
  auto first = c.get("/a.txt");
  ASSERT_TRUE(first);
  std::string etag = first->header("etag"), modified = first->header("last-modified");
  ASSERT_TRUE(etag.size() > 2 && etag.front() == '"' && etag.back() == '"') << etag;
  ASSERT_FALSE(modified.empty());
  auto conditional = [&](const std::string& headers) {
    EXPECT_TRUE(c.send("GET /a.txt HTTP/1.1\r\nHost: x\r\n" + headers + "\r\n"));
    auto r = c.read_response();
    EXPECT_TRUE(r) << headers;
    return r ? *r : HttpResponse{};
  };
  // The same instant in the two obsolete forms a recipient must read too (RFC 9110 5.6.7).
  auto as = [&](const char* form) {
    struct tm utc {};
    strptime(modified.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &utc);
    char out[64];
    strftime(out, sizeof out, form, &utc);
    return std::string(out);
  };
  for (const std::string& same : std::vector<std::string>{
           "If-None-Match: " + etag, "If-None-Match: W/" + etag, "If-None-Match: \"x\", " + etag,
           "If-None-Match: *", "If-Modified-Since: " + modified,
           "If-Modified-Since: " + as("%A, %d-%b-%y %H:%M:%S GMT"),
           "If-Modified-Since: " + as("%a %b %e %H:%M:%S %Y")}) {
    HttpResponse r = conditional(same + "\r\n");
    EXPECT_EQ(r.status, 304) << same;
    EXPECT_EQ(r.body, "") << same;
    EXPECT_EQ(r.headers.count("content-length"), 0u) << same;
    EXPECT_EQ(r.header("etag"), etag) << same;
  }
  for (const std::string& other : std::vector<std::string>{
           "If-None-Match: \"x\"", "If-None-Match: \"x\"\r\nIf-Modified-Since: " + modified,
           "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT", "If-Modified-Since: yesterday",
           "If-Modified-Since: Fri, 31 Dec 2100 23:59:59 GMT"}) {
    HttpResponse r = conditional(other + "\r\n");
    EXPECT_EQ(r.status, 200) << other;
    EXPECT_EQ(r.body, "one") << other;  // the framing held through the 304s
  }
  std::ofstream(root + "/a.txt") << "two";  // the same size
  struct timespec times[2] = {{0, UTIME_OMIT}, {1577836800, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, (root + "/a.txt").c_str(), times, 0), 0);
  HttpResponse changed = conditional("If-None-Match: " + etag + "\r\n");
  EXPECT_EQ(changed.status, 200);
  EXPECT_EQ(changed.body, "two");
  EXPECT_NE(changed.header("etag"), etag);
  EXPECT_EQ(changed.header("last-modified"), "Wed, 01 Jan 2020 00:00:00 GMT");
}

TEST(Core, StaticFilesNeverLeaveTheRoot) {
  std::string dir = make_temp_dir();
  std::string root = dir + "/static";
  mkdir(root.c_str(), 0755);
  mkdir((root + "/sub").c_str(), 0755);
  std::ofstream(root + "/index.html") << "<!doctype html><title>t</title>";
  std::ofstream(root + "/app.js") << "console.log(1)";
  std::ofstream(root + "/style.css") << "body{}";
  std::ofstream(dir + "/secret.txt") << "SECRET";
  ASSERT_EQ(symlink((dir + "/secret.txt").c_str(), (root + "/link.txt").c_str()), 0);
  ASSERT_EQ(symlink(dir.c_str(), (root + "/sub/up").c_str()), 0);
  ServerProcess server({"--static-dir", root});
  Client c(server.port());
  auto page = c.get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->header("content-type"), "text/html; charset=utf-8");
  EXPECT_EQ(page->header("x-content-type-options"), "nosniff");
  EXPECT_EQ(page->body, "<!doctype html><title>t</title>");
  EXPECT_EQ(c.get("/app.js")->header("content-type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(c.get("/style.css")->header("content-type"), "text/css; charset=utf-8");
  auto head = Client(server.port());
  head.send("HEAD /app.js HTTP/1.1\r\nHost: x\r\n\r\n");
  auto h = head.read_response(true);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->header("content-length"), "14");
  for (const char* path :
       {"/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/sub/../../secret.txt",
        "/link.txt", "/sub/up/secret.txt", "//etc/passwd", "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt", "/missing.html", "/sub/", "/index.html%00.js"}) {
    SCOPED_TRACE(path);
    Client probe(server.port());
    auto r = probe.get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    EXPECT_EQ(r->body.find("SECRET"), std::string::npos);
  }
}

namespace {

// A file of `bytes` zeros that takes no disk (sparse).
void sparse_file(const std::string& path, off_t bytes) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, bytes), 0);
  close(fd);
}

}  // namespace

// A directory named without its slash is redirected there (its page's relative links need it);
// hidden names (.env, .git/) are never served; types do not depend on the extension's case; an
// error answer is nosniff too.
TEST(Core, StaticDirectoriesHiddenNamesAndTypes) {
  std::string root = make_temp_dir();
  mkdir((root + "/sub").c_str(), 0755);
  mkdir((root + "/.git").c_str(), 0755);
  std::ofstream(root + "/sub/index.html") << "sub page";
  std::ofstream(root + "/.env") << "SECRET=1";
  std::ofstream(root + "/.git/config") << "SECRET";
  std::ofstream(root + "/LOGO.PNG") << "png";
  std::ofstream(root + "/mod.mjs") << "export {}";
  mkdir((root + "/.well-known").c_str(), 0755);
  std::ofstream(root + "/.well-known/security.txt") << "Contact: x";
  ServerProcess server({"--static-dir", root});
  Client c(server.port());
  auto moved = c.get("/sub?x=1");
  ASSERT_TRUE(moved);
  EXPECT_EQ(moved->status, 301);
  EXPECT_EQ(moved->header("location"), "/sub/?x=1");
  EXPECT_EQ(c.get("/sub/")->body, "sub page");
  for (const char* hidden : {"/.env", "/.git/config", "/sub/../.env", "/./.env", "/%2eenv"}) {
    auto r = c.get(hidden);
    ASSERT_TRUE(r) << hidden;
    EXPECT_EQ(r->status, 404) << hidden;
    EXPECT_EQ(r->header("x-content-type-options"), "nosniff") << hidden;
  }
  EXPECT_EQ(c.get("/.well-known/security.txt")->body, "Contact: x");  // RFC 8615's place
  EXPECT_EQ(c.get("/sub/.well-known/x")->status, 404);
  EXPECT_EQ(c.get("/LOGO.PNG")->header("content-type"), "image/png");
  EXPECT_EQ(c.get("/mod.mjs")->header("content-type"), "text/javascript; charset=utf-8");
}

// Files are read on the loop, so one over 64 MiB is refused (HEAD and GET alike) rather than
// stalling everyone, or for a sparse file of terabytes, taking all memory.
TEST(Core, AStaticFileTooLargeIsRefusedAndTheServerGoesOn) {
  std::string root = make_temp_dir();
  sparse_file(root + "/huge.bin", off_t{1} << 40);
  sparse_file(root + "/big.bin", (off_t{64} << 20) + 1);
  ServerProcess server({"--static-dir", root});
  for (std::string method : {"HEAD", "GET"})
    for (std::string path : {"/huge.bin", "/big.bin"}) {
      Client c(server.port());
      ASSERT_TRUE(c.send(method + " " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"));
      auto r = c.read_response(method == "HEAD");
      ASSERT_TRUE(r) << method << path;
      EXPECT_EQ(r->status, 500) << method << path;
    }
  Client c(server.port());  // 64 MiB itself is served
  sparse_file(root + "/limit.bin", off_t{64} << 20);
  ASSERT_TRUE(c.send("HEAD /limit.bin HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto limit = c.read_response(true);
  ASSERT_TRUE(limit);
  EXPECT_EQ(limit->status, 200);
  EXPECT_EQ(limit->header("content-length"), std::to_string(64 << 20));
  EXPECT_EQ(Client(server.port()).get("/healthz")->body, "ok\n");
}

// The cache makes room from copies no answer holds, least recently used first: a file a copy of
// which would be over --max-queued-bytes is still served from the cache. Only while answers still
// being sent hold the whole cache is such a file 503 with Retry-After, never a connection cut
// short.
TEST(Core, TheStaticCacheMakesRoomFromCopiesNoAnswerHolds) {
  std::string root = make_temp_dir();
  const off_t ten_mib = off_t{10} << 20;
  for (int i = 0; i < 6; ++i) sparse_file(root + "/old" + std::to_string(i) + ".bin", ten_mib);
  sparse_file(root + "/new.bin", off_t{5} << 20);
  ServerProcess server({"--static-dir", root, "--max-queued-bytes", "2097152"});
  // Six readers that take none of their 10 MiB: 60 MiB of the cache held by answers under way.
  std::vector<std::unique_ptr<Client>> stalled;
  for (int i = 0; i < 6; ++i) {
    stalled.push_back(std::make_unique<Client>(server.port()));
    ASSERT_TRUE(
        stalled.back()->send("GET /old" + std::to_string(i) + ".bin HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_TRUE(stalled.back()->read_head()) << i;  // the answer is under way
  }
  Client full(server.port());
  auto refused = full.get("/new.bin");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  EXPECT_EQ(refused->header("retry-after"), "1");
  stalled.clear();  // their answers end: nothing holds those copies now
  auto served = [&] {
    auto r = Client(server.port()).get("/new.bin");
    return r && r->status == 200 && r->body.size() == (size_t{5} << 20);
  };
  ASSERT_TRUE(eventually(served));
  // And the files it let go of are read again when asked for.
  auto again = Client(server.port()).get("/old0.bin");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
  EXPECT_EQ(again->body.size(), size_t{10} << 20);
}

// A deploy that renames a new directory into place (mv static.new static) is followed.
TEST(Core, AStaticDirectoryRenamedIntoPlaceIsFollowed) {
  std::string dir = make_temp_dir();
  make_static_dirs(dir);
  ServerProcess server({"--static-dir", dir + "/static"});
  EXPECT_EQ(Client(server.port()).get("/")->body, "old page");
  swap_static_dir(dir);
  EXPECT_TRUE(eventually([&] { return Client(server.port()).get("/")->body == "new page"; }));
}

// A directory inside the root swapped for a symlink out of it while requests are served: the
// kernel resolves each path beneath the root in one step, so the outside file is never sent.
TEST(Core, ASymlinkSwappedInDuringARequestNeverLeadsOut) {
  std::string dir = make_temp_dir();
  std::string root = dir + "/static", outside = dir + "/outside";
  mkdir(root.c_str(), 0755);
  mkdir(outside.c_str(), 0755);
  mkdir((dir + "/inside").c_str(), 0755);
  std::ofstream(outside + "/a.txt") << "SECRET";
  std::ofstream(dir + "/inside/a.txt") << "public";
  ASSERT_EQ(rename((dir + "/inside").c_str(), (root + "/d").c_str()), 0);
  ServerProcess server({"--static-dir", root});
  std::atomic<bool> done{false};
  ASSERT_EQ(symlink(outside.c_str(), (dir + "/link").c_str()), 0);
  std::thread swapper([&] {
    // Exchanges root/d, atomically, with a symlink to the outside directory, and back.
    while (!done)
      renameat2(AT_FDCWD, (root + "/d").c_str(), AT_FDCWD, (dir + "/link").c_str(),
                RENAME_EXCHANGE);
  });
  int leaks = 0, served = 0;
  Client c(server.port());
  for (int i = 0; i < 20000; ++i) {
    auto r = c.get("/d/a.txt");
    if (!r) break;
    if (r->body.find("SECRET") != std::string::npos) ++leaks;
    if (r->status == 200) ++served;
  }
  done = true;
  swapper.join();
  EXPECT_EQ(leaks, 0);
  EXPECT_GT(served, 0);  // the swaps did leave the real directory in place at times
}

// Streams that all ask for a backlog longer than one send takes (300 frames) at the same moment:
// they are sent in one batch, each going on with writev, and each gets all of it in order.
TEST_P(SendModes, ManyStreamsResumingAtOnceEachGetTheWholeBacklog) {
  ServerProcess server(GetParam());
  constexpr int kMessages = 300;
  for (int i = 1; i <= kMessages; ++i)
    ASSERT_EQ(post_message(server.port(), "alice", text_n(i)), static_cast<uint64_t>(i));
  std::vector<std::unique_ptr<Client>> streams;
  for (int i = 0; i < 40; ++i) {
    streams.push_back(std::make_unique<Client>(server.port()));
    ASSERT_TRUE(streams.back()->connected());
  }
  // Every request is sent before any answer is read, so the server finds them together.
  for (auto& c : streams)
    ASSERT_TRUE(c->send("GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 0\r\n\r\n"));
  for (auto& c : streams) {
    auto head = c->read_head();
    ASSERT_TRUE(head);
    ASSERT_EQ(head->status, 200);
    SseReader reader(*c);
    for (int i = 1; i <= kMessages; ++i) {
      auto ev = reader.next_message();
      ASSERT_TRUE(ev);
      ASSERT_EQ(ev->id, std::to_string(i));
      ASSERT_NE(ev->data.find("\"text\":\"" + text_n(i) + "\""), std::string::npos);
    }
  }
}

TEST_P(SendModes, SlowSubscriberIsDisconnectedWhileOthersKeepReceiving) {
  std::vector<std::string> args = GetParam();
  args.insert(args.end(), {"--client-queue", "16"});
  ServerProcess server(args);
  Client slow(server.port());  // subscribes, then never reads
  slow.send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  Subscription fast(server.port());
  ASSERT_TRUE(fast.ok);
  std::string big(1900, 'z');
  Client poster(server.port());
  int received = 0;
  int posted = 0;
  // Post until the kernel buffers and then the 16-frame queue of the slow one are full.
  while (metric(server.port(), "ssechat_slow_consumer_disconnects_total") == 0) {
    ASSERT_LT(posted, 40000) << "the slow subscriber was never disconnected";
    for (int k = 0; k < 100; ++k) {
      auto r = poster.post_json("{\"user\":\"flood\",\"text\":\"" + big + "\"}");
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 201);
      ++posted;
      while (received < posted) {  // keep the fast one drained as we go
        auto ev = fast.reader.next();
        ASSERT_TRUE(ev);
        if (ev->event.empty()) {
          ASSERT_EQ(ev->id, std::to_string(++received));
        }
      }
    }
  }
  EXPECT_EQ(received, posted);
  EXPECT_EQ(metric(server.port(), "ssechat_sse_clients"), 1u);
  // The slow one was cut off: reading now ends in EOF, not in an endless stream.
  EXPECT_TRUE(slow.wait_closed());
  // And the fast one is still live.
  ASSERT_NE(post_message(server.port(), "a", "still here"), 0u);
  std::optional<SseEvent> ev = fast.reader.next_message();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, std::to_string(posted + 1));
}

TEST(Core, SigtermExitsZero) {
  ServerProcess server;
  Subscription sub(server.port());
  ASSERT_TRUE(sub.ok);
  ASSERT_NE(post_message(server.port(), "a", "before"), 0u);
  EXPECT_EQ(server.stop(SIGTERM), 0);
  // The subscriber got the message and then the end of the stream.
  std::optional<SseEvent> ev = sub.reader.next_message();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, "1");
  EXPECT_FALSE(sub.reader.next());
}

TEST(Core, SigintExitsZero) {
  ServerProcess server;
  EXPECT_EQ(server.stop(SIGINT), 0);
}

TEST(Core, HelpAndVersion) {
  std::string cmd = binary_path() + " --help";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0);
  EXPECT_NE(out.find("--listen HOST:PORT"), std::string::npos);
  EXPECT_NE(out.find("(default: 127.0.0.1:8080)"), std::string::npos);
  p = popen((binary_path() + " --version").c_str(), "r");
  out.clear();
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0);
  EXPECT_TRUE(out.starts_with("sse-chat "));
  p = popen((binary_path() + " --bogus 2>&1").c_str(), "r");
  out.clear();
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_NE(pclose(p), 0);
  EXPECT_NE(out.find("unknown option --bogus"), std::string::npos);
}

// A resumed stream starts with its retry time as a line joined to the first event, never as a
// block of its own: clients such as httpx-sse and @microsoft/fetch-event-source report an empty
// message for a block without data, and one that parses every message's data then fails.
TEST(Core, AResumedStreamOpensWithNoEmptyBlock) {
  ServerProcess server({"--retry", "3000"});
  ASSERT_EQ(post_message(server.port(), "u", "one"), 1u);
  ASSERT_EQ(post_message(server.port(), "u", "two"), 2u);
  for (std::string target : {"/events?lastEventId=1", "/events?lastEventId=2"}) {
    Client c(server.port());
    c.send("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(c.read_head());
    bool replays = target.ends_with("=1");
    if (!replays) {
      ASSERT_EQ(post_message(server.port(), "u", "three"), 3u);
    }
    while (c.buffer().find("\n\n") == std::string::npos) ASSERT_TRUE(c.fill());
    std::string block = c.buffer().substr(0, c.buffer().find("\n\n") + 2);
    ASSERT_TRUE(block.starts_with("retry: ")) << block;
    std::string rest = block.substr(block.find('\n') + 1);
    // Heartbeats may come between: comment lines, which join the block as well.
    while (rest.starts_with(": ")) rest = rest.substr(rest.find('\n') + 1);
    EXPECT_TRUE(rest.starts_with(replays ? "id: 2\ndata: {" : "id: 3\ndata: {")) << block;
  }
}
