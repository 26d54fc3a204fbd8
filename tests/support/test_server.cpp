#include "test_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

namespace testing_support {

std::string binary_path() {
  const char* p = std::getenv("SSE_CHAT_BIN");
  return p ? p : "./sse-chat";
}

std::string static_dir() {
  const char* p = std::getenv("SSE_CHAT_STATIC");
  return p ? p : "static";
}

std::string make_temp_dir() {
  char tmpl[] = "/tmp/sse-chat-test-XXXXXX";
  char* d = mkdtemp(tmpl);
  if (!d) throw std::runtime_error("mkdtemp failed");
  return d;
}

void make_static_dirs(const std::string& dir) {
  for (auto [name, page] :
       {std::pair{"/static", "old page"}, std::pair{"/static.new", "new page"}}) {
    mkdir((dir + name).c_str(), 0755);
    std::ofstream(dir + name + "/index.html") << page;
  }
}

void swap_static_dir(const std::string& dir) {
  if (rename((dir + "/static").c_str(), (dir + "/static.old").c_str()) != 0 ||
      rename((dir + "/static.new").c_str(), (dir + "/static").c_str()) != 0)
    throw std::runtime_error("cannot swap the static directories in " + dir);
}

ServerProcess::ServerProcess(std::vector<std::string> args, bool default_no_journal,
                             const LaunchOptions& launch) {
  bool has_listen = false, has_static = false, has_journal_flag = false;
  for (const auto& a : args) {
    has_listen |= a == "--listen";
    has_static |= a == "--static-dir";
    has_journal_flag |= a == "--data-dir" || a == "--no-journal";
  }
  if (!has_listen && launch.listen_fd < 0) args.insert(args.end(), {"--listen", "127.0.0.1:0"});
  if (!has_static) args.insert(args.end(), {"--static-dir", static_dir()});
  if (default_no_journal && !has_journal_flag) args.push_back("--no-journal");
  // Tests post from one address far faster than a person: no rate limits unless a test asks.
  bool has_rate = false;
  for (const auto& a : args) has_rate |= a == "--post-rate" || a == "--subscribe-rate";
  if (!has_rate && !launch.default_limits)
    args.insert(args.end(),
                {"--post-rate", "0", "--subscribe-rate", "0", "--max-streams-per-ip", "0"});

  log_path_ = make_temp_dir() + "/stderr.log";
  int out_pipe[2];
  if (pipe(out_pipe) != 0) throw std::runtime_error("pipe failed");
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a test that was killed
    dup2(out_pipe[1], STDOUT_FILENO);
    int err = launch.stderr_fd >= 0 ? launch.stderr_fd
                                    : open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(err, STDERR_FILENO);
    close(out_pipe[0]);
    if (launch.closed_stdio) {
      close(STDIN_FILENO);
      close(STDERR_FILENO);
    }
    for (const std::string& kv : launch.env) putenv(const_cast<char*>(kv.c_str()));
    if (launch.max_fds > 0) {
      rlimit lim{static_cast<rlim_t>(launch.max_fds), static_cast<rlim_t>(launch.max_fds)};
      setrlimit(RLIMIT_NOFILE, &lim);
    }
    if (launch.max_file_bytes > 0) {
      rlimit lim{static_cast<rlim_t>(launch.max_file_bytes),
                 static_cast<rlim_t>(launch.max_file_bytes)};
      setrlimit(RLIMIT_FSIZE, &lim);
    }
    if (launch.listen_fd >= 0) {
      if (launch.listen_fd == 3) {
        fcntl(3, F_SETFD, 0);  // dup2 onto itself would leave close-on-exec set
      } else {
        dup2(launch.listen_fd, 3);  // SD_LISTEN_FDS_START; LISTEN_PID is ours, and exec keeps it
      }
      setenv("LISTEN_FDS", "1", 1);
      setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
    }
    std::vector<char*> argv;
    std::string bin = binary_path();
    argv.push_back(bin.data());
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  close(out_pipe[1]);
  std::string line;
  char c;
  while (read(out_pipe[0], &c, 1) == 1 && c != '\n') line += c;
  close(out_pipe[0]);
  size_t colon = line.rfind(':');
  if (line.find("listening on") == std::string::npos || colon == std::string::npos) {
    if (launch.may_refuse) {  // it closed its stdout: it has exited or is about to
      int status = 0;
      waitpid(pid_, &status, 0);
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return;
    }
    stop(SIGKILL);
    throw std::runtime_error("server did not start: " + line + "\n" + log());
  }
  if (line.find("listening on unix:") == std::string::npos)  // a Unix socket has no port
    port_ = static_cast<uint16_t>(std::stoi(line.substr(colon + 1)));
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && exit_status_ < 0) stop(SIGKILL);
}

