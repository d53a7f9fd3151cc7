// Where a broker listens: a filesystem path or an abstract name ("@name"). The default is
// $UBROKER_SOCKET, else $XDG_RUNTIME_DIR/ubroker.sock, else /run/ubroker/ubroker.sock.
// Shared by brokerd, the client library and the tools so they agree. Stateless.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <expected>
#include <string>
#include <string_view>

namespace ubroker::proto {

[[nodiscard]] std::string default_socket_path();

struct SocketAddress {
  sockaddr_un addr{};
  socklen_t len = 0;
  [[nodiscard]] bool abstract() const noexcept { return addr.sun_path[0] == '\0'; }
  [[nodiscard]] const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&addr); }
};

// "@name" becomes an abstract address; anything else a path. Fails (with a reason) when the
// name is empty or does not fit in sun_path.
[[nodiscard]] std::expected<SocketAddress, std::string> make_socket_address(std::string_view where);

}  // namespace ubroker::proto
