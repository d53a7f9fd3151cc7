// Mapping: mmap/munmap.
#include "ubroker/shm/mapping.hpp"

#include <sys/mman.h>
#include <unistd.h>

namespace ubroker::shm {

Result<Mapping> Mapping::map(int fd, std::uint64_t size, Access access) {
  if (size == 0) return std::unexpected(errno_code(EINVAL));
  const int prot = access == Access::kReadWrite ? PROT_READ | PROT_WRITE : PROT_READ;
  void* p = ::mmap(nullptr, static_cast<std::size_t>(size), prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return std::unexpected(last_error());
  return Mapping(static_cast<std::byte*>(p), size);
}

Result<bool> Mapping::resident(std::uint64_t offset) const noexcept {
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  if (offset >= size_) return std::unexpected(errno_code(EINVAL));
  unsigned char in_core = 0;
  if (::mincore(data_ + offset / page * page, 1, &in_core) != 0) return std::unexpected(last_error());
  return (in_core & 1) != 0;
}

void Mapping::reset() noexcept {
  if (data_ != nullptr) {
    // munmap of a range we mapped fails only on a bug (bad address); nothing to recover.
    [[maybe_unused]] const int rc = ::munmap(data_, static_cast<std::size_t>(size_));
    data_ = nullptr;
    size_ = 0;
  }
}

}  // namespace ubroker::shm
