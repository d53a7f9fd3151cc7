// Futex wait and wake on a 32-bit atomic that may live in memory shared between processes.
// Never FUTEX_PRIVATE_FLAG: the kernel keys a shared futex by the page's file and offset, so
// a waiter in one process is woken by a wake in another through a different mapping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "ubroker/shm/syscall.hpp"

namespace ubroker::shm {

static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));

enum class WaitResult { kWoken, kValueChanged, kTimedOut };

// Sleeps while `word` holds `expected`, at most `timeout` (a negative timeout: forever).
// kWoken may be spurious; callers re-check their condition.
[[nodiscard]] Result<WaitResult> futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                                            std::chrono::nanoseconds timeout);

// Wakes up to `count` waiters on `word`; returns how many were woken.
Result<int> futex_wake(const std::atomic<std::uint32_t>& word, int count);

}  // namespace ubroker::shm
