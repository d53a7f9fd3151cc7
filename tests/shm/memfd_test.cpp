// Memfd, Mapping and inspect(): what the kernel says about fds of every kind, and that the
// seals the broker relies on hold.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include "ubroker/shm/mapping.hpp"
#include "ubroker/shm/memfd.hpp"

namespace ubroker::shm {
namespace {

TEST(Memfd, IsSizedAndSealedAgainstShrinkAndGrow) {
  auto m = Memfd::create("t", 1 << 16);
  ASSERT_TRUE(m) << m.error().message();
  auto facts = inspect(m->fd());
  ASSERT_TRUE(facts);
  EXPECT_TRUE(facts->memfd);
  EXPECT_EQ(facts->kind, "memfd");
  EXPECT_EQ(facts->size, 1u << 16);
  EXPECT_TRUE(facts->read_write);
  EXPECT_EQ(facts->seals & (F_SEAL_SHRINK | F_SEAL_GROW), unsigned(F_SEAL_SHRINK | F_SEAL_GROW));
  EXPECT_NE(::ftruncate(m->fd(), 100), 0);      // shrink refused
  EXPECT_NE(::ftruncate(m->fd(), 1 << 20), 0);  // grow refused
}

TEST(Memfd, FutureWriteSealKeepsExistingWritableMappingButRefusesNewOnes) {
  auto m = Memfd::create("t", 8192);
  ASSERT_TRUE(m);
  auto rw = Mapping::map(m->fd(), 8192, Access::kReadWrite);
  ASSERT_TRUE(rw);
  ASSERT_TRUE(add_seals(m->fd(), F_SEAL_FUTURE_WRITE | F_SEAL_SEAL));
  rw->data()[0] = std::byte{42};  // the mapping made before the seal still writes
  EXPECT_FALSE(Mapping::map(m->fd(), 8192, Access::kReadWrite));
  auto ro = Mapping::map(m->fd(), 8192, Access::kReadOnly);
  ASSERT_TRUE(ro);
  EXPECT_EQ(ro->data()[0], std::byte{42});
  EXPECT_NE(::mprotect(ro->data(), 8192, PROT_READ | PROT_WRITE), 0);  // cannot be made writable
  EXPECT_NE(::write(m->fd(), "x", 1), 1);
}

TEST(Inspect, TellsEveryOtherKindOfFdApart) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  EXPECT_EQ(inspect(r.get())->kind, "pipe");
  EXPECT_FALSE(inspect(r.get())->memfd);

  int s[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
  UniqueFd s0(s[0]), s1(s[1]);
  EXPECT_EQ(inspect(s0.get())->kind, "socket");

  UniqueFd zero(::open("/dev/zero", O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(zero);
  EXPECT_EQ(inspect(zero.get())->kind, "character device");

  char path[] = "/tmp/ubroker-inspect-XXXXXX";
  UniqueFd file(::mkstemp(path));
  ASSERT_TRUE(file);
  ::unlink(path);
  EXPECT_EQ(inspect(file.get())->kind, "regular file");
  EXPECT_FALSE(inspect(file.get())->memfd);

  UniqueFd unsealed(::memfd_create("u", MFD_CLOEXEC));  // no MFD_ALLOW_SEALING: F_SEAL_SEAL only
  ASSERT_TRUE(unsealed);
  auto f = inspect(unsealed.get());
  EXPECT_TRUE(f->memfd);
  EXPECT_EQ(f->seals & (F_SEAL_SHRINK | F_SEAL_GROW), 0u);
}

}  // namespace
}  // namespace ubroker::shm
