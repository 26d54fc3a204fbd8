// Limits and abuse controls over real sockets: each refusal is the documented status, and honest
// clients keep being served.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "test_server.h"

using namespace testing_support;

namespace {
const std::string kBody = R"({"user":"r","text":"hi"})";
}

TEST(Hardening, PostFloodGets429WithRetryAfter) {
  ServerProcess server({"--post-rate", "5", "--post-burst", "20"});
  Subscription honest(server.port());
  ASSERT_TRUE(honest.ok);
  Client c(server.port());
  int created = 0, limited = 0;
  for (int i = 0; i < 60; ++i) {
    auto r = c.post_json(kBody);
    ASSERT_TRUE(r);
    if (r->status == 201) ++created;
    if (r->status == 429) {
      ++limited;
      EXPECT_FALSE(r->header("retry-after").empty());
      EXPECT_NE(r->body.find("\"error\""), std::string::npos);
    }
  }
  EXPECT_GE(created, 20);  // the burst, plus what refilled meanwhile
  EXPECT_LT(created, 60);
  EXPECT_EQ(created + limited, 60);
  // Every accepted message reached the honest subscriber, in order.
  for (int i = 1; i <= created; ++i) {
    std::optional<SseEvent> ev = honest.reader.next_message();
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->id, std::to_string(i));
  }
}

TEST(Hardening, StreamsPerIpAreCapped) {
  ServerProcess server({"--max-streams-per-ip", "3", "--subscribe-rate", "0", "--post-rate", "0"});
  std::vector<std::unique_ptr<Subscription>> subs;
  for (int i = 0; i < 3; ++i) {
    subs.push_back(std::make_unique<Subscription>(server.port()));
    ASSERT_TRUE(subs.back()->ok);
  }
  Client extra(server.port());
  auto r = extra.get("/events");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429);
  subs.pop_back();  // one closes: its slot comes back
  EXPECT_TRUE(eventually([&] { return Subscription(server.port()).ok; }))
      << "the freed stream slot never came back";
}

TEST(Hardening, SlowlorisGets408) {
  ServerProcess server({"--request-timeout", "1"});
  Client c(server.port());
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: x\r\n"));  // and never finishes the headers
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    c.send("X");  // a byte every now and then does not keep it alive
  }
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 408);
  EXPECT_TRUE(c.wait_closed());
  EXPECT_NE(post_message(server.port(), "ok", "still serving"), 0u);
}

// With --publish-token, a reader without it may make a room only where that forgets no kept
// messages, as with JWT (a review wiped a room's history with two anonymous streams).
TEST(Hardening, AReaderWithoutThePublishTokenNeverWipesARoom) {
  ServerProcess server({"--publish-token", "s3cret", "--max-rooms", "2"});
  std::string token = "Authorization: Bearer s3cret\r\n";
  Client c(server.port());
  for (const char* room : {"team", "ops"})
    ASSERT_EQ(
        c.post_json(R"({"user":"r","text":"kept","room":")" + std::string(room) + "\"}", token)
            ->status,
        201);
  auto refused = c.get("/events?room=x1");
  EXPECT_EQ(refused->status, 429);
  // Not "every room is read": these are free, but keep messages this reader may not forget.
  EXPECT_NE(refused->body.find("keep messages"), std::string::npos) << refused->body;
  EXPECT_EQ(ids_in(c.get("/messages?room=team")->body).size(), 1u);
  EXPECT_EQ(ids_in(c.get("/messages?room=ops")->body).size(), 1u);
  // Who holds the token may, as a POST may.
  Client reader(server.port());
  ASSERT_TRUE(reader.send("GET /events?room=x1 HTTP/1.1\r\nHost: x\r\n" + token + "\r\n"));
  auto head = reader.read_head();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
}

