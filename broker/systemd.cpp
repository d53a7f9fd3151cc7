// Socket activation and readiness through libsystemd (sd-daemon), which also speaks the
// protocol when the service manager is not systemd but sets the same variables.
#include "systemd.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "ubroker/proto/fd_socket.hpp"

namespace ubroker::broker {
namespace {

// The socket's name for logs and status: its path, "@name" if abstract, or a placeholder.
std::string socket_name(int fd) {
  sockaddr_un addr{};
  socklen_t len = sizeof(addr);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "(unnamed socket)";
  const std::size_t offset = offsetof(sockaddr_un, sun_path);
  if (len <= offset + 1 || len > sizeof(addr)) return "(unnamed socket)";
  std::string name(addr.sun_path, len - offset);
  if (name[0] == '\0') {
    name[0] = '@';  // abstract: the name is every byte after the leading NUL
  } else {
    name.resize(name.find('\0') == std::string::npos ? name.size() : name.find('\0'));
  }
  return name;
}

}  // namespace

std::expected<std::optional<InheritedListener>, std::string> take_inherited_listener() {
  const int n = sd_listen_fds(1);  // 1: unsets LISTEN_*, so children never see them
  if (n < 0) {
    return std::unexpected(fmt::format("the sockets passed by systemd cannot be used (LISTEN_FDS): {}", std::strerror(-n)));
  }
  if (n == 0) return std::nullopt;
  if (n > 1) {
    // Close them all: the broker exits, and must not leave them to anything it might start.
    for (int i = 0; i < n; ++i) shm::UniqueFd closing(SD_LISTEN_FDS_START + i);
    return std::unexpected(fmt::format("systemd passed {} sockets; brokerd takes exactly one (one ListenStream= in the "
                                       ".socket unit)", n));
  }
  shm::UniqueFd fd(SD_LISTEN_FDS_START);
  const int ok = sd_is_socket_unix(fd.get(), SOCK_STREAM, 1, nullptr, 0);
  if (ok < 0) return std::unexpected(fmt::format("the fd passed by systemd cannot be checked: {}", std::strerror(-ok)));
  if (ok == 0) {
    return std::unexpected(
        "the fd passed by systemd is not a listening AF_UNIX SOCK_STREAM socket (check ListenStream= in the "
        ".socket unit: a socket path, Accept=no)");
  }
  if (auto r = proto::make_nonblocking(fd.get()); !r) {
    return std::unexpected(fmt::format("cannot make the socket passed by systemd non-blocking: {}", r.error().message()));
  }
  std::string name = socket_name(fd.get());
  return InheritedListener{.fd = std::move(fd), .name = std::move(name)};
}

void notify_systemd(const std::string& state) {
  static bool failure_logged = false;
  const int r = sd_notify(0, state.c_str());
  if (r < 0 && !failure_logged) {
    failure_logged = true;
    spdlog::warn("cannot tell the service manager our state (NOTIFY_SOCKET): {}", std::strerror(-r));
  }
}

void notify_ready() {
  notify_systemd("READY=1\nSTATUS=serving");
}

void notify_reloading() {
  // MONOTONIC_USEC: when the reload began, as systemd's own clock reads it (sd_notify(3)).
  timespec now{};
  if (::clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
    notify_systemd("RELOADING=1\nSTATUS=reloading the policy");
    return;
  }
  const auto usec = static_cast<unsigned long long>(now.tv_sec) * 1000000ull + static_cast<unsigned long long>(now.tv_nsec) / 1000;
  notify_systemd(fmt::format("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the policy", usec));
}

void notify_stopping() {
  notify_systemd("STOPPING=1\nSTATUS=draining connections");
}

bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long dev = 0;
  unsigned long long ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

}  // namespace ubroker::broker
