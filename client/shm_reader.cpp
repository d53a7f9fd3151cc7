// ShmReader: read-only mappings of the broker's segments, and release batching.
#include "shm_reader.hpp"

#include <fcntl.h>

#include <fmt/format.h>

#include "ubroker/shm/memfd.hpp"
#include "ubroker/shm/segment_layout.hpp"

namespace ubroker::detail {

std::optional<std::string> ShmReader::attach(std::uint64_t segment, UniqueFd fd) {
  // The broker's ids count up from 1; the top bit marks this reader's own lane holds.
  if ((segment & kLaneHold) != 0) return fmt::format("segment id {} is out of range", segment);
  // The broker checked all this already; a receiver trusts the kernel, not the broker.
  auto facts = shm::inspect(fd.get());
  if (!facts) return fmt::format("cannot inspect segment {}: {}", segment, facts.error().message());
  constexpr unsigned kNeeded = F_SEAL_SHRINK | F_SEAL_GROW;
  if (!facts->memfd || (facts->seals & kNeeded) != kNeeded) {
    return fmt::format("segment {} is not a memfd sealed against shrink and grow", segment);
  }
  if (facts->size > max_segment_bytes_) {
    return fmt::format("segment {} has {} bytes, over the broker's announced limit of {}", segment, facts->size,
                       max_segment_bytes_);
  }
  auto map = shm::Mapping::map(fd.get(), facts->size, shm::Access::kReadOnly);
  if (!map) return fmt::format("cannot map segment {}: {}", segment, map.error().message());
  LockGuard lk(mu_);
  auto [it, fresh] = segments_.try_emplace(segment);
  if (!fresh && it->second.in_use != 0) return fmt::format("segment {} was passed twice", segment);
  it->second = Segment{.map = std::move(*map), .in_use = 0, .detached = false};
  return std::nullopt;
}

const char* ShmReader::check_locked(std::uint64_t segment, std::uint64_t offset, std::uint64_t length,
                                    Segments::iterator& it) {
  it = segments_.find(segment);
  if (it == segments_.end() || !it->second.map) return "unknown segment";
  return shm::check_ref(it->second.map.size(), {.offset = offset, .length = length});
}

void ShmReader::unuse_locked(Segments::iterator it) {
  if (--it->second.in_use == 0 && it->second.detached) segments_.erase(it);
}

std::optional<std::span<const std::byte>> ShmReader::open(std::uint64_t segment, std::uint64_t offset,
                                                          std::uint64_t length, std::uint64_t token,
                                                          std::uint32_t holders, std::string& why) {
  LockGuard lk(mu_);
  const auto slot = static_cast<std::uint32_t>(token);
  Segments::iterator it;
  const char* bad = slot >= kMaxTokenSlot ? "token out of range" : check_locked(segment, offset, length, it);
  if (bad != nullptr) {
    why = fmt::format("unusable shared-memory reference (segment {}, offset {}, length {}): {}", segment, offset, length,
                      bad);
    pending_.push_back(token);  // give it back all the same, so the producer is not held up
    if (pending_.size() == 1) releases_ready_();
    return std::nullopt;
  }
  Segment& seg = it->second;
  ++seg.in_use;
  if (holders_.size() <= slot) holders_.resize(std::max<std::size_t>(slot + 1, holders_.size() * 2));
  holders_[slot] = std::max<std::uint32_t>(holders, 1);
  return std::span<const std::byte>(seg.map.data() + offset, static_cast<std::size_t>(length));
}

std::optional<ShmReader::Opened> ShmReader::open_lane(
    std::uint64_t segment, std::uint64_t offset, std::uint64_t length, const LaneHold& hold, std::uint32_t holders,
    std::string& why) {
  LockGuard lk(mu_);
  Segments::iterator it;
  if (const char* bad = check_locked(segment, offset, length, it)) {
    why = fmt::format("a lane's bulk reference (segment {}, offset {}, length {}): {}", segment, offset, length, bad);
    hold.lane->refuse(hold.slot, hold.generation);
    return std::nullopt;
  }
  Segment& seg = it->second;
  ++seg.in_use;
  std::uint32_t index = 0;
  if (!free_lane_holds_.empty()) {
    index = free_lane_holds_.back();
    free_lane_holds_.pop_back();
  } else {
    index = static_cast<std::uint32_t>(lane_holds_.size());
    lane_holds_.emplace_back();
  }
  lane_holds_[index] = HeldByLane{.hold = hold, .holders = std::max<std::uint32_t>(holders, 1)};
  hold.lane->held();
  return Opened{.payload = std::span<const std::byte>(seg.map.data() + offset, static_cast<std::size_t>(length)),
                .segment = segment | kLaneHold,
                .token = index};
}

void ShmReader::release(std::uint64_t segment, std::uint64_t token) {
  if ((segment & kLaneHold) != 0) {
    release_lane(segment & ~kLaneHold, token);
    return;
  }
  bool ready = false;
  {
    LockGuard lk(mu_);
    auto it = segments_.find(segment);
    if (it == segments_.end()) return;
    const auto slot = static_cast<std::uint32_t>(token);
    if (slot < holders_.size() && holders_[slot] > 1) {
      --holders_[slot];
      return;
    }
    pending_.push_back(token);
    ready = pending_.size() == 1;
    unuse_locked(it);
  }
  if (ready) releases_ready_();
}

void ShmReader::release_lane(std::uint64_t segment, std::uint64_t token) {
  LaneHold let_go;
  {
    LockGuard lk(mu_);
    auto it = segments_.find(segment);
    if (it == segments_.end() || token >= lane_holds_.size() || lane_holds_[token].holders == 0) return;
    HeldByLane& h = lane_holds_[token];
    if (--h.holders != 0) return;
    let_go = std::move(h.hold);
    free_lane_holds_.push_back(static_cast<std::uint32_t>(token));
    unuse_locked(it);
  }
  let_go.lane->release(let_go.slot, let_go.generation);  // outside the lock: it may wake the publisher
}

bool ShmReader::use(std::uint64_t segment) {
  LockGuard lk(mu_);
  auto it = segments_.find(segment);
  if (it == segments_.end() || !it->second.map) return false;
  ++it->second.in_use;
  return true;
}

void ShmReader::unuse(std::uint64_t segment) {
  LockGuard lk(mu_);
  if (auto it = segments_.find(segment); it != segments_.end()) unuse_locked(it);
}

void ShmReader::detach(std::uint64_t segment) {
  LockGuard lk(mu_);
  auto it = segments_.find(segment);
  if (it == segments_.end()) return;
  if (it->second.in_use == 0) {
    segments_.erase(it);
  } else {
    it->second.detached = true;  // unmapped when the last message lets go
  }
}

void ShmReader::take_releases(std::vector<std::uint64_t>& out) {
  LockGuard lk(mu_);
  out.swap(pending_);
  pending_.clear();
}

std::size_t ShmReader::mapped_segments() {
  LockGuard lk(mu_);
  return segments_.size();
}

}  // namespace ubroker::detail
