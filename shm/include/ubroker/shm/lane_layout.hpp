// The layout of a lane (issue 20: direct lanes): a single-producer, single-consumer ring
// between one publisher and one subscriber, in two sealed memfds, so that neither side can
// write what the other reads:
//
//   the data segment, the publisher's: [0, 4096) LaneHeader, then `capacity` bytes of ring
//     (a power of two). The publisher maps it read-write and seals it F_SEAL_FUTURE_WRITE
//     before handing it on; the subscriber can only map it read-only.
//   the ack segment, the subscriber's: kLaneAckBytes, LaneAck (its read position and the
//     releases of the bulk payloads it held). The subscriber maps it read-write and seals it
//     the same way; the publisher maps it read-only.
//
// Positions are byte counts since the lane began (64-bit, never wrapping in practice); a
// position's place in the ring is `position % capacity`. Records are 8-byte aligned: a
// LaneRecord header, then `length` payload bytes, padded to 8. A record never wraps: the
// publisher fills the end of the ring with a padding record instead.
//
// Neither side trusts what the other wrote. The subscriber checks the publisher's write
// position (not behind its own read position, at most a ring ahead) and every record header
// (kind, and a length that fits before the write position and the end of the ring) against
// values it read once; the publisher checks the subscriber's read position (not behind what it
// saw last, not past what it wrote). A violation is a fatal error of that lane. Futex words
// are only waited on (a wrong value costs a spurious wake-up) and waiting flags only decide
// whether to make a wake syscall.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace ubroker::shm {

inline constexpr std::uint64_t kLaneMagic = 0x334e414c524b4255;  // "UBKRLAN3" little-endian
// What a client offers in HELLO, naming this layout: the broker pairs only clients that offer
// the one it knows, so ends built against another layout never share a lane.
inline constexpr const char* kLaneFeature = "lanes/3";
inline constexpr std::uint64_t kLaneHeaderBytes = 4096;
// Bulk payloads a subscriber may hold at once per lane (messages of the publisher's shared
// memory it has not destroyed yet): one release word each in the ack segment.
inline constexpr std::uint32_t kLaneHoldSlots = 4096;
inline constexpr std::uint64_t kLaneAckBytes = 4096 + kLaneHoldSlots * 4;
inline constexpr std::uint64_t kLaneRecordAlign = 8;
inline constexpr std::uint64_t kLaneMinCapacity = 4096;
inline constexpr std::uint64_t kLaneMaxCapacity = std::uint64_t{1} << 30;

// Each side keeps the words it writes on every record apart from the ones the other side
// reads on every record, and reads the other side's position only when its own copy runs out
// (the publisher when the ring looks full, the subscriber when it read everything it knew
// of): a cache line moves between the two cores once per batch, not once per message.
struct LaneHeader {  // written by the publisher only
  std::uint64_t magic;     // kLaneMagic (informational)
  std::uint64_t capacity;  // informational: each side uses the capacity the broker told it
  // Bytes ever written: stored (seq_cst) after the records before it are complete.
  alignas(64) std::atomic<std::uint64_t> write_pos;
  // Rarely written, read by the subscriber after every record:
  // the futex word the subscriber sleeps on, bumped only to wake it;
  alignas(64) std::atomic<std::uint32_t> write_seq;
  // nonzero while the publisher sleeps on the ack's read_seq (lane full), a new value for
  // each sleep, which the subscriber wakes once.
  std::atomic<std::uint32_t> writer_waiting;
  // Counters for the broker's books: messages the publisher put in, and dropped at a full
  // lane (apart: the subscriber reads it with every record, and it rarely changes).
  alignas(64) std::atomic<std::uint64_t> accepted;
  alignas(64) std::atomic<std::uint64_t> dropped;
};
static_assert(std::is_standard_layout_v<LaneHeader>);
static_assert(sizeof(LaneHeader) <= kLaneHeaderBytes);

