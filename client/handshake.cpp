// connect(2) and the handshake with poll(2) deadlines; errors name the address and the reason.
#include "handshake.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <fmt/format.h>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>
#include <thread>

#include "ubroker/proto/fd_socket.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/peer_credentials.hpp"
#include "ubroker/proto/socket_address.hpp"
#include "ubroker/shm/lane_layout.hpp"

namespace ubroker::detail {
namespace {

using Deadline = std::chrono::steady_clock::time_point;

Error connect_error(const std::string& address, int err) {
  std::string why;
  switch (err) {
    case ENOENT: why = "no such file (is brokerd running?)"; break;
    case ECONNREFUSED: why = "connection refused (nothing listening; a stale socket?)"; break;
    case EACCES: why = "permission denied"; break;
    default: why = std::strerror(err);
  }
  return {Errc::kConnectFailed, fmt::format("cannot connect to broker at {}: {}", address, why)};
}

// Waits until fd is ready for `events` or the deadline passes.
Result<void> wait_for(int fd, short events, Deadline deadline, const char* what) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::unexpected(Error{Errc::kTimeout, fmt::format("timed out {}", what)});
    pollfd p{.fd = fd, .events = events, .revents = 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 1 << 30)));
    if (n > 0) return {};
    if (n < 0 && errno != EINTR) {
      return std::unexpected(Error{Errc::kConnectFailed, fmt::format("poll: {}", std::strerror(errno))});
    }
  }
}

Deadline deadline_after(std::chrono::milliseconds timeout) {
  const auto now = std::chrono::steady_clock::now();
  return timeout >= std::chrono::hours(24 * 365) ? Deadline::max() : now + timeout;
}

Result<std::vector<uid_t>> default_trusted_uids() {
  const char* env = std::getenv("UBROKER_BROKER_UID");
  if (env == nullptr || *env == '\0') {
    return ::geteuid() == 0 ? std::vector<uid_t>{0} : std::vector<uid_t>{::geteuid(), 0};
  }
  std::vector<uid_t> uids;
  std::string_view rest = env;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string item(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    char* end = nullptr;
    errno = 0;
    const unsigned long uid = std::strtoul(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno != 0 || uid > 0xfffffffe) {
      return std::unexpected(Error{Errc::kInvalidArgument,
                                   fmt::format("UBROKER_BROKER_UID='{}': '{}' is not a uid number", env, item)});
    }
    uids.push_back(static_cast<uid_t>(uid));
  }
  return uids;
}

}  // namespace

Result<void> check_broker_uid(const UniqueFd& fd, const std::vector<uid_t>& trusted) {
  auto peer = proto::read_peer_credentials(fd.get());
  if (!peer) {
    return std::unexpected(
        Error{Errc::kConnectFailed, fmt::format("cannot tell who the broker is (SO_PEERCRED): {}", peer.error().message())});
  }
  auto uids = trusted.empty() ? default_trusted_uids() : Result<std::vector<uid_t>>(trusted);
  if (!uids) return std::unexpected(uids.error());
  if (std::find(uids->begin(), uids->end(), peer->uid) != uids->end()) return {};
  std::string list;
  for (uid_t u : *uids) list += fmt::format("{}{}", list.empty() ? "" : ", ", u);
  return std::unexpected(Error{
      Errc::kUntrustedBroker,
      fmt::format("the process serving this socket (pid {}) runs as uid {}, which is not a trusted broker uid ({}); "
                  "set UBROKER_BROKER_UID or ConnectOptions::trusted_broker_uids if it is the broker",
                  peer->pid, peer->uid, list)});
}

Result<UniqueFd> connect_socket(const std::string& address, std::chrono::milliseconds timeout,
                                     bool wait_for_listener) {
  auto addr = proto::make_socket_address(address);
  if (!addr) return std::unexpected(Error{Errc::kInvalidArgument, addr.error()});
  const Deadline deadline = deadline_after(timeout);
  auto pause = std::chrono::milliseconds(5);
  for (;;) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) return std::unexpected(Error{Errc::kConnectFailed, fmt::format("socket: {}", std::strerror(errno))});
    if (shm::retry_eintr([&] { return ::connect(fd.get(), addr->get(), addr->len); }) == 0) return fd;
    const int err = errno;
    // AF_UNIX says EAGAIN when the listen backlog is full: retry until the deadline. A broker
    // still starting has no socket yet (ENOENT) or has not listened yet (ECONNREFUSED): with
    // wait_for_listener, retry those too, backing off up to 100 ms between dials.
    const bool starting = err == ENOENT || err == ECONNREFUSED;
    if (err != EAGAIN && !(wait_for_listener && starting)) return std::unexpected(connect_error(address, err));
    if (std::chrono::steady_clock::now() >= deadline) {
      if (err != EAGAIN) {
        Error e = connect_error(address, err);
        e.message += fmt::format(" (waited {} ms for the broker to start)", timeout.count());
        return std::unexpected(std::move(e));
      }
      return std::unexpected(Error{Errc::kTimeout, fmt::format("timed out connecting to {} (backlog full)", address)});
    }
    std::this_thread::sleep_until(std::min(deadline, std::chrono::steady_clock::now() + pause));
    if (err != EAGAIN) pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
}

