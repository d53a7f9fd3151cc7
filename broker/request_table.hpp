// Requests in flight between a caller and a responder: which caller (and its correlation
// seq) a responder's REPLY goes back to, and the deadline at which the caller gets TIMEOUT.
// Every path frees the entry: reply, timeout, either side disconnecting. Deadlines live in a
// min-heap with lazy deletion (a finished request's heap entry is skipped when it surfaces);
// when finished entries outnumber live ones the heap is rebuilt, so its size stays within
// twice the requests pending, whatever the request rate and timeouts.
// Event loop thread only.
#pragma once

#include <chrono>
#include <deque>
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ubroker::broker {

struct TopicStats;

struct PendingRequest {
  std::uint64_t id = 0;          // the broker's request id (what the responder sees); set by add()
  std::uint64_t caller = 0;      // session ids
  std::uint64_t caller_seq = 0;  // the caller's correlation id
  std::uint64_t responder = 0;
  std::uint64_t service = 0;     // the responder's SERVE id the request went through
  TopicStats* topic = nullptr;   // the topic's entry in the topic table (kept while this is pending), or nullptr
  std::chrono::steady_clock::time_point sent;  // when it was forwarded: the answer's latency starts here
  std::chrono::steady_clock::time_point deadline;
  std::string traced_topic;      // the request's topic, kept when it was traced (its answer is traced too)
};

class RequestTable {
 public:
  using Clock = std::chrono::steady_clock;

  // Adds `r` under a new id, which it returns.
  std::uint64_t add(PendingRequest r);

  // The request `id` if `responder` is the one it went to (nullptr otherwise); it stays.
  [[nodiscard]] const PendingRequest* find(std::uint64_t id, std::uint64_t responder) const;
  // The same, removed.
  std::optional<PendingRequest> take_reply(std::uint64_t id, std::uint64_t responder);
  // Whether `id` went to `responder` and its caller has gone since (then the reply is
  // discarded without blaming the responder); forgets it.
  bool take_abandoned(std::uint64_t id, std::uint64_t responder);

  // Removes and hands over every request whose deadline is at or before `now`.
  void expire(Clock::time_point now, const std::function<void(const PendingRequest&)>& on_expired);

  // A session went away: requests it was answering are handed to `on_responder_gone`; the
  // ones it was waiting for are forgotten.
  void drop_session(std::uint64_t session, const std::function<void(const PendingRequest&)>& on_responder_gone);

  [[nodiscard]] std::optional<Clock::time_point> next_deadline();
  [[nodiscard]] std::size_t size() const noexcept { return pending_.size(); }
  [[nodiscard]] std::size_t deadline_entries() const noexcept { return deadlines_.size(); }

 private:
  using Deadline = std::pair<Clock::time_point, std::uint64_t>;
  using Entries = std::unordered_map<std::uint64_t, PendingRequest>;
  // Every request leaves through here (its topic stops counting it as pending).
  Entries::iterator remove(Entries::iterator it);
  void compact_if_sparse();
  Entries pending_;
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines_;
  // Requests whose caller left before the reply came: request id -> responder, the most
  // recent kMaxAbandoned of them (older ones' replies are refused as unknown).
  static constexpr std::size_t kMaxAbandoned = 65536;
  std::unordered_map<std::uint64_t, std::uint64_t> abandoned_;
  std::deque<std::uint64_t> abandoned_order_;
  std::uint64_t next_id_ = 1;
};

}  // namespace ubroker::broker
