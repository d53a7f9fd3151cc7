// What the lane tests share: numbered payloads, the lanes' books, and waiting for a lane.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "test_util.hpp"
#include "ubroker/client.hpp"

namespace ubroker::test {

// Said in each test's config so these tests test lanes whatever the default.
inline const std::string kLanesOn = "[lanes]\nenabled = true\n";

inline std::string number(std::uint64_t n) { return std::string(reinterpret_cast<const char*>(&n), sizeof n); }
inline std::uint64_t number_of(std::span<const std::byte> p) {
  std::uint64_t n = ~0ull;
  if (p.size() >= sizeof n) std::memcpy(&n, p.data(), sizeof n);
  return n;
}

inline void expect_books_balance(const wire::BrokerStatus& st) {
  EXPECT_EQ(st.lane_accepted(), st.lane_delivered() + st.lane_dropped() + st.lane_lost() + st.lane_queued())
      << st.ShortDebugString();
}

// Publishes number 0 on `topic` until a lane carried one (the first ones set it up), `sub`
// taking what comes meanwhile.
inline bool lane_carries(Client& pub, const std::string& topic, Client& sub) {
  return eventually([&] {
    if (!pub.publish(topic, number(0))) return false;
    while (sub.receive(std::chrono::milliseconds(0))) {
    }
    return broker_status(pub).lane_delivered() > 0;
  });
}

}  // namespace ubroker::test
