// The broker's side of shared memory. It validates a segment once when its owner registers
// it (a memfd, sealed against shrink and grow, within the size and per-uid quotas), maps it
// read-write and seals it against any further writable mapping, so receivers can only ever
// map it read-only. It never reads or copies payload bytes.
//
// Records: each bulk PUBLISH opens a record (a reference into a segment); every receiver it
// is delivered to holds it; when the last holder releases it (or dies), the registry marks
// the record released in the segment and wakes the producer's futex. A segment outlives its
// owner until its last record is released, then its receivers are told to detach.
//
// Event loop thread only.
#pragma once

#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include "config.hpp"
#include "router.hpp"
#include "stats.hpp"
#include "ubroker/shm/mapping.hpp"
#include "ubroker/shm/segment_layout.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::broker {

struct ShmSegment {
  std::uint64_t id = 0;             // the broker's id, what receivers see
  std::uint64_t owner = 0;          // the owner's session id; 0 once it is gone
  std::uint64_t owner_segment = 0;  // the id the owner chose for it
  std::uint32_t uid = 0;            // the owner's, for quotas
  shm::UniqueFd fd;
  shm::Mapping map;                    // read-write: the broker writes release marks only
  std::uint32_t open_records = 0;      // records with at least one holder
  std::vector<std::uint64_t> attached; // sessions that were sent the fd
};

class ShmRegistry {
 public:
  // Called for each session attached to a segment that is gone for good.
  using DetachFn = std::function<void(std::uint64_t session, std::uint64_t segment)>;

  ShmRegistry(const Limits& limits, Stats& stats, DetachFn detach)
      : limits_(&limits), stats_(stats), detach_(std::move(detach)) {}
  ShmRegistry(const ShmRegistry&) = delete;
  ShmRegistry& operator=(const ShmRegistry&) = delete;

  // Validates and adopts a segment for `owner` (session id, uid) under the id it chose.
  [[nodiscard]] std::expected<void, RouteError> add(std::uint64_t owner, std::uint32_t uid,
                                                    std::uint64_t owner_segment, shm::UniqueFd fd);
  // Opens a record for a bulk PUBLISH: the segment must be the sender's own and the
  // reference inside it. The record starts with no holder.
  [[nodiscard]] std::expected<std::uint32_t, RouteError> open(std::uint64_t owner, std::uint64_t owner_segment,
                                                              const shm::PayloadRef& ref);
  // The owner's live segment it calls `owner_segment` (a direct lane names it), or nullptr.
  [[nodiscard]] ShmSegment* find(std::uint64_t owner, std::uint64_t owner_segment) {
    auto it = by_owner_.find({owner, owner_segment});
    return it == by_owner_.end() ? nullptr : it->second;
  }
  // A receiver holds the record (its delivery is queued).
  void hold(std::uint32_t record) noexcept { ++records_[record].holders; }
  // A holder is done; the last one releases the record to the producer.
  void release(std::uint32_t record);
  // After routing: a record nobody holds is released now; `publish_again` (the publisher
  // was held back and will resend the same frame) forgets it without a release mark.
  void close_open(std::uint32_t record, bool publish_again);
  // The owner is gone: its segments stay until their last record is released.
  void owner_gone(std::uint64_t owner);

  [[nodiscard]] const ShmSegment& segment_of(std::uint32_t record) const { return *records_[record].segment; }
  [[nodiscard]] ShmSegment& segment_of(std::uint32_t record) { return *records_[record].segment; }
  [[nodiscard]] const shm::PayloadRef& ref_of(std::uint32_t record) const { return records_[record].ref; }
  [[nodiscard]] std::size_t segments() const noexcept { return segments_.size(); }
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [id, seg] : segments_) f(*seg);
  }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }
  [[nodiscard]] std::size_t owned_by(std::uint64_t owner) const;
  // Bytes of the segments owned by `uid`'s clients (including departed ones still being read).
  [[nodiscard]] std::uint64_t bytes_of(std::uint32_t uid) const {
    auto it = per_uid_.find(uid);
    return it == per_uid_.end() ? 0 : it->second.bytes;
  }
  // A receiver of `uid` is passed a segment fd (false: its uid is at the fds-in-flight
  // limit), and later detached from it (the segment is gone, or the receiver is).
  [[nodiscard]] bool attach_fd(std::uint32_t uid);
  void detach_fd(std::uint32_t uid);

 private:
  struct Record {
    ShmSegment* segment = nullptr;  // nullptr: a free slot
    shm::PayloadRef ref;
    std::uint32_t holders = 0;
  };
  struct UidUse {
    std::uint64_t bytes = 0;
    std::uint32_t segments = 0;
    std::uint32_t fds_in_flight = 0;
  };
  void forget_if_unused(std::uint32_t uid);
  [[nodiscard]] RouteError refuse(std::string message);
  void free_record(std::uint32_t record);
  void destroy(ShmSegment& seg);

  const Limits* limits_;
  Stats& stats_;
  DetachFn detach_;
  std::unordered_map<std::uint64_t, std::unique_ptr<ShmSegment>> segments_;
  std::map<std::pair<std::uint64_t, std::uint64_t>, ShmSegment*> by_owner_;  // (owner, owner_segment), owners alive
  std::unordered_map<std::uint32_t, UidUse> per_uid_;
  std::vector<Record> records_;
  std::vector<std::uint32_t> free_records_;
  std::uint64_t next_id_ = 1;
  std::uint64_t bytes_ = 0;
};

}  // namespace ubroker::broker
