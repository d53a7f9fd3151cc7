// How many fds the broker has, and may have: for status, and for the log when accept runs
// out of them.
#pragma once

#include <cstdint>
#include <optional>

namespace ubroker::broker {

// This process's open fds, counted in /proc/self/fd (0 when it cannot be read: out of fds).
[[nodiscard]] std::uint64_t open_fd_count();

// RLIMIT_NOFILE's soft limit, if getrlimit answers.
[[nodiscard]] std::optional<std::uint64_t> fd_limit();

}  // namespace ubroker::broker
