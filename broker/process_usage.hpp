// What the broker process uses as the kernel counts it: fds (for status, and for the log when
// accept runs out of them) and resident memory (for status, beside what the accounts charge).
#pragma once

#include <cstdint>
#include <optional>

namespace ubroker::broker {

// This process's open fds, counted in /proc/self/fd (0 when it cannot be read: out of fds).
[[nodiscard]] std::uint64_t open_fd_count();

// RLIMIT_NOFILE's soft limit, if getrlimit answers.
[[nodiscard]] std::optional<std::uint64_t> fd_limit();

// This process's resident set in bytes (/proc/self/statm; 0 when it cannot be read).
[[nodiscard]] std::uint64_t resident_bytes();

}  // namespace ubroker::broker
