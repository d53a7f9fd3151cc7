// The broker process's life: start-up refusals, stale sockets, abstract names, handshake
// rules and deadlines, and SIGTERM draining queued messages before removing the socket.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>

#include "broker_process.hpp"
#include "raw_connection.hpp"
#include "test_util.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/socket_address.hpp"

namespace ubroker::test {
namespace {

TEST(Lifecycle, SecondBrokerOnTheSamePathRefusesToStart) {
  BrokerProcess first;
  Process second = Process::spawn({UBROKER_BROKERD, "--socket", first.socket()});
  auto st = second.wait(std::chrono::seconds(10));
  ASSERT_TRUE(st.has_value()) << "the second broker kept running";
  EXPECT_EQ(exit_code(*st), 1);
  EXPECT_NE(second.err().find("another broker"), std::string::npos) << second.err();
  // The first one is untouched and still serves.
  Client c = first.connect();
  EXPECT_TRUE(c.flush().has_value());
  EXPECT_EQ(first.stop(), 0);
}

TEST(Lifecycle, StaleSocketFileIsReplacedAndRemovedOnExit) {
  char tmpl[] = "/tmp/ubroker-stale-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string path = dir + "/ubroker.sock";
  {
    // A socket file with nobody listening: what a crashed broker leaves behind.
    const auto addr = proto::make_socket_address(path).value();
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_EQ(::bind(fd, addr.get(), addr.len), 0);
    ::close(fd);
  }
  Process broker = Process::spawn({UBROKER_BROKERD, "--socket", path});
  ASSERT_TRUE(eventually([&] { return Client::connect({.address = path}).has_value(); }, std::chrono::seconds(10)))
      << broker.err();
  broker.signal(SIGTERM);
  auto st = broker.wait(std::chrono::seconds(10));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 0) << broker.err();
  EXPECT_FALSE(std::filesystem::exists(path));
  std::filesystem::remove_all(dir);
}

TEST(Lifecycle, RefusesToReplaceANonSocketFile) {
  char tmpl[] = "/tmp/ubroker-file-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string path = dir + "/ubroker.sock";
  std::FILE* f = std::fopen(path.c_str(), "w");
  std::fclose(f);
  Process broker = Process::spawn({UBROKER_BROKERD, "--socket", path});
  auto st = broker.wait(std::chrono::seconds(10));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 1);
  EXPECT_NE(broker.err().find("not a socket"), std::string::npos) << broker.err();
  EXPECT_TRUE(std::filesystem::exists(path));
  std::filesystem::remove_all(dir);
}

TEST(Lifecycle, TheSocketPathIsNotHijackedBySymlinksSquattersOrTheUmask) {
  char tmpl[] = "/tmp/ubroker-path-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string path = dir + "/ubroker.sock";
  // A lock file planted as a symlink (in a shared directory, to a file the broker's user may
  // write) is not followed.
  const std::string victim = dir + "/victim";
  std::fclose(std::fopen(victim.c_str(), "w"));
  std::filesystem::create_symlink(victim, path + ".lock");
  {
    Process broker = Process::spawn({UBROKER_BROKERD, "--socket", path});
    auto st = broker.wait(std::chrono::seconds(10));
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(exit_code(*st), 1);
    EXPECT_NE(broker.err().find("is a symbolic link"), std::string::npos) << broker.err();
  }
  std::filesystem::remove(path + ".lock");
  // A process that listens on the path but never accepts, its backlog full: start-up fails at
  // once with the reason instead of waiting for ever.
  {
    const auto addr = proto::make_socket_address(path).value();
    const int squatter = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_EQ(::bind(squatter, addr.get(), addr.len), 0);
    ASSERT_EQ(::listen(squatter, 0), 0);
    std::vector<int> fillers;
    for (;;) {
      const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
      if (::connect(fd, addr.get(), addr.len) != 0) {
        ::close(fd);
        break;
      }
      fillers.push_back(fd);
    }
    Process broker = Process::spawn({UBROKER_BROKERD, "--socket", path});
    auto st = broker.wait(std::chrono::seconds(10));
    ASSERT_TRUE(st.has_value()) << "brokerd waited on the squatter";
    EXPECT_EQ(exit_code(*st), 1);
    EXPECT_NE(broker.err().find("does not accept connections"), std::string::npos) << broker.err();
    for (int fd : fillers) ::close(fd);
    ::close(squatter);
    std::filesystem::remove(path);
  }
  // Directories the broker creates get mode 0755 whatever its umask.
  {
    const std::string nested = dir + "/a/b/ubroker.sock";
    Process broker = Process::spawn({"/bin/sh", "-c", std::string("umask 077; exec ") + UBROKER_BROKERD +
                                                          " --socket " + nested});
    ASSERT_TRUE(
        eventually([&] { return Client::connect({.address = nested}).has_value(); }, std::chrono::seconds(10)))
        << broker.err();
    for (const char* sub : {"/a", "/a/b"}) {
      struct stat st {};
      ASSERT_EQ(::stat((dir + sub).c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 07777, 0755u) << sub;
    }
    broker.signal(SIGTERM);
    ASSERT_TRUE(broker.wait(std::chrono::seconds(10)).has_value());
  }
  std::filesystem::remove_all(dir);
}

TEST(Lifecycle, AbstractSocketName) {
  const std::string name = "@ubroker-test-" + std::to_string(::getpid());
  Process broker = Process::spawn({UBROKER_BROKERD, "--socket", name});
  std::optional<Client> c;
  ASSERT_TRUE(eventually(
      [&] {
        auto r = Client::connect({.address = name});
        if (r) c.emplace(std::move(*r));
        return c.has_value();
      },
      std::chrono::seconds(10)))
      << broker.err();
  auto s = c->subscribe("x");
  ASSERT_TRUE(s.has_value());
  ASSERT_TRUE(c->publish("x", "hi").has_value());
  auto m = c->receive(std::chrono::seconds(5));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->text(), "hi");
  broker.signal(SIGTERM);
  auto st = broker.wait(std::chrono::seconds(10));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 0);
}

