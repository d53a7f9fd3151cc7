// RetainedStore implementation.
#include "retained_store.hpp"

#include "ubroker/proto/topic.hpp"

namespace ubroker::broker {

void RetainedStore::erase(Lru::iterator it) {
  bytes_ -= cost(*it);
  by_topic_.erase(it->topic);
  lru_.erase(it);
}

void RetainedStore::put(std::string_view topic, std::span<const std::byte> payload, std::uint64_t sender_id,
                        std::uint32_t sender_uid, std::uint32_t sender_pid) {
  auto found = by_topic_.find(topic);
  if (payload.empty()) {
    if (found != by_topic_.end()) erase(found->second);
    return;
  }
  if (topic.size() + payload.size() > max_bytes_) {  // could never fit: it replaces nothing
    if (found != by_topic_.end()) erase(found->second);
    ++evicted_;
    return;
  }
  Lru::iterator it;
  if (found != by_topic_.end()) {
    it = found->second;
    bytes_ -= cost(*it);
    lru_.splice(lru_.end(), lru_, it);  // most recently touched
  } else {
    lru_.emplace_back();
    it = std::prev(lru_.end());
    it->topic = topic;
    by_topic_.emplace(it->topic, it);
  }
  it->payload.assign(payload.begin(), payload.end());
  it->sender_id = sender_id;
  it->sender_uid = sender_uid;
  it->sender_pid = sender_pid;
  bytes_ += cost(*it);
  while (bytes_ > max_bytes_ && lru_.begin() != it) {
    erase(lru_.begin());
    ++evicted_;
  }
}

void RetainedStore::for_each_match(std::string_view pattern,
                                   const std::function<void(const RetainedMessage&)>& fn) const {
  if (!proto::is_wildcard(pattern)) {
    if (auto it = by_topic_.find(pattern); it != by_topic_.end()) fn(*it->second);
    return;
  }
  for (const auto& m : lru_) {
    if (proto::pattern_matches(pattern, m.topic)) fn(m);
  }
}

}  // namespace ubroker::broker
