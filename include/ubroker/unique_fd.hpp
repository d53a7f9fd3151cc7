// UniqueFd: the one owner of a file descriptor. Move-only; closes on destruction.
// A raw int fd appears outside this type only inside syscall wrappers (get()).
// Not thread-safe: an instance belongs to one thread at a time, like any value.
// Public because Client::adopt() takes one: a connected socket the caller hands over.
#pragma once

#include <utility>

#include "ubroker/export.h"

namespace ubroker {

class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  // Gives up ownership; the caller now owns the fd.
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
  // Closes the current fd (if any) and takes ownership of fd.
  UBROKER_API void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

}  // namespace ubroker
