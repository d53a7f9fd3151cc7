// Busy polling for an Asio event loop, shared by the broker and the client library: once the
// loop has no ready work it keeps checking (poll_one: a ready handler, or epoll without
// waiting) for up to `window` before it sleeps. Work arriving in the window skips the sleep and
// the wake-up, at the price of a core busy for the window after each burst. A zero window
// sleeps at once.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>

namespace ubroker::proto {

// Runs at most one handler: spins up to `window` for one, then sleeps up to `timeout` for it.
// Returns the number run (0: none within the time, or the loop is stopped).
template <class IoContext>
std::size_t run_one_with_busy_poll(IoContext& io, std::chrono::microseconds window,
                                   std::chrono::steady_clock::duration timeout) {
  using Clock = std::chrono::steady_clock;
  if (window.count() > 0) {
    const auto until = Clock::now() + std::min<Clock::duration>(window, timeout);
    do {
      if (io.poll_one() != 0) return 1;
    } while (!io.stopped() && Clock::now() < until);
    if (io.stopped()) return 0;
  }
  return io.run_one_for(timeout);
}

// Runs the loop until it is stopped or out of work.
template <class IoContext>
void run_with_busy_poll(IoContext& io, std::chrono::microseconds window) {
  if (window.count() <= 0) {
    io.run();
    return;
  }
  while (!io.stopped()) (void)run_one_with_busy_poll(io, window, std::chrono::hours(1));
}

}  // namespace ubroker::proto
