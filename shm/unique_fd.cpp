// UniqueFd::reset: close(2) is not retried on EINTR (on Linux the fd is gone either way).
#include "ubroker/unique_fd.hpp"

#include <unistd.h>

namespace ubroker {

void UniqueFd::reset(int fd) noexcept {
  const int old = std::exchange(fd_, fd);
  if (old >= 0) ::close(old);
}

}  // namespace ubroker
