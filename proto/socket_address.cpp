// Socket address resolution for paths and abstract names.
#include "ubroker/proto/socket_address.hpp"

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace ubroker::proto {

std::string default_socket_path() {
  if (const char* s = std::getenv("UBROKER_SOCKET"); s != nullptr && *s != '\0') return s;
  if (const char* dir = std::getenv("XDG_RUNTIME_DIR"); dir != nullptr && *dir != '\0') {
    return std::string(dir) + "/ubroker.sock";
  }
  return "/run/ubroker/ubroker.sock";
}

std::expected<SocketAddress, std::string> make_socket_address(std::string_view where) {
  SocketAddress a;
  a.addr.sun_family = AF_UNIX;
  const bool abstract = where.starts_with('@');
  const std::string_view name = abstract ? where.substr(1) : where;
  if (name.empty()) return std::unexpected(std::string("empty socket address"));
  // Paths need a terminating NUL; abstract names are length-delimited after the leading NUL.
  const std::size_t room = sizeof(a.addr.sun_path) - 1;
  if (name.size() > room) {
    return std::unexpected("socket address '" + std::string(where) + "' is longer than " + std::to_string(room) +
                           " bytes");
  }
  if (abstract) {
    a.addr.sun_path[0] = '\0';
    std::memcpy(a.addr.sun_path + 1, name.data(), name.size());
    a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  } else {
    std::memcpy(a.addr.sun_path, name.data(), name.size());
    a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
  }
  return a;
}

}  // namespace ubroker::proto
