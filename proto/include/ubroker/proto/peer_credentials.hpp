// The kernel's word on who is at the other end of an AF_UNIX socket, read once at accept:
// SO_PEERCRED (pid, uid, gid at connect time), SO_PEERGROUPS (supplementary groups), and
// SO_PEERPIDFD where the kernel has it (Linux >= 6.5), which pins the process so a recycled
// pid cannot pass for it. Stateless; callable from any thread.
#pragma once

#include <sys/types.h>

#include <vector>

#include "ubroker/shm/syscall.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::proto {

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (empty if the kernel cannot say)
  shm::UniqueFd pidfd;        // invalid where SO_PEERPIDFD is not supported
};

// Reads the credentials of the peer of `socket`. Fails only if SO_PEERCRED itself fails;
// SO_PEERGROUPS and SO_PEERPIDFD fall back to empty/invalid on kernels without them.
[[nodiscard]] shm::Result<PeerCredentials> read_peer_credentials(int socket);

}  // namespace ubroker::proto
