// Running as a service: sd_notify, socket activation, the unit file, /metrics through a real
// Prometheus parser, /healthz, SIGTERM draining with a loss-free restart, logs and SIGHUP.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <thread>
#include <vector>

#include "test_server.h"

using namespace testing_support;

namespace {

std::string run(const std::string& cmd, int& status) {
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  status = pclose(p);
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST(Daemon, NotifiesReadyWatchdogAndStopping) {
  NotifySocket notify;
  ServerProcess server({}, true, {{notify.env(), "WATCHDOG_USEC=200000"}});
  EXPECT_TRUE(notify.wait_for("READY=1"));
  EXPECT_TRUE(notify.wait_for("WATCHDOG=1"));
  kill(server.pid(), SIGTERM);
  EXPECT_TRUE(notify.wait_for("STOPPING=1"));
  EXPECT_EQ(server.stop(SIGTERM), 0);
}

TEST(Daemon, SocketActivationServesOnTheInheritedListener) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 128), 0);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  uint16_t port = ntohs(addr.sin_port);
  {
    ServerProcess first({}, true, {{}, fd});
    EXPECT_EQ(first.port(), port);
    EXPECT_NE(post_message(port, "a", "via the inherited socket"), 0u);
    // A connection made while no server runs waits in the backlog instead of being refused.
    EXPECT_EQ(first.stop(SIGTERM), 0);
  }
  Client waiting(port);
  ASSERT_TRUE(waiting.connected());
  ASSERT_TRUE(waiting.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  ServerProcess second({}, true, {{}, fd});
  auto r = waiting.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  close(fd);
}

namespace {

// Starts sse-chat expecting it to refuse to; its exit status and log.
std::pair<int, std::string> refused_start(std::vector<std::string> args, LaunchOptions launch) {
  launch.may_refuse = true;
  ServerProcess server(std::move(args), false, launch);
  EXPECT_EQ(server.port(), 0) << "it started";
  int status = server.stop(SIGKILL);
  return {status, server.log()};
}

// One request over the Unix socket at `path` (Connection: close), the whole answer.
std::string unix_request(const std::string& path, const std::string& request) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  std::string answer;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) answer.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return answer;
}

}  // namespace

// Exit status 2 is what the units do not start again each second: a setting that only an edit
// mends gives it, and before the data directory is touched.
TEST(Daemon, ASettingOnlyAnEditMendsExitsWithStatusTwoBeforeTheDataDirectoryIsTouched) {
  std::string dir = make_temp_dir(), data = dir + "/data", key = dir + "/key";
  std::ofstream(key) << std::string(40, 'k');
  const std::vector<std::vector<std::string>> bad = {
      {"--listen", "foo"},
      {"--listen", "127.0.0.1:80800"},
      {"--listen", "example.org:8080"},  // a name would need a resolver at start; localhost aside
      {"--listen", "127.1:8080"},
      {"--jwt-alg", "HS257"},  // a typo also before a key is given
      {"--trusted-proxy", "10.0.0.0/33"},
      {"--reuse-port"},  // without --redis: nodes on one port, each its own chat
      {"--jwt-key", ""},
      {"--publish-token="},
      {"--no-journal=maybe"},
      {"--retry", "4000000000"},
      {"--jwt-key", key, "--jwt-alg", "hs256"},
      {"--jwt-key", dir + "/missing"},
      {"--public-rooms", "lobby"},  // without --jwt-key
      {"--redis", "http://localhost"},
      {"--log-file", dir + "/no/such/dir/log"},
  };
  for (std::vector<std::string> args : bad) {
    std::string said = args[0] + " " + (args.size() > 1 ? args[1] : "");
    args.insert(args.end(), {"--data-dir", data});
    auto [status, log] = refused_start(args, {});
    EXPECT_EQ(status, 2) << said << "\n" << log;
    EXPECT_FALSE(std::filesystem::exists(data)) << said;
  }
  // An empty --data-dir (SSE_CHAT_DATA_DIR= in a settings file) is not ./data by another name.
  auto [status, log] = refused_start({"--data-dir", ""}, {});
  EXPECT_EQ(status, 2) << log;
  EXPECT_NE(log.find("--data-dir is empty"), std::string::npos) << log;
  // localhost is the one name --listen takes.
  {
    ServerProcess local({"--listen", "LocalHost:0"});
    ASSERT_NE(local.port(), 0) << local.log();
    EXPECT_EQ(Client(local.port()).get("/healthz")->status, 200);
  }
  // A switch says on or off: --no-journal=false keeps the journal.
  {
    ServerProcess server({"--no-journal=false", "--data-dir", data}, false);
    EXPECT_EQ(post_message(server.port(), "a", "kept"), 1u);
  }
  ServerProcess again({"--data-dir", data}, false);
  EXPECT_EQ(post_message(again.port(), "a", "after a restart"), 2u);
}

