// ShmReader: the receiving side of shared memory in one client. It maps each segment the
// broker passes read-only (after checking with the kernel that it is a memfd sealed against
// shrink and grow, so reading it can never raise SIGBUS), resolves bulk deliveries to
// bounds-checked views, and collects releases for the I/O thread to send in batches.
//
// Lifetime: shared by the ClientCore and every Message that holds a bulk payload, so a
// mapping outlives the connection (and a broker restart) for as long as a message needs it.
// A segment is unmapped once the broker has detached it and no message uses it any more.
// Thread-safe: Messages are released from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "annotated_mutex.hpp"
#include "lane_holds.hpp"

#include "ubroker/shm/mapping.hpp"
#include "ubroker/shm/syscall.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::detail {

class ShmReader {
 public:
  // `releases_ready` runs (on whichever thread released) when the batch of releases to send
  // goes from empty to non-empty.
  // Segments larger than `max_segment_bytes` (the broker's announced limit) are refused, so
  // a broker cannot make this process map more than it said it would pass.
  ShmReader(std::uint64_t max_segment_bytes, std::function<void()> releases_ready)
      : max_segment_bytes_(max_segment_bytes), releases_ready_(std::move(releases_ready)) {}

  // A segment fd from the broker; nullptr on success, else why it cannot be used.
  [[nodiscard]] std::optional<std::string> attach(std::uint64_t segment, UniqueFd fd);
  // The payload of a bulk delivery that `holders` messages will hold (0: only handlers
  // will see it, and the caller releases it after they return). nullopt: the reference is
  // unusable (`why` says so) and was released.
  [[nodiscard]] std::optional<std::span<const std::byte>> open(std::uint64_t segment, std::uint64_t offset,
                                                               std::uint64_t length, std::uint64_t token,
                                                               std::uint32_t holders, std::string& why);
  // The payload of a bulk record a direct lane carried, held in the lane (LaneHolds) rather
  // than by the broker: as open(), and the segment and token its holders release it by (the
  // segment marked kLaneHold: the broker's tokens use all 64 bits). nullopt: the reference
  // is unusable (`why`), and the hold was given back.
  struct LaneHold {
    std::shared_ptr<LaneHolds> lane;
    std::uint32_t slot = 0;
    std::uint32_t generation = 0;
  };
  struct Opened {
    std::span<const std::byte> payload;
    std::uint64_t segment;
    std::uint64_t token;
  };
  [[nodiscard]] std::optional<Opened> open_lane(
      std::uint64_t segment, std::uint64_t offset, std::uint64_t length, const LaneHold& hold, std::uint32_t holders,
      std::string& why);
  // One holder is done with a delivery.
  void release(std::uint64_t segment, std::uint64_t token);
  // A lane names the segment: it stays mapped while the lane lives (its records may still be
  // read after the broker detached it, the publisher having left).
  [[nodiscard]] bool use(std::uint64_t segment);
  void unuse(std::uint64_t segment);
  // The broker has no more use for the segment.
  void detach(std::uint64_t segment);
  // The releases to send now (the caller sends them in one SHM_RELEASE).
  void take_releases(std::vector<std::uint64_t>& out);

  [[nodiscard]] std::size_t mapped_segments();

  static constexpr std::uint32_t kMaxTokenSlot = 1u << 22;  // bounds what the broker can make us allocate
  // Marks the segment of a lane hold (the broker's segment ids count up from 1).
  static constexpr std::uint64_t kLaneHold = std::uint64_t{1} << 63;

 private:
  struct Segment {
    shm::Mapping map;
    std::uint64_t in_use = 0;  // deliveries not yet released
    bool detached = false;
  };
  using Segments = std::unordered_map<std::uint64_t, Segment>;
  // Why a reference into `segment` cannot be used, or nullptr (`it` then names it).
  const char* check_locked(std::uint64_t segment, std::uint64_t offset, std::uint64_t length, Segments::iterator& it)
      UBROKER_REQUIRES(mu_);
  // One use of the segment ends: it is unmapped once detached and unused.
  void unuse_locked(Segments::iterator it) UBROKER_REQUIRES(mu_);
  void release_lane(std::uint64_t segment, std::uint64_t token);

  std::uint64_t max_segment_bytes_;
  std::function<void()> releases_ready_;
  Mutex mu_;
  Segments segments_ UBROKER_GUARDED_BY(mu_);
  std::vector<std::uint32_t> holders_ UBROKER_GUARDED_BY(mu_);  // by token slot (the token's low 32 bits)
  std::vector<std::uint64_t> pending_ UBROKER_GUARDED_BY(mu_);
  struct HeldByLane {
    LaneHold hold;
    std::uint32_t holders = 0;  // 0: a free entry
  };
  std::vector<HeldByLane> lane_holds_ UBROKER_GUARDED_BY(mu_);  // by token
  std::vector<std::uint32_t> free_lane_holds_ UBROKER_GUARDED_BY(mu_);
};

}  // namespace ubroker::detail
