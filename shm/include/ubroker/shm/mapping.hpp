// Mapping: the one owner of an mmap'd range (MAP_SHARED), unmapped on destruction.
// Move-only. The bytes may be shared with other processes: what another process can write
// is never trusted by the code that reads it (see segment_layout.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "ubroker/shm/syscall.hpp"

namespace ubroker::shm {

enum class Access { kReadOnly, kReadWrite };

class Mapping {
 public:
  Mapping() noexcept = default;
  // Maps `size` bytes of `fd` from offset 0, shared.
  [[nodiscard]] static Result<Mapping> map(int fd, std::uint64_t size, Access access);

  Mapping(Mapping&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  [[nodiscard]] std::span<std::byte> bytes() const noexcept { return {data_, static_cast<std::size_t>(size_)}; }
  explicit operator bool() const noexcept { return data_ != nullptr; }
  void reset() noexcept;
  // Whether the page holding byte `offset` is in memory (mincore(2)): for a shared mapping,
  // whether anyone has written it (or it was swapped out since). Touching a page that is not
  // would allocate it and charge it to this process; callers that must not (the broker, in a
  // client's segment) ask first.
  [[nodiscard]] Result<bool> resident(std::uint64_t offset) const noexcept;

 private:
  Mapping(std::byte* data, std::uint64_t size) noexcept : data_(data), size_(size) {}
  std::byte* data_ = nullptr;
  std::uint64_t size_ = 0;
};

}  // namespace ubroker::shm
