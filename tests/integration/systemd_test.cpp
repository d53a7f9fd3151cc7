// brokerd as a system service: socket activation through systemd-socket-activate (Debian's
// systemd package), the readiness protocol on a NOTIFY_SOCKET the test binds, journald-style
// log lines, --check-config, and the clear refusals of a wrong inherited fd or socket path.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "process.hpp"
#include "ubroker/client.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ubroker-systemd-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  [[nodiscard]] std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  [[nodiscard]] std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(*this / name) << text;
    return *this / name;
  }

 private:
  std::string path_;
};

// The service manager's end of sd_notify: a datagram socket at `path`.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : fd_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
  }
  // The next state message, or "" if none arrives within the timeout.
  std::string next(std::chrono::milliseconds timeout = 10s) {
    pollfd p{.fd = fd_.get(), .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return "";
    char buf[4096];
    const ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
  }

 private:
  shm::UniqueFd fd_;
};

Result<Client> connect_waiting(const std::string& socket) {
  ConnectOptions options;
  options.address = socket;
  options.name = "systemd-test";
  options.wait_for_broker = true;
  options.timeout = 10s;
  options.reconnect.enabled = false;
  return Client::connect(options);
}

// A request answered by the same client: proves the broker serves it end to end.
void expect_round_trip(Client& client) {
  auto service = client.serve("systemd.echo", [](Request r) { (void)r.reply(r.text()); });
  ASSERT_TRUE(service) << service.error().message;
  auto answer = client.request("systemd.echo", "ping", 5s);
  ASSERT_TRUE(answer) << answer.error().message;
  EXPECT_EQ(answer->text(), "ping");
  auto nobody = client.request("systemd.nobody", "?", 5s);
  ASSERT_FALSE(nobody);
  EXPECT_EQ(nobody.error().code, Errc::kNoResponders);
}

TEST(Systemd, SocketActivationStartsBrokerOnFirstConnection) {
  TempDir dir;
  const std::string sock = dir / "activated.sock";
  auto activator = Process::spawn({UBROKER_SYSTEMD_SOCKET_ACTIVATE, "--listen=" + sock, UBROKER_BROKERD, "--log-level",
                                   "info", "--socket", dir / "ignored.sock"});
  auto client = connect_waiting(sock);  // systemd-socket-activate binds; brokerd starts on this dial
  ASSERT_TRUE(client) << client.error().message << "\n" << activator.err();
  expect_round_trip(*client);
  client->close();
  EXPECT_FALSE(std::filesystem::exists(dir / "ignored.sock")) << "brokerd bound its own socket as well";
  activator.signal(SIGTERM);
  auto status = activator.wait(10s);
  ASSERT_TRUE(status);
  EXPECT_EQ(exit_code(*status), 0) << activator.err();
  EXPECT_NE(activator.err().find("listening on " + sock + " (socket passed by systemd"), std::string::npos)
      << activator.err();
}

TEST(Systemd, NotifiesReadyReloadingAndStopping) {
  TempDir dir;
  NotifySocket notify(dir / "notify");
  const std::string config = dir.write("brokerd.toml", "[limits]\nmax_subscriptions = 100\n");
  auto broker = Process::spawn({UBROKER_BROKERD, "--socket", dir / "b.sock", "--config", config},
                               {"NOTIFY_SOCKET=" + (dir / "notify")});
  const std::string ready = notify.next();
  ASSERT_NE(ready.find("READY=1"), std::string::npos) << "got '" << ready << "'\n" << broker.err();
  auto client = connect_waiting(dir / "b.sock");  // READY=1 means it serves: no wait needed
  ASSERT_TRUE(client) << client.error().message;
  expect_round_trip(*client);

  broker.signal(SIGHUP);
  const std::string reloading = notify.next();
  EXPECT_NE(reloading.find("RELOADING=1"), std::string::npos) << reloading;
  EXPECT_NE(reloading.find("MONOTONIC_USEC="), std::string::npos) << reloading;
  EXPECT_NE(notify.next().find("READY=1"), std::string::npos);
  expect_round_trip(*client);  // still serving after the reload

  broker.signal(SIGTERM);
  EXPECT_NE(notify.next().find("STOPPING=1"), std::string::npos);
  auto status = broker.wait(10s);
  ASSERT_TRUE(status);
  EXPECT_EQ(exit_code(*status), 0) << broker.err();
}

TEST(Systemd, JournalLinesCarryThePriorityAndNoTimestamp) {
  TempDir dir;
  // JOURNAL_STREAM names stderr's device and inode, as systemd sets it for StandardError=journal.
  auto broker = Process::spawn({"/bin/bash", "-c", "export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec \"$@\"",
                                "_", UBROKER_BROKERD, "--socket", dir / "b.sock", "--config",
                                dir.write("open.toml", "[policy]\nopen = true\n")});
  auto client = connect_waiting(dir / "b.sock");
  ASSERT_TRUE(client) << client.error().message << broker.err();
  client->close();
  broker.signal(SIGTERM);
  ASSERT_TRUE(broker.wait(10s));
  const std::string err = broker.err();
  EXPECT_NE(err.find("<6>brokerd " UBROKER_VERSION " listening on"), std::string::npos) << err;
  EXPECT_NE(err.find("<4>ACCESS POLICY IS OPEN"), std::string::npos) << err;  // a warning
  std::size_t lines = 0;
  for (std::size_t at = 0; at < err.size(); at = err.find('\n', at) + 1) {
    ++lines;
    EXPECT_TRUE(err.compare(at, 1, "<") == 0 && err[at + 2] == '>') << "line without a priority: " << err.substr(at, 80);
    EXPECT_NE(err.compare(at + 3, 2, "20"), 0) << "line with a timestamp: " << err.substr(at, 80);
    if (err.find('\n', at) == std::string::npos) break;
  }
  EXPECT_GE(lines, 3u);
}

