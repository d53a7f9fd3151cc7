// The layout of a shared-memory segment: one memfd holding a header page, then a ring of
// variable-size records. Everything is an offset from the start of the segment, never a
// pointer, so each process may map it anywhere.
//
//   [0, 4096)           SegmentHeader (the producer's futex word lives here)
//   [4096, size)        the ring: records, each a 64-byte RecordHeader then its payload,
//                       padded to 64 bytes; a record never wraps (a padding record fills the
//                       end of the ring instead)
//
// Who writes what:
// - the producer (the client that owns the segment) writes everything except the two words
//   below; it maps the segment read-write before registering it;
// - the broker maps it read-write too, then seals it F_SEAL_FUTURE_WRITE so that no receiver
//   can ever map it writable; it writes only RecordHeader::state (1 = released, when the last
//   receiver has let a record go) and SegmentHeader::release_seq (bumped after such writes),
//   and wakes the producer's futex on release_seq;
// - receivers map it read-only and read only payload bytes, at offsets the broker sent and
//   that they bounds-check against the size of their own mapping.
// Nobody trusts a value read from the segment that another process could have written: the
// broker reads nothing but `waiters` (which only decides whether to make a wake syscall for
// the producer's own benefit), and the producer only reads the state words it is owed.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace ubroker::shm {

inline constexpr std::uint64_t kSegmentMagic = 0x31474553524b4255;  // "UBKRSEG1" little-endian
inline constexpr std::uint64_t kHeaderBytes = 4096;
inline constexpr std::uint64_t kRecordAlign = 64;
inline constexpr std::uint64_t kRecordHeaderBytes = 64;
inline constexpr std::uint64_t kMinSegmentBytes = kHeaderBytes + 4096;

struct SegmentHeader {
  std::uint64_t magic;       // kSegmentMagic (informational: nobody decides anything on it)
  std::uint64_t size;        // the segment's size as the producer created it (informational)
  // Futex word. The broker bumps it (seq_cst) after marking records released; a producer
  // waiting for space sleeps on it. Pairs with `waiters` as a Dekker handshake: the
  // producer increments waiters, then reads release_seq, then re-checks record states; the
  // broker stores a state, bumps release_seq, then reads waiters. Both sides use seq_cst on
  // waiters and release_seq, so either the producer sees the new state or the broker sees
  // the waiter and wakes it.
  alignas(64) std::atomic<std::uint32_t> release_seq;
  std::atomic<std::uint32_t> waiters;  // producer threads inside (or about to enter) futex_wait
};
static_assert(std::is_standard_layout_v<SegmentHeader>);
static_assert(sizeof(SegmentHeader) <= kHeaderBytes);
static_assert(offsetof(SegmentHeader, release_seq) == 64);

enum RecordState : std::uint32_t { kRecordLive = 0, kRecordReleased = 1 };

struct alignas(64) RecordHeader {
  // kRecordLive while someone may read the payload. The broker stores kRecordReleased
  // (release) when the last receiver lets go; the producer loads it (acquire) before reusing
  // the space, so every receiver's reads happen before the producer's next writes.
  std::atomic<std::uint32_t> state;
  // Holds the producer counts itself: a direct lane's subscriber releases a payload where the
  // producer reads it, not through the broker (shm/lane.hpp). Written by the producer only;
  // the space is reused once `state` is released and this is 0.
  std::atomic<std::uint32_t> holds;
  std::uint64_t bytes;  // the whole record (header + payload + padding); written by the producer
};
static_assert(std::is_standard_layout_v<RecordHeader>);
static_assert(sizeof(RecordHeader) == kRecordHeaderBytes);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

// A payload reference as it travels in frames: where the payload starts, and its length.
struct PayloadRef {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

// Why a reference cannot be used with a segment of `segment_bytes`, or nullptr if it can:
// the payload lies inside the ring, after a record header, and the record is aligned.
[[nodiscard]] constexpr const char* check_ref(std::uint64_t segment_bytes, PayloadRef ref) noexcept {
  if (ref.length == 0) return "empty payload";
  if (ref.offset < kHeaderBytes + kRecordHeaderBytes) return "offset before the ring";
  if (ref.offset > segment_bytes || ref.length > segment_bytes - ref.offset) return "past the end of the segment";
  if ((ref.offset - kHeaderBytes - kRecordHeaderBytes) % kRecordAlign != 0) return "offset not at a record";
  return nullptr;
}

// Marks the record holding a payload released: the broker's half of a release. `base` is a
// read-write mapping of the whole segment and `ref` passed check_ref().
inline void mark_released(std::byte* base, const PayloadRef& ref) noexcept {
  auto* rec = reinterpret_cast<RecordHeader*>(base + ref.offset - kRecordHeaderBytes);
  rec->state.store(kRecordReleased, std::memory_order_release);
}

// After one or more mark_released(): bumps the futex word and tells whether a producer
// thread may be asleep on it (then the caller wakes it).
[[nodiscard]] inline bool publish_releases(std::byte* base) noexcept {
  auto* h = reinterpret_cast<SegmentHeader*>(base);
  h->release_seq.fetch_add(1, std::memory_order_seq_cst);
  return h->waiters.load(std::memory_order_seq_cst) != 0;
}

}  // namespace ubroker::shm
