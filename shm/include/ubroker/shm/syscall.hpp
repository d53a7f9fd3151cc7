// The errno boundary of the project: every syscall result becomes a Result here.
// EINTR is retried in retry_eintr() and nowhere else. Callable from any thread.
#pragma once

#include <cerrno>
#include <expected>
#include <system_error>

namespace ubroker::shm {

template <class T>
using Result = std::expected<T, std::error_code>;

// The current errno as an error_code (std::system_category).
[[nodiscard]] inline std::error_code last_error() noexcept {
  return {errno, std::system_category()};
}

[[nodiscard]] inline std::error_code errno_code(int err) noexcept {
  return {err, std::system_category()};
}

// Calls f() until it does not fail with EINTR; returns its last result (-1 with errno set on failure).
template <class F>
auto retry_eintr(F&& f) -> decltype(f()) {
  for (;;) {
    auto r = f();
    if (!(r == -1 && errno == EINTR)) return r;
  }
}

}  // namespace ubroker::shm