TEST(Hardening, CrossSiteOriginTokenAndCors) {
  ServerProcess server({"--publish-token", "s3cret", "--cors-origin", "https://chat.example"});
  Client c(server.port());
  auto no_token = c.post_json(kBody);
  EXPECT_EQ(no_token->status, 401);
  EXPECT_EQ(no_token->header("www-authenticate"), R"(Bearer realm="sse-chat")");
  auto wrong = c.post_json(kBody, "Authorization: Bearer wrong\r\n");
  EXPECT_EQ(wrong->status, 401);
  EXPECT_EQ(wrong->header("www-authenticate"), R"(Bearer realm="sse-chat", error="invalid_token")");
  EXPECT_EQ(c.post_json(kBody, "Authorization: Basic czNjcmV0\r\n")->status, 401);
  // No token at all is no invalid token (RFC 6750 3.1).
  EXPECT_EQ(c.post_json(kBody, "Authorization: Bearer\r\n")->header("www-authenticate"),
            R"(Bearer realm="sse-chat")");
  // The scheme's name is case-insensitive (RFC 9110 11.1), and spaces around the token are none.
  for (const char* auth : {"Bearer s3cret", "bearer s3cret", "BEARER  s3cret"})
    EXPECT_EQ(c.post_json(kBody, std::string("Authorization: ") + auth + "\r\n")->status, 201)
        << auth;
  auto evil =
      c.post_json(kBody, "Authorization: Bearer s3cret\r\nOrigin: https://evil.example\r\n");
  EXPECT_EQ(evil->status, 403);
  auto same_site =
      c.post_json(kBody, "Authorization: Bearer s3cret\r\nOrigin: http://127.0.0.1\r\n");
  EXPECT_EQ(same_site->status, 201);  // Host is 127.0.0.1: same origin
  auto allowed =
      c.post_json(kBody, "Authorization: Bearer s3cret\r\nOrigin: https://chat.example\r\n");
  EXPECT_EQ(allowed->status, 201);
  EXPECT_EQ(allowed->header("access-control-allow-origin"), "https://chat.example");
  // The page may read why it was refused, and what to do (Retry-After, WWW-Authenticate)...
  auto refused = c.post_json(kBody, "Origin: https://chat.example\r\n");
  EXPECT_EQ(refused->status, 401);
  EXPECT_EQ(refused->header("access-control-allow-origin"), "https://chat.example");
  EXPECT_EQ(refused->header("access-control-expose-headers"), "Retry-After, WWW-Authenticate");
  // ...even when the request was refused before it was routed: a body over --max-body.
  Client big(server.port());
  auto too_large = big.post_json(std::string(40000, ' '), "Origin: https://chat.example\r\n");
  ASSERT_TRUE(too_large);
  EXPECT_EQ(too_large->status, 413);
  EXPECT_EQ(too_large->header("access-control-allow-origin"), "https://chat.example");
  Client big_evil(server.port());
  auto evil_large = big_evil.post_json(std::string(40000, ' '), "Origin: https://evil.example\r\n");
  ASSERT_TRUE(evil_large);
  EXPECT_EQ(evil_large->header("access-control-allow-origin"), "");
  // Same site is the same host, case aside, on the same port, the scheme's default when absent
  // (a proxy's `Host $host:$server_port`); a trusted proxy's X-Forwarded-Host names the site.
  auto post_as = [&](const std::string& host, const std::string& origin,
                     const std::string& extra = "") {
    return post_status(
        server.port(), "/messages",
        "Host: " + host + "\r\nOrigin: " + origin + "\r\nAuthorization: Bearer s3cret\r\n" + extra,
        kBody);
  };
  EXPECT_EQ(post_as("chat.example.com:443", "https://chat.example.com"), 201);
  EXPECT_EQ(post_as("Chat.Example.com", "https://chat.example.com"), 201);
  EXPECT_EQ(post_as("chat.example.com:80", "http://chat.example.com"), 201);
  EXPECT_EQ(post_as("chat.example.com:8080", "https://chat.example.com"), 403);
  EXPECT_EQ(post_as("chat.example.com", "https://chat.example.com:8443"), 403);
  EXPECT_EQ(post_as("chat.example.com.evil", "https://chat.example.com"), 403);
  EXPECT_EQ(post_as("127.0.0.1:8080", "https://chat.example.com",
                    "X-Forwarded-Host: chat.example.com\r\n"),
            403);  // this peer is no trusted proxy: its X-Forwarded-Host says nothing
  auto page = c.get("/", "Origin: https://evil.example\r\n");
  EXPECT_EQ(page->header("access-control-allow-origin"), "");  // CORS only for the one origin
  EXPECT_EQ(page->header("content-security-policy"), "default-src 'self'");
  EXPECT_EQ(page->header("referrer-policy"), "no-referrer");
}

