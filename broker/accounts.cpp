// Accounts, UidAccount, ConnectionAccount (see accounts.hpp).
#include "accounts.hpp"

#include <algorithm>

namespace ubroker::broker {

std::uint64_t subscription_cost(std::string_view pattern) noexcept {
  const auto tokens = static_cast<std::uint64_t>(std::count(pattern.begin(), pattern.end(), '.')) + 1;
  // The pattern is stored twice (the subscription, the index node's key or the group's).
  return kSubscriptionCost + 2 * pattern.size() + tokens * kIndexNodeCost;
}

std::uint64_t memory_limit_per_uid(const Limits& l) noexcept {
  return std::uint64_t{l.max_connections_per_uid} * kConnectionCost + l.queue_max_bytes_per_uid +
         l.input_max_bytes_per_uid + l.subscription_max_bytes_per_uid + l.retained_max_bytes_per_uid +
         std::uint64_t{l.max_pending_requests_per_uid} * kPendingRequestCost +
         std::uint64_t{l.shm_max_holds_per_uid} * kBulkHoldCost;
}

UidAccount::UidAccount(uid_t uid, const Limits& l)
    : uid_(uid),
      limit_{l.max_connections_per_uid,        l.queue_max_bytes_per_uid,        l.input_max_bytes_per_uid,
             l.subscription_max_bytes_per_uid, l.retained_max_bytes_per_uid,     l.max_pending_requests_per_uid,
             l.shm_max_holds_per_uid} {
  static_assert(kResourceCount == 7, "a limit per resource, in Resource's order");
}

bool UidAccount::idle() const noexcept {
  return waiters.empty() && std::all_of(used_.begin(), used_.end(), [](std::uint64_t n) { return n == 0; });
}

namespace {

std::uint64_t memory_of(const std::array<std::uint64_t, kResourceCount>& used) {
  auto at = [&](Resource r) { return used[static_cast<std::size_t>(r)]; };
  return at(Resource::kConnections) * kConnectionCost + at(Resource::kQueuedBytes) + at(Resource::kInputBytes) +
         at(Resource::kSubscriptionBytes) + at(Resource::kRetainedBytes) +
         at(Resource::kPendingRequests) * kPendingRequestCost + at(Resource::kBulkHolds) * kBulkHoldCost;
}

}  // namespace

std::uint64_t UidAccount::memory_bytes() const noexcept { return memory_of(used_); }

UidAccount& Accounts::of(uid_t uid) {
  auto& slot = by_uid_[uid];
  if (!slot) slot = std::make_unique<UidAccount>(uid, *limits_);
  return *slot;
}

UidAccount* Accounts::find(uid_t uid) const {
  auto it = by_uid_.find(uid);
  return it == by_uid_.end() ? nullptr : it->second.get();
}

void Accounts::forget_if_idle(uid_t uid) {
  auto it = by_uid_.find(uid);
  if (it != by_uid_.end() && it->second->idle()) by_uid_.erase(it);
}

std::uint64_t Accounts::total(Resource r) const noexcept {
  std::uint64_t sum = 0;
  for (const auto& [uid, account] : by_uid_) sum += account->used(r);
  return sum;
}

std::uint64_t Accounts::memory_bytes() const noexcept {
  std::uint64_t sum = 0;
  for (const auto& [uid, account] : by_uid_) sum += account->memory_bytes();
  return sum;
}

ConnectionAccount::ConnectionAccount(Accounts& accounts, uid_t uid) : accounts_(accounts), uid_(&accounts.of(uid)) {
  charge(Resource::kConnections, 1);
}

ConnectionAccount::~ConnectionAccount() {
  for (std::size_t i = 0; i < kResourceCount; ++i) uid_->credit(static_cast<Resource>(i), used_[i]);
  accounts_.forget_if_idle(uid_->uid());
}

std::uint64_t ConnectionAccount::memory_bytes() const noexcept { return memory_of(used_); }

}  // namespace ubroker::broker
