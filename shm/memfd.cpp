// Memfd and fd inspection: memfd_create, ftruncate, fcntl seals, fstat.
#include "ubroker/shm/memfd.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string_view>

namespace ubroker::shm {
namespace {

const char* kind_of(mode_t mode) {
  if (S_ISREG(mode)) return "regular file";
  if (S_ISFIFO(mode)) return "pipe";
  if (S_ISSOCK(mode)) return "socket";
  if (S_ISCHR(mode)) return "character device";
  if (S_ISBLK(mode)) return "block device";
  if (S_ISDIR(mode)) return "directory";
  return "special file";
}

}  // namespace

Result<Memfd> Memfd::create(const char* name, std::uint64_t size) {
  UniqueFd fd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return std::unexpected(last_error());
  if (retry_eintr([&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); }) != 0) {
    return std::unexpected(last_error());
  }
  if (auto sealed = add_seals(fd.get(), F_SEAL_SHRINK | F_SEAL_GROW); !sealed) return std::unexpected(sealed.error());
  return Memfd(std::move(fd), size);
}

Result<FdFacts> inspect(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return std::unexpected(last_error());
  FdFacts facts;
  facts.kind = kind_of(st.st_mode);
  facts.size = static_cast<std::uint64_t>(st.st_size);
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return std::unexpected(last_error());
  facts.read_write = (flags & O_ACCMODE) == O_RDWR;
  if (!S_ISREG(st.st_mode)) return facts;
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) return facts;  // EINVAL: a file system without seals, so not a memfd
  // tmpfs files (/dev/shm) answer F_GET_SEALS too; a memfd is the one /proc names "/memfd:".
  std::array<char, 64> path{};
  std::array<char, 32> link{};
  const int n = std::snprintf(link.data(), link.size(), "/proc/self/fd/%d", fd);
  if (n <= 0) return facts;
  const ssize_t len = ::readlink(link.data(), path.data(), path.size());
  if (len < 0) return std::unexpected(last_error());
  if (std::string_view(path.data(), static_cast<std::size_t>(len)).starts_with("/memfd:")) {
    facts.memfd = true;
    facts.kind = "memfd";
    facts.seals = static_cast<unsigned>(seals);
  }
  return facts;
}

Result<void> add_seals(int fd, unsigned seals) {
  if (::fcntl(fd, F_ADD_SEALS, static_cast<int>(seals)) != 0) return std::unexpected(last_error());
  return {};
}

}  // namespace ubroker::shm
