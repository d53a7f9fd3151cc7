// The broker's books: every resource a client can make the broker hold is charged to the
// connection that caused it and to that connection's uid, against the per-uid limits of the
// config. A uid at a limit is refused (or held back, or has its own deliveries dropped and
// counted); another uid's traffic is never what pays for it.
//
// Resources are counted in their own unit (bytes, or items for requests, holds and
// connections), and `memory_bytes()` turns them into the bytes they cost the broker, using
// the estimated per-item costs below, so `brokerctl status` can show what each uid holds.
//
// An account lives while its uid has a connection or anything charged (a retained value
// outlives its publisher). Event loop thread only.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config.hpp"

namespace ubroker::broker {

enum class Resource : std::uint8_t {
  kConnections,        // items
  kQueuedBytes,        // outbound queues: every frame the broker queued for the uid's clients
  kInputBytes,         // read buffers: frames partly received, or held back behind a full receiver
  kSubscriptionBytes,  // subscriptions and services with their share of the topic index
  kRetainedBytes,      // retained values the uid published, at their real cost
  kPendingRequests,    // items: requests of the uid's clients waiting for replies
  kBulkHolds,          // items: shared-memory deliveries the uid's clients have not released
};
inline constexpr std::size_t kResourceCount = 7;
inline constexpr std::array<std::string_view, kResourceCount> kResourceNames = {
    "connections", "queued_bytes", "input_bytes", "subscription_bytes", "retained_bytes", "pending_requests",
    "bulk_holds"};
[[nodiscard]] constexpr std::string_view to_string(Resource r) noexcept {
  return kResourceNames[static_cast<std::size_t>(r)];
}

// What the broker's own structures cost per item, beyond the bytes a client sent. Estimates
// from the structures' sizes with the allocator's overhead, rounded up, and checked against
// the resident set (bounds_test: 180 subscriptions of 400 tokens that share no node grew it
// by ~306 bytes per node); they are what makes a pattern of 500 one-byte tokens cost what it
// really costs, not 1 KB.
inline constexpr std::uint64_t kConnectionCost = 8192;  // Session, coroutine frames, timers, socket
inline constexpr std::uint64_t kSubscriptionCost = 256;  // Subscription, its map node, index entries
inline constexpr std::uint64_t kIndexNodeCost = 320;     // one topic-index node per pattern token
inline constexpr std::uint64_t kRetainedEntryCost = 160;  // list node, map node, trie leaf
inline constexpr std::uint64_t kPendingRequestCost = 96;  // table entry and deadline
inline constexpr std::uint64_t kBulkHoldCost = 48;        // hold slot and record

// The most one uid can make the broker hold with every limit reached (bytes).
[[nodiscard]] std::uint64_t memory_limit_per_uid(const Limits& l) noexcept;

// The cost charged for one subscription or service on `pattern`.
[[nodiscard]] std::uint64_t subscription_cost(std::string_view pattern) noexcept;

class UidAccount {
 public:
  UidAccount(uid_t uid, const Limits& limits);

  [[nodiscard]] uid_t uid() const noexcept { return uid_; }
  [[nodiscard]] std::uint64_t used(Resource r) const noexcept { return used_[static_cast<std::size_t>(r)]; }
  // The per-uid limit of `r` from the config.
  [[nodiscard]] std::uint64_t limit(Resource r) const noexcept { return limit_[static_cast<std::size_t>(r)]; }
  [[nodiscard]] bool fits(Resource r, std::uint64_t n) const noexcept { return used(r) + n <= limit(r); }
  [[nodiscard]] bool at_limit(Resource r) const noexcept { return used(r) >= limit(r); }
  void charge(Resource r, std::uint64_t n) noexcept { used_[static_cast<std::size_t>(r)] += n; }
  void credit(Resource r, std::uint64_t n) noexcept { used_[static_cast<std::size_t>(r)] -= n; }
  [[nodiscard]] bool idle() const noexcept;

  // Everything the uid holds, in bytes of the broker's memory (estimated per item).
  [[nodiscard]] std::uint64_t memory_bytes() const noexcept;

  // Refusals and drops because this uid was at one of its limits.
  std::uint64_t limited = 0;
  // Publishers held back because this uid's queues are at limits.queue_max_bytes_per_uid;
  // woken when they drain below half.
  std::vector<std::uint64_t> waiters;

 private:
  uid_t uid_;
  std::array<std::uint64_t, kResourceCount> limit_{};  // from the config (has_room asks per message)
  std::array<std::uint64_t, kResourceCount> used_{};
};

class Accounts {
 public:
  explicit Accounts(const Limits& limits) : limits_(&limits) {}
  Accounts(const Accounts&) = delete;
  Accounts& operator=(const Accounts&) = delete;

  // The uid's account, created on first use. Its address is stable while it exists.
  [[nodiscard]] UidAccount& of(uid_t uid);
  [[nodiscard]] UidAccount* find(uid_t uid) const;
  // Erases the account once nothing is charged to it.
  void forget_if_idle(uid_t uid);

  [[nodiscard]] std::uint64_t total(Resource r) const noexcept;
  [[nodiscard]] std::uint64_t memory_bytes() const noexcept;
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [uid, account] : by_uid_) f(*account);
  }

 private:
  const Limits* limits_;
  std::unordered_map<uid_t, std::unique_ptr<UidAccount>> by_uid_;
};

// One connection's share of its uid's account: charges go to both, and whatever the
// connection still holds when it goes away is credited back to the uid.
class ConnectionAccount {
 public:
  ConnectionAccount(Accounts& accounts, uid_t uid);
  ConnectionAccount(const ConnectionAccount&) = delete;
  ConnectionAccount& operator=(const ConnectionAccount&) = delete;
  ~ConnectionAccount();

  [[nodiscard]] UidAccount& uid() noexcept { return *uid_; }
  [[nodiscard]] const UidAccount& uid() const noexcept { return *uid_; }
  [[nodiscard]] std::uint64_t used(Resource r) const noexcept { return used_[static_cast<std::size_t>(r)]; }
  // Inline: every queued frame is charged (the hot path pays a few adds, not calls).
  void charge(Resource r, std::uint64_t n) noexcept {
    used_[static_cast<std::size_t>(r)] += n;
    uid_->charge(r, n);
  }
  void credit(Resource r, std::uint64_t n) noexcept {
    used_[static_cast<std::size_t>(r)] -= n;
    uid_->credit(r, n);
  }
  // Brings the charge for `r` to `now` (for resources measured rather than counted: queues,
  // read buffers). Returns true when it went down.
  bool set(Resource r, std::uint64_t now) noexcept {
    const std::uint64_t before = used(r);
    if (now >= before) {
      charge(r, now - before);
      return false;
    }
    credit(r, before - now);
    return true;
  }
  [[nodiscard]] std::uint64_t memory_bytes() const noexcept;

 private:
  Accounts& accounts_;
  UidAccount* uid_;
  std::array<std::uint64_t, kResourceCount> used_{};
};

}  // namespace ubroker::broker
