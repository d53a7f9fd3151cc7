// RetainedStore implementation (see retained_store.hpp).
#include "retained_store.hpp"

#include <algorithm>

#include "ubroker/proto/topic.hpp"

namespace ubroker::broker {

std::uint64_t RetainedStore::cost(std::string_view topic, std::size_t payload) noexcept {
  const auto tokens = static_cast<std::uint64_t>(std::count(topic.begin(), topic.end(), '.')) + 1;
  // The topic is stored twice (the entry, the map key) and once more in pieces in the index.
  return kRetainedEntryCost + 3 * topic.size() + payload + tokens * kIndexNodeCost;
}

void RetainedStore::erase(const std::string& topic) {
  auto found = by_topic_.find(topic);
  if (found == by_topic_.end()) return;
  const Order::iterator entry = found->second.entry;
  const std::uint32_t uid = entry->sender_uid;
  UidShare& share = by_uid_[uid];
  share.bytes -= entry->cost;
  share.oldest_first.erase(found->second.in_uid);
  if (share.oldest_first.empty()) by_uid_.erase(uid);
  bytes_ -= entry->cost;
  if (UidAccount* account = accounts_.find(uid)) {
    account->credit(Resource::kRetainedBytes, entry->cost);
    accounts_.forget_if_idle(uid);
  }
  index_.erase(entry->topic);
  by_topic_.erase(found);
  order_.erase(entry);
}

void RetainedStore::evict_oldest_of(std::uint32_t uid) {
  auto it = by_uid_.find(uid);
  if (it == by_uid_.end()) return;
  const std::string topic = it->second.oldest_first.front()->topic;
  erase(topic);
  ++evicted_;
}

void RetainedStore::put(std::string_view topic, std::span<const std::byte> payload, std::uint64_t sender_id,
                        std::uint32_t sender_uid, std::uint32_t sender_pid, std::span<const std::byte> headers) {
  if (auto found = by_topic_.find(topic); found != by_topic_.end()) erase(found->first);
  if (payload.empty()) return;
  ++writes_;
  const std::uint64_t price = cost(topic, payload.size() + headers.size());
  UidAccount& account = accounts_.of(sender_uid);
  const std::uint64_t share_limit = account.limit(Resource::kRetainedBytes);
  if (price > max_bytes_ || price > share_limit) {  // could never fit: it replaces nothing
    ++evicted_;
    ++account.limited;
    accounts_.forget_if_idle(sender_uid);
    return;
  }
  // The uid's own oldest values make room for it within its share...
  while (by_uid_.contains(sender_uid) && by_uid_[sender_uid].bytes + price > share_limit) {
    ++account.limited;
    evict_oldest_of(sender_uid);
  }
  // ...and in a full store, the oldest value of whoever holds the most goes first.
  while (bytes_ + price > max_bytes_ && !by_uid_.empty()) {
    const auto largest = std::max_element(by_uid_.begin(), by_uid_.end(), [](const auto& a, const auto& b) {
      return a.second.bytes < b.second.bytes;
    });
    evict_oldest_of(largest->first);
  }
  RetainedMessage& m = order_.emplace_back();
  m.topic = topic;
  m.payload.assign(payload.begin(), payload.end());
  m.headers.assign(headers.begin(), headers.end());
  m.sender_id = sender_id;
  m.sender_uid = sender_uid;
  m.sender_pid = sender_pid;
  m.written = writes_;
  m.cost = price;
  const Order::iterator entry = std::prev(order_.end());
  UidShare& share = by_uid_[sender_uid];
  share.bytes += price;
  share.oldest_first.push_back(entry);
  by_topic_.emplace(m.topic, Slot{entry, std::prev(share.oldest_first.end())});
  index_.set(m.topic, &m);
  bytes_ += price;
  account.charge(Resource::kRetainedBytes, price);
}

std::uint64_t RetainedStore::seen_at(const RetainedReplay& r, const std::string& topic) {
  if (auto it = r.handed_again.find(topic); it != r.handed_again.end()) return it->second;
  const auto pass =
      std::find_if(r.passes.begin(), r.passes.end(), [&](const auto& p) { return !topic_less(p.first, topic); });
  return pass == r.passes.end() ? 0 : pass->second;
}

bool RetainedStore::replay(std::string_view pattern, RetainedReplay& r,
                           const std::function<bool(const RetainedMessage&)>& take) const {
  if (!r.walked) {
    std::string last = r.after;
    const bool done = index_.walk(pattern, r.after, [&](const RetainedMessage& m) {
      if (!take(m)) return false;
      last = m.topic;
      return true;
    });
    r.passes.emplace_back(last, writes_);
    r.after = std::move(last);
    if (!done) return false;
    r.walked = true;
    r.checked = r.passes.front().second;
  }
  // The catch-up: values written since the replay began that a pass handed out (or went past)
  // before they were written are handed out again, oldest first, until none is left.
  for (;;) {
    while (!r.pending.empty()) {
      auto found = by_topic_.find(r.pending.back());
      if (found != by_topic_.end()) {
        if (!take(*found->second.entry)) return false;
        r.handed_again[r.pending.back()] = writes_;
      }
      r.pending.pop_back();  // handed out, or cleared meanwhile
    }
    if (r.checked == writes_) return true;
    for (auto it = order_.rbegin(); it != order_.rend() && it->written > r.checked; ++it) {
      if (proto::pattern_matches(pattern, it->topic) && it->written > seen_at(r, it->topic)) {
        r.pending.push_back(it->topic);
      }
    }
    r.checked = writes_;
    if (r.pending.empty()) return true;
  }
}

}  // namespace ubroker::broker
