// ShmRegistry: segment validation and the record lifecycle (see shm_registry.hpp).
#include "shm_registry.hpp"

#include "slots.hpp"

#include <fcntl.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "ubroker/shm/futex.hpp"
#include "ubroker/shm/memfd.hpp"

namespace ubroker::broker {

RouteError ShmRegistry::refuse(std::string message) {
  ++stats_.shm_refused;
  return RouteError{wire::SHM_REFUSED, std::move(message)};
}

std::size_t ShmRegistry::owned_by(std::uint64_t owner) const {
  const auto from = by_owner_.lower_bound({owner, 0});
  const auto to = by_owner_.upper_bound({owner, UINT64_MAX});
  return static_cast<std::size_t>(std::distance(from, to));
}

std::expected<void, RouteError> ShmRegistry::add(std::uint64_t owner, std::uint32_t uid, std::uint64_t owner_segment,
                                                 shm::UniqueFd fd) {
  const Limits& l = *limits_;
  if (l.shm_max_segment_bytes == 0) return std::unexpected(refuse("shared memory is disabled on this broker"));
  if (by_owner_.contains({owner, owner_segment})) {
    return std::unexpected(refuse(fmt::format("segment id {} is already registered by this client", owner_segment)));
  }
  auto facts = shm::inspect(fd.get());
  if (!facts) return std::unexpected(refuse(fmt::format("cannot inspect the fd: {}", facts.error().message())));
  if (!facts->memfd) return std::unexpected(refuse(fmt::format("the fd is a {}, not a memfd", facts->kind)));
  constexpr unsigned kNeeded = F_SEAL_SHRINK | F_SEAL_GROW;
  if ((facts->seals & kNeeded) != kNeeded) {
    return std::unexpected(refuse(fmt::format(
        "the memfd is not sealed against {} (F_SEAL_SHRINK and F_SEAL_GROW are required, so no reader can be hit "
        "by SIGBUS)",
        (facts->seals & F_SEAL_SHRINK) == 0 && (facts->seals & F_SEAL_GROW) == 0 ? "shrinking and growing"
        : (facts->seals & F_SEAL_SHRINK) == 0                                    ? "shrinking"
                                                                                 : "growing")));
  }
  if ((facts->seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) != 0 || !facts->read_write) {
    return std::unexpected(refuse("the memfd must be writable (opened O_RDWR, no write seals): the broker marks "
                                  "releases in it"));
  }
  if ((facts->seals & F_SEAL_SEAL) != 0) {
    return std::unexpected(refuse("the memfd's seals are locked (F_SEAL_SEAL): the broker must add "
                                  "F_SEAL_FUTURE_WRITE so receivers can only map it read-only"));
  }
  if (facts->size < shm::kMinSegmentBytes || facts->size % 4096 != 0) {
    return std::unexpected(refuse(fmt::format("segment size {} is not a multiple of 4096 of at least {} bytes",
                                              facts->size, shm::kMinSegmentBytes)));
  }
  if (facts->size > l.shm_max_segment_bytes) {
    return std::unexpected(refuse(fmt::format("segment of {} bytes is over the limit of {} bytes (limits.shm_max_segment_bytes)",
                                              facts->size, l.shm_max_segment_bytes)));
  }
  if (owned_by(owner) >= l.shm_max_segments_per_client) {
    return std::unexpected(refuse(fmt::format("too many segments (limit {} per client, limits.shm_max_segments_per_client)",
                                              l.shm_max_segments_per_client)));
  }
  UidUse& use = per_uid_[uid];  // erased again below if nothing comes of it
  if (use.segments >= l.shm_max_segments_per_uid) {
    forget_if_unused(uid);
    return std::unexpected(refuse(fmt::format("uid {} has {} segments (limit {}, limits.shm_max_segments_per_uid)", uid,
                                              use.segments, l.shm_max_segments_per_uid)));
  }
  if (use.bytes + facts->size > l.shm_max_bytes_per_uid) {
    forget_if_unused(uid);
    return std::unexpected(refuse(fmt::format(
        "uid {} would have {} bytes of segments (limit {}, limits.shm_max_bytes_per_uid)", uid,
        use.bytes + facts->size, l.shm_max_bytes_per_uid)));
  }
  auto map = shm::Mapping::map(fd.get(), facts->size, shm::Access::kReadWrite);
  if (!map) {
    forget_if_unused(uid);
    return std::unexpected(refuse(fmt::format("cannot map the segment: {}", map.error().message())));
  }
  // The broker writes the header (release_seq) and record headers only. A page nobody wrote
  // would be allocated by that write and charged to the broker: the header must be written
  // now (every producer writes it at creation), and each record's page when it is published.
  if (auto resident = map->resident(0); !resident || !*resident) {
    forget_if_unused(uid);
    return std::unexpected(refuse("the segment's header page was never written (a producer initialises it before "
                                  "registering)"));
  }
  // From here on nobody can map it writable again: receivers get read-only views only.
  if (auto sealed = shm::add_seals(fd.get(), F_SEAL_FUTURE_WRITE | F_SEAL_SEAL); !sealed) {
    forget_if_unused(uid);
    return std::unexpected(refuse(fmt::format("cannot seal the segment: {}", sealed.error().message())));
  }
  auto seg = std::make_unique<ShmSegment>();
  seg->id = next_id_++;
  seg->owner = owner;
  seg->owner_segment = owner_segment;
  seg->uid = uid;
  seg->fd = std::move(fd);
  seg->map = std::move(*map);
  use.bytes += facts->size;
  ++use.segments;
  bytes_ += facts->size;
  spdlog::debug("shm: segment {} registered by client {} (uid {}, {} bytes)", seg->id, owner, uid, facts->size);
  by_owner_.emplace(std::pair{owner, owner_segment}, seg.get());
  segments_.emplace(seg->id, std::move(seg));
  return {};
}

std::expected<std::uint32_t, RouteError> ShmRegistry::open(std::uint64_t owner, std::uint64_t owner_segment,
                                                           const shm::PayloadRef& ref) {
  const auto found = by_owner_.find({owner, owner_segment});
  ShmSegment* seg = found == by_owner_.end() ? nullptr : found->second;
  if (seg == nullptr) {
    return std::unexpected(refuse(fmt::format("segment {} is not one this client registered", owner_segment)));
  }
  if (const char* why = shm::check_ref(seg->map.size(), ref)) {
    return std::unexpected(refuse(fmt::format("bad reference (offset {}, length {}) into segment {} of {} bytes: {}",
                                              ref.offset, ref.length, owner_segment, seg->map.size(), why)));
  }
  if (auto resident = seg->map.resident(ref.offset - shm::kRecordHeaderBytes); !resident || !*resident) {
    return std::unexpected(refuse(fmt::format("the record header before offset {} in segment {} was never written",
                                              ref.offset, owner_segment)));
  }
  const std::uint32_t index = take_slot(records_, free_records_);
  records_[index] = Record{.segment = seg, .ref = ref, .holders = 0};
  ++seg->open_records;
  return index;
}

void ShmRegistry::release(std::uint32_t record) {
  Record& r = records_[record];
  if (--r.holders != 0) return;
  std::byte* base = r.segment->map.data();
  shm::mark_released(base, r.ref);
  if (shm::publish_releases(base)) {
    // Only the producer's own wake-up is at stake; a failure here is logged, not fatal.
    if (auto woke = shm::futex_wake(reinterpret_cast<shm::SegmentHeader*>(base)->release_seq, INT32_MAX); !woke) {
      spdlog::warn("shm: futex wake for segment {} failed: {}", r.segment->id, woke.error().message());
    }
  }
  free_record(record);
}

void ShmRegistry::close_open(std::uint32_t record, bool publish_again) {
  if (records_[record].holders != 0) return;
  if (publish_again) {
    free_record(record);
    return;
  }
  ++records_[record].holders;
  release(record);
}

void ShmRegistry::free_record(std::uint32_t record) {
  ShmSegment* seg = records_[record].segment;
  records_[record] = Record{};
  free_records_.push_back(record);
  if (--seg->open_records == 0 && seg->owner == 0) destroy(*seg);
}

void ShmRegistry::owner_gone(std::uint64_t owner) {
  std::vector<ShmSegment*> idle;
  const auto from = by_owner_.lower_bound({owner, 0});
  const auto to = by_owner_.upper_bound({owner, UINT64_MAX});
  for (auto it = from; it != to; ++it) {
    ShmSegment* seg = it->second;
    seg->owner = 0;
    if (seg->open_records == 0) idle.push_back(seg);
  }
  by_owner_.erase(from, to);
  for (ShmSegment* seg : idle) destroy(*seg);
}

bool ShmRegistry::attach_fd(std::uint32_t uid) {
  UidUse& use = per_uid_[uid];
  if (use.fds_in_flight >= limits_->shm_max_fds_in_flight_per_uid) {
    forget_if_unused(uid);
    return false;
  }
  ++use.fds_in_flight;
  return true;
}

void ShmRegistry::detach_fd(std::uint32_t uid) {
  auto it = per_uid_.find(uid);
  if (it == per_uid_.end() || it->second.fds_in_flight == 0) return;
  --it->second.fds_in_flight;
  forget_if_unused(uid);
}

void ShmRegistry::forget_if_unused(std::uint32_t uid) {
  auto it = per_uid_.find(uid);
  if (it != per_uid_.end() && it->second.segments == 0 && it->second.fds_in_flight == 0) per_uid_.erase(it);
}

void ShmRegistry::destroy(ShmSegment& seg) {
  const std::uint64_t id = seg.id;
  for (std::uint64_t session : seg.attached) detach_(session, id);
  UidUse& use = per_uid_[seg.uid];
  use.bytes -= seg.map.size();
  --use.segments;
  forget_if_unused(seg.uid);
  bytes_ -= seg.map.size();
  spdlog::debug("shm: segment {} gone", id);
  segments_.erase(id);
}

}  // namespace ubroker::broker
