// A lane's two ends (layout and trust rules: lane_layout.hpp). LaneWriter is the publisher's:
// it owns the data segment and reads the subscriber's ack segment; LaneReader is the
// subscriber's: it owns the ack segment and reads the data segment. Each end is used by one
// thread at a time (a lane is single-producer, single-consumer); the two ends run in two
// processes, or two threads.
//
// A violation by the other side (a position or record header that breaks the rules) makes
// every later call fail with std::errc::protocol_error; violation() says what it was, for the
// report to the broker. Setup errors are the kernel's.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "ubroker/shm/lane_layout.hpp"
#include "ubroker/shm/mapping.hpp"
#include "ubroker/shm/memfd.hpp"
#include "ubroker/shm/syscall.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::shm {

// Checks an fd the other side (through the broker) handed over for a lane segment: a memfd of
// exactly `size` bytes, sealed against shrink, grow and new writable mappings.
[[nodiscard]] const char* check_lane_fd(int fd, std::uint64_t size);
// Checks an fd handed over to wake a lane's subscriber: one end of a Unix stream socket pair
// (connected to a peer with no name). Not an eventfd: the subscriber shares an eventfd's file flags and could make the
// publisher's write block (clear O_NONBLOCK, fill the counter); a send with MSG_DONTWAIT
// never blocks, whatever the flags.
[[nodiscard]] const char* check_wake_fd(int fd);
// Wakes the subscriber through its wake socket: one byte, never blocking, errors ignored (a
// full socket is a subscriber with wake-ups waiting).
void send_wake(int fd) noexcept;

class LaneWriter {
 public:
  // A new data segment for a ring of `capacity` bytes (valid_lane_capacity), mapped and sealed.
  [[nodiscard]] static Result<LaneWriter> create(std::uint64_t capacity);
  [[nodiscard]] int data_fd() const noexcept { return data_.fd(); }
  // The subscriber's ack segment: checked (check_lane_fd), then mapped read-only. `wake`: the
  // subscriber's wake socket (check_wake_fd), written when it sleeps; without one, a futex wake
  // on write_seq (a subscriber in wait_for_message).
  [[nodiscard]] Result<void> attach(int ack_fd, UniqueFd wake = {});

  enum class Push { kWritten, kFull };
  // Writes one message if it fits now. Errors: message_size (longer than the ring can ever
  // hold), protocol_error (a violation).
  [[nodiscard]] Result<Push> try_push(std::span<const std::byte> payload);
  // The same in two steps, so the message is written in place: room for `size` bytes (empty
  // nullopt when the lane is full now), then commit() publishes exactly those bytes.
  [[nodiscard]] Result<std::optional<std::span<std::byte>>> try_reserve(std::uint64_t size);
  void commit() noexcept { publish(kLaneMessage); }
  // The same for a bulk record (lane_layout.hpp): try_reserve(sizeof(LaneBulkRef) + the
  // message), the caller writes both, then commit_bulk().
  void commit_bulk() noexcept { publish(kLaneBulk); }

