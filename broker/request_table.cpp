// RequestTable implementation.
#include "request_table.hpp"

namespace ubroker::broker {

std::uint64_t RequestTable::add(std::uint64_t caller, std::uint64_t caller_seq, std::uint64_t responder,
                                Clock::time_point deadline) {
  const std::uint64_t id = next_id_++;
  pending_.emplace(id, PendingRequest{id, caller, caller_seq, responder, deadline});
  deadlines_.emplace(deadline, id);
  return id;
}

std::optional<PendingRequest> RequestTable::take_reply(std::uint64_t id, std::uint64_t responder) {
  auto it = pending_.find(id);
  if (it == pending_.end() || it->second.responder != responder) return std::nullopt;
  PendingRequest p = it->second;
  pending_.erase(it);
  return p;
}

void RequestTable::expire(Clock::time_point now, const std::function<void(const PendingRequest&)>& on_expired) {
  while (!deadlines_.empty() && deadlines_.top().first <= now) {
    const std::uint64_t id = deadlines_.top().second;
    deadlines_.pop();
    auto it = pending_.find(id);
    if (it == pending_.end()) continue;  // finished earlier
    const PendingRequest p = it->second;
    pending_.erase(it);
    on_expired(p);
  }
}

void RequestTable::drop_session(std::uint64_t session,
                                const std::function<void(const PendingRequest&)>& on_responder_gone) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.responder == session) {
      const PendingRequest p = it->second;
      it = pending_.erase(it);
      if (p.caller != session) on_responder_gone(p);
    } else if (it->second.caller == session) {
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

std::optional<RequestTable::Clock::time_point> RequestTable::next_deadline() {
  while (!deadlines_.empty() && !pending_.contains(deadlines_.top().second)) deadlines_.pop();
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.top().first;
}

}  // namespace ubroker::broker
