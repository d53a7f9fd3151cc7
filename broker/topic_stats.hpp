// What brokerctl shows per topic: its traffic and its requests. Kept by the Router apart from
// the route cache (which is cleared on every subscription change) and bounded in the number
// of topics tracked. Event loop thread only.
#pragma once

#include <cstdint>
#include <vector>

#include "service_counts.hpp"

namespace ubroker::broker {

struct TopicStats {
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;
  std::uint64_t messages_at_last_tick = 0;
  std::uint64_t requests_at_last_tick = 0;
  std::uint64_t active_tick = 0;          // the last rate tick that saw messages here
  double rate = 0;                        // messages/s, smoothed over recent ticks
  std::vector<std::uint64_t> publishers;  // distinct publisher ids, up to kMaxPublishersTracked
  ServiceCounts served;                   // requests on this topic
  std::uint64_t requests_pending = 0;     // in flight (their PendingRequest points here: kept while > 0)
};

}  // namespace ubroker::broker