struct LaneAck {  // written by the subscriber only
  alignas(64) std::atomic<std::uint64_t> read_pos;  // bytes consumed (seq_cst, after reading them)
  // Rarely written, read by the publisher after every record:
  // the futex word the publisher sleeps on, bumped only to wake it;
  alignas(64) std::atomic<std::uint32_t> read_seq;
  // nonzero while the subscriber sleeps (on write_seq, or on its wake socket), a new value
  // for each sleep, which the publisher wakes once.
  std::atomic<std::uint32_t> reader_waiting;
  alignas(64) std::atomic<std::uint64_t> delivered;  // messages consumed
  // Bulk payloads let go (any thread of the subscriber): `released[slot]` takes the hold's
  // generation (release order, after the last read of the payload), then `releases` counts
  // it (seq_cst), and a publisher waiting (writer_waiting) is woken on read_seq. The
  // publisher reads the words of the holds it gave out, never trusting them for more than
  // its own holds: a subscriber that lies only loses its own payloads.
  alignas(64) std::atomic<std::uint64_t> releases;
  alignas(4096) std::atomic<std::uint32_t> released[kLaneHoldSlots];
};
static_assert(std::is_standard_layout_v<LaneAck>);
static_assert(sizeof(LaneAck) <= kLaneAckBytes);
static_assert(offsetof(LaneAck, released) == 4096);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// A fence (8 bytes: its number) marks where the publisher took a new route: the subscriber
// reads past it only once the broker's matching LANE_FENCE came in on the socket, so order is
// kept where a publisher's messages move between the broker and the lane. Not a message: not
// counted in `accepted` or `delivered`.
// A bulk record is a message whose payload stays in the publisher's shared-memory segment
// (shm/segment_layout.hpp): a LaneBulkRef, then the message with an empty payload. The
// segment is one the broker passed the subscriber with a fence; the reference is checked
// against the subscriber's own mapping of it.
enum LaneRecordKind : std::uint32_t { kLaneMessage = 1, kLanePadding = 2, kLaneFence = 3, kLaneBulk = 4 };

struct LaneBulkRef {
  std::uint64_t segment;  // the publisher's own id for it (as in its SHM_REGISTER)
  std::uint64_t offset;   // PayloadRef
  std::uint64_t length;
  std::uint32_t slot;        // the hold: released[slot] takes `generation` when let go
  std::uint32_t generation;  // never 0
};
static_assert(sizeof(LaneBulkRef) == 32);

struct LaneRecord {
  std::uint32_t length;  // payload bytes (kLaneMessage), or padding bytes after this header
  std::uint32_t kind;    // LaneRecordKind
};
static_assert(sizeof(LaneRecord) == 8);

[[nodiscard]] constexpr std::uint64_t lane_record_bytes(std::uint64_t length) noexcept {
  return (sizeof(LaneRecord) + length + kLaneRecordAlign - 1) & ~(kLaneRecordAlign - 1);
}

[[nodiscard]] constexpr bool valid_lane_capacity(std::uint64_t capacity) noexcept {
  return capacity >= kLaneMinCapacity && capacity <= kLaneMaxCapacity && (capacity & (capacity - 1)) == 0;
}

// The subscriber's check of a write position it read: nullptr, or why it is a violation.
[[nodiscard]] constexpr const char* check_write_pos(std::uint64_t read_pos, std::uint64_t write_pos,
                                                    std::uint64_t capacity) noexcept {
  if (write_pos < read_pos) return "write position behind the read position";
  if (write_pos - read_pos > capacity) return "write position more than the ring ahead";
  if (write_pos % kLaneRecordAlign != 0) return "write position not at a record";
  return nullptr;
}

// The subscriber's check of the record header at `read_pos`, read once into `r`.
[[nodiscard]] constexpr const char* check_record(const LaneRecord& r, std::uint64_t read_pos, std::uint64_t write_pos,
                                                 std::uint64_t capacity) noexcept {
  if (write_pos - read_pos < sizeof(LaneRecord)) return "a record header past the write position";
  if (r.kind != kLaneMessage && r.kind != kLanePadding && r.kind != kLaneFence && r.kind != kLaneBulk) {
    return "a record of unknown kind";
  }
  if (r.kind == kLaneFence && r.length != sizeof(std::uint64_t)) return "a fence record that is not 8 bytes";
  if (r.kind == kLaneBulk && r.length < sizeof(LaneBulkRef)) return "a bulk record shorter than its reference";
  const std::uint64_t bytes = lane_record_bytes(r.length);
  const std::uint64_t to_end = capacity - read_pos % capacity;
  if (bytes > to_end) return "a record that wraps around the end of the ring";
  if (bytes > write_pos - read_pos) return "a record longer than what was written";
  if (r.kind == kLanePadding && bytes != to_end) return "padding that does not reach the end of the ring";
  return nullptr;
}

// The publisher's check of a read position it read.
[[nodiscard]] constexpr const char* check_read_pos(std::uint64_t last_read_pos, std::uint64_t read_pos,
                                                   std::uint64_t write_pos) noexcept {
  if (read_pos < last_read_pos) return "read position went back";
  if (read_pos > write_pos) return "read position past the write position";
  if (read_pos % kLaneRecordAlign != 0) return "read position not at a record";
  return nullptr;
}

}  // namespace ubroker::shm