// What systemd hands over but cannot be accepted on (Accept=yes passes a connection; a datagram
// socket; one never listened on) is refused at start: the loop would spin on it.
TEST(Daemon, AnInheritedSocketThatDoesNotListenIsRefused) {
  for (int type : {SOCK_DGRAM, SOCK_STREAM}) {
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    auto [status, log] = refused_start({"--no-journal"}, {{}, fd});
    EXPECT_EQ(status, 2) << log;
    EXPECT_NE(log.find("not a listening stream socket"), std::string::npos) << log;
    close(fd);
  }
}

// On a Unix socket (ListenStream=/run/...) the address printed is its path, and every client
// counts as one address unless --trusted-proxy unix believes the proxy's X-Forwarded-For.
TEST(Daemon, AUnixSocketFromSystemdServesAndItsProxyCanBeTrusted) {
  std::string path = make_temp_dir() + "/sock";
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 16), 0);
  auto post_from = [&](const std::string& client) {
    std::string body = R"({"user":"a","text":"hi"})";
    std::string answer = unix_request(
        path,
        "POST /messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nX-Forwarded-For: " +
            client + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
    return answer.substr(0, answer.find("\r\n"));
  };
  std::vector<std::string> limits = {"--no-journal", "--post-rate", "1", "--post-burst", "1"};
  {
    ServerProcess untrusted(limits, false, {{}, fd});
    EXPECT_EQ(post_from("10.0.0.1"), "HTTP/1.1 201 Created");
    EXPECT_EQ(post_from("10.0.0.2"), "HTTP/1.1 429 Too Many Requests");  // one address for all
    EXPECT_EQ(untrusted.stop(SIGTERM), 0);
    EXPECT_NE(untrusted.log().find("--trusted-proxy unix"), std::string::npos);
  }
  limits.insert(limits.end(), {"--trusted-proxy", "unix"});
  ServerProcess trusted(limits, false, {{}, fd});
  EXPECT_EQ(post_from("10.0.0.1"), "HTTP/1.1 201 Created");
  EXPECT_EQ(post_from("10.0.0.1"), "HTTP/1.1 429 Too Many Requests");
  EXPECT_EQ(post_from("10.0.0.2"), "HTTP/1.1 201 Created");
  close(fd);
}

namespace {

// Copies the built unit `name` (from the directory of SSE_CHAT_UNIT) into a directory of its own,
// its ExecStart pointed at the binary under test (its arguments kept), as an installed unit points
// at the installed one; checks it holds `words`, and runs `systemd-analyze verify` on `verify_as`
// (an instance name for a template). Skips when systemd-analyze is missing.
void verify_unit(const std::string& name, const std::string& verify_as,
                 std::initializer_list<const char*> words) {
  int status = 0;
  run("command -v systemd-analyze >/dev/null 2>&1", status);
  if (status != 0) GTEST_SKIP() << "systemd-analyze is not installed here";
  const char* unit = std::getenv("SSE_CHAT_UNIT");
  ASSERT_NE(unit, nullptr);
  std::string built = std::string(unit);
  built = built.substr(0, built.rfind('/') + 1) + name;
  std::string text = read_file(built);
  ASSERT_FALSE(text.empty()) << built;
  size_t exec = text.find("ExecStart=");
  ASSERT_NE(exec, std::string::npos);
  size_t program_end = text.find_first_of(" \n", exec);
  char absolute[PATH_MAX];
  ASSERT_NE(realpath(binary_path().c_str(), absolute), nullptr);
  text.replace(exec, program_end - exec, std::string("ExecStart=") + absolute);
  for (const char* word : words)
    EXPECT_NE(text.find(word), std::string::npos) << name << ": " << word;
  std::string dir = make_temp_dir();
  std::ofstream(dir + "/" + name) << text;
  std::string out = run("systemd-analyze verify " + dir + "/" + verify_as + " 2>&1", status);
  EXPECT_EQ(status, 0) << name << ": " << out;
  // A setting it cannot parse is only a warning ("..., ignoring"), with status 0.
  EXPECT_EQ(out.find("ignoring"), std::string::npos) << name << ": " << out;
}

}  // namespace

