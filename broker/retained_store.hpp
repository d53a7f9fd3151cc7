// The retained last message per topic: what a new subscription receives before live traffic.
//
// Every value is charged at its real cost (payload, topic, entry, one index node per token)
// to the uid that published it, against limits.retained_max_bytes_per_uid, and all of them
// together against limits.retained_max_bytes. A uid past its share evicts its own oldest
// values; when the store is full, the oldest value of the uid holding the most goes first.
// So one uid's flood evicts its own values, never a quieter uid's. Evictions are counted. An
// empty retained publish clears its topic.
//
// Matches for a pattern are found through RetainedIndex (no scan), in topic order, and a
// replay can be paced: `replay()` hands out what fits and resumes where it stopped on the next
// call. Values written meanwhile are handed out again when the replay passed them before
// they changed (`catch_up`), so a paced replay misses no update and doubles no value.
//
// Event loop thread only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <list>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "accounts.hpp"
#include "retained_index.hpp"
#include "topic_index.hpp"

namespace ubroker::broker {

struct RetainedMessage {
  std::string topic;
  std::vector<std::byte> payload;
  std::vector<std::byte> headers;  // as published (proto/headers.hpp)
  std::uint64_t sender_id = 0;
  std::uint32_t sender_uid = 0;
  std::uint32_t sender_pid = 0;
  std::uint64_t written = 0;  // the store's write sequence number when this value was stored
  std::uint64_t cost = 0;     // charged to sender_uid
};

// Where a paced replay stands: the walk over the index (the last topic handed out and, per
// call, up to which topic it got and the store's write sequence then), then the catch-up
// (values written during the replay that the subscriber has an older value of).
struct RetainedReplay {
  std::string after;
  std::vector<std::pair<std::string, std::uint64_t>> passes;
  bool walked = false;
  std::vector<std::string> pending;  // to hand out again, oldest write last
  std::unordered_map<std::string, std::uint64_t> handed_again;  // topic -> write sequence then
  std::uint64_t checked = 0;  // writes up to this sequence number were checked
};

class RetainedStore {
 public:
  RetainedStore(std::uint64_t max_bytes, Accounts& accounts) : max_bytes_(max_bytes), accounts_(accounts) {}
  RetainedStore(const RetainedStore&) = delete;
  RetainedStore& operator=(const RetainedStore&) = delete;

  // Stores (or, with an empty payload, clears) the topic's retained message.
  void put(std::string_view topic, std::span<const std::byte> payload, std::uint64_t sender_id,
           std::uint32_t sender_uid, std::uint32_t sender_pid, std::span<const std::byte> headers = {});

  // Hands the values `pattern` matches to `take`, in topic order, resuming `r`. `take` returns
  // false when it has no room for the value (which is then handed out again next time).
  // Returns true when the replay is complete.
  bool replay(std::string_view pattern, RetainedReplay& r,
              const std::function<bool(const RetainedMessage&)>& take) const;

  [[nodiscard]] bool contains(std::string_view topic) const { return by_topic_.find(topic) != by_topic_.end(); }
  [[nodiscard]] std::size_t size() const noexcept { return by_topic_.size(); }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }
  [[nodiscard]] std::uint64_t evicted() const noexcept { return evicted_; }

  // What one value costs the broker, as charged (`payload`: its payload and headers together).
  [[nodiscard]] static std::uint64_t cost(std::string_view topic, std::size_t payload) noexcept;

 private:
  using Order = std::list<RetainedMessage>;  // by write, oldest first
  struct UidShare {
    std::uint64_t bytes = 0;
    std::list<Order::iterator> oldest_first;
  };
  struct Slot {
    Order::iterator entry;
    std::list<Order::iterator>::iterator in_uid;
  };
  void erase(const std::string& topic);
  // The write sequence number up to which the replay has seen `topic`'s value.
  static std::uint64_t seen_at(const RetainedReplay& r, const std::string& topic);
  void evict_oldest_of(std::uint32_t uid);

  std::uint64_t max_bytes_;
  Accounts& accounts_;
  std::uint64_t bytes_ = 0;
  std::uint64_t evicted_ = 0;
  std::uint64_t writes_ = 0;
  Order order_;
  std::unordered_map<std::string, Slot, StringHash, std::equal_to<>> by_topic_;
  std::unordered_map<std::uint32_t, UidShare> by_uid_;
  RetainedIndex<const RetainedMessage> index_;
};

}  // namespace ubroker::broker
