// How the requests to a service ended, and how long its answers took: kept per service
// registration (Subscription), per topic (TopicStats) and, without latency, per client.
// What brokerctl shows in `subs`, `topics` and `clients`. Event loop thread only.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace ubroker::broker {

struct ServiceCounts {
  std::uint64_t requests = 0;  // forwarded to a responder
  std::uint64_t replies = 0;   // answered with a reply
  std::uint64_t errors = 0;    // answered with an error reply
  std::uint64_t timeouts = 0;  // not answered by the deadline (or the responder left first)
  std::uint64_t latency_total_us = 0;  // over replies and errors: request forwarded -> answer read
  std::uint64_t latency_max_us = 0;

  void answered(bool error, std::chrono::steady_clock::duration took) noexcept {
    ++(error ? errors : replies);
    const auto us = static_cast<std::uint64_t>(
        std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(took).count()));
    latency_total_us += us;
    latency_max_us = std::max(latency_max_us, us);
  }
  [[nodiscard]] std::uint64_t latency_mean_us() const noexcept {
    const std::uint64_t n = replies + errors;
    return n == 0 ? 0 : latency_total_us / n;
  }
};

}  // namespace ubroker::broker
