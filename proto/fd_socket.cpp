// sendmsg/recvmsg with SCM_RIGHTS, done the careful way (see fd_socket.hpp).
#include "ubroker/proto/fd_socket.hpp"

#include <fcntl.h>
#include <sys/socket.h>

#include <cstring>
#include <string>

namespace ubroker::proto {
namespace {

class TransportCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "ubroker.transport"; }
  std::string message(int c) const override {
    switch (static_cast<TransportErrc>(c)) {
      case TransportErrc::kFdsTruncated: return "file descriptors truncated (more than 16 in one message)";
      case TransportErrc::kUnexpectedControl: return "unexpected control message (only SCM_RIGHTS is accepted)";
      case TransportErrc::kTooManyFds: return "too many file descriptors for one message";
    }
    return "unknown transport error";
  }
};

constexpr std::size_t kControlSize = CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage);

// Takes ownership of every fd in the control data, then reports anything unexpected.
std::error_code collect_fds(msghdr& msg, std::vector<shm::UniqueFd>& fds) {
  std::error_code ec;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      const std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const auto* data = CMSG_DATA(c);
      for (std::size_t i = 0; i < n; ++i) {
        int fd;
        std::memcpy(&fd, data + i * sizeof(int), sizeof(int));
        fds.emplace_back(fd);
      }
    } else {
      ec = TransportErrc::kUnexpectedControl;
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) ec = TransportErrc::kFdsTruncated;
  return ec;
}

}  // namespace

const std::error_category& transport_category() noexcept {
  static const TransportCategory category;
  return category;
}

shm::Result<Received> receive(int socket, std::span<std::byte> buf, std::vector<shm::UniqueFd>& fds) {
  alignas(cmsghdr) std::byte control[kControlSize];
  iovec iov{.iov_base = buf.data(), .iov_len = buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t n = shm::retry_eintr([&] { return ::recvmsg(socket, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC); });
  if (n < 0) return std::unexpected(shm::last_error());
  if (msg.msg_controllen > 0 || (msg.msg_flags & MSG_CTRUNC)) {
    if (auto ec = collect_fds(msg, fds)) return std::unexpected(ec);
  }
  return Received{.bytes = static_cast<std::size_t>(n), .eof = n == 0 && !buf.empty()};
}

shm::Result<std::size_t> send(int socket, std::span<const iovec> iov, std::span<const int> fds) {
  if (fds.size() > kMaxFdsPerMessage) return std::unexpected(make_error_code(TransportErrc::kTooManyFds));
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov.data());
  msg.msg_iovlen = iov.size();
  alignas(cmsghdr) std::byte control[kControlSize];
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  const ssize_t n = shm::retry_eintr([&] { return ::sendmsg(socket, &msg, MSG_DONTWAIT | MSG_NOSIGNAL); });
  if (n < 0) return std::unexpected(shm::last_error());
  return static_cast<std::size_t>(n);
}

shm::Result<void> make_nonblocking(int socket) {
  const int flags = ::fcntl(socket, F_GETFL);
  if (flags < 0 || ::fcntl(socket, F_SETFL, flags | O_NONBLOCK) != 0 || ::fcntl(socket, F_SETFD, FD_CLOEXEC) != 0) {
    return std::unexpected(shm::last_error());
  }
  return {};
}

}  // namespace ubroker::proto
