// ubroker_listen_fds_exec KIND COMMAND...: runs COMMAND as systemd's socket activation would,
// with fd 3 (and LISTEN_FDS, LISTEN_PID) set up, but with the fd the test asks for, so tests
// can hand brokerd the wrong thing: "file" (a regular file), "dgram" (an AF_UNIX datagram
// socket), "unlistened" (a stream socket that is bound but not listening), "two" (two
// listening stream sockets). The sockets are bound to abstract names.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace {

int die(const char* what) {
  std::fprintf(stderr, "listen_fds_exec: %s: %s\n", what, std::strerror(errno));
  return 127;
}

// A socket of `type` at fd `target`, bound to an abstract name; listening if asked.
bool make_socket(int type, bool listening, int target) {
  const int fd = ::socket(AF_UNIX, type, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string name = "ubroker-listen-fds-" + std::to_string(::getpid()) + "-" + std::to_string(target);
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) return false;
  if (listening && ::listen(fd, 16) != 0) return false;
  if (fd != target && (::dup2(fd, target) < 0 || ::close(fd) != 0)) return false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s file|dgram|unlistened|two COMMAND...\n", argv[0]);
    return 2;
  }
  const std::string_view kind = argv[1];
  int count = 1;
  if (kind == "file") {
    const int fd = ::open("/proc/self/exe", O_RDONLY);
    if (fd < 0 || ::dup2(fd, 3) < 0) return die("open");
  } else if (kind == "dgram") {
    if (!make_socket(SOCK_DGRAM, false, 3)) return die("dgram socket");
  } else if (kind == "unlistened") {
    if (!make_socket(SOCK_STREAM, false, 3)) return die("stream socket");
  } else if (kind == "two") {
    if (!make_socket(SOCK_STREAM, true, 3) || !make_socket(SOCK_STREAM, true, 4)) return die("stream sockets");
    count = 2;
  } else {
    std::fprintf(stderr, "listen_fds_exec: unknown kind '%s'\n", argv[1]);
    return 2;
  }
  if (::setenv("LISTEN_FDS", std::to_string(count).c_str(), 1) != 0 ||
      ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1) != 0) {
    return die("setenv");
  }
  ::execvp(argv[2], argv + 2);
  return die("exec");
}
