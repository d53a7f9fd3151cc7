// fd passing over a real socketpair, with no event loop: what arrives, what is refused, and
// that refused fds are closed rather than leaked.
#include "ubroker/proto/fd_socket.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "raw_connection.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::proto {
namespace {

struct Pair {
  shm::UniqueFd a, b;
  Pair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    a.reset(sv[0]);
    b.reset(sv[1]);
  }
};

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

iovec iov_of(const char* s) {
  return {.iov_base = const_cast<char*>(s), .iov_len = std::strlen(s)};
}

TEST(FdSocket, BytesAndFdsArriveTogether) {
  Pair p;
  shm::UniqueFd mem(::memfd_create("t", MFD_CLOEXEC));
  ASSERT_TRUE(mem);
  ASSERT_EQ(::write(mem.get(), "hello", 5), 5);
  const iovec iov = iov_of("frame");
  const int fds[] = {mem.get()};
  ASSERT_EQ(send(p.a.get(), std::span(&iov, 1), fds).value(), 5u);

  std::byte buf[16];
  std::vector<shm::UniqueFd> got;
  auto r = receive(p.b.get(), buf, got);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->bytes, 5u);
  ASSERT_EQ(got.size(), 1u);
  // The received fd is close-on-exec and refers to the same file.
  EXPECT_TRUE(::fcntl(got[0].get(), F_GETFD) & FD_CLOEXEC);
  char text[5];
  ASSERT_EQ(::pread(got[0].get(), text, 5, 0), 5);
  EXPECT_EQ(std::string_view(text, 5), "hello");
}

TEST(FdSocket, WouldBlockOnEmptySocketAndEofOnClose) {
  Pair p;
  std::byte buf[8];
  std::vector<shm::UniqueFd> got;
  auto r = receive(p.b.get(), buf, got);
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(would_block(r.error()));
  p.a.reset();
  r = receive(p.b.get(), buf, got);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->eof);
}

TEST(FdSocket, TooManyFdsIsCtruncAndNothingLeaks) {
  Pair p;
  // Send 20 fds with a raw sendmsg (our send() refuses more than 16).
  std::vector<shm::UniqueFd> sent;
  std::vector<int> raw;
  for (int i = 0; i < 20; ++i) {
    sent.emplace_back(::dup(STDERR_FILENO));
    raw.push_back(sent.back().get());
  }
  const std::byte x[] = {std::byte{'x'}};
  ASSERT_EQ(test::sendmsg_with_fds(p.a.get(), x, raw), 1);
  sent.clear();  // only the in-flight copies remain

  const std::size_t before = open_fds();
  {
    std::byte buf[8];
    std::vector<shm::UniqueFd> got;
    auto r = receive(p.b.get(), buf, got);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error(), make_error_code(TransportErrc::kFdsTruncated));
    EXPECT_LE(got.size(), kMaxFdsPerMessage);
  }
  // What did arrive was owned and is closed again; what the kernel truncated it closed.
  EXPECT_EQ(open_fds(), before);
}

TEST(FdSocket, SendRefusesTooManyFds) {
  Pair p;
  std::vector<int> fds(kMaxFdsPerMessage + 1, STDERR_FILENO);
  const iovec iov = iov_of("x");
  auto r = send(p.a.get(), std::span(&iov, 1), fds);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), make_error_code(TransportErrc::kTooManyFds));
}

TEST(FdSocket, SendToClosedPeerIsEpipeNotSigpipe) {
  Pair p;
  p.b.reset();
  const iovec iov = iov_of("x");
  auto r = send(p.a.get(), std::span(&iov, 1));  // MSG_NOSIGNAL: the test process survives
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), std::errc::broken_pipe);
}

}  // namespace
}  // namespace ubroker::proto
