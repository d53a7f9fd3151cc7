// SO_PEERCRED / SO_PEERGROUPS / SO_PEERPIDFD with typed fallbacks for older kernels.
#include "ubroker/proto/peer_credentials.hpp"

#include <sys/socket.h>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // Linux 6.5; glibc 2.36 headers predate it
#endif

namespace ubroker::proto {
namespace {

// Kernels without SO_PEERGROUPS/SO_PEERPIDFD say ENOPROTOOPT; a non-socket says ENOTSOCK.
bool unsupported(int err) {
  return err == ENOPROTOOPT || err == EINVAL || err == EOPNOTSUPP;
}

shm::Result<std::vector<gid_t>> read_groups(int socket) {
  std::vector<gid_t> groups(16);
  for (int attempt = 0; attempt < 8; ++attempt) {
    socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(socket, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      return groups;
    }
    if (errno == ERANGE) {  // len now holds the size needed
      groups.resize(len / sizeof(gid_t) + 1);
      continue;
    }
    if (unsupported(errno)) return std::vector<gid_t>{};
    return std::unexpected(shm::last_error());
  }
  return std::unexpected(shm::errno_code(ERANGE));
}

}  // namespace

shm::Result<PeerCredentials> read_peer_credentials(int socket) {
  PeerCredentials peer;
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return std::unexpected(shm::last_error());
  peer.pid = cred.pid;
  peer.uid = cred.uid;
  peer.gid = cred.gid;

  auto groups = read_groups(socket);
  if (!groups) return std::unexpected(groups.error());
  peer.groups = std::move(*groups);

  int pidfd = -1;
  len = sizeof(pidfd);
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0) {
    peer.pidfd.reset(pidfd);
  } else if (!unsupported(errno) && errno != ESRCH) {  // ESRCH: the peer already exited
    return std::unexpected(shm::last_error());
  }
  return peer;
}

}  // namespace ubroker::proto
