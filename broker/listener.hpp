// The broker's listening socket and its name in the filesystem. Start-up is serialised by an
// flock'd "<path>.lock" so two brokers starting at once cannot both pass the liveness check;
// a live broker on the path makes us refuse, a stale socket file is replaced. At exit the
// socket file is unlinked only if it is still the one we created. Abstract names ("@x") have
// no file: the kernel refuses a second bind. Main thread only.
#pragma once

#include <sys/types.h>

#include <expected>
#include <optional>
#include <string>

#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::broker {

class SocketFile {
 public:
  SocketFile() = default;
  SocketFile(std::string path, shm::UniqueFd lock, dev_t dev, ino_t ino)
      : path_(std::move(path)), lock_(std::move(lock)), dev_(dev), ino_(ino) {}
  SocketFile(SocketFile&& o) noexcept
      : path_(std::move(o.path_)), lock_(std::move(o.lock_)), dev_(o.dev_), ino_(o.ino_) {
    o.path_.clear();
  }
  SocketFile& operator=(SocketFile&& o) noexcept {
    if (this != &o) {
      remove();
      path_ = std::move(o.path_);
      o.path_.clear();
      lock_ = std::move(o.lock_);
      dev_ = o.dev_;
      ino_ = o.ino_;
    }
    return *this;
  }
  ~SocketFile() { remove(); }

  // Unlinks the socket file (if still ours) and releases the lock; idempotent.
  void remove() noexcept;

 private:
  std::string path_;  // empty for abstract sockets
  shm::UniqueFd lock_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

struct Listening {
  shm::UniqueFd fd;  // bound and listening, non-blocking, close-on-exec
  SocketFile file;
};

// Binds and listens on `where` (a path or "@name"); a socket file gets `mode` and, if given,
// `group`. Errors are complete sentences for the log.
[[nodiscard]] std::expected<Listening, std::string> listen_on(const std::string& where, mode_t mode,
                                                              std::optional<gid_t> group, int backlog);

}  // namespace ubroker::broker
