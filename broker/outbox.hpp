// One client's outbound side, as the Router and the Session see it: the bounded queue of
// frames the broker accepted for the client, its room (the client's own limits and its uid's),
// the publishers held back waiting for that room, the socket writes that drain it, the
// slow-consumer measure, the delivery counters, and the bulk deliveries the client holds.
//
// The Router knows clients only through this class (room, hold back, deliver): it never sees
// a Session. Everything an Outbox needs from the broker comes in an OutboxContext, so the
// Router and the Outbox are unit-tested without a broker process.
//
// Owned by its Session; event loop thread only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "accounts.hpp"
#include "chunk_pool.hpp"
#include "config.hpp"
#include "out_queue.hpp"
#include "stats.hpp"
#include "ubroker.pb.h"
#include "ubroker/proto/deliver_encoder.hpp"

namespace ubroker::broker {

class Outbox;
class ShmRegistry;
struct ShmSegment;
using Clock = std::chrono::steady_clock;

// A payload in shared memory: a record opened in the ShmRegistry.
struct BulkRef {
  std::uint32_t record;
  std::uint64_t length;
};

// Why a bulk delivery could not be held for a receiver.
enum class BulkDrop { kHoldLimit, kNoFd };

// What every Outbox shares with the broker.
struct OutboxContext {
  const Limits& limits;
  Stats& stats;
  ChunkPool& pool;
  ShmRegistry* shm = nullptr;        // nullptr: no shared memory (unit tests)
  std::vector<Outbox*>& dirty;       // outboxes to flush at the end of the current read batch
  std::function<void(std::uint64_t)> wake;  // a held-back publisher (by client id) may retry
  std::function<void(UidAccount&)> wake_uid;  // the same for the publishers waiting on a uid
};

class Outbox {
 public:
  Outbox(OutboxContext& ctx, int fd, std::uint64_t owner_id, ConnectionAccount& account);
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;
  // Counts what is still queued as dropped with the client, and wakes whoever waited on it.
  ~Outbox();

  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  [[nodiscard]] ConnectionAccount& account() noexcept { return account_; }
  // The next frame queued carries `fd` (a lane's segment or eventfd: lanes.hpp).
  void attach_fd(shm::UniqueFd fd) { out_.attach_fd(std::move(fd)); }

  // ---- What the Router uses ----
  // Room in this client's queue and in its uid's budget.
  [[nodiscard]] bool has_room() const noexcept;
  // Room for `messages` more frames of `bytes` together in this queue, and for `uid_bytes`
  // more in its uid's budget (a run of publishes: Router::publish_run).
  [[nodiscard]] bool has_room_for(std::size_t messages, std::size_t bytes, std::size_t uid_bytes) const noexcept;
  // Publisher `publisher_id` is held back until this queue (or its uid's) drains below half.
  void hold_back(std::uint64_t publisher_id);
  // Queues one frame: its head, then the payload (copied when small or when `chunk` is null,
  // else referenced). Returns true when the payload was copied.
  bool queue_frame(const wire::Header& h, std::span<const std::byte> payload, const ChunkRef* chunk);
  // A DELIVER frame with its head (prefix + header) already encoded.
  bool queue_delivery(std::span<const std::byte> head, std::span<const std::byte> payload, const ChunkRef* chunk);
  // A run of DELIVER frames, one per payload, all with `head` (prefix + header; each frame's
  // length is written into its prefix), the payloads copied: the router's run of small
  // publishes on one topic (Router::publish_run), queued and accounted as one step.
  void queue_delivery_run(std::span<const std::byte> head, std::span<const std::span<const std::byte>> payloads);
  void count_delivery(std::size_t payload_bytes, std::uint64_t messages = 1) noexcept {
    deliveries_ += messages;
    delivered_bytes_ += payload_bytes;
  }
  // Holds a bulk delivery's record for this receiver and, the first time it gets this
  // segment, attaches the segment's fd to the frame about to be queued.
  [[nodiscard]] std::expected<proto::ShmPart, BulkDrop> hold_bulk(const BulkRef& bulk);
  // This client is to read `seg` (a delivery, or a lane's bulk records): true if its fd is
  // attached to the next message queued (the first time), false if it has it already;
  // kNoFd when its uid is at shm_max_fds_in_flight_per_uid (or the broker out of fds).
  [[nodiscard]] std::expected<bool, BulkDrop> pass_segment(ShmSegment& seg);