// Behind a trusted proxy that rewrites Host (a dev server's changeOrigin, say), the site a page
// posts from is the one the proxy's X-Forwarded-Host names.
TEST(Hardening, ATrustedProxysForwardedHostNamesTheSite) {
  ServerProcess server({"--trusted-proxy", "127.0.0.1/32"});
  auto post_via = [&](const std::string& forwarded_host) {
    Client raw(server.port());
    raw.send(
        "POST /messages HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nOrigin: https://chat.example.com\r\n" +
        forwarded_host + "Content-Type: application/json\r\nContent-Length: " +
        std::to_string(kBody.size()) + "\r\n\r\n" + kBody);
    auto r = raw.read_response();
    return r ? r->status : 0;
  };
  EXPECT_EQ(post_via("X-Forwarded-Host: chat.example.com\r\n"), 201);
  // A proxy that appends: the nearest one's entry is the last; the client's own comes first.
  EXPECT_EQ(post_via("X-Forwarded-Host: evil.example, chat.example.com\r\n"), 201);
  EXPECT_EQ(post_via("X-Forwarded-Host: chat.example.com, evil.example\r\n"), 403);
  EXPECT_EQ(post_via(""), 403);
  EXPECT_EQ(post_via("X-Forwarded-Host: evil.example\r\n"), 403);
}

TEST(Hardening, ConnectionsOverTheLimitAreClosedAndOthersServed) {
  ServerProcess server({"--max-connections", "10", "--max-connections-per-ip", "0"});
  std::vector<std::unique_ptr<Client>> held;
  for (int i = 0; i < 10; ++i) {
    held.push_back(std::make_unique<Client>(server.port()));
    ASSERT_TRUE(held.back()->get("/healthz"));  // each is accepted and counted
  }
  Client over(server.port());
  EXPECT_FALSE(over.get("/healthz"));  // closed unanswered
  held.pop_back();
  EXPECT_TRUE(eventually([&] {
    auto r = Client(server.port()).get("/healthz");
    return r && r->status == 200;
  })) << "a freed connection slot never came back";
}

namespace {

// A GET of `path` from `source` (a loopback address): the answer's status, 0 when none came.
// With `kept_fd` the connection stays open (idle keep-alive) and only the head is read; without,
// the answer is read to its end into `answer`.
int get_from(const char* source, uint16_t port, const char* path, int* kept_fd = nullptr,
             std::string* answer = nullptr) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in from{}, to{};
  from.sin_family = to.sin_family = AF_INET;
  inet_pton(AF_INET, source, &from.sin_addr);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  to.sin_port = htons(port);
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    close(fd);
    return 0;
  }
  std::string request = std::string("GET ") + path + " HTTP/1.1\r\nHost: x\r\n" +
                        (kept_fd ? "" : "Connection: close\r\n") + "\r\n";
  std::string got;
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) == ssize_t(request.size())) {
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
      got.append(buf, size_t(n));
      if (kept_fd) break;
    }
  }
  int status = got.size() > 12 ? std::atoi(got.substr(9, 3).c_str()) : 0;
  if (answer) *answer = got;
  if (kept_fd && status != 0)
    *kept_fd = fd;
  else
    close(fd);
  return status;
}

}  // namespace

// One address may hold a quarter of the connections (auto), idle keep-alive ones too: past it,
// its new connections are closed unanswered (an EventSource retries), while another address is
// served; a trusted proxy, whose connections carry many clients, is not held to it.
TEST(Hardening, OneAddressHoldsAQuarterOfTheConnectionsAtMost) {
  ServerProcess server({"--max-connections", "40"});
  std::vector<int> held;
  for (int i = 0; i < 10; ++i) {
    int fd = -1;
    ASSERT_EQ(get_from("127.0.0.1", server.port(), "/healthz", &fd), 200) << i;
    held.push_back(fd);
  }
  EXPECT_EQ(get_from("127.0.0.1", server.port(), "/healthz"), 0);
  EXPECT_EQ(get_from("127.0.0.2", server.port(), "/healthz"), 200);
  std::string metrics;
  EXPECT_EQ(get_from("127.0.0.2", server.port(), "/metrics", nullptr, &metrics), 200);
  EXPECT_NE(metrics.find("ssechat_rejected_total{reason=\"connections_per_ip\"} 1\n"),
            std::string::npos)
      << metrics;
  close(held.back());  // a slot of its own comes back to the address
  held.pop_back();
  EXPECT_TRUE(eventually([&] { return get_from("127.0.0.1", server.port(), "/healthz") == 200; }));
  for (int fd : held) close(fd);

  ServerProcess behind_proxy({"--max-connections", "40", "--trusted-proxy", "127.0.0.1/32"});
  std::vector<int> proxied;
  for (int i = 0; i < 20; ++i) {
    int fd = -1;
    EXPECT_EQ(get_from("127.0.0.1", behind_proxy.port(), "/healthz", &fd), 200) << i;
    if (fd >= 0) proxied.push_back(fd);
  }
  for (int fd : proxied) close(fd);
}

