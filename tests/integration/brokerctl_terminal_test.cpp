// brokerctl on a terminal (a pseudo-terminal the test holds the other end of): Ctrl-C while
// `pub` reads the terminal sends nothing and exits 130, Ctrl-D on an empty terminal sends
// nothing either; `top` draws, changes its order on `s`, quits on `q` and leaves the terminal
// as it found it.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <optional>

#include "broker_process.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A child process whose standard input, output and error are a new pseudo-terminal (its
// controlling terminal: the line discipline turns ^C into SIGINT for it).
class OnTerminal {
 public:
  explicit OnTerminal(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    winsize size{.ws_row = 40, .ws_col = 160, .ws_xpixel = 0, .ws_ypixel = 0};
    int master = -1;
    pid_ = ::forkpty(&master, nullptr, nullptr, &size);
    if (pid_ == 0) {
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    EXPECT_GT(pid_, 0) << "forkpty failed";
    master_ = master;
  }
  OnTerminal(const OnTerminal&) = delete;
  OnTerminal& operator=(const OnTerminal&) = delete;
  ~OnTerminal() {
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (master_ >= 0) ::close(master_);
  }

  void type(std::string_view keys) const { ASSERT_EQ(::write(master_, keys.data(), keys.size()), static_cast<ssize_t>(keys.size())); }

  // Reads what the child wrote until `text` is among it (true), or the deadline (false).
  bool wait_for(std::string_view text, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = Clock::now() + timeout;
    while (screen_.find(text) == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left <= 0ms) return false;
      pollfd p{.fd = master_, .events = POLLIN, .revents = 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) != 1) continue;
      char buf[4096];
      const ssize_t n = ::read(master_, buf, sizeof buf);
      if (n <= 0) return screen_.find(text) != std::string::npos;  // EIO: the child is gone
      screen_.append(buf, static_cast<std::size_t>(n));
    }
    return true;
  }
  // The exit code once it exits, or nullopt at the deadline (reading on, so it never blocks on a full terminal).
  std::optional<int> wait_exit(std::chrono::milliseconds timeout = 10s) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        status_ = st;
        drain();  // what it wrote last may still be in the terminal
        return exit_code(st);
      }
      (void)wait_for("\x01never\x01", 50ms);
    }
    return std::nullopt;
  }
  [[nodiscard]] const std::string& screen() const { return screen_; }
  [[nodiscard]] int master() const { return master_; }

 private:
  // Reads everything the terminal holds (the child has exited: nothing more comes).
  void drain() {
    for (;;) {
      pollfd p{.fd = master_, .events = POLLIN, .revents = 0};
      if (::poll(&p, 1, 0) != 1) return;
      char buf[4096];
      const ssize_t n = ::read(master_, buf, sizeof buf);
      if (n <= 0) return;  // EIO: all read
      screen_.append(buf, static_cast<std::size_t>(n));
    }
  }

  pid_t pid_ = -1;
  int master_ = -1;
  std::string screen_;
  std::optional<int> status_;
};

TEST(BrokerctlTerminal, CtrlCWhileTypingSendsNothingAndCtrlDOnNothingNeither) {
  BrokerProcess broker;
  Client sub = broker.connect("watcher");
  auto s = sub.subscribe("typed.>");
  ASSERT_TRUE(s.has_value());
  {
    OnTerminal pub({UBROKER_BROKERCTL, "-s", broker.socket(), "pub", "typed.a"});
    ASSERT_TRUE(eventually([&] {  // connected, and reading the terminal
      return broker_status(sub).connections() == 2;
    }));
    pub.type("half a message");
    pub.type("\x03");  // ^C
    EXPECT_EQ(pub.wait_exit(), 130) << pub.screen();
  }
  {
    OnTerminal pub({UBROKER_BROKERCTL, "-s", broker.socket(), "pub", "--retain", "typed.b"});
    ASSERT_TRUE(eventually([&] { return broker_status(sub).connections() == 2; }));
    pub.type("\x04");  // ^D on an empty line: no message at all (with --retain it would clear the value)
    EXPECT_EQ(pub.wait_exit(), 2) << pub.screen();
    EXPECT_NE(pub.screen().find("nothing to publish"), std::string::npos) << pub.screen();
  }
  {  // What is typed and ended with ^D is sent.
    OnTerminal pub({UBROKER_BROKERCTL, "-s", broker.socket(), "pub", "typed.c"});
    ASSERT_TRUE(eventually([&] { return broker_status(sub).connections() == 2; }));
    pub.type("whole\n\x04");
    EXPECT_EQ(pub.wait_exit(), 0) << pub.screen();
  }
  // The first message the watcher gets is the one sent whole: nothing before it.
  auto m = sub.receive(5s);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->topic(), "typed.c");
  EXPECT_EQ(m->text(), "whole\n");
  EXPECT_EQ(broker_status(sub).retained_topics(), 0u);
}

TEST(BrokerctlTerminal, TopDrawsChangesOrderAndQuitsRestoringTheTerminal) {
  BrokerProcess broker;
  Client busy = broker.connect("busy-client");
  ASSERT_TRUE(busy.publish("top.t", "x").has_value());
  ASSERT_TRUE(busy.flush().has_value());
  termios before{};
  OnTerminal top({UBROKER_BROKERCTL, "-s", broker.socket(), "top", "--interval", "200ms"});
  ASSERT_EQ(::tcgetattr(top.master(), &before), 0);
  ASSERT_TRUE(top.wait_for("top.t")) << top.screen();
  EXPECT_NE(top.screen().find("\033[2J"), std::string::npos);  // redrawn in place
  EXPECT_NE(top.screen().find("busy-client"), std::string::npos) << top.screen();
  EXPECT_NE(top.screen().find("top.t"), std::string::npos) << top.screen();
  ASSERT_TRUE(top.wait_for("clients by rate"));
  top.type("s");
  EXPECT_TRUE(top.wait_for("clients by queue")) << top.screen();
  top.type("q");
  EXPECT_EQ(top.wait_exit(), 0) << top.screen();
  termios after{};
  ASSERT_EQ(::tcgetattr(top.master(), &after), 0);
  EXPECT_EQ(after.c_lflag & (ICANON | ECHO), before.c_lflag & (ICANON | ECHO)) << "the terminal's mode was not restored";
}

}  // namespace
}  // namespace ubroker::test
