// futex(2) FUTEX_WAIT / FUTEX_WAKE, shared (not private) variants.
#include "ubroker/shm/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ctime>

namespace ubroker::shm {
namespace {

long futex(const std::atomic<std::uint32_t>& word, int op, std::uint32_t val, const timespec* ts) {
  // The kernel reads the word itself; the cast only drops constness for the syscall ABI.
  return ::syscall(SYS_futex, const_cast<std::atomic<std::uint32_t>*>(&word), op, val, ts, nullptr, 0);
}

}  // namespace

Result<WaitResult> futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                              std::chrono::nanoseconds timeout) {
  timespec ts{};
  const timespec* tsp = nullptr;
  if (timeout.count() >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
    tsp = &ts;
  }
  // EINTR is a spurious wake-up here: the caller re-checks and recomputes its timeout.
  if (futex(word, FUTEX_WAIT, expected, tsp) == 0) return WaitResult::kWoken;
  switch (errno) {
    case EAGAIN: return WaitResult::kValueChanged;
    case ETIMEDOUT: return WaitResult::kTimedOut;
    case EINTR: return WaitResult::kWoken;
    default: return std::unexpected(last_error());
  }
}

Result<int> futex_wake(const std::atomic<std::uint32_t>& word, int count) {
  const long n = futex(word, FUTEX_WAKE, static_cast<std::uint32_t>(count), nullptr);
  if (n < 0) return std::unexpected(last_error());
  return static_cast<int>(n);
}

}  // namespace ubroker::shm