TEST(Daemon, UnitFilePassesSystemdAnalyzeVerify) {
  verify_unit("sse-chat.service", "sse-chat.service",
              {"Type=notify", "DynamicUser=yes", "StateDirectory=sse-chat\n", "NoNewPrivileges=yes",
               "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
               "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
               "LimitNOFILE=", "Restart=on-failure", "StartLimitIntervalSec=0\n"});
}

// sse-chat@1, sse-chat@2, ...: nodes sharing Redis and one port.
TEST(Daemon, TemplateUnitFilePassesSystemdAnalyzeVerify) {
  verify_unit(
      "sse-chat@.service", "sse-chat@1.service",
      {"Type=notify", " --reuse-port\n", "DynamicUser=yes", "StateDirectory=sse-chat-node/%i\n",
       "EnvironmentFile=-/etc/default/sse-chat\n", "EnvironmentFile=-/etc/sse-chat/redis.env\n",
       "EnvironmentFile=-/etc/sse-chat/node-%i.env\n", "NoNewPrivileges=yes",
       "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
       "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "LimitNOFILE=", "Restart=on-failure",
       "StartLimitIntervalSec=0\n"});
}

TEST(Daemon, MetricsParseWithPrometheusClientAndMatchWhatHappened) {
  ServerProcess server({"--max-body", "100"});
  Subscription a(server.port()), b(server.port());
  ASSERT_TRUE(a.ok && b.ok);
  for (int i = 0; i < 3; ++i) ASSERT_NE(post_message(server.port(), "m", "x"), 0u);
  Client c(server.port());
  EXPECT_EQ(c.get("/missing")->status, 404);
  EXPECT_EQ(Client(server.port()).post_json(std::string(200, ' '))->status, 413);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(a.reader.next_message());
    ASSERT_TRUE(b.reader.next_message());
  }
  auto r = c.get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  std::string dir = make_temp_dir();
  std::ofstream(dir + "/metrics.txt") << r->body;
  std::ofstream(dir + "/parse.py") << R"PY(
import sys
from prometheus_client.parser import text_string_to_metric_families
values = {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        values[s.name + ("{" + labels + "}" if labels else "")] = s.value
for k in sorted(values):
    print(k, int(values[k]) if float(values[k]).is_integer() else values[k])
)PY";
  int status = 0;
  std::string out =
      run("/usr/bin/python3 " + dir + "/parse.py " + dir + "/metrics.txt 2>&1", status);
  if (out.find("No module named") != std::string::npos)
    GTEST_SKIP() << "python3-prometheus-client missing";
  ASSERT_EQ(status, 0) << out;
  auto has = [&](const std::string& line) { return out.find(line + "\n") != std::string::npos; };
  EXPECT_TRUE(has("ssechat_messages_total 3")) << out;
  EXPECT_TRUE(has("ssechat_deliveries_total 6")) << out;
  EXPECT_TRUE(has("ssechat_sse_clients 2")) << out;
  EXPECT_TRUE(has("ssechat_last_message_id 3")) << out;
  EXPECT_TRUE(has("ssechat_http_requests_total{code=201} 3")) << out;
  EXPECT_TRUE(has("ssechat_http_requests_total{code=404} 1")) << out;
  EXPECT_TRUE(has("ssechat_http_requests_total{code=413} 1")) << out;
  EXPECT_TRUE(has("ssechat_rejected_total{reason=body_too_large} 1")) << out;
  EXPECT_TRUE(has("ssechat_slow_consumer_disconnects_total 0")) << out;
  EXPECT_NE(out.find("ssechat_event_loop_busy_seconds_count "), std::string::npos) << out;
  EXPECT_NE(out.find("ssechat_uptime_seconds "), std::string::npos) << out;
  // Series that nothing has counted yet are there, at 0, so rate() says 0 rather than nothing.
  EXPECT_TRUE(has("ssechat_rejected_total{reason=post_rate} 0")) << out;
  EXPECT_TRUE(has("ssechat_http_requests_total{code=429} 0")) << out;
  // Seconds to nine significant digits at most (not 2.4929999999999999), counts as integers.
  size_t at = r->body.find("\nssechat_uptime_seconds ");
  ASSERT_NE(at, std::string::npos);
  std::string uptime = r->body.substr(at + 24, r->body.find('\n', at + 1) - at - 24);
  EXPECT_LE(uptime.size(), 10u) << uptime;
  EXPECT_NE(r->body.find("\nssechat_messages_total 3\n"), std::string::npos) << r->body;
}

