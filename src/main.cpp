// sse-chat: parse the configuration, open the logs, start the server (its storage and listener),
// run the loop; or `sse-chat token`, which prints a token.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "config.h"
#include "log.h"
#include "reactor.h"
#include "server.h"
#include "token_command.h"

#ifndef SSE_CHAT_VERSION
#define SSE_CHAT_VERSION "dev"
#endif
#ifndef SSE_CHAT_STATIC_DIR
#define SSE_CHAT_STATIC_DIR "/usr/local/share/sse-chat/static"
#endif

namespace {

bool exists(const std::string& path) {
  return access(path.c_str(), R_OK) == 0;
}

// ./static when run from a checkout, else the installed page.
std::string default_static_dir() {
  if (exists("static/index.html")) return "static";
  return SSE_CHAT_STATIC_DIR;
}

// A listening socket handed over by systemd (socket activation), or -1; -2 with `error` when what
// was handed over cannot be accepted on (a datagram socket, one not listening: Accept=yes).
int inherited_listener(std::string& error) {
  int n = sd_listen_fds(1);
  if (n <= 0) return -1;
  if (n > 1) sse::log::warn("more than one socket passed; using the first", "count", n);
  if (sd_is_socket(SD_LISTEN_FDS_START, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
    error =
        "the socket systemd passed is not a listening stream socket (ListenStream=, "
        "Accept=no)";
    return -2;
  }
  return SD_LISTEN_FDS_START;
}

void start_watchdog(sse::Reactor& reactor) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
  auto interval = std::chrono::milliseconds(std::max<uint64_t>(usec / 2000, 1));
  if (!reactor.every(interval, [] { sd_notify(0, "WATCHDOG=1"); }))
    sse::log::error("no timer for the systemd watchdog: systemd will restart the server");
}

// A shell's `2>&-` leaves fd 2 free for the next file opened, and the log writes to fd 2: a
// client's socket there would get it. /dev/null holds fds 0 to 2 that came closed.
void hold_closed_stdio() {
  for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; ++fd)
    if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) open("/dev/null", O_RDWR);  // takes `fd`
}

}  // namespace

int main(int argc, char** argv) {
  hold_closed_stdio();
  if (argc > 1 && std::string_view(argv[1]) == "token") {
    std::string out, err;
    int status = sse::token_command(argc - 1, argv + 1, out, err);
    std::fputs(out.c_str(), stdout);
    std::fputs(err.c_str(), stderr);
    return status;
  }
  sse::Config config;
  sse::ParseOutcome outcome = sse::parse_config(argc, argv, config);
  switch (outcome.kind) {
    case sse::ParseOutcome::Help:
      std::fputs(outcome.message.c_str(), stdout);
      return 0;
    case sse::ParseOutcome::Version:
      std::printf("sse-chat %s\n", SSE_CHAT_VERSION);
      return 0;
    case sse::ParseOutcome::Error:
      std::fprintf(stderr, "sse-chat: %s\n", outcome.message.c_str());
      return 2;
    case sse::ParseOutcome::Run:
      break;
  }
  sse::log::set_level(config.log_level);
  std::string log_error;
  if (!sse::log::set_file(config.log_file, log_error) ||
      !sse::log::set_access_file(config.access_log, log_error)) {
    std::fprintf(stderr, "sse-chat: %s\n", log_error.c_str());
    return 2;
  }
  if (config.static_dir.empty()) config.static_dir = default_static_dir();
  signal(SIGPIPE, SIG_IGN);
  signal(SIGXFSZ, SIG_IGN);  // past a file-size limit a write fails with EFBIG: a 503, not death

  sse::Reactor reactor;
  sse::Server server(reactor, config);
  static bool ready = false;  // READY=1 went to systemd
  // Before any thread exists (the journal's syncer), so every thread inherits the blocked mask
  // and SIGTERM reaches the loop instead of killing the process from another thread.
  bool signals = reactor.on_signals({SIGINT, SIGTERM, SIGHUP}, [&](int sig) {
    if (sig == SIGHUP) {
      sse::log::reopen_files();
      return server.reload_keys();
    }
    // Stopped before it was ready (a node on Redis still warming up): said as one, or systemd
    // would count an exit before READY=1 a failure and start it again.
    sd_notify(0, ready ? "STOPPING=1" : "READY=1\nSTOPPING=1");
    server.begin_shutdown();
  });
  if (!signals) {
    std::fprintf(stderr, "sse-chat: cannot take signals through the loop: %s\n", strerror(errno));
    return 1;
  }
  // Ready once it takes connections: a node on Redis when it is warm, so that a rolling restart
  // (systemctl restart, one node after another) waits for each.
  server.on_ready = [] {
    ready = true;
    sd_notify(0, "READY=1");
  };
  // Exit status 2 for what only a change of configuration mends: systemd does not start it again.
  std::string error;
  int listener = inherited_listener(error);
  if (listener == -2 || !server.configure(error, listener >= 0)) {
    sse::log::error("bad configuration", "error", error);
    return 2;
  }
  if (!server.start(error, listener)) {
    sse::log::error("cannot start", "error", error);
    return 1;
  }
  start_watchdog(reactor);

  // The address on stdout, alone on a line, so scripts and tests can use --listen with port 0.
  const std::string& address = server.address();
  if (address.starts_with("unix:"))
    std::printf("listening on %s\n", address.c_str());
  else
    std::printf("listening on http://%s/\n", address.c_str());
  std::fflush(stdout);
  sse::log::info("sse-chat started", "version", SSE_CHAT_VERSION, "address", server.address(),
                 "static_dir", config.static_dir, "storage",
                 !config.redis.empty() ? "redis " + config.redis_prefix
                 : config.journal      ? config.data_dir
                                       : std::string("memory only"),
                 "sends", server.sends_batched() ? "io_uring" : "writev");
  reactor.run();
  sse::log::info("sse-chat stopped");
  return 0;
}