  // Holds on bulk payloads in the publisher's ring (the subscriber releases them in its ack
  // segment, lane_layout.hpp). take_hold: a hold on the ring record at `offset` (nullopt: the
  // subscriber holds kLaneHoldSlots already); return_hold: one not written after all.
  struct Hold {
    std::uint32_t slot;
    std::uint32_t generation;
  };
  [[nodiscard]] std::optional<Hold> take_hold(std::uint64_t offset);
  void return_hold(const Hold& h) noexcept;
  // Calls released(offset) for each hold the subscriber let go since (its slot is free again),
  // or, with `all`, for every hold still out (a subscriber gone for good).
  template <class F>
  void collect(F&& released, bool all = false) {
    if (outstanding_ == 0 || !ack_map_) return;
    for (std::uint32_t slot = 0; slot < held_.size() && outstanding_ != 0; ++slot) {
      Held& h = held_[slot];
      if (!h.live) continue;
      if (!all && ack().released[slot].load(std::memory_order_acquire) != h.generation) continue;
      h.live = false;
      --outstanding_;
      free_slots_.push_back(slot);
      released(h.offset);
    }
  }
  [[nodiscard]] bool holds_out() const noexcept { return outstanding_ != 0; }
  // Wakes this publisher's own threads waiting on the lane (a wake-up, not a change: each
  // looks again within its wait's slice if it missed it).
  void wake_own_waiters() noexcept;
  // Whether a hold out is on the record at `offset`.
  [[nodiscard]] bool holds(std::uint64_t offset) const noexcept;
  // Writes fence `number` (lane_layout.hpp) if it fits now.
  [[nodiscard]] Result<Push> try_push_fence(std::uint64_t number);
  // Waits until the subscriber makes room (or `timeout`): true if it may have.
  [[nodiscard]] Result<bool> wait_for_room(std::chrono::nanoseconds timeout);
  void count_dropped() noexcept { header().dropped.fetch_add(1, std::memory_order_relaxed); }
  // For a writer whose calls are serialized by a lock it must not hold while it waits:
  // room_wait() (under the lock) says what to wait on, wait() (outside it) waits for the
  // subscriber to consume, or `timeout`. Touches only the shared words, never this object.
  // A release of a bulk hold ends the wait too (a lane whose holds are all out is full).
  struct RoomWait {
    const std::atomic<std::uint32_t>* read_seq;
    std::uint32_t seen;
    const std::atomic<std::uint64_t>* read_pos;
    std::uint64_t was;
    const std::atomic<std::uint64_t>* releases;
    std::uint64_t releases_was;
    std::atomic<std::uint32_t>* waiting;
    std::uint32_t arm;  // this wait's writer_waiting value
  };
  [[nodiscard]] RoomWait room_wait() noexcept;
  // The same for a wait for a release of a hold (the read position as it is now: the wait is
  // not for room).
  [[nodiscard]] RoomWait release_wait() noexcept;
  static void wait(const RoomWait& w, std::chrono::nanoseconds timeout) noexcept;
  [[nodiscard]] const char* violation() const noexcept { return violation_; }
  [[nodiscard]] std::uint64_t max_payload() const noexcept { return capacity_ / 2 - sizeof(LaneRecord); }

 private:
  LaneWriter(Memfd data, Mapping map, std::uint64_t capacity) noexcept
      : data_(std::move(data)), map_(std::move(map)), capacity_(capacity) {}
  [[nodiscard]] LaneHeader& header() const noexcept { return *reinterpret_cast<LaneHeader*>(map_.data()); }
  [[nodiscard]] const LaneAck& ack() const noexcept { return *reinterpret_cast<const LaneAck*>(ack_map_.data()); }
  [[nodiscard]] std::byte* ring() const noexcept { return map_.data() + kLaneHeaderBytes; }
  // The subscriber's read position, checked; nullopt after a violation.
  [[nodiscard]] std::optional<std::uint64_t> read_pos() noexcept;
  Result<void> fail(const char* why) noexcept;
  // Makes the record reserved last visible and wakes the subscriber if it sleeps.
  void publish(LaneRecordKind kind) noexcept;

  Memfd data_;
  Mapping map_;
  Mapping ack_map_;
  UniqueFd wake_;
  std::uint64_t reserved_ = 0;  // payload bytes of the record try_reserve made room for
  std::uint64_t capacity_;
  std::uint64_t write_pos_ = 0;  // ours: the shared copy is only for the subscriber
  std::uint64_t last_read_pos_ = 0;  // the subscriber's, as read last (checked)
  std::uint64_t accepted_ = 0;
  std::uint32_t arms_ = 0;  // each wait for room a new nonzero writer_waiting, so the reader wakes it once
  // The reader's arming last woken: one wake-up per arming, however many records follow
  // before the reader runs (a wake-up per record made a busy lane a system call per message).
  std::uint32_t woken_arm_ = 0;
  const char* violation_ = nullptr;
  struct Held {
    std::uint64_t offset = 0;
    std::uint32_t generation = 0;
    bool live = false;
  };
  std::vector<Held> held_;  // by slot, grown as holds are taken
  std::vector<std::uint32_t> free_slots_;
  std::uint32_t outstanding_ = 0;
};

// The subscriber's mappings of a lane: shared by its reader and by every bulk payload it
// holds, so a release can be written after the lane closed (and from any thread).
struct LaneMappings {
  Mapping ack;   // read-write
  Mapping data;  // read-only, once attached
};
// The subscriber lets a bulk payload go: after its last read of the payload, any thread.
// Wakes the publisher if it waits (for room, or for this hold).
void release_hold(const LaneMappings& m, std::uint32_t slot, std::uint32_t generation) noexcept;