Result<void> check_adopted(const UniqueFd& fd) {
  int type = 0;
  socklen_t len = sizeof(type);
  sockaddr_storage local{};
  socklen_t local_len = sizeof(local);
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &local_len) != 0 || local.ss_family != AF_UNIX) {
    return std::unexpected(
        Error{Errc::kInvalidArgument, fmt::format("fd {} is not a connected AF_UNIX stream socket", fd.get())});
  }
  if (auto r = proto::make_nonblocking(fd.get()); !r) {
    return std::unexpected(Error{Errc::kInvalidArgument, fmt::format("fcntl on fd {}: {}", fd.get(), r.error().message())});
  }
  return {};
}

Result<Welcomed> handshake(const UniqueFd& fd, const std::string& name, std::chrono::milliseconds timeout, bool lanes) {
  const Deadline deadline = deadline_after(timeout);
  wire::Header hello;
  hello.set_type(wire::HELLO);
  hello.mutable_hello()->set_protocol_version(proto::kProtocolVersion);
  hello.mutable_hello()->set_client_name(name);
  if (lanes) hello.mutable_hello()->add_features(shm::kLaneFeature);
  std::vector<std::byte> out(proto::frame_head_size(hello));
  proto::write_frame_head(out.data(), hello, 0);
  // A broker that refuses the connection (a limit, the policy) writes its Error and closes,
  // possibly before HELLO goes out: then the Error, still readable, is the better answer.
  std::optional<Error> send_failed;
  for (std::size_t off = 0; off < out.size() && !send_failed;) {
    const iovec iov{.iov_base = out.data() + off, .iov_len = out.size() - off};
    auto sent = proto::send(fd.get(), std::span(&iov, 1));
    if (sent) {
      off += *sent;
    } else if (proto::would_block(sent.error())) {
      if (auto w = wait_for(fd.get(), POLLOUT, deadline, "sending HELLO"); !w) return std::unexpected(w.error());
    } else {
      send_failed = Error{Errc::kConnectFailed, fmt::format("sending HELLO: {}", sent.error().message())};
    }
  }

  std::vector<std::byte> in(64 * 1024);
  std::size_t have = 0;
  std::vector<UniqueFd> fds;
  const proto::FrameLimits limits{.max_frame = 64 * 1024};
  for (;;) {
    auto split = proto::split_frame({in.data(), have}, limits);
    if (!split)
      return std::unexpected(
          Error{Errc::kProtocolError, fmt::format("bad answer to HELLO: {}", proto::describe(split.error()))});
    if (split->complete) {
      wire::Header h;
      if (auto p = proto::parse_header(split->header, h); !p) {
        return std::unexpected(
            Error{Errc::kProtocolError, fmt::format("bad answer to HELLO: {}", proto::describe(p.error()))});
      }
      if (h.type() == wire::ERROR) {
        return std::unexpected(Error{static_cast<Errc>(h.error().code()), h.error().message()});
      }
      if (h.type() != wire::WELCOME || !h.has_welcome()) {
        return std::unexpected(
            Error{Errc::kProtocolError, "the broker answered HELLO with something other than WELCOME"});
      }
      Welcomed w{.client_id = h.welcome().client_id(), .limits = h.welcome().limits(), .leftover = {}};
      w.leftover.assign(in.begin() + static_cast<std::ptrdiff_t>(split->frame_size),
                        in.begin() + static_cast<std::ptrdiff_t>(have));
      return w;
    }
    auto got = proto::receive(fd.get(), {in.data() + have, in.size() - have}, fds);
    if (send_failed && (!got || got->eof)) return std::unexpected(*send_failed);
    if (got && got->eof)
      return std::unexpected(Error{Errc::kConnectFailed, "the broker closed the connection during the handshake"});
    if (got) {
      have += got->bytes;
    } else if (proto::would_block(got.error())) {
      if (auto w = wait_for(fd.get(), POLLIN, deadline, "waiting for WELCOME"); !w) return std::unexpected(w.error());
    } else {
      return std::unexpected(Error{Errc::kConnectFailed, fmt::format("reading WELCOME: {}", got.error().message())});
    }
  }
}

Result<Welcomed> greet(const UniqueFd& fd, const ConnectOptions& options) {
  if (auto ok = check_broker_uid(fd, options.trusted_broker_uids); !ok) return std::unexpected(ok.error());
  // Lanes wake the client through eventfds in its loop: not for one the application drives
  // through a single fd (manual_io).
  return handshake(fd, options.name, options.timeout, !options.manual_io);
}

Result<Dialed> dial(const ConnectOptions& options, bool wait_for_broker) {
  auto fd = connect_socket(options.address, options.timeout, wait_for_broker);
  if (!fd) return std::unexpected(fd.error());
  auto welcomed = greet(*fd, options);
  if (!welcomed) return std::unexpected(welcomed.error());
  return Dialed{.fd = std::move(*fd), .welcomed = std::move(*welcomed)};
}

}  // namespace ubroker::detail
