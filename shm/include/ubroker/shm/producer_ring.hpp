// ProducerRing: the publishing side of a shared-memory segment. It owns the memfd and a
// read-write mapping, hands out contiguous payload slots (reserve), and takes space back as
// records are released, in ring order: records released out of order wait for the older
// ones. A reserve that finds the ring full sleeps on the segment's futex until the broker
// (or an abandon) releases space, or until its deadline.
//
// Thread-safe: any number of threads may reserve and abandon concurrently (one mutex; the
// futex wait happens outside it). The segment layout is in segment_layout.hpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "ubroker/shm/mapping.hpp"
#include "ubroker/shm/memfd.hpp"
#include "ubroker/shm/segment_layout.hpp"
#include "ubroker/shm/syscall.hpp"

namespace ubroker::shm {

// Holds on records that the producer counts itself (RecordHeader::holds): the subscribers of
// its direct lanes release them in their own ack segments.
class RecordHolds {
 public:
  // Takes back (ProducerRing::unhold) whatever was released since.
  virtual void collect() = 0;
  // Waits until the record whose payload is at `offset` may have been released, or
  // `deadline`; false (at once) if no holder of it is known.
  virtual bool wait_for(std::uint64_t offset, std::chrono::steady_clock::time_point deadline) = 0;

 protected:
  ~RecordHolds() = default;
};

class ProducerRing {
 public:
  struct Slot {
    PayloadRef ref;               // what a frame carries
    std::span<std::byte> data;    // where the payload goes (ref.length bytes)
  };

  // A segment of `segment_bytes` (rounded up to a page; at least kMinSegmentBytes).
  [[nodiscard]] static Result<std::shared_ptr<ProducerRing>> create(std::uint64_t segment_bytes);

  ProducerRing(const ProducerRing&) = delete;
  ProducerRing& operator=(const ProducerRing&) = delete;

  // A slot of `length` bytes (> 0). Errors: std::errc::message_size when it could never fit
  // (see max_payload()), std::errc::timed_out when no space came back by `deadline`.
  // `holds`: where the records' own holds are released, when some are out.
  [[nodiscard]] Result<Slot> reserve(std::uint64_t length, std::chrono::steady_clock::time_point deadline,
                                     RecordHolds* holds = nullptr);
  // Gives a reserved slot back without publishing it, or marks a published one released by
  // the producer itself (the broker was not given it; its own holds still count).
  void abandon(const PayloadRef& ref) noexcept;
  // The producer's own holds on a record (RecordHeader::holds): hold() before the record is
  // released or sent to the broker; unhold() once its holder let go, then wake_waiters().
  void hold(const PayloadRef& ref) noexcept;
  void unhold(std::uint64_t offset) noexcept;
  void wake_waiters() noexcept;

  [[nodiscard]] int fd() const noexcept { return memfd_.fd(); }
  [[nodiscard]] std::uint64_t size() const noexcept { return memfd_.size(); }
  [[nodiscard]] std::uint64_t max_payload() const noexcept { return ring_bytes_ - kRecordHeaderBytes; }
  // Bytes of the ring in use (reserved and not yet reclaimed), for tests and stats.
  [[nodiscard]] std::uint64_t used_bytes(RecordHolds* holds = nullptr);

  // Only create() constructs (public for make_shared).
  ProducerRing(Memfd memfd, Mapping map) noexcept;

 private:
  [[nodiscard]] RecordHeader& record_at(std::uint64_t position) const noexcept;
  [[nodiscard]] SegmentHeader& header() const noexcept { return *reinterpret_cast<SegmentHeader*>(map_.data()); }
  void reclaim() noexcept;  // advances tail_ over released records; mu_ held

  Memfd memfd_;
  Mapping map_;
  std::uint64_t ring_bytes_;
  std::mutex mu_;
  std::uint64_t head_ = 0;  // logical position of the next record (grows forever)
  std::uint64_t tail_ = 0;  // logical position of the oldest record not reclaimed
};

}  // namespace ubroker::shm
