// A session's outbound queue: what the broker has accepted for one client and not yet written
// to its socket. Frame heads and small payloads are copied into the queue's own tail chunk
// (coalesced, so one sendmsg carries many frames); large payloads are referenced in the
// publisher's receive chunk, never copied. Counted in messages and bytes; the session
// enforces the limits. Single-threaded (the broker's event loop).
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "chunk_pool.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::broker {

class OutQueue {
 public:
  explicit OutQueue(ChunkPool& pool) : pool_(&pool) {}
  OutQueue(const OutQueue&) = delete;
  OutQueue& operator=(const OutQueue&) = delete;

  // Appends n bytes the caller fills at once through the returned pointer.
  [[nodiscard]] std::byte* append_inline(std::size_t n);
  // Appends a reference to bytes held by `chunk` (kept alive until sent or discarded).
  void append_ref(const ChunkRef& chunk, const std::byte* data, std::size_t n);
  // Everything appended so far completes one more message; a `delivery` (a DELIVER frame) is
  // also counted apart, for the broker's accounting of what it accepted for subscribers.
  void end_message(bool delivery = false);
  // The next message appended carries `fd` (up to kMaxFdsPerMessage of them, in the order
  // attached): they ride on the sendmsg that starts with the message's first byte, so the
  // receiver has them no later than the frame that claims them.
  void attach_fd(shm::UniqueFd fd);
  static constexpr std::size_t kMaxFdsPerMessage = 2;
  struct Fds {
    std::array<int, kMaxFdsPerMessage> fd{};
    std::size_t count = 0;
    [[nodiscard]] std::span<const int> view() const noexcept { return {fd.data(), count}; }
  };

  // Fills iov from the head; returns how many entries were used. A batch never runs into a
  // message that carries fds; one that starts with such a message fills `fds`.
  [[nodiscard]] std::size_t gather(std::span<iovec> iov, Fds& fds) const noexcept;
  struct Counts {
    std::size_t messages = 0;
    std::size_t deliveries = 0;  // of which DELIVER frames
  };
  // n bytes from the head went out; returns the messages completed by them.
  Counts consume(std::size_t n) noexcept;
  // Drops every message not yet started (a partly sent head message stays, so the stream
  // remains a sequence of whole frames); returns what was dropped.
  Counts discard_unsent() noexcept;

  [[nodiscard]] std::size_t bytes() const noexcept { return static_cast<std::size_t>(appended_ - sent_); }
  [[nodiscard]] std::size_t messages() const noexcept { return msg_ends_.size() - msg_head_; }
  [[nodiscard]] std::size_t deliveries() const noexcept { return delivery_ends_.size() - delivery_head_; }
  [[nodiscard]] std::size_t fds() const noexcept { return fd_marks_.size(); }  // not yet passed
  [[nodiscard]] bool empty() const noexcept { return appended_ == sent_; }

 private:
  struct Piece {
    ChunkRef chunk;
    std::byte* data;
    std::size_t len;
  };
  void compact() noexcept;

  ChunkPool* pool_;
  std::vector<Piece> pieces_;
  std::size_t piece_head_ = 0;
  std::size_t head_offset_ = 0;          // bytes of pieces_[piece_head_] already sent
  std::vector<std::uint64_t> msg_ends_;  // stream positions where messages end
  std::size_t msg_head_ = 0;
  std::vector<std::uint64_t> delivery_ends_;  // the same, for the messages that are deliveries
  std::size_t delivery_head_ = 0;
  std::uint64_t appended_ = 0;  // stream position of the next byte appended
  std::uint64_t sent_ = 0;      // stream position of the next byte to send
  std::uint64_t boundary_ = 0;  // stream position where the last fully sent message ends
  ChunkRef tail_;               // the chunk inline bytes go to
  std::size_t tail_used_ = 0;
  struct FdMark {
    std::uint64_t at;  // stream position of the first byte of the message that carries it
    shm::UniqueFd fd;
  };
  std::deque<FdMark> fd_marks_;  // rare: one per segment per receiver
};

}  // namespace ubroker::broker