class LaneReader {
 public:
  // A new ack segment, mapped and sealed.
  [[nodiscard]] static Result<LaneReader> create();
  [[nodiscard]] int ack_fd() const noexcept { return ack_.fd(); }
  // The publisher's data segment for a ring of `capacity` bytes (the broker's word for it):
  // checked (check_lane_fd), then mapped read-only.
  [[nodiscard]] Result<void> attach(int data_fd, std::uint64_t capacity);

  // The next record, valid until consume(); nullopt when none is there yet. A message, a bulk
  // record or a fence (peeked_kind() says which; a fence's 8 bytes are its number). Errors:
  // protocol_error (a violation).
  [[nodiscard]] Result<std::optional<std::span<const std::byte>>> peek();
  [[nodiscard]] LaneRecordKind peeked_kind() const noexcept { return peeked_kind_; }
  // For the bulk payloads this end holds (release_hold).
  [[nodiscard]] const std::shared_ptr<LaneMappings>& mappings() const noexcept { return maps_; }
  // Done with the record peek() returned: its space goes back to the publisher.
  void consume() noexcept;
  // Sleeps until the publisher writes (or `timeout`): true if it may have.
  [[nodiscard]] Result<bool> wait_for_message(std::chrono::nanoseconds timeout);
  // For a subscriber that sleeps elsewhere (epoll, on the wake socket it gave the publisher):
  // arm() says it is about to sleep, so the publisher's next write wakes it, and returns
  // false if something came meanwhile (then it reads instead, after disarm()).
  [[nodiscard]] bool arm() noexcept;
  void disarm() noexcept { ack().reader_waiting.store(0, std::memory_order_relaxed); }
  // Whether the publisher wrote past what was read (its position is only compared).
  [[nodiscard]] bool has_unread() const noexcept {
    return data_ != nullptr && header().write_pos.load(std::memory_order_acquire) != read_pos_;
  }
  // Messages the publisher dropped at a full lane, as it says (unchecked: only reported).
  [[nodiscard]] std::uint64_t dropped_by_publisher() const noexcept {
    return data_ != nullptr ? header().dropped.load(std::memory_order_relaxed) : 0;
  }
  // Messages consumed (fences not counted).
  [[nodiscard]] std::uint64_t delivered() const noexcept { return ack().delivered.load(std::memory_order_relaxed); }
  [[nodiscard]] const char* violation() const noexcept { return violation_; }

 private:
  LaneReader(Memfd ack, std::shared_ptr<LaneMappings> maps) noexcept
      : ack_(std::move(ack)), maps_(std::move(maps)), ack_ptr_(reinterpret_cast<LaneAck*>(maps_->ack.data())) {}
  [[nodiscard]] LaneAck& ack() const noexcept { return *ack_ptr_; }
  [[nodiscard]] const LaneHeader& header() const noexcept { return *reinterpret_cast<const LaneHeader*>(data_); }
  [[nodiscard]] const std::byte* ring() const noexcept { return data_ + kLaneHeaderBytes; }
  Result<std::optional<std::span<const std::byte>>> fail(const char* why) noexcept;

  Memfd ack_;
  std::shared_ptr<LaneMappings> maps_;
  LaneAck* ack_ptr_;
  const std::byte* data_ = nullptr;  // maps_->data, once attached
  std::uint64_t capacity_ = 0;
  std::uint64_t read_pos_ = 0;     // ours: the shared copy is only for the publisher
  std::uint64_t known_write_pos_ = 0;  // the publisher's, as read last (checked)
  std::uint64_t delivered_ = 0;
  std::uint32_t woken_writer_arm_ = 0;  // the publisher's wait for room last woken
  std::uint64_t peeked_bytes_ = 0; // the record peek() returned (0: none)
  LaneRecordKind peeked_kind_ = kLaneMessage;
  std::uint32_t arms_ = 0;  // each arming a new nonzero reader_waiting, so the writer wakes it once
  const char* violation_ = nullptr;
};

}  // namespace ubroker::shm