// The streams of one address read a bounded number of distinct rooms at once (auto: a quarter of
// --max-rooms), so that one address cannot hold every room open and so have the others forgotten;
// past it a stream is refused for now (429 here; an EventSource gets 200 and retry:), another
// address is served, and the rooms come back to the address with its streams.
TEST(Hardening, OneAddressReadsABoundedNumberOfRooms) {
  ServerProcess server({"--max-room-reads-per-ip", "4"});
  std::vector<std::unique_ptr<Client>> streams_held;
  auto open_stream = [&](const std::string& query) {
    auto c = std::make_unique<Client>(server.port());
    if (!c->send("GET /events" + query + " HTTP/1.1\r\nHost: x\r\n\r\n")) return 0;
    auto head = c->read_head();
    int status = head ? head->status : 0;
    if (status == 200) streams_held.push_back(std::move(c));
    return status;
  };
  EXPECT_EQ(open_stream("?room=a&room=b&room=c"), 200);
  Client refused(server.port());
  auto r = refused.get("/events?room=d&room=e");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429);
  EXPECT_NE(r->body.find("too many rooms are read from your address"), std::string::npos)
      << r->body;
  EXPECT_EQ(open_stream("?room=d"), 200);  // the fourth fits
  // A room counts once per address, however many of its streams read it: an office behind one
  // NAT address whose people all follow the same rooms (found by a probe: 200 people of 13 rooms
  // each were over the default as reads).
  for (int i = 0; i < 20; ++i) EXPECT_EQ(open_stream("?room=a&room=b&room=c&room=d"), 200) << i;
  int other = -1;
  EXPECT_EQ(get_from("127.0.0.2", server.port(), "/events?room=e&room=f", &other), 200);
  if (other >= 0) close(other);
  streams_held.clear();  // the address's rooms come back as its streams close
  EXPECT_TRUE(eventually([&] { return open_stream("?room=d&room=e&room=f&room=g") == 200; }));
  streams_held.clear();
}

TEST(Hardening, IdleKeepAliveClosesEvenIfThePeerDribblesBlankLines) {
  ServerProcess server({"--keepalive-timeout", "1"});
  Client c(server.port());
  auto r = c.get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  bool closed = false;
  for (int i = 0; i < 40 && !closed; ++i) {  // CRLFs start no request, so they buy no time
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    closed = !c.send("\r\n");
    char byte;
    closed = closed || recv(c.fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
  }
  EXPECT_TRUE(closed);
}

namespace {
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 1; rest >> field; ++i)
    if (i == 12 || i == 13) ticks += std::stod(field);  // utime, stime
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}
}  // namespace

// The defaults fit an office behind one NAT address only with enough descriptors: with few, the
// limits the server works with are logged with a warning that says so; with enough, no warning.
TEST(Hardening, AnOpenFileLimitTooLowForAnOfficeIsWarnedOf) {
  LaunchOptions low;
  low.max_fds = 1024;
  ServerProcess cramped({}, true, low);
  EXPECT_NE(cramped.log().find("connection limits\" max_connections=992 per_ip=248"),
            std::string::npos)
      << cramped.log();
  EXPECT_NE(cramped.log().find("an office behind one NAT address may be refused"),
            std::string::npos);
  LaunchOptions enough;
  enough.max_fds = 8192;
  ServerProcess roomy({}, true, enough);
  EXPECT_NE(roomy.log().find("per_ip=2040"), std::string::npos) << roomy.log();
  EXPECT_EQ(roomy.log().find("may be refused"), std::string::npos);
  for (std::string flag : {"--max-connections-per-ip", "--max-connections"}) {  // the operator's
    ServerProcess chosen({flag, "100"}, true, low);
    EXPECT_EQ(chosen.log().find("may be refused"), std::string::npos) << chosen.log();
  }
}

