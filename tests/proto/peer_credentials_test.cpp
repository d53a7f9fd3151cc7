// The kernel behaviour we rely on for identity: SO_PEERCRED, SO_PEERGROUPS and SO_PEERPIDFD
// agree with each other and with the peer's real identity, including a peer of another uid.
#include "ubroker/proto/peer_credentials.hpp"

#include <poll.h>

#include <algorithm>
#include <cstring>

#include "ubroker/proto/fd_socket.hpp"
#include "ubroker/shm/unique_fd.hpp"

#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace ubroker::proto {
namespace {

// The pid a pidfd refers to, from /proc/self/fdinfo.
pid_t pid_of_pidfd(int pidfd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(pidfd));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Pid:", 0) == 0) return static_cast<pid_t>(std::stol(line.substr(4)));
  }
  return -1;
}

TEST(PeerCredentials, SocketpairPeerIsThisProcess) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  shm::UniqueFd a(sv[0]), b(sv[1]);
  auto peer = read_peer_credentials(a.get());
  ASSERT_TRUE(peer.has_value()) << peer.error().message();
  EXPECT_EQ(peer->pid, ::getpid());
  EXPECT_EQ(peer->uid, ::getuid());
  EXPECT_EQ(peer->gid, ::getgid());
  if (peer->pidfd) {
    EXPECT_EQ(pid_of_pidfd(peer->pidfd.get()), ::getpid());
  }
}

TEST(PeerCredentials, ChildOfAnotherUidAndGroups) {
  ASSERT_EQ(::geteuid(), 0u) << "this test switches a child to another uid: run it as root (CI does)";
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  shm::UniqueFd parent(sv[0]), child_end(sv[1]);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Credentials are captured at connect/socketpair time; so the child makes a new
    // connection after dropping privileges: it sends one end of a fresh socketpair back.
    ::close(ready[1]);  // else our own copy keeps the read below from ever seeing EOF
    const gid_t groups[] = {4242, 4343};
    if (::setgroups(2, groups) != 0 || ::setresgid(4141, 4141, 4141) != 0 || ::setresuid(4040, 4040, 4040) != 0)
      _exit(2);
    int inner[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, inner) != 0) _exit(3);
    char c = 'x';
    iovec iov{.iov_base = &c, .iov_len = 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cm), &inner[0], sizeof(int));
    if (::sendmsg(sv[1], &msg, 0) != 1) _exit(4);
    char wait_byte;
    (void)::read(ready[0], &wait_byte, 1);  // stay alive until the parent has looked
    _exit(0);
  }
  child_end.reset();
  ::close(ready[0]);
  shm::UniqueFd release_child(ready[1]);  // closing it lets the child exit, on every path
  std::byte buf[1];
  std::vector<shm::UniqueFd> fds;
  // Blocking wait for the child's message.
  pollfd pfd{.fd = parent.get(), .events = POLLIN, .revents = 0};
  ASSERT_EQ(::poll(&pfd, 1, 5000), 1);
  auto got = receive(parent.get(), buf, fds);
  ASSERT_TRUE(got.has_value()) << got.error().message();
  ASSERT_EQ(fds.size(), 1u);
  auto peer = read_peer_credentials(fds[0].get());
  ASSERT_TRUE(peer.has_value());
  EXPECT_EQ(peer->uid, 4040u);
  EXPECT_EQ(peer->gid, 4141u);
  EXPECT_EQ(peer->pid, child);
  EXPECT_NE(std::find(peer->groups.begin(), peer->groups.end(), 4242u), peer->groups.end());
  EXPECT_NE(std::find(peer->groups.begin(), peer->groups.end(), 4343u), peer->groups.end());
  if (peer->pidfd) {  // kernels >= 6.5
    EXPECT_EQ(pid_of_pidfd(peer->pidfd.get()), child);
  }
  release_child.reset();
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
}  // namespace ubroker::proto
