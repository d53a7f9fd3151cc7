// A real brokerd for a test: its own temporary directory and socket, an optional config
// file, started and waited for until it accepts connections; SIGTERM'd (and its exit status
// checked by the caller) or killed when the test is done.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "process.hpp"
#include "ubroker/client.hpp"

namespace ubroker::test {

class BrokerProcess {
 public:
  // Starts brokerd with `config_toml` (may be empty) and extra arguments, under `wrapper`
  // (a command line that execs the rest, e.g. prlimit) if one is given.
  explicit BrokerProcess(const std::string& config_toml = "", std::vector<std::string> extra_args = {},
                         std::vector<std::string> wrapper = {});
  ~BrokerProcess();

  [[nodiscard]] const std::string& socket() const noexcept { return socket_; }
  [[nodiscard]] const std::string& dir() const noexcept { return dir_; }
  [[nodiscard]] Process& process() noexcept { return *process_; }

  // A client connected to this broker.
  [[nodiscard]] Client connect(const std::string& name = "test");

  // SIGTERM and wait; returns the exit code (or -1000 if it did not exit in time).
  int stop(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // SIGKILL and wait: a crash.
  void kill();
  // A new brokerd on the same socket path and config, once the last one has exited.
  void restart();

 private:
  void start();
  std::vector<std::string> argv_;
  std::string dir_;
  std::string socket_;
  std::optional<Process> process_;
};

// Raises RLIMIT_NOFILE's soft limit to the hard limit (tests with many connections).
void raise_fd_limit();

}  // namespace ubroker::test