TEST(Lifecycle, ConnectErrorsNameThePathAndReason) {
  auto c = Client::connect({.address = "/tmp/ubroker-no-such-dir/none.sock"});
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code, Errc::kConnectFailed);
  EXPECT_NE(c.error().message.find("/tmp/ubroker-no-such-dir/none.sock"), std::string::npos);
  EXPECT_NE(c.error().message.find("no such file"), std::string::npos) << c.error().message;
}

TEST(Lifecycle, HandshakeDeadline) {
  BrokerProcess broker("[timeouts]\nhandshake_ms = 200\n");
  RawConnection raw(broker.socket());  // says nothing
  auto f = raw.read_frame(std::chrono::seconds(5));
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->type(), wire::ERROR);
  EXPECT_EQ(f->error().code(), wire::HANDSHAKE_TIMEOUT);
  EXPECT_TRUE(f->error().fatal());
  EXPECT_TRUE(raw.wait_closed());
}

TEST(Lifecycle, UnsupportedProtocolVersion) {
  BrokerProcess broker;
  RawConnection raw(broker.socket());
  wire::Header h;
  h.set_type(wire::HELLO);
  h.mutable_hello()->set_protocol_version(99);
  raw.send_frame(h);
  auto f = raw.read_frame();
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->error().code(), wire::UNSUPPORTED_VERSION);
  EXPECT_NE(f->error().message().find("99"), std::string::npos);
  EXPECT_TRUE(raw.wait_closed());
}

TEST(Lifecycle, SigtermFlushesQueuedMessagesThenRemovesTheSocket) {
  BrokerProcess broker;
  constexpr std::uint64_t kCount = 10000;
  std::mutex mu;
  std::condition_variable cv;
  bool go = false;
  std::atomic<std::uint64_t> received{0};
  Client sub = broker.connect("drained");
  auto s = sub.subscribe("work", [&](const MessageView&) {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return go; });  // hold everything in the broker's queue for now
    ++received;
  });
  ASSERT_TRUE(s.has_value());
  Process peer = publish_from_peer(broker, "work", kCount, 64);
  auto st = peer.wait(std::chrono::seconds(60));
  ASSERT_TRUE(st.has_value());
  ASSERT_EQ(exit_code(*st), 0) << peer.err();  // every message accepted, most still queued
  broker.process().signal(SIGTERM);
  {
    std::lock_guard lk(mu);
    go = true;
  }
  cv.notify_all();
  ASSERT_TRUE(eventually([&] { return !sub.connected(); }));
  EXPECT_EQ(received.load(), kCount);
  auto why = sub.disconnect_reason();
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(why->code, Errc::kShuttingDown) << why->message;
  auto bst = broker.process().wait(std::chrono::seconds(10));
  ASSERT_TRUE(bst.has_value());
  EXPECT_EQ(exit_code(*bst), 0);
  EXPECT_FALSE(std::filesystem::exists(broker.socket()));
}

}  // namespace
}  // namespace ubroker::test