  // ---- What the Session uses ----
  // Releases bulk holds by token; returns how many tokens were not this client's (the first
  // in `first_refused`).
  std::size_t release(std::span<const std::uint64_t> tokens, std::uint64_t& first_refused);
  // Lets go of every hold and segment (the client is going away).
  void release_all();
  // The segment is gone for good: false if this client was never passed it (nothing to say).
  bool segment_gone(std::uint64_t segment);

  enum class Write { kDrained, kBlocked, kFailed };
  // Writes what is queued without blocking, until the queue is empty or the socket full.
  Write send_some();
  // Taken off the broker's list of outboxes to flush (it is being flushed now).
  void mark_clean() noexcept { dirty_ = false; }
  [[nodiscard]] bool empty() const noexcept { return out_.empty(); }

  // Why this client should be cut off as a slow consumer now (nullopt: it should not): its
  // queue full with no progress, or too little taken while publishers wait on it.
  [[nodiscard]] std::optional<std::string> slow(Clock::time_point now, std::chrono::milliseconds slow_consumer);
  // Drops every message not yet started; returns the deliveries dropped (counted).
  std::size_t cut_off();

  // ---- For brokerctl ----
  [[nodiscard]] const OutQueue& queue() const noexcept { return out_; }
  [[nodiscard]] std::uint64_t deliveries() const noexcept { return deliveries_; }
  [[nodiscard]] std::uint64_t delivered_bytes() const noexcept { return delivered_bytes_; }
  [[nodiscard]] std::uint64_t bulk_held() const noexcept { return account_.used(Resource::kBulkHolds); }

 private:
  [[nodiscard]] bool own_room() const noexcept;
  [[nodiscard]] bool below_low_watermark() const noexcept;
  bool finish_frame(std::byte* payload_at, std::span<const std::byte> payload, const ChunkRef* chunk, bool copy,
                    bool delivery);
  void account_queue();
  void mark_dirty();
  void notify_waiters();

  OutboxContext& ctx_;
  int fd_;
  std::uint64_t id_;
  ConnectionAccount& account_;
  OutQueue out_;
  bool dirty_ = false;
  std::vector<std::uint64_t> waiters_;  // publishers held back by this queue
  std::vector<std::uint64_t> waking_;   // scratch for notify_waiters (keeps capacity)

  Clock::time_point last_progress_ = Clock::now();  // last byte written, or the queue became non-empty
  // Since when publishers have been waiting on this queue at every check, and how much it had
  // written then: the slow-consumer rule's measure of throughput while holding others back.
  struct Holding {
    Clock::time_point since = Clock::time_point::max();
    std::uint64_t messages_at = 0;
    std::uint64_t bytes_at = 0;
    bool seen = false;  // publishers waited on it since the last check
  } holding_;
  std::uint64_t written_messages_ = 0;
  std::uint64_t written_bytes_ = 0;
  std::uint64_t deliveries_ = 0;
  std::uint64_t delivered_bytes_ = 0;

  // Bulk deliveries this client holds; a token is (generation << 32 | index), so a stale or
  // forged token is recognised.
  struct Hold {
    std::uint32_t record = 0;
    std::uint32_t generation = 0;
    bool live = false;
  };
  std::vector<Hold> holds_;
  std::vector<std::uint32_t> free_holds_;
  std::vector<std::uint64_t> shm_attached_;  // segments whose fd this client was passed
};

}  // namespace ubroker::broker
