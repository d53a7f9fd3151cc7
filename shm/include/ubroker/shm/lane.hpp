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
#include <optional>
#include <span>

#include "ubroker/shm/lane_layout.hpp"
#include "ubroker/shm/mapping.hpp"
#include "ubroker/shm/memfd.hpp"
#include "ubroker/shm/syscall.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::shm {

// Checks an fd the other side (through the broker) handed over for a lane segment: a memfd of
// exactly `size` bytes, sealed against shrink, grow and new writable mappings.
[[nodiscard]] const char* check_lane_fd(int fd, std::uint64_t size);

class LaneWriter {
 public:
  // A new data segment for a ring of `capacity` bytes (valid_lane_capacity), mapped and sealed.
  [[nodiscard]] static Result<LaneWriter> create(std::uint64_t capacity);
  [[nodiscard]] int data_fd() const noexcept { return data_.fd(); }
  // The subscriber's ack segment: checked (check_lane_fd), then mapped read-only.
  [[nodiscard]] Result<void> attach(int ack_fd);

  enum class Push { kWritten, kFull };
  // Writes one message if it fits now. Errors: message_size (longer than the ring can ever
  // hold), protocol_error (a violation).
  [[nodiscard]] Result<Push> try_push(std::span<const std::byte> payload);
  // Waits until the subscriber makes room (or `timeout`): true if it may have.
  [[nodiscard]] Result<bool> wait_for_room(std::chrono::nanoseconds timeout);
  void count_dropped() noexcept { header().dropped.fetch_add(1, std::memory_order_relaxed); }
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

  Memfd data_;
  Mapping map_;
  Mapping ack_map_;
  std::uint64_t capacity_;
  std::uint64_t write_pos_ = 0;  // ours: the shared copy is only for the subscriber
  std::uint64_t last_read_pos_ = 0;
  const char* violation_ = nullptr;
};

class LaneReader {
 public:
  // A new ack segment, mapped and sealed.
  [[nodiscard]] static Result<LaneReader> create();
  [[nodiscard]] int ack_fd() const noexcept { return ack_.fd(); }
  // The publisher's data segment for a ring of `capacity` bytes (the broker's word for it):
  // checked (check_lane_fd), then mapped read-only.
  [[nodiscard]] Result<void> attach(int data_fd, std::uint64_t capacity);

  // The next message, valid until consume(); nullopt when none is there yet. Errors:
  // protocol_error (a violation).
  [[nodiscard]] Result<std::optional<std::span<const std::byte>>> peek();
  // Done with the message peek() returned: its space goes back to the publisher.
  void consume() noexcept;
  // Sleeps until the publisher writes (or `timeout`): true if it may have.
  [[nodiscard]] Result<bool> wait_for_message(std::chrono::nanoseconds timeout);
  [[nodiscard]] const char* violation() const noexcept { return violation_; }

 private:
  LaneReader(Memfd ack, Mapping map) noexcept : ack_(std::move(ack)), ack_map_(std::move(map)) {}
  [[nodiscard]] LaneAck& ack() const noexcept { return *reinterpret_cast<LaneAck*>(ack_map_.data()); }
  [[nodiscard]] const LaneHeader& header() const noexcept { return *reinterpret_cast<const LaneHeader*>(data_map_.data()); }
  [[nodiscard]] const std::byte* ring() const noexcept { return data_map_.data() + kLaneHeaderBytes; }
  Result<std::optional<std::span<const std::byte>>> fail(const char* why) noexcept;

  Memfd ack_;
  Mapping ack_map_;
  Mapping data_map_;
  std::uint64_t capacity_ = 0;
  std::uint64_t read_pos_ = 0;     // ours: the shared copy is only for the publisher
  std::uint64_t peeked_bytes_ = 0; // the record peek() returned (0: none)
  const char* violation_ = nullptr;
};

}  // namespace ubroker::shm
