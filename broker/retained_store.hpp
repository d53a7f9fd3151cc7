// The retained last message per topic: what a new subscription receives before live traffic.
// Bounded in total bytes (topic + payload of every entry); when a store would exceed it,
// the entries touched longest ago are evicted and counted. An empty retained publish clears
// its topic. Payloads are copied in (a retained value outlives the frame that carried it),
// into the entry's own buffer, reused when the topic is overwritten.
// Event loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "topic_index.hpp"

namespace ubroker::broker {

struct RetainedMessage {
  std::string topic;
  std::vector<std::byte> payload;
  std::uint64_t sender_id = 0;
  std::uint32_t sender_uid = 0;
  std::uint32_t sender_pid = 0;
};

class RetainedStore {
 public:
  explicit RetainedStore(std::uint64_t max_bytes) : max_bytes_(max_bytes) {}

  // Stores (or, with an empty payload, clears) the topic's retained message.
  void put(std::string_view topic, std::span<const std::byte> payload, std::uint64_t sender_id,
           std::uint32_t sender_uid, std::uint32_t sender_pid);

  // Calls fn for every retained message whose topic the (valid) pattern matches.
  void for_each_match(std::string_view pattern, const std::function<void(const RetainedMessage&)>& fn) const;

  [[nodiscard]] std::size_t size() const noexcept { return by_topic_.size(); }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }
  [[nodiscard]] std::uint64_t evicted() const noexcept { return evicted_; }

 private:
  using Lru = std::list<RetainedMessage>;  // front: touched longest ago
  static std::uint64_t cost(const RetainedMessage& m) { return m.topic.size() + m.payload.size(); }
  void erase(Lru::iterator it);

  std::uint64_t max_bytes_;
  std::uint64_t bytes_ = 0;
  std::uint64_t evicted_ = 0;
  Lru lru_;
  std::unordered_map<std::string_view, Lru::iterator> by_topic_;  // keys view into lru_ entries
};

}  // namespace ubroker::broker
