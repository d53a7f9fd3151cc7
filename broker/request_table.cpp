// RequestTable implementation.
#include "request_table.hpp"

#include "topic_stats.hpp"

namespace ubroker::broker {

std::uint64_t RequestTable::add(PendingRequest r) {
  r.id = next_id_++;
  if (r.topic != nullptr) ++r.topic->requests_pending;
  deadlines_.emplace(r.deadline, r.id);
  pending_.emplace(r.id, r);
  return r.id;
}

const PendingRequest* RequestTable::find(std::uint64_t id, std::uint64_t responder) const {
  auto it = pending_.find(id);
  return it == pending_.end() || it->second.responder != responder ? nullptr : &it->second;
}

RequestTable::Entries::iterator RequestTable::remove(Entries::iterator it) {
  if (TopicStats* t = it->second.topic) --t->requests_pending;
  return pending_.erase(it);
}

void RequestTable::compact_if_sparse() {
  // Lazy deletion leaves the finished request's deadline behind: rebuild once those outnumber
  // the live ones (amortised O(1) per request).
  if (deadlines_.size() > 64 && deadlines_.size() > 2 * pending_.size()) {
    std::vector<Deadline> live;
    live.reserve(pending_.size());
    for (const auto& [id, p] : pending_) live.emplace_back(p.deadline, id);
    deadlines_ = decltype(deadlines_)(std::greater<>(), std::move(live));
  }
}

bool RequestTable::take_abandoned(std::uint64_t id, std::uint64_t responder) {
  auto it = abandoned_.find(id);
  if (it == abandoned_.end() || it->second != responder) return false;
  abandoned_.erase(it);  // its place in abandoned_order_ goes when it comes round
  return true;
}

std::optional<PendingRequest> RequestTable::take_reply(std::uint64_t id, std::uint64_t responder) {
  auto it = pending_.find(id);
  if (it == pending_.end() || it->second.responder != responder) return std::nullopt;
  PendingRequest p = it->second;
  remove(it);
  compact_if_sparse();
  return p;
}

void RequestTable::expire(Clock::time_point now, const std::function<void(const PendingRequest&)>& on_expired) {
  while (!deadlines_.empty() && deadlines_.top().first <= now) {
    const std::uint64_t id = deadlines_.top().second;
    deadlines_.pop();
    auto it = pending_.find(id);
    if (it == pending_.end()) continue;  // finished earlier
    const PendingRequest p = it->second;
    remove(it);
    on_expired(p);
  }
}

void RequestTable::drop_session(std::uint64_t session,
                                const std::function<void(const PendingRequest&)>& on_responder_gone) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.responder == session) {
      const PendingRequest p = it->second;
      it = remove(it);
      if (p.caller != session) on_responder_gone(p);
    } else if (it->second.caller == session) {
      abandoned_.emplace(it->first, it->second.responder);
      abandoned_order_.push_back(it->first);
      if (abandoned_order_.size() > kMaxAbandoned) {
        abandoned_.erase(abandoned_order_.front());
        abandoned_order_.pop_front();
      }
      it = remove(it);
    } else {
      ++it;
    }
  }
  compact_if_sparse();
}

std::optional<RequestTable::Clock::time_point> RequestTable::next_deadline() {
  while (!deadlines_.empty() && !pending_.contains(deadlines_.top().second)) deadlines_.pop();
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.top().first;
}

}  // namespace ubroker::broker
