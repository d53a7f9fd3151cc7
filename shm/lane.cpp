#include "ubroker/shm/lane.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <string>
#include <string_view>
#include <memory>
#include <system_error>

#include "ubroker/shm/futex.hpp"

namespace ubroker::shm {
namespace {

constexpr unsigned kLaneSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE;

std::unexpected<std::error_code> protocol_error() { return std::unexpected(std::make_error_code(std::errc::protocol_error)); }

// The next value of a waiting word: never 0 (which says nobody waits), a new one per wait, so
// the other end wakes each wait once.
std::uint32_t next_arm(std::uint32_t& arms) noexcept {
  if (++arms == 0) arms = 1;
  return arms;
}

}  // namespace

const char* check_lane_fd(int fd, std::uint64_t size) {
  auto facts = inspect(fd);
  if (!facts) return "the fd cannot be inspected";
  if (!facts->memfd) return "not a memfd";
  if ((facts->seals & kLaneSeals) != kLaneSeals) return "not sealed against shrink, grow and new writable mappings";
  if (facts->size != size) return "not the size agreed";
  return nullptr;
}

const char* check_wake_fd(int fd) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) return "the fd cannot be inspected";
  if (!S_ISSOCK(st.st_mode)) return "not a socket";
  int domain = 0, type = 0;
  socklen_t len = sizeof domain;
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return "the socket cannot be inspected";
  len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return "the socket cannot be inspected";
  if (domain != AF_UNIX || type != SOCK_STREAM) return "not a Unix stream socket";
  // Its peer has no name, as a socket pair's has: one connected to a named socket (the
  // journal's, say) would have the publisher's wake-ups go there, under its name.
  sockaddr_un peer{};
  len = sizeof peer;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return "a socket with no peer";
  if (len != sizeof(sa_family_t)) return "a socket connected to a named one, not one of a pair";
  return nullptr;
}