TEST(Daemon, SigtermDeliversEverythingAcknowledgedThenRestartResumesWithoutGap) {
  std::string dir = make_temp_dir();
  const int subscribers = 20, before = 300;
  std::vector<std::vector<std::string>> ids(subscribers);
  {
    ServerProcess server({"--data-dir", dir}, false);
    std::vector<std::unique_ptr<Subscription>> subs;
    for (int i = 0; i < subscribers; ++i)
      subs.push_back(std::make_unique<Subscription>(server.port(), "0"));
    for (auto& s : subs) ASSERT_TRUE(s->ok);
    Client poster(server.port());
    for (int i = 0; i < before; ++i)
      ASSERT_EQ(
          poster.post_json("{\"user\":\"t\",\"text\":\"" + std::string(500, 'x') + "\"}")->status,
          201);
    EXPECT_EQ(server.stop(SIGTERM), 0);
    // Each subscriber reads what was flushed to it, then the end of its stream.
    for (int i = 0; i < subscribers; ++i)
      while (auto ev = subs[i]->reader.next_message()) ids[i].push_back(ev->id);
  }
  for (int i = 0; i < subscribers; ++i) ASSERT_EQ(ids[i].size(), static_cast<size_t>(before)) << i;
  ServerProcess restarted({"--data-dir", dir}, false);
  Subscription resumed(restarted.port(), ids[0].back());
  ASSERT_TRUE(resumed.ok);
  ASSERT_NE(post_message(restarted.port(), "t", "after"), 0u);
  auto ev = resumed.reader.next_message();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, std::to_string(before + 1));  // no gap, no repeat
}

TEST(Daemon, HealthzAndEnvironmentConfiguration) {
  ServerProcess server({}, true, {{"SSE_CHAT_MAX_BODY=100"}});
  Client c(server.port());
  auto h = c.get("/healthz");
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(h->body, "ok\n");
  EXPECT_EQ(c.post_json(std::string(120, ' '))->status, 413);  // the env var took effect
}

