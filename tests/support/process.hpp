// A child process for tests: spawned with posix_spawn, stdout/stderr captured to files,
// waited for with a deadline, killed if still running when the handle goes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace ubroker::test {

class Process {
 public:
  // Starts argv[0] with the given arguments; output goes to files in a temporary directory.
  static Process spawn(std::vector<std::string> argv, const std::vector<std::string>& extra_env = {},
                       const std::string& stdin_path = "/dev/null");
  Process(Process&& o) noexcept;
  Process& operator=(Process&&) = delete;
  ~Process();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  void signal(int signo) const;
  // Exit status (as from waitpid) once it exits, or nullopt at the deadline.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  [[nodiscard]] std::string out() const;  // what it wrote to stdout so far
  [[nodiscard]] std::string err() const;  // ... and to stderr

 private:
  Process() = default;
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string out_path_, err_path_;
};

// Exit code of a process that exited normally, -signal if killed.
int exit_code(int status);

}  // namespace ubroker::test