// brokerd handed `kind` as its inherited fd (tests/support/listen_fds_exec.cpp).
void expect_inherited_fd_refused(const std::string& kind, const std::string& sentence) {
  TempDir dir;
  auto broker = Process::spawn({UBROKER_LISTEN_FDS_EXEC, kind, UBROKER_BROKERD, "--socket", dir / "b.sock"});
  auto status = broker.wait(10s);
  ASSERT_TRUE(status) << kind << ": brokerd did not exit";
  EXPECT_EQ(exit_code(*status), 2) << kind << ": " << broker.err();
  EXPECT_NE(broker.err().find(sentence), std::string::npos) << kind << ": " << broker.err();
  EXPECT_FALSE(std::filesystem::exists(dir / "b.sock")) << kind << ": it bound its own socket instead";
}

TEST(Systemd, AWrongInheritedFdIsRefusedWithASentence) {
  const std::string not_listening = "is not a listening AF_UNIX SOCK_STREAM socket";
  expect_inherited_fd_refused("file", not_listening);
  expect_inherited_fd_refused("dgram", not_listening);
  expect_inherited_fd_refused("unlistened", not_listening);
  expect_inherited_fd_refused("two", "systemd passed 2 sockets; brokerd takes exactly one");
}

TEST(Systemd, ASocketPathThatCannotBeMadeIsOneSentence) {
  TempDir dir;
  const std::string file = dir.write("plain-file", "x");
  auto broker = Process::spawn({UBROKER_BROKERD, "--socket", file + "/run/b.sock"});
  auto status = broker.wait(10s);
  ASSERT_TRUE(status);
  EXPECT_NE(exit_code(*status), 0);
  const std::string err = broker.err();
  EXPECT_NE(err.find("cannot create directory " + file + "/run: Not a directory"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "more than the one sentence:\n" << err;
}

// brokerd --check-config on `config`, with a socket path in `dir` it must not bind: its exit
// code, and what it printed.
std::pair<int, std::string> check_config(const TempDir& dir, const std::string& config) {
  auto p = Process::spawn({UBROKER_BROKERD, "--check-config", "--socket", dir / "ubroker.sock", "--config", config});
  auto status = p.wait(10s);
  EXPECT_TRUE(status);
  return {status ? exit_code(*status) : -1, p.out() + p.err()};
}

TEST(Systemd, CheckConfigValidatesAndStartsNothing) {
  TempDir dir;
  {
    auto [code, text] = check_config(dir, dir.write("good.toml", "[limits]\nmax_connections = 100\n"
                                                            "[[policy.allow]]\nuids = [1000]\npublish = [\"a.>\"]\n"));
    EXPECT_EQ(code, 0) << text;
    EXPECT_NE(text.find("good.toml is valid"), std::string::npos) << text;
  }
  {
    auto [code, text] = check_config(dir, UBROKER_SOURCE_DIR "/packaging/ubroker.toml");  // the installed example
    EXPECT_EQ(code, 0) << text;
  }
  {
    auto [code, text] = check_config(dir, dir.write("unknown.toml", "# a comment\n[limits]\nmax_conections = 100\n"));
    EXPECT_EQ(code, 2) << text;
    EXPECT_NE(text.find("line 3"), std::string::npos) << text;
    EXPECT_NE(text.find("max_conections"), std::string::npos) << text;
  }
  {
    auto [code, text] = check_config(dir, dir.write("syntax.toml", "[limits]\nmax_connections = = 1\n"));
    EXPECT_EQ(code, 2) << text;
    EXPECT_NE(text.find("line 2"), std::string::npos) << text;
  }
  {
    auto [code, text] = check_config(dir, dir.write("value.toml", "[limits]\nmax_frame_bytes = \"big\"\n"));
    EXPECT_EQ(code, 2) << text;
    EXPECT_NE(text.find("line 2"), std::string::npos) << text;
  }
  {
    auto [code, text] = check_config(dir, dir / "missing.toml");
    EXPECT_EQ(code, 2) << text;
    EXPECT_NE(text.find("cannot read config file " + (dir / "missing.toml") + ": No such file"), std::string::npos)
        << text;
  }
  // Nothing was started: no socket (or its lock file) appeared where every check was told to listen.
  EXPECT_FALSE(std::filesystem::exists(dir / "ubroker.sock"));
  EXPECT_FALSE(std::filesystem::exists(dir / "ubroker.sock.lock"));
}

}  // namespace
}  // namespace ubroker::test
