#include "stdin_input.hpp"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include "context.hpp"

namespace ubroker::ctl {

StdinInput::StdinInput() {
  sigset_t interrupts;
  ::sigemptyset(&interrupts);
  ::sigaddset(&interrupts, SIGINT);
  ::sigaddset(&interrupts, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &interrupts, &before_);  // fails only for a bad `how`
}

StdinInput::~StdinInput() { ::pthread_sigmask(SIG_SETMASK, &before_, nullptr); }

StdinInput::Got StdinInput::read_some(std::string& into) {
  for (;;) {
    if (g_interrupted) return Got::kInterrupted;
    pollfd in{.fd = STDIN_FILENO, .events = POLLIN, .revents = 0};
    if (::ppoll(&in, 1, nullptr, &before_) < 0) {
      if (errno == EINTR) continue;  // g_interrupted says whether it was ours
      return Got::kError;
    }
    char buf[65536];
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n > 0) {
      into.append(buf, static_cast<std::size_t>(n));
      return Got::kData;
    }
    if (n == 0) return Got::kEnd;
    if (errno != EINTR && errno != EAGAIN) return Got::kError;
  }
}

StdinInput::Got StdinInput::read_to_end(std::string& into) {
  for (;;) {
    // A terminal's end of input (^D) is not sticky: once seen, it is the end.
    if (const Got got = read_some(into); got != Got::kData) return got;
  }
}

}  // namespace ubroker::ctl
