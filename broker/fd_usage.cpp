#include "fd_usage.hpp"

#include <dirent.h>
#include <sys/resource.h>

namespace ubroker::broker {

std::uint64_t open_fd_count() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  std::uint64_t n = 0;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(dir);
  return n - 1;  // the directory's own fd
}

std::optional<std::uint64_t> fd_limit() {
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0) return std::nullopt;
  return nofile.rlim_cur;
}

}  // namespace ubroker::broker