// 64 descriptors and --max-connections 1000: connections up to that would leave the journal no
// descriptor to sync with (every POST 503) and static files none to open (404). The limit is
// lowered to what the descriptors allow, with a warning; past it connections are closed unanswered
// (an EventSource retries), the listener does not spin, and everyone already in is served.
// With 24 descriptors, fewer than the reserve itself, one connection at a time is taken.
TEST(Hardening, AConnectionLimitOverTheFdLimitIsLoweredSoStorageKeepsItsDescriptors) {
  for (int fds : {64, 24}) {
    SCOPED_TRACE(fds);
    LaunchOptions launch;
    launch.max_fds = fds;
    ServerProcess server(
        {"--max-connections", "1000", "--max-connections-per-ip", "0", "--data-dir",
         make_temp_dir(), "--static-dir", testing_support::static_dir()},
        false, launch);
    EXPECT_NE(server.log().find("--max-connections is over what the open-file limit allows"),
              std::string::npos)
        << server.log();
    Client first(server.port());
    ASSERT_EQ(first.get("/healthz")->status, 200);
    std::vector<std::unique_ptr<Client>> held;
    for (int i = 0; i < 100; ++i) held.push_back(std::make_unique<Client>(server.port(), 2));
    ASSERT_TRUE(eventually([&] {  // asked on the connection already in: new ones may be refused
      auto m = first.get("/metrics");
      return m && m->body.find("ssechat_rejected_total{reason=\"max_connections\"} 0\n") ==
                      std::string::npos;
    }));
    double before = cpu_seconds(server.pid());
    std::this_thread::sleep_for(std::chrono::seconds(2));
    EXPECT_LT(cpu_seconds(server.pid()) - before, 0.5) << "the listener spins";
    for (int i = 0; i < 3; ++i) {  // past a second: the journal's syncer has had its turn
      auto posted = first.post_json(kBody);
      ASSERT_TRUE(posted);
      EXPECT_EQ(posted->status, 201) << posted->body;
      auto page = first.get("/");
      ASSERT_TRUE(page);
      EXPECT_EQ(page->status, 200);
      std::this_thread::sleep_for(std::chrono::milliseconds(600));
    }
    first.close();  // at 24 descriptors, the one connection there is room for
    held.clear();
    ASSERT_TRUE(eventually([&] {
      auto r = Client(server.port(), 5).get("/healthz");
      return r && r->status == 200;
    }));
  }
}

TEST(Hardening, SubscribeStormGets429WithRetryAfter) {
  ServerProcess server(
      {"--subscribe-rate", "1", "--subscribe-burst", "5", "--max-streams-per-ip", "0"});
  int limited = 0;
  for (int i = 0; i < 15; ++i) {
    Client c(server.port());
    auto r = c.get("/events");  // a refused stream answers and ends; an accepted one stays open
    if (r && r->status == 429) {
      ++limited;
      EXPECT_FALSE(r->header("retry-after").empty());
    }
  }
  EXPECT_GE(limited, 8);
}

TEST(Hardening, TrustedProxyNamesTheClientOthersCannot) {
  // One POST per address, then 429: the limit follows whoever the server believes the client is.
  ServerProcess server(
      {"--post-rate", "0.01", "--post-burst", "1", "--trusted-proxy", "127.0.0.1/32"});
  Client c(server.port());
  EXPECT_EQ(c.post_json(kBody, "X-Forwarded-For: 203.0.113.1\r\n")->status, 201);
  EXPECT_EQ(c.post_json(kBody, "X-Forwarded-For: 203.0.113.1\r\n")->status, 429);
  EXPECT_EQ(c.post_json(kBody, "X-Forwarded-For: 203.0.113.2\r\n")->status, 201);  // another client
  EXPECT_EQ(c.post_json(kBody, "Forwarded: for=203.0.113.3\r\n")->status, 201);

  // Without --trusted-proxy the same headers are ignored: every POST is from 127.0.0.1.
  ServerProcess direct({"--post-rate", "0.01", "--post-burst", "1"});
  Client d(direct.port());
  EXPECT_EQ(d.post_json(kBody, "X-Forwarded-For: 203.0.113.1\r\n")->status, 201);
  EXPECT_EQ(d.post_json(kBody, "X-Forwarded-For: 203.0.113.2\r\n")->status, 429);
  // The operator who forgot --trusted-proxy is told, once.
  const std::string told = "from an address that is not a --trusted-proxy";
  ASSERT_TRUE(eventually([&] { return direct.log().find(told) != std::string::npos; }));
  EXPECT_EQ(direct.log().find(told), direct.log().rfind(told));
  EXPECT_EQ(server.log().find(told), std::string::npos);
}

TEST(Hardening, AnswersHeldForTheDiskGetTheSameHeadersAsAnyOther) {
  // --fsync always answers a POST only after its sync; that answer still speaks CORS and HEAD
  // rules.
  ServerProcess server(
      {"--data-dir", make_temp_dir(), "--fsync", "always", "--cors-origin", "https://chat.example"},
      false);
  Client c(server.port());
  auto r = c.post_json(kBody, "Origin: https://chat.example\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->header("access-control-allow-origin"), "https://chat.example");
  auto closing = c.post_json(kBody, "Connection: close\r\n");
  ASSERT_TRUE(closing);
  EXPECT_EQ(closing->status, 201);
  EXPECT_EQ(closing->header("connection"), "close");
}
