// Test support: a real redis-server (Debian's) of the test's own, on a free port in a temp dir,
// never a system service; stopped (SIGKILL if need be) when the object goes. Restartable on the
// same port and directory, so tests can take Redis away and bring it back with its data.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace testing_support {

class RedisServer {
 public:
  // Starts redis-server with `extra` arguments (e.g. {"--appendonly", "yes"}); waits until it
  // answers PING. Throws std::runtime_error when it cannot.
  explicit RedisServer(std::vector<std::string> extra = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  uint16_t port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  const std::string& dir() const { return dir_; }

  void stop(int sig = 15);  // and wait for it
  // Again, same port, directory and arguments; with `until_loaded` false, returns as soon as it
  // answers, maybe LOADING (still reading its data set).
  void start(bool until_loaded = true);
  void pause();   // SIGSTOP: open but stuck
  void resume();  // SIGCONT
  // One command through redis-cli (tests' own view of the data); its output, trimmed.
  std::string cli(const std::vector<std::string>& args) const;

 private:
  std::vector<std::string> extra_;
  std::string dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace testing_support
