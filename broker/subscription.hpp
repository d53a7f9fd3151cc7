// A client's subscription as the broker keeps it. Owned and indexed by the Router (stable
// address); `owner` is the outbox of the client it delivers to. Event loop thread only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "service_counts.hpp"
#include "ubroker.pb.h"

namespace ubroker::broker {

class Outbox;
struct Group;

struct Subscription {
  Outbox* owner = nullptr;
  std::uint64_t id = 0;  // chosen by the client, unique per session
  std::string pattern;
  Group* group = nullptr;  // queue group, or nullptr
  wire::Overflow overflow = wire::BLOCK;
  bool service = false;  // a responder registration (SERVE): receives REQUESTs, not DELIVERs
  std::uint64_t cost = 0;  // charged to the owner's account (Resource::kSubscriptionBytes)
  std::uint64_t delivered = 0;
  std::uint64_t dropped = 0;             // total, reported in the UNSUBSCRIBE ack
  std::uint64_t dropped_unreported = 0;  // since the last delivery (carried in the next DELIVER)
  ServiceCounts served;                  // a service's requests
};

// Subscriptions sharing (pattern, name): each message goes to one member.
struct Group {
  std::string pattern;
  std::string name;
  std::vector<Subscription*> members;
  std::size_t next = 0;  // round-robin cursor
};

}  // namespace ubroker::broker