TEST(Daemon, LogFileAccessLogAndSighupReopen) {
  std::string dir = make_temp_dir();
  std::string log = dir + "/sse.log", access = dir + "/access.log";
  ServerProcess server(
      {"--log-file", log, "--access-log", access, "--trusted-proxy", "127.0.0.1/32"});
  ASSERT_NE(post_message(server.port(), "l", "logged"), 0u);
  EXPECT_NE(read_file(log).find("msg=\"sse-chat started\""), std::string::npos);
  EXPECT_NE(read_file(log).find("time="), std::string::npos);
  EXPECT_NE(read_file(access).find("method=POST path=/messages status=201"), std::string::npos)
      << read_file(access);
  // bytes= is the body sent, also when it goes out as slices of shared frames (a history page)
  // or as a shared copy (a static file); none for HEAD.
  Client reader(server.port());
  auto page = reader.get("/messages");
  ASSERT_TRUE(page && page->status == 200);
  ASSERT_TRUE(reader.send("HEAD /messages HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto head = reader.read_response(true);
  ASSERT_TRUE(head && head->status == 200);
  ASSERT_TRUE(
      eventually([&] { return read_file(access).find("method=HEAD") != std::string::npos; }));
  EXPECT_NE(read_file(access).find("method=GET path=/messages status=200 bytes=" +
                                   std::to_string(page->body.size()) + "\n"),
            std::string::npos)
      << read_file(access);
  EXPECT_NE(read_file(access).find("method=HEAD path=/messages status=200 bytes=0\n"),
            std::string::npos)
      << read_file(access);
  // Requests refused before routing are logged too: what was read of the request line, or "-".
  Client bad(server.port());  // a proxy's connection: each request its own client
  auto before = bad.get("/healthz", "X-Forwarded-For: 198.51.100.1\r\n");
  ASSERT_TRUE(before && before->status == 200);
  ASSERT_TRUE(
      bad.send("POST /messages HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n"
               "Content-Length: 99999999\r\n\r\n"));
  auto refused = bad.read_response();
  ASSERT_TRUE(refused && refused->status == 413);
  Client garbage(server.port());
  ASSERT_TRUE(garbage.send("\x01\x02 nonsense\r\n\r\n"));
  auto nonsense = garbage.read_response();
  ASSERT_TRUE(nonsense && nonsense->status == 400);
  ASSERT_TRUE(eventually([&] {
    std::string lines = read_file(access);
    return lines.find("client=203.0.113.9 method=POST path=/messages status=413") !=
               std::string::npos &&
           lines.find("method=- path=- status=400") != std::string::npos;
  })) << read_file(access);
  // logrotate: move the file away, SIGHUP, and the server writes a fresh one.
  ASSERT_EQ(rename(access.c_str(), (access + ".1").c_str()), 0);
  kill(server.pid(), SIGHUP);
  for (int i = 0; i < 200 && read_file(access).empty(); ++i) {
    Client(server.port()).get("/healthz");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(read_file(access).find("path=/healthz status=200"), std::string::npos);
  EXPECT_EQ(server.stop(SIGTERM), 0);
}

// A log nobody reads (a pipe to a stuck journald) holds up the log, never the server: lines
// wait for it up to a bound, the rest are dropped and counted once it reads again.
TEST(Daemon, AStderrPipeNobodyReadsDoesNotStallTheServer) {
  int log_pipe[2];
  ASSERT_EQ(pipe2(log_pipe, O_CLOEXEC), 0);
  LaunchOptions launch;
  launch.stderr_fd = log_pipe[1];
  std::string main_log = make_temp_dir() + "/main.log";  // a file: the stuck pipe holds not it
  ServerProcess server({"--access-log", "-", "--log-file", main_log}, true, launch);
  close(log_pipe[1]);
  // Far more access lines (30,000 of some 70 bytes) than the pipe (64 KiB) and the bound on
  // waiting lines (1 MiB) hold.
  Client busy(server.port());
  const std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  for (int batch = 0; batch < 300; ++batch) {
    std::string many;
    for (int i = 0; i < 100; ++i) many += request;
    ASSERT_TRUE(busy.send(many));
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(busy.read_response()) << batch << " " << i;
  }
  Client other(server.port());
  auto health = other.get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  ASSERT_NE(post_message(server.port(), "u", "still served"), 0u);
  ASSERT_TRUE(other.get("/healthz", "X-Forwarded-For: 192.0.2.1\r\n"));
  EXPECT_TRUE(eventually(
      [&] { return read_file(main_log).find("not a --trusted-proxy") != std::string::npos; }));
  // Reading again: the lines that waited come, then a note of how many were dropped.
  fcntl(log_pipe[0], F_SETFL, O_NONBLOCK);
  std::string lines;
  ASSERT_TRUE(eventually([&] {
    char buf[65536];
    for (ssize_t n; (n = read(log_pipe[0], buf, sizeof buf)) > 0;) lines.append(buf, n);
    other.get("/healthz");  // a line that fits brings the note
    return lines.find("log lines dropped") != std::string::npos;
  }));
  EXPECT_EQ(read_file(main_log).find("log lines dropped"), std::string::npos);
  EXPECT_EQ(server.stop(SIGTERM), 0);
  close(log_pipe[0]);
}

// Started with stdin and stderr closed, the server's own files must not land on fds 0 and 2:
// a client's socket there would get the log (which goes to fd 2) once a static directory swap
// freed it.
TEST(Daemon, ClosedStdioIsNeverTakenByAClientsSocket) {
  std::string dir = make_temp_dir();
  make_static_dirs(dir);
  LaunchOptions launch;
  launch.closed_stdio = true;
  ServerProcess server({"--static-dir", dir + "/static", "--access-log", "-"}, true, launch);
  for (int fd : {0, 2}) {
    char target[256] = {};
    std::string link = "/proc/" + std::to_string(server.pid()) + "/fd/" + std::to_string(fd);
    ASSERT_GT(readlink(link.c_str(), target, sizeof target - 1), 0) << fd;
    EXPECT_EQ(std::string(target), "/dev/null") << fd;
  }
  swap_static_dir(dir);
  EXPECT_TRUE(eventually([&] { return Client(server.port()).get("/")->body == "new page"; }));
  std::vector<Client> clients;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back(server.port());
    auto health = clients.back().get("/healthz");
    ASSERT_TRUE(health) << i;
    EXPECT_EQ(health->body, "ok\n") << i;
  }
}

// A log that is a FIFO: reopening it (SIGHUP) once its reader has gone must not wait for a new
// reader, which would hold the whole server.
TEST(Daemon, ReopeningAFifoLogWithoutAReaderDoesNotWaitForOne) {
  std::string fifo = make_temp_dir() + "/access.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  int reader = open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  ServerProcess server({"--access-log", fifo});
  ASSERT_TRUE(Client(server.port()).get("/healthz"));
  close(reader);
  kill(server.pid(), SIGHUP);
  for (int i = 0; i < 5; ++i) {
    auto health = Client(server.port()).get("/healthz");
    ASSERT_TRUE(health) << i;
    EXPECT_EQ(health->status, 200);
  }
  EXPECT_TRUE(eventually(
      [&] { return server.log().find("cannot reopen access log") != std::string::npos; }));
}

TEST(Daemon, RequestsInProgressAtSigtermAreAnsweredNewOnesRefusedAndHealthzSaysDraining) {
  std::string dir = make_temp_dir();
  NotifySocket notify;
  ServerProcess server({"--data-dir", dir}, false, {{notify.env()}});
  Client poster(server.port()), health(server.port());
  std::string body = R"({"user":"late","text":"sent across the signal"})";
  ASSERT_TRUE(poster.send(
      "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body.substr(0, 10)));
  ASSERT_TRUE(health.send("GET /healthz HTTP/1.1\r\nHost: x\r\n"));
  ASSERT_TRUE(Client(server.port()).get("/healthz"));  // both partial requests have been read
  kill(server.pid(), SIGTERM);
  // STOPPING=1 goes out in the same loop iteration that starts draining: what we send next is
  // read after it.
  ASSERT_TRUE(notify.wait_for("STOPPING=1"));
  // Its own listening socket is closed: a new connection is refused at once, not left waiting
  // unanswered until the process exits.
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    refused = !Client(server.port(), 1).connected();
    if (!refused) usleep(20 * 1000);  // STOPPING=1 is sent just before the drain starts
  }
  EXPECT_TRUE(refused);
  ASSERT_TRUE(poster.send(body.substr(10)));
  auto r = poster.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);  // acknowledged, so it must survive the restart
  EXPECT_EQ(r->header("connection"), "close");
  ASSERT_TRUE(health.send("\r\n"));
  auto h = health.read_response();
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 503);
  EXPECT_EQ(h->body, "draining\n");
  EXPECT_EQ(server.stop(SIGTERM), 0);
  ServerProcess restarted({"--data-dir", dir}, false);
  Client c(restarted.port());
  EXPECT_NE(c.get("/messages")->body.find("sent across the signal"), std::string::npos);
}
