// ProducerRing: reserve, abandon and reclaim over logical positions (offset = position mod
// ring size), so head - tail is always the space in use.
#include "ubroker/shm/producer_ring.hpp"

#include <unistd.h>

#include <cstring>
#include <new>

#include "ubroker/shm/futex.hpp"

namespace ubroker::shm {
namespace {

constexpr std::uint64_t round_up(std::uint64_t v, std::uint64_t to) { return (v + to - 1) / to * to; }

}  // namespace

Result<std::shared_ptr<ProducerRing>> ProducerRing::create(std::uint64_t segment_bytes) {
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  segment_bytes = round_up(std::max(segment_bytes, kMinSegmentBytes), page);
  auto memfd = Memfd::create("ubroker-ring", segment_bytes);
  if (!memfd) return std::unexpected(memfd.error());
  auto map = Mapping::map(memfd->fd(), segment_bytes, Access::kReadWrite);
  if (!map) return std::unexpected(map.error());
  return std::make_shared<ProducerRing>(std::move(*memfd), std::move(*map));
}

ProducerRing::ProducerRing(Memfd memfd, Mapping map) noexcept
    : memfd_(std::move(memfd)), map_(std::move(map)), ring_bytes_(map_.size() - kHeaderBytes) {
  // A fresh memfd reads as zeros: only the fields that are not zero need writing.
  auto* h = new (map_.data()) SegmentHeader{};
  h->magic = kSegmentMagic;
  h->size = map_.size();
}

RecordHeader& ProducerRing::record_at(std::uint64_t position) const noexcept {
  return *reinterpret_cast<RecordHeader*>(map_.data() + kHeaderBytes + position % ring_bytes_);
}

void ProducerRing::reclaim() noexcept {
  while (tail_ != head_) {
    RecordHeader& rec = record_at(tail_);
    if (rec.state.load(std::memory_order_acquire) != kRecordReleased) break;
    if (rec.holds.load(std::memory_order_acquire) != 0) break;
    tail_ += rec.bytes;  // written by this process at reserve time
  }
}

std::uint64_t ProducerRing::used_bytes(RecordHolds* holds) {
  if (holds != nullptr) holds->collect();
  std::lock_guard lk(mu_);
  reclaim();
  return head_ - tail_;
}

Result<ProducerRing::Slot> ProducerRing::reserve(std::uint64_t length, std::chrono::steady_clock::time_point deadline,
                                                 RecordHolds* holds) {
  if (length == 0 || length > max_payload()) return std::unexpected(std::make_error_code(std::errc::message_size));
  const std::uint64_t need = kRecordHeaderBytes + round_up(length, kRecordAlign);
  SegmentHeader& h = header();
  std::unique_lock lk(mu_);
  for (;;) {
    reclaim();
    const std::uint64_t at = head_ % ring_bytes_;
    const std::uint64_t free = ring_bytes_ - (head_ - tail_);
    if (at + need > ring_bytes_ && free >= ring_bytes_ - at) {
      // The record would cross the end: a padding record takes the rest of the ring.
      RecordHeader& pad = record_at(head_);
      pad.bytes = ring_bytes_ - at;
      pad.holds.store(0, std::memory_order_relaxed);
      pad.state.store(kRecordReleased, std::memory_order_relaxed);
      head_ += ring_bytes_ - at;
      continue;
    }
    if (at + need <= ring_bytes_ && free >= need) {
      RecordHeader& rec = record_at(head_);
      rec.bytes = need;
      rec.holds.store(0, std::memory_order_relaxed);
      rec.state.store(kRecordLive, std::memory_order_relaxed);
      head_ += need;
      const std::uint64_t offset = kHeaderBytes + at + kRecordHeaderBytes;
      return Slot{.ref = {.offset = offset, .length = length},
                  .data = {map_.data() + offset, static_cast<std::size_t>(length)}};
    }
    // Full. A record the broker let go but the producer's own holds keep: those are taken
    // back, or waited for where they are released.
    if (const RecordHeader& oldest = record_at(tail_);
        holds != nullptr && oldest.state.load(std::memory_order_acquire) == kRecordReleased &&
        oldest.holds.load(std::memory_order_acquire) != 0) {
      const std::uint64_t offset = kHeaderBytes + tail_ % ring_bytes_ + kRecordHeaderBytes;
      lk.unlock();
      holds->collect();
      lk.lock();
      reclaim();
      const bool still_held = tail_ != head_ && record_at(tail_).holds.load(std::memory_order_acquire) != 0 &&
                              kHeaderBytes + tail_ % ring_bytes_ + kRecordHeaderBytes == offset;
      if (!still_held) continue;
      if (std::chrono::steady_clock::now() >= deadline) return std::unexpected(std::make_error_code(std::errc::timed_out));
      lk.unlock();
      const bool waited = holds->wait_for(offset, deadline);
      lk.lock();
      if (waited) continue;
      // No holder it knows of: what wakes it is below (wake_waiters, or the deadline).
    }
    // Full: sleep until a release bumps release_seq (see the handshake in segment_layout.hpp).
    h.waiters.fetch_add(1, std::memory_order_seq_cst);
    const std::uint32_t seq = h.release_seq.load(std::memory_order_seq_cst);
    reclaim();
    const bool still_full = ring_bytes_ - (head_ - tail_) < need;
    lk.unlock();
    Result<WaitResult> waited = WaitResult::kValueChanged;
    const auto now = std::chrono::steady_clock::now();
    if (still_full) {
      if (now >= deadline) {
        h.waiters.fetch_sub(1, std::memory_order_seq_cst);
        return std::unexpected(std::make_error_code(std::errc::timed_out));
      }
      const auto left = deadline == std::chrono::steady_clock::time_point::max()
                            ? std::chrono::nanoseconds(-1)
                            : std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
      waited = futex_wait(h.release_seq, seq, left);
    }
    h.waiters.fetch_sub(1, std::memory_order_seq_cst);
    if (!waited) return std::unexpected(waited.error());
    lk.lock();
  }
}

void ProducerRing::abandon(const PayloadRef& ref) noexcept {
  {
    std::lock_guard lk(mu_);
    mark_released(map_.data(), ref);
  }
  wake_waiters();
}

void ProducerRing::hold(const PayloadRef& ref) noexcept {
  // Before the record can be released (by this process or the broker): reclaim reads the
  // state first (acquire), so it sees this count.
  reinterpret_cast<RecordHeader*>(map_.data() + ref.offset - kRecordHeaderBytes)->holds.fetch_add(1, std::memory_order_relaxed);
}

void ProducerRing::unhold(std::uint64_t offset) noexcept {
  // Release: the holder's reads (ordered before its release word, read with acquire) come
  // before the space is written again.
  reinterpret_cast<RecordHeader*>(map_.data() + offset - kRecordHeaderBytes)->holds.fetch_sub(1, std::memory_order_release);
}

void ProducerRing::wake_waiters() noexcept {
  // Another thread of this process may be waiting for exactly this space. FUTEX_WAKE on our
  // own mapped word fails only on a bad address; a waiter would then sleep to its deadline.
  if (publish_releases(map_.data())) (void)futex_wake(header().release_seq, INT32_MAX);
}

}  // namespace ubroker::shm
