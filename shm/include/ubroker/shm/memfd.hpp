// Memfd: an anonymous shared-memory file (memfd_create) of fixed size, sealed against shrink
// and grow so that no process mapping it can ever be hit by SIGBUS. inspect() tells what an
// fd received from someone else really is, from the kernel's answers alone.
// Values, not thread-safe: one owner at a time, like UniqueFd.
#pragma once

#include <cstdint>
#include <string>

#include "ubroker/shm/syscall.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::shm {

class Memfd {
 public:
  // A new memfd of `size` bytes (MFD_CLOEXEC | MFD_ALLOW_SEALING), sealed F_SEAL_SHRINK |
  // F_SEAL_GROW. Writable until someone adds F_SEAL_FUTURE_WRITE (the broker does, after
  // mapping it), so map it read-write before handing it on.
  [[nodiscard]] static Result<Memfd> create(const char* name, std::uint64_t size);

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }

 private:
  Memfd(UniqueFd fd, std::uint64_t size) noexcept : fd_(std::move(fd)), size_(size) {}
  UniqueFd fd_;
  std::uint64_t size_ = 0;
};

// What the kernel says about an fd.
struct FdFacts {
  bool memfd = false;      // a memfd (F_GET_SEALS works and /proc names it "/memfd:...")
  unsigned seals = 0;      // F_SEAL_* (memfds only)
  std::uint64_t size = 0;  // st_size
  bool read_write = false; // opened O_RDWR
  std::string kind;        // "memfd", "pipe", "socket", "regular file", "character device", ...
};
[[nodiscard]] Result<FdFacts> inspect(int fd);

// Adds seals (F_ADD_SEALS).
[[nodiscard]] Result<void> add_seals(int fd, unsigned seals);

}  // namespace ubroker::shm
