// Test support: runs the real sse-chat binary on an ephemeral port and talks to it over real
// sockets. Every blocking read has a generous receive timeout, only so a broken server fails the
// test instead of hanging it; no assertion depends on timing.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace testing_support {

std::string binary_path();
std::string static_dir();
std::string make_temp_dir();
// A deploy's static directories in `dir`: static/ (index.html "old page") and static.new/
// ("new page"); swap_static_dir() renames the new one into place (the old one to static.old).
void make_static_dirs(const std::string& dir);
void swap_static_dir(const std::string& dir);

struct LaunchOptions {
  std::vector<std::string> env;  // extra "NAME=value" entries
  int listen_fd = -1;            // handed over as fd 3 with LISTEN_FDS=1 (socket activation)
  int max_fds = 0;               // RLIMIT_NOFILE (soft and hard) for the server, 0: inherited
  long max_file_bytes = 0;       // RLIMIT_FSIZE for the server, 0: inherited
  bool default_limits = false;   // keep the server's own rate and stream limits
  bool may_refuse = false;  // an exit before listening is no error: port() is 0, stop() its status
  int stderr_fd = -1;       // the server's stderr (log() is then empty); -1: a file log() reads
  bool closed_stdio = false;  // stdin and stderr closed, as a shell's `<&- 2>&-` leaves them
};

// A NOTIFY_SOCKET for the server to talk to, as systemd provides.
class NotifySocket {
 public:
  NotifySocket();
  ~NotifySocket();
  NotifySocket(const NotifySocket&) = delete;
  std::string env() const { return "NOTIFY_SOCKET=" + path_; }
  // Waits up to `timeout_ms` for a datagram containing `what`; false on timeout.
  bool wait_for(const std::string& what, int timeout_ms = 20000);

 private:
  std::string path_;
  int fd_;
};

class ServerProcess {
 public:
  // Starts sse-chat with `args` (plus --listen 127.0.0.1:0 unless given); waits for its address.
  explicit ServerProcess(std::vector<std::string> args = {}, bool default_no_journal = true,
                         const LaunchOptions& launch = {});
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  bool running();
  // Sends `sig` and waits for the exit; returns the exit status (128+signal if killed).
  int stop(int sig);
  // Everything the server wrote to stderr so far (after stop(): all of it).
  std::string log();

 private:
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  std::string log_path_;
  int exit_status_ = -1;
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

class Client {
 public:
  explicit Client(uint16_t port, int timeout_s = 20);
  ~Client();
  Client(Client&& other) noexcept;
  Client(const Client&) = delete;

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  bool send(const std::string& bytes);
  // Reads one response (Content-Length framed; HEAD has no body when `head`). nullopt on EOF/error.
  std::optional<HttpResponse> read_response(bool head = false);
  // Reads response head only (for streams), leaving the body to read_event().
  std::optional<HttpResponse> read_head();
  // True when the server closed the connection (reads until EOF; discards data).
  bool wait_closed();
  void close();

  // The request helpers send and read in one go.
  std::optional<HttpResponse> get(const std::string& path, const std::string& extra_headers = "");
  std::optional<HttpResponse> post_json(const std::string& body,
                                        const std::string& extra_headers = "");
  std::optional<HttpResponse> post_form(const std::string& body);

  // What was read of the body (of a chunked stream: its chunks' data, as any HTTP client sees it).
  std::string& buffer() { return buf_; }
  bool fill();  // reads more into buf_; false on EOF/error
  // A chunked body ended with its last chunk (a stream the server closed on purpose).
  bool body_ended() const { return last_chunk_seen_; }

 private:
  std::optional<HttpResponse> parse_head();
  void dechunk();

  int fd_ = -1;
  std::string buf_;
  bool chunked_ = false;  // set by read_head for a chunked body
  std::string raw_;       // chunked bytes not decoded yet
  size_t chunk_left_ = 0;
  bool chunk_crlf_ = false;  // the CRLF after a chunk's data is next
  bool last_chunk_seen_ = false;
};

struct SseEvent {
  std::string id;
  std::string event;  // "" for the default type
  std::string data;
  std::string raw;
};

// Reads an event stream from a Client whose response head was read.
class SseReader {
 public:
  explicit SseReader(Client& client) : client_(client) {}
  // Next dispatched event (comments, retry-only blocks and the opening `ready` event are skipped
  // but remembered).
  std::optional<SseEvent> next();
  // Next chat message (default event type), skipping presence and reset events.
  std::optional<SseEvent> next_message();
  int comments_seen() const { return comments_; }
  std::optional<int> retry_ms() const { return retry_; }
  // The id an EventSource would send back as Last-Event-ID (set by blocks without data too).
  const std::string& last_event_id() const { return last_event_id_; }

 private:
  Client& client_;
  int comments_ = 0;
  std::optional<int> retry_;
  std::string last_event_id_;
};

// Opens GET /events (with optional Last-Event-ID) and checks the 200 head.
struct Subscription {
  Client client;
  SseReader reader;
  explicit Subscription(uint16_t port, const std::string& last_event_id = "",
                        const std::string& query = "");
  Subscription(const Subscription&) = delete;
  bool ok = false;
};

// POSTs {"user":..,"text":..} and returns the id from the 201 (0 on failure).
uint64_t post_message(uint16_t port, const std::string& user, const std::string& text);

// POSTs a JSON `body` to `target` with `headers` (each line ending in CRLF; Host among them) on
// a connection of its own; the answer's status (0 when none came).
int post_status(uint16_t port, const std::string& target, const std::string& headers,
                const std::string& body);

// The value of an unlabelled metric from GET /metrics (UINT64_MAX if absent or unreachable).
uint64_t metric(uint16_t port, const std::string& name);

// The value of the first member `name` in flat JSON: a string's contents (unescaped quotes not
// handled) or a number's digits; "" if absent.
std::string field(const std::string& json, const std::string& name);

// Extracts "id":N from a JSON body (0 if absent).
uint64_t json_id(const std::string& body);

// The ids of the messages in a JSON array of messages (GET /messages), in order.
std::vector<uint64_t> ids_in(const std::string& json_array);

// Whether `holds` becomes true within 5 s, asked every 20 ms: for what the server does by itself
// in its own time (a once-a-second check).
bool eventually(const std::function<bool()>& holds);
// How many times `what` occurs in `text` (a log's lines, say).
size_t occurrences(const std::string& text, const std::string& what);

}  // namespace testing_support