bool ServerProcess::running() {
  if (exit_status_ >= 0) return false;
  int status;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

NotifySocket::NotifySocket() : path_(make_temp_dir() + "/notify") {
  fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
  bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
}

NotifySocket::~NotifySocket() {
  ::close(fd_);
}

bool NotifySocket::wait_for(const std::string& what, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    if (std::string(buf, static_cast<size_t>(n)).find(what) != std::string::npos) return true;
  }
}

int ServerProcess::stop(int sig) {
  if (exit_status_ >= 0) return exit_status_;
  kill(pid_, sig);
  int status = 0;
  waitpid(pid_, &status, 0);
  exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return exit_status_;
}

std::string ServerProcess::log() {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Client::Client(uint16_t port, int timeout_s) {
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{timeout_s, 0};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) close();
}

Client::~Client() {
  close();
}

Client::Client(Client&& other) noexcept
    : fd_(other.fd_),
      buf_(std::move(other.buf_)),
      chunked_(other.chunked_),
      raw_(std::move(other.raw_)),
      chunk_left_(other.chunk_left_),
      chunk_crlf_(other.chunk_crlf_),
      last_chunk_seen_(other.last_chunk_seen_) {
  other.fd_ = -1;
}

void Client::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool Client::send(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

bool Client::fill() {
  if (fd_ < 0) return false;
  char tmp[65536];
  ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
  if (n <= 0) return false;
  if (!chunked_) {
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  raw_.append(tmp, static_cast<size_t>(n));
  dechunk();
  return true;
}

// Undoes the chunked coding as it arrives; a malformed one fails the test that reads it.
void Client::dechunk() {
  while (!last_chunk_seen_) {
    if (chunk_left_ > 0) {
      size_t n = std::min(chunk_left_, raw_.size());
      buf_.append(raw_, 0, n);
      raw_.erase(0, n);
      chunk_left_ -= n;
      if (chunk_left_ > 0) return;
      chunk_crlf_ = true;
    }
    if (chunk_crlf_) {
      if (raw_.size() < 2) return;
      if (raw_.compare(0, 2, "\r\n") != 0) throw std::runtime_error("chunk data not ended by CRLF");
      raw_.erase(0, 2);
      chunk_crlf_ = false;
    }
    size_t eol = raw_.find("\r\n");
    if (eol == std::string::npos) return;
    size_t size = std::stoul(raw_.substr(0, eol), nullptr, 16);
    raw_.erase(0, eol + 2);
    if (size == 0) last_chunk_seen_ = true;
    chunk_left_ = size;
  }
}

std::optional<HttpResponse> Client::read_head() {
  auto r = parse_head();
  if (r && r->header("transfer-encoding") == "chunked") {  // a stream's body, from here on
    chunked_ = true;
    raw_ = std::move(buf_);
    buf_.clear();
    dechunk();
  }
  return r;
}

std::optional<HttpResponse> Client::parse_head() {
  size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
    if (!fill()) return std::nullopt;
  std::string head = buf_.substr(0, end);
  buf_.erase(0, end + 4);
  HttpResponse r;
  std::istringstream lines(head);
  std::string line;
  std::getline(lines, line);
  if (line.size() < 12 || line.compare(0, 9, "HTTP/1.1 ") != 0) return std::nullopt;
  r.status = std::stoi(line.substr(9, 3));
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    size_t v = colon + 1;
    while (v < line.size() && line[v] == ' ') ++v;
    r.headers[name] = line.substr(v);
  }
  return r;
}

std::optional<HttpResponse> Client::read_response(bool head) {
  for (;;) {
    auto r = parse_head();
    if (!r) return std::nullopt;
    if (r->status == 100) continue;  // interim response
    if (!head) {
      size_t len =
          r->headers.count("content-length") ? std::stoul(r->headers["content-length"]) : 0;
      while (buf_.size() < len)
        if (!fill()) return std::nullopt;
      r->body = buf_.substr(0, len);
      buf_.erase(0, len);
    }
    return r;
  }
}

bool Client::wait_closed() {
  while (fill()) {
  }
  char c;
  ssize_t n = ::recv(fd_, &c, 1, 0);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

std::optional<HttpResponse> Client::get(const std::string& path, const std::string& extra_headers) {
  if (!send("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers + "\r\n"))
    return std::nullopt;
  return read_response();
}

std::optional<HttpResponse> Client::post_json(const std::string& body,
                                              const std::string& extra_headers) {
  std::string req =
      "POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
      extra_headers + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  if (!send(req)) return std::nullopt;
  return read_response();
}

std::optional<HttpResponse> Client::post_form(const std::string& body) {
  std::string req =
      "POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
      "application/x-www-form-urlencoded\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  if (!send(req)) return std::nullopt;
  return read_response();
}

std::optional<SseEvent> SseReader::next() {
  std::string& buf = client_.buffer();
  for (;;) {
    size_t end;
    while ((end = buf.find("\n\n")) == std::string::npos)
      if (!client_.fill()) return std::nullopt;
    std::string block = buf.substr(0, end);
    buf.erase(0, end + 2);
    SseEvent ev;
    ev.raw = block;
    bool has_data = false;
    std::istringstream lines(block);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.empty()) continue;
      if (line[0] == ':') {
        ++comments_;
        continue;
      }
      size_t colon = line.find(':');
      std::string field = line.substr(0, colon);
      std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
      if (!value.empty() && value[0] == ' ') value.erase(0, 1);
      if (field == "id")
        ev.id = last_event_id_ = value;
      else if (field == "event")
        ev.event = value;
      else if (field == "retry")
        retry_ = std::stoi(value);
      else if (field == "data") {
        if (has_data) ev.data += "\n";
        ev.data += value;
        has_data = true;
      }
    }
    if (has_data && ev.event != "ready") return ev;  // the opening: its id is remembered
  }
}

std::optional<SseEvent> SseReader::next_message() {
  for (;;) {
    auto ev = next();
    if (!ev || ev->event.empty()) return ev;
  }
}

Subscription::Subscription(uint16_t port, const std::string& last_event_id,
                           const std::string& query)
    : client(port), reader(client) {
  std::string req =
      "GET /events" + query + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n";
  if (!last_event_id.empty()) req += "Last-Event-ID: " + last_event_id + "\r\n";
  req += "\r\n";
  if (!client.send(req)) return;
  auto head = client.read_head();
  ok = head && head->status == 200 && head->header("content-type") == "text/event-stream";
}

uint64_t metric(uint16_t port, const std::string& name) {
  Client m(port);
  auto r = m.get("/metrics");
  if (!r) return UINT64_MAX;
  size_t p = r->body.find("\n" + name + " ");
  return p == std::string::npos ? UINT64_MAX : std::stoull(r->body.substr(p + name.size() + 2));
}

uint64_t json_id(const std::string& body) {
  size_t p = body.find("\"id\":");
  if (p == std::string::npos) return 0;
  return std::strtoull(body.c_str() + p + 5, nullptr, 10);
}

std::string field(const std::string& json, const std::string& name) {
  std::string key = "\"" + name + "\":";
  size_t p = json.find(key);
  if (p == std::string::npos) return "";
  p += key.size();
  if (json[p] == '"') return json.substr(p + 1, json.find('"', p + 1) - p - 1);
  size_t end = json.find_first_of(",}]", p);
  return json.substr(p, end - p);
}

uint64_t post_message(uint16_t port, const std::string& user, const std::string& text) {
  Client c(port);
  std::string body = "{\"user\":\"" + user + "\",\"text\":\"" + text + "\"}";
  auto r = c.post_json(body);
  if (!r || r->status != 201) return 0;
  return json_id(r->body);
}

int post_status(uint16_t port, const std::string& target, const std::string& headers,
                const std::string& body) {
  Client c(port);
  if (!c.send("POST " + target + " HTTP/1.1\r\n" + headers +
              "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
              "\r\n\r\n" + body))
    return 0;
  auto r = c.read_response();
  return r ? r->status : 0;
}

std::vector<uint64_t> ids_in(const std::string& json_array) {
  std::vector<uint64_t> ids;
  size_t p = 0;
  while ((p = json_array.find("{\"id\":", p)) != std::string::npos) {
    p += 6;
    ids.push_back(std::strtoull(json_array.c_str() + p, nullptr, 10));
  }
  return ids;
}

bool eventually(const std::function<bool()>& holds) {
  for (int tries = 0; tries < 250; ++tries) {
    if (holds()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return holds();
}

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace testing_support
