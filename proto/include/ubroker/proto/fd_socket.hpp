// Byte and fd transfer on a non-blocking AF_UNIX stream socket: the only place the project
// calls sendmsg/recvmsg. Received fds are wrapped in UniqueFd at once (MSG_CMSG_CLOEXEC, so
// they never leak into a child); MSG_CTRUNC is an error that the caller turns into a close.
// Sends always use MSG_NOSIGNAL. Stateless; callable from any thread on its own socket.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <span>
#include <system_error>
#include <vector>

#include "ubroker/shm/syscall.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::proto {

// Most fds one sendmsg/recvmsg may carry; the control buffer is sized for exactly this.
inline constexpr std::size_t kMaxFdsPerMessage = 16;

enum class TransportErrc {
  kFdsTruncated = 1,   // MSG_CTRUNC: the peer sent more fds than kMaxFdsPerMessage
  kUnexpectedControl,  // control message other than SCM_RIGHTS
  kTooManyFds,         // caller tried to send more than kMaxFdsPerMessage
};
[[nodiscard]] const std::error_category& transport_category() noexcept;
[[nodiscard]] inline std::error_code make_error_code(TransportErrc e) noexcept {
  return {static_cast<int>(e), transport_category()};
}

// True for the error code a non-blocking call returns when it would block.
[[nodiscard]] inline bool would_block(const std::error_code& ec) noexcept {
  return ec == std::errc::resource_unavailable_try_again || ec == std::errc::operation_would_block;
}

struct Received {
  std::size_t bytes = 0;  // 0 with eof=false never happens: would-block is an error
  bool eof = false;
};

// One recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC) into `buf`; fds that arrived are appended to
// `fds` (already owned, even when the call reports an error after receiving them).
[[nodiscard]] shm::Result<Received> receive(int socket, std::span<std::byte> buf, std::vector<shm::UniqueFd>& fds);

// One sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL) of `iov`, with `fds` attached to the first byte.
// Returns bytes sent (fds went with them if > 0). Attach fds only while no byte of their frame
// has gone out.
[[nodiscard]] shm::Result<std::size_t> send(int socket, std::span<const iovec> iov, std::span<const int> fds = {});

// O_NONBLOCK and FD_CLOEXEC on a socket this process did not create (a listener systemd
// passed, a connection a parent handed over), as every socket made here already has.
[[nodiscard]] shm::Result<void> make_nonblocking(int socket);

}  // namespace ubroker::proto

template <>
struct std::is_error_code_enum<ubroker::proto::TransportErrc> : std::true_type {};
