// listen_on(): directory creation, lock, liveness check of an existing socket, bind, chown, chmod.
#include "listener.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cstring>
#include <filesystem>

#include "ubroker/proto/socket_address.hpp"
#include "ubroker/shm/syscall.hpp"

namespace ubroker::broker {
namespace {

using Error = std::unexpected<std::string>;

std::string errno_text() {
  return std::strerror(errno);
}

shm::UniqueFd new_socket() {
  return shm::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

// Who is at `addr`: nobody (a stale file), a listener, or a process that has the socket
// bound and listening but does not accept (its backlog is full). The probe never blocks: a
// blocking connect() to a full backlog would wait for ever, and a squatter could hold the
// broker's start-up hostage.
// kUnknown: no probe socket could be made (errno says why); the file must then stay.
enum class Occupant { kNobody, kListener, kNotAccepting, kUnknown };
Occupant who_listens(const proto::SocketAddress& addr) {
  shm::UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!probe) return Occupant::kUnknown;
  if (::connect(probe.get(), addr.get(), addr.len) == 0) return Occupant::kListener;
  return errno == EAGAIN ? Occupant::kNotAccepting : Occupant::kNobody;
}

// Creates the missing directories above `path` with mode 0755 exactly (whatever the umask:
// clients must be able to reach the socket; the socket's own mode decides who may connect).
std::expected<void, std::string> make_parent_dir(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return {};
  std::filesystem::path at;
  for (const auto& part : parent) {
    at /= part;
    if (::mkdir(at.c_str(), 0755) == 0) {
      if (::chmod(at.c_str(), 0755) != 0) return Error(fmt::format("cannot chmod directory {}: {}", at.string(), errno_text()));
    } else if (errno != EEXIST) {
      return Error(fmt::format("cannot create directory {}: {}", at.string(), errno_text()));
    }
  }
  return {};
}

}  // namespace

void SocketFile::remove() noexcept {
  if (path_.empty()) return;
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) ::unlink(path_.c_str());
  path_.clear();
  lock_.reset();
}

std::expected<Listening, std::string> listen_on(const std::string& where, mode_t mode, std::optional<gid_t> group,
                                                int backlog) {
  auto addr = proto::make_socket_address(where);
  if (!addr) return Error(addr.error());
  Listening out;
  out.fd = new_socket();
  if (!out.fd) return Error(fmt::format("socket(AF_UNIX): {}", errno_text()));

  if (addr->abstract()) {
    if (::bind(out.fd.get(), addr->get(), addr->len) != 0) {
      if (errno == EADDRINUSE) return Error(fmt::format("another broker is already listening on {}", where));
      return Error(fmt::format("cannot bind {}: {}", where, errno_text()));
    }
  } else {
    if (auto r = make_parent_dir(where); !r) return Error(r.error());
    const std::string lock_path = where + ".lock";
    // Never through a symlink (in a shared directory, one could point the broker at a file of
    // its choosing) and only a regular file.
    shm::UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600));
    if (!lock && errno == ELOOP) {
      return Error(fmt::format("lock file {} is a symbolic link; refusing to follow it", lock_path));
    }
    if (!lock) return Error(fmt::format("cannot open lock file {}: {}", lock_path, errno_text()));
    struct stat lock_st {};
    if (::fstat(lock.get(), &lock_st) != 0 || !S_ISREG(lock_st.st_mode)) {
      return Error(fmt::format("lock file {} is not a regular file; refusing to use it", lock_path));
    }
    if (shm::retry_eintr([&] { return ::flock(lock.get(), LOCK_EX | LOCK_NB); }) != 0) {
      if (errno == EWOULDBLOCK) return Error(fmt::format("another broker holds {} (it serves {})", lock_path, where));
      return Error(fmt::format("cannot lock {}: {}", lock_path, errno_text()));
    }
    struct stat st {};
    if (::lstat(where.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode))
        return Error(fmt::format("{} exists and is not a socket; refusing to replace it", where));
      switch (who_listens(*addr)) {
        case Occupant::kListener: return Error(fmt::format("another broker is already listening on {}", where));
        case Occupant::kNotAccepting:
          return Error(fmt::format("a process has {} open and listening but does not accept connections; stop it, "
                                   "or remove the socket file",
                                   where));
        case Occupant::kUnknown:
          return Error(fmt::format("cannot tell whether a broker listens on {}: socket(AF_UNIX): {}", where,
                                   errno_text()));
        case Occupant::kNobody: break;
      }
      if (::unlink(where.c_str()) != 0)
        return Error(fmt::format("cannot remove stale socket {}: {}", where, errno_text()));
    }
    // Bind with a restrictive umask, then set the configured mode: no window where the socket
    // is more open than configured.
    const mode_t old_umask = ::umask(0777);
    const int bound = ::bind(out.fd.get(), addr->get(), addr->len);
    const int bind_errno = errno;
    ::umask(old_umask);
    if (bound != 0) return Error(fmt::format("cannot bind {}: {}", where, std::strerror(bind_errno)));
    if (::lstat(where.c_str(), &st) != 0) return Error(fmt::format("cannot stat {}: {}", where, errno_text()));
    out.file = SocketFile(where, std::move(lock), st.st_dev, st.st_ino);
    // The group first: until both are set, the umask's mode 0000 keeps everyone out.
    if (group && ::chown(where.c_str(), static_cast<uid_t>(-1), *group) != 0) {
      return Error(fmt::format("cannot give {} to group {}: {}", where, *group, errno_text()));
    }
    if (::chmod(where.c_str(), mode) != 0) return Error(fmt::format("cannot chmod {}: {}", where, errno_text()));
  }
  if (::listen(out.fd.get(), backlog) != 0) return Error(fmt::format("cannot listen on {}: {}", where, errno_text()));
  return out;
}

}  // namespace ubroker::broker
