// open_fd_count, fd_limit, resident_bytes (see process_usage.hpp).
#include "process_usage.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <memory>

namespace ubroker::broker {

std::uint64_t open_fd_count() {
  const std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir("/proc/self/fd"), &::closedir);
  if (!dir) return 0;
  std::uint64_t n = 0;
  while (const dirent* e = ::readdir(dir.get())) {
    if (e->d_name[0] != '.') ++n;
  }
  return n - 1;  // the directory's own fd
}

std::optional<std::uint64_t> fd_limit() {
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0) return std::nullopt;
  return nofile.rlim_cur;
}

std::uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  const long page = ::sysconf(_SC_PAGESIZE);
  return page > 0 ? resident * static_cast<std::uint64_t>(page) : 0;
}

}  // namespace ubroker::broker
