// Busy polling for an Asio event loop, shared by the broker and the client library's I/O
// thread: once the loop has no ready work it keeps checking (poll_one: a ready handler, or
// epoll without waiting) for up to `window` before it sleeps in run_one. Work arriving in the
// window skips the sleep and the wake-up, at the price of a core busy for the window after
// each burst. A zero window is plain run().
#pragma once

#include <chrono>

namespace ubroker::proto {

template <class IoContext>
void run_with_busy_poll(IoContext& io, std::chrono::microseconds window) {
  if (window.count() <= 0) {
    io.run();
    return;
  }
  using Clock = std::chrono::steady_clock;
  while (!io.stopped()) {
    const auto until = Clock::now() + window;
    bool ran = false;
    do {
      ran = io.poll_one() != 0;
    } while (!ran && !io.stopped() && Clock::now() < until);
    if (!ran && !io.stopped()) io.run_one();
  }
}

}  // namespace ubroker::proto