void send_wake(int fd) noexcept {
  const std::byte one{1};
  // MSG_DONTWAIT whatever the socket's flags (the subscriber shares them and may clear
  // O_NONBLOCK): EAGAIN means bytes wait already, so the subscriber wakes anyway.
  (void)::send(fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

// ---- the publisher's end ------------------------------------------------------------------

Result<LaneWriter> LaneWriter::create(std::uint64_t capacity) {
  if (!valid_lane_capacity(capacity)) return std::unexpected(std::make_error_code(std::errc::invalid_argument));
  auto data = Memfd::create("ubroker-lane", kLaneHeaderBytes + capacity);
  if (!data) return std::unexpected(data.error());
  auto map = Mapping::map(data->fd(), data->size(), Access::kReadWrite);
  if (!map) return std::unexpected(map.error());
  // From here on nobody else can map it writable: the subscriber reads, never writes.
  if (auto sealed = add_seals(data->fd(), F_SEAL_FUTURE_WRITE); !sealed) return std::unexpected(sealed.error());
  LaneHeader* h = std::construct_at(reinterpret_cast<LaneHeader*>(map->data()));  // in the shared page
  h->magic = kLaneMagic;
  h->capacity = capacity;
  return LaneWriter(std::move(*data), std::move(*map), capacity);
}

Result<void> LaneWriter::attach(int ack_fd, UniqueFd wake) {
  if (check_lane_fd(ack_fd, kLaneAckBytes) != nullptr) return std::unexpected(std::make_error_code(std::errc::invalid_argument));
  if (wake && check_wake_fd(wake.get()) != nullptr) return std::unexpected(std::make_error_code(std::errc::invalid_argument));
  wake_ = std::move(wake);
  auto map = Mapping::map(ack_fd, kLaneAckBytes, Access::kReadOnly);
  if (!map) return std::unexpected(map.error());
  ack_map_ = std::move(*map);
  return {};
}

Result<void> LaneWriter::fail(const char* why) noexcept {
  if (violation_ == nullptr) violation_ = why;
  return protocol_error();
}

std::optional<std::uint64_t> LaneWriter::read_pos() noexcept {
  // seq_cst: read after a wait for room announced itself (and only when the copy runs out,
  // not per record).
  const std::uint64_t r = ack().read_pos.load(std::memory_order_seq_cst);
  if (const char* why = check_read_pos(last_read_pos_, r, write_pos_)) {
    (void)fail(why);
    return std::nullopt;
  }
  last_read_pos_ = r;
  return r;
}

Result<std::optional<std::span<std::byte>>> LaneWriter::try_reserve(std::uint64_t size) {
  if (violation_ != nullptr || !ack_map_) return protocol_error();
  if (size > max_payload()) return std::unexpected(std::make_error_code(std::errc::message_size));
  const std::uint64_t bytes = lane_record_bytes(size);
  const std::uint64_t at = write_pos_ % capacity_;
  const std::uint64_t to_end = capacity_ - at;
  // A record that would wrap goes after a padding record that fills the end of the ring.
  const std::uint64_t padding = bytes > to_end ? to_end : 0;
  // The subscriber's position is read only when the one read last leaves too little room.
  if (write_pos_ + padding + bytes - last_read_pos_ > capacity_) {
    const auto r = read_pos();
    if (!r) return protocol_error();
    if (write_pos_ + padding + bytes - *r > capacity_) return std::optional<std::span<std::byte>>();
  }
  if (padding != 0) {
    const LaneRecord pad{.length = static_cast<std::uint32_t>(padding - sizeof(LaneRecord)), .kind = kLanePadding};
    std::memcpy(ring() + at, &pad, sizeof pad);
    write_pos_ += padding;  // made visible with the record after it
  }
  reserved_ = size;
  return std::optional(std::span<std::byte>(ring() + write_pos_ % capacity_ + sizeof(LaneRecord), size));
}

void LaneWriter::publish(LaneRecordKind kind) noexcept {
  std::byte* rec = ring() + write_pos_ % capacity_;
  const LaneRecord head{.length = static_cast<std::uint32_t>(reserved_), .kind = kind};
  std::memcpy(rec, &head, sizeof head);
  write_pos_ += lane_record_bytes(reserved_);
  LaneHeader& h = header();
  if (kind != kLaneFence) h.accepted.store(++accepted_, std::memory_order_relaxed);  // ours alone: no RMW
  // Dekker with the reader: it sets reader_waiting, then re-reads write_pos before sleeping.
  h.write_pos.store(write_pos_, std::memory_order_seq_cst);
  const std::uint32_t armed = ack().reader_waiting.load(std::memory_order_seq_cst);
  if (armed == 0 || armed == woken_arm_) return;  // awake, or woken already for this sleep
  woken_arm_ = armed;
  if (wake_) {
    send_wake(wake_.get());
  } else {
    // A reader in wait_for_message read write_seq before it armed: the bump ends its wait.
    h.write_seq.fetch_add(1, std::memory_order_release);
    (void)futex_wake(h.write_seq, 1);
  }
}

std::optional<LaneWriter::Hold> LaneWriter::take_hold(std::uint64_t offset) {
  std::uint32_t slot = 0;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else if (held_.size() < kLaneHoldSlots) {
    slot = static_cast<std::uint32_t>(held_.size());
    held_.emplace_back();
  } else {
    return std::nullopt;
  }
  Held& h = held_[slot];
  if (++h.generation == 0) h.generation = 1;  // 0 is what an unused release word holds
  h.offset = offset;
  h.live = true;
  ++outstanding_;
  return Hold{.slot = slot, .generation = h.generation};
}

void LaneWriter::return_hold(const Hold& h) noexcept {
  held_[h.slot].live = false;
  --outstanding_;
  free_slots_.push_back(h.slot);
}

void LaneWriter::wake_own_waiters() noexcept {
  if (ack_map_) (void)futex_wake(ack().read_seq, INT_MAX);
}

bool LaneWriter::holds(std::uint64_t offset) const noexcept {
  if (outstanding_ == 0) return false;
  for (const Held& h : held_) {
    if (h.live && h.offset == offset) return true;
  }
  return false;
}

Result<LaneWriter::Push> LaneWriter::try_push(std::span<const std::byte> payload) {
  auto room = try_reserve(payload.size());
  if (!room) return std::unexpected(room.error());
  if (!*room) return Push::kFull;
  if (!payload.empty()) std::memcpy((*room)->data(), payload.data(), payload.size());
  commit();
  return Push::kWritten;
}

Result<LaneWriter::Push> LaneWriter::try_push_fence(std::uint64_t number) {
  auto room = try_reserve(sizeof number);
  if (!room) return std::unexpected(room.error());
  if (!*room) return Push::kFull;
  std::memcpy((*room)->data(), &number, sizeof number);
  publish(kLaneFence);
  return Push::kWritten;
}

LaneWriter::RoomWait LaneWriter::room_wait() noexcept {
  return {&ack().read_seq,  ack().read_seq.load(std::memory_order_seq_cst),
          &ack().read_pos,  last_read_pos_,
          &ack().releases,  ack().releases.load(std::memory_order_seq_cst),
          &header().writer_waiting, next_arm(arms_)};
}

LaneWriter::RoomWait LaneWriter::release_wait() noexcept {
  RoomWait w = room_wait();
  w.was = ack().read_pos.load(std::memory_order_seq_cst);  // compared only, never used
  return w;
}

Result<bool> LaneWriter::wait_for_room(std::chrono::nanoseconds timeout) {
  if (violation_ != nullptr || !ack_map_) return protocol_error();
  const RoomWait w = room_wait();
  wait(w, timeout);
  const auto r = read_pos();  // checked, as every position the subscriber writes
  if (!r) return protocol_error();
  return *r != w.was || ack().releases.load(std::memory_order_relaxed) != w.releases_was;
}

void LaneWriter::wait(const RoomWait& w, std::chrono::nanoseconds timeout) noexcept {
  w.waiting->store(w.arm, std::memory_order_seq_cst);
  // Dekker with the reader's consume (and release_hold): it moves read_pos (counts a release),
  // bumps read_seq, then reads `waiting`.
  if (w.read_pos->load(std::memory_order_seq_cst) == w.was && w.releases->load(std::memory_order_seq_cst) == w.releases_was) {
    (void)futex_wait(*w.read_seq, w.seen, timeout);
  }
  // Another thread of the publisher may be waiting on the same lane with a later arm: only
  // this wait's own is cleared.
  std::uint32_t mine = w.arm;
  w.waiting->compare_exchange_strong(mine, 0, std::memory_order_relaxed);
}

// ---- the subscriber's end -----------------------------------------------------------------

void release_hold(const LaneMappings& m, std::uint32_t slot, std::uint32_t generation) noexcept {
  if (slot >= kLaneHoldSlots || !m.ack) return;
  auto& a = *reinterpret_cast<LaneAck*>(m.ack.data());
  a.released[slot].store(generation, std::memory_order_release);  // after every read of the payload
  // Dekker with a publisher waiting for room or for this hold: it arms writer_waiting, then
  // re-reads `releases` before sleeping on read_seq.
  a.releases.fetch_add(1, std::memory_order_seq_cst);
  if (!m.data) return;
  const auto& h = *reinterpret_cast<const LaneHeader*>(m.data.data());
  if (h.writer_waiting.load(std::memory_order_seq_cst) == 0) return;
  a.read_seq.fetch_add(1, std::memory_order_release);
  (void)futex_wake(a.read_seq, INT_MAX);
}

Result<LaneReader> LaneReader::create() {
  auto ack = Memfd::create("ubroker-lane-ack", kLaneAckBytes);
  if (!ack) return std::unexpected(ack.error());
  auto map = Mapping::map(ack->fd(), ack->size(), Access::kReadWrite);
  if (!map) return std::unexpected(map.error());
  if (auto sealed = add_seals(ack->fd(), F_SEAL_FUTURE_WRITE); !sealed) return std::unexpected(sealed.error());
  std::construct_at(reinterpret_cast<LaneAck*>(map->data()));
  auto maps = std::make_shared<LaneMappings>();
  maps->ack = std::move(*map);
  return LaneReader(std::move(*ack), std::move(maps));
}

Result<void> LaneReader::attach(int data_fd, std::uint64_t capacity) {
  if (!valid_lane_capacity(capacity) || check_lane_fd(data_fd, kLaneHeaderBytes + capacity) != nullptr) {
    return std::unexpected(std::make_error_code(std::errc::invalid_argument));
  }
  auto map = Mapping::map(data_fd, kLaneHeaderBytes + capacity, Access::kReadOnly);
  if (!map) return std::unexpected(map.error());
  maps_->data = std::move(*map);
  data_ = maps_->data.data();
  capacity_ = capacity;
  return {};
}

Result<std::optional<std::span<const std::byte>>> LaneReader::fail(const char* why) noexcept {
  if (violation_ == nullptr) violation_ = why;
  return protocol_error();
}

Result<std::optional<std::span<const std::byte>>> LaneReader::peek() {
  if (violation_ != nullptr || data_ == nullptr) return protocol_error();
  for (;;) {
    // Each value the publisher wrote is read once, checked, and only the checked copy used.
    // Its position is read again only once everything it said before was read.
    if (known_write_pos_ == read_pos_) {
      const std::uint64_t w = header().write_pos.load(std::memory_order_acquire);
      if (const char* why = check_write_pos(read_pos_, w, capacity_)) return fail(why);
      if (w == read_pos_) return std::optional<std::span<const std::byte>>();
      known_write_pos_ = w;
    }
    const std::uint64_t w = known_write_pos_;
    LaneRecord r;
    std::memcpy(&r, ring() + read_pos_ % capacity_, sizeof r);
    if (const char* why = check_record(r, read_pos_, w, capacity_)) return fail(why);
    if (r.kind == kLanePadding) {
      read_pos_ += lane_record_bytes(r.length);
      ack().read_pos.store(read_pos_, std::memory_order_release);
      continue;
    }
    peeked_bytes_ = lane_record_bytes(r.length);
    peeked_kind_ = static_cast<LaneRecordKind>(r.kind);
    return std::optional(std::span<const std::byte>(ring() + read_pos_ % capacity_ + sizeof r, r.length));
  }
}

void LaneReader::consume() noexcept {
  if (peeked_bytes_ == 0) return;
  read_pos_ += peeked_bytes_;
  peeked_bytes_ = 0;
  LaneAck& a = ack();
  if (peeked_kind_ != kLaneFence) a.delivered.store(++delivered_, std::memory_order_relaxed);  // ours alone: no RMW
  // Dekker with the writer: it sets writer_waiting, then re-reads read_pos before sleeping.
  a.read_pos.store(read_pos_, std::memory_order_seq_cst);
  const std::uint32_t armed = header().writer_waiting.load(std::memory_order_seq_cst);
  if (armed == 0 || armed == woken_writer_arm_) return;  // not waiting, or woken already for this wait
  woken_writer_arm_ = armed;
  a.read_seq.fetch_add(1, std::memory_order_release);  // ends a wait that read it before arming
  // Every waiter: several threads of the publisher may wait on this lane under one arm.
  (void)futex_wake(a.read_seq, INT_MAX);
}

bool LaneReader::arm() noexcept {
  if (data_ == nullptr) return true;
  ack().reader_waiting.store(next_arm(arms_), std::memory_order_seq_cst);
  return header().write_pos.load(std::memory_order_seq_cst) == read_pos_;
}

Result<bool> LaneReader::wait_for_message(std::chrono::nanoseconds timeout) {
  if (violation_ != nullptr || data_ == nullptr) return protocol_error();
  LaneAck& a = ack();
  const std::uint32_t seen = header().write_seq.load(std::memory_order_seq_cst);
  a.reader_waiting.store(next_arm(arms_), std::memory_order_seq_cst);
  bool woken = header().write_pos.load(std::memory_order_seq_cst) != read_pos_;
  if (!woken) {
    auto w = futex_wait(header().write_seq, seen, timeout);
    woken = w && *w != WaitResult::kTimedOut;
  }
  a.reader_waiting.store(0, std::memory_order_relaxed);
  return woken;
}

}  // namespace ubroker::shm
