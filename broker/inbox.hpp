// One client's inbound side: the read buffer (a pooled, reference-counted chunk) holding the
// bytes received and not yet handled, the fds that came with them, the reads that fill it,
// and its charge to the uid's read-buffer budget (limits.input_max_bytes_per_uid). An idle
// connection holds no buffer. What the bytes mean is the Session's business; a frame's
// payload may stay referenced by outbound queues after it was handled (ChunkRef).
//
// Owned by its Session; event loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "accounts.hpp"
#include "chunk_pool.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::broker {

class Inbox {
 public:
  Inbox(ChunkPool& pool, int fd, ConnectionAccount& account) : pool_(pool), fd_(fd), account_(account) {}
  Inbox(const Inbox&) = delete;
  Inbox& operator=(const Inbox&) = delete;

  enum class Read {
    kSome,        // bytes arrived; the socket may hold more
    kDrained,     // bytes arrived and the socket held no more than that
    kWouldBlock,  // nothing to read now
    kEof,         // the client hung up (pending() says whether inside a frame)
    kOverBudget,  // a buffer for the frame would take the uid past its read-buffer budget
    kFdError,     // fds arrived truncated (MSG_CTRUNC): error() says how
    kFailed,      // the read failed: error() says how
  };
  // Reads once. `max_frame` bounds the frame at the front (whose prefix was checked already),
  // which decides how large a buffer it needs.
  Read read(std::uint32_t max_frame);
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  // For kOverBudget: the buffer it would have taken.
  [[nodiscard]] std::size_t wanted() const noexcept { return wanted_; }

  // The bytes received and not yet handled, and the chunk that holds them.
  [[nodiscard]] std::span<const std::byte> pending() const noexcept {
    return in_ ? std::span<const std::byte>(in_->data() + begin_, end_ - begin_) : std::span<const std::byte>();
  }
  [[nodiscard]] const ChunkRef* chunk() const noexcept { return &in_; }
  // The first n pending bytes were handled.
  void consume(std::size_t n) noexcept;
  // Fds received with the bytes, in arrival order; each frame claims its own.
  [[nodiscard]] std::vector<shm::UniqueFd>& fds() noexcept { return fds_; }
  // Gives the buffer back when nothing is pending (an idle connection holds none).
  void release_if_idle() noexcept;

 private:
  ChunkPool& pool_;
  int fd_;
  ConnectionAccount& account_;
  ChunkRef in_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::vector<shm::UniqueFd> fds_;
  std::string error_;
  std::size_t wanted_ = 0;
};

}  // namespace ubroker::broker
