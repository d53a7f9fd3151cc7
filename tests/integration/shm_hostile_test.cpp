// Hostile shared-memory input: every kind of wrong fd, wrong seal, wrong count and wrong
// reference is refused with its own error, the broker keeps serving well-behaved clients,
// and it holds no fd more afterwards. Receivers can never write into a producer's segment.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <deque>

#include "raw_connection.hpp"
#include "test_util.hpp"
#include "ubroker/proto/fd_socket.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/shm/memfd.hpp"
#include "ubroker/shm/segment_layout.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;
using shm::UniqueFd;

// A memfd of `size` bytes whose first `written` bytes were written (all of it by default: a
// producer initialises its segment; the broker refuses pages nobody wrote).
UniqueFd memfd(unsigned seals, std::size_t size = 1 << 16, bool allow_sealing = true,
               std::size_t written = SIZE_MAX) {
  UniqueFd fd(::memfd_create("hostile", MFD_CLOEXEC | (allow_sealing ? MFD_ALLOW_SEALING : 0)));
  EXPECT_TRUE(fd);
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
  const std::vector<char> zeros(std::min(size, written), 0);
  EXPECT_EQ(::pwrite(fd.get(), zeros.data(), zeros.size(), 0), static_cast<ssize_t>(zeros.size()));
  if (seals != 0) {
    EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, seals), 0);
  }
  return fd;
}

wire::Header register_frame(std::uint64_t seq, std::uint64_t segment, std::uint32_t fd_count = 1) {
  wire::Header h;
  h.set_type(wire::SHM_REGISTER);
  h.set_seq(seq);
  h.set_fd_count(fd_count);
  h.mutable_shm()->set_segment(segment);
  return h;
}

wire::Header bulk_publish_frame(const std::string& topic, std::uint64_t segment, std::uint64_t offset,
                                std::uint64_t length) {
  wire::Header h;
  h.set_type(wire::PUBLISH);
  h.set_topic(topic);
  auto* r = h.mutable_shm();
  r->set_segment(segment);
  r->set_offset(offset);
  r->set_length(length);
  return h;
}

class ShmHostile : public ::testing::Test {
 protected:
  void SetUp() override {
    sub_handle_ = std::move(sub_.subscribe("bystander").value());
    fds_before_ = open_fds(broker_.process().pid());
  }
  void TearDown() override {
    expect_bystanders_fine();
    // Every fd a hostile peer sent is closed again once its connection is gone.
    EXPECT_TRUE(eventually([&] { return open_fds(broker_.process().pid()) <= fds_before_; }, 10s))
        << open_fds(broker_.process().pid()) << " fds, " << fds_before_ << " before";
  }
  void expect_bystanders_fine() {
    ASSERT_TRUE(pub_.publish("bystander", "still here"));
    auto m = sub_.receive(5s);
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_EQ(m->text(), "still here");
  }
  // A refusal that keeps the connection: Error{code}, message containing `why`; then PING works.
  static void expect_refused(RawConnection& raw, wire::ErrorCode code, const std::string& why) {
    auto f = raw.read_frame();
    ASSERT_TRUE(f.has_value()) << "no answer";
    ASSERT_EQ(f->type(), wire::ERROR) << f->DebugString();
    EXPECT_EQ(f->error().code(), code) << f->error().message();
    EXPECT_NE(f->error().message().find(why), std::string::npos) << f->error().message();
    EXPECT_FALSE(f->error().fatal());
    wire::Header ping;
    ping.set_type(wire::PING);
    ping.set_seq(999);
    raw.send_frame(ping);
    auto pong = raw.read_frame();
    ASSERT_TRUE(pong.has_value());
    EXPECT_EQ(pong->type(), wire::PONG);
  }
  static void expect_fatal(RawConnection& raw, wire::ErrorCode code, const std::string& why) {
    auto f = raw.read_frame();
    ASSERT_TRUE(f.has_value()) << "no answer";
    ASSERT_EQ(f->type(), wire::ERROR) << f->DebugString();
    EXPECT_EQ(f->error().code(), code) << f->error().message();
    EXPECT_NE(f->error().message().find(why), std::string::npos) << f->error().message();
    EXPECT_TRUE(f->error().fatal());
    EXPECT_TRUE(raw.wait_closed());
  }
  void register_refused(UniqueFd fd, const std::string& why) {
    RawConnection raw(broker_.socket());
    raw.hello();
    const int fds[] = {fd.get()};
    ASSERT_TRUE(raw.send_frame_with_fds(register_frame(1, 1), fds));
    expect_refused(raw, wire::SHM_REFUSED, why);
  }

  BrokerProcess broker_{"[limits]\nshm_max_segment_bytes = 1048576\nshm_max_segments_per_client = 2\n"};
  Client pub_ = broker_.connect("bystander-pub");
  Client sub_ = broker_.connect("bystander-sub");
  Subscription sub_handle_;
  std::size_t fds_before_ = 0;
};

TEST_F(ShmHostile, EveryWrongKindOfFdIsRefusedWithItsReason) {
  register_refused(memfd(0, 1 << 16, false), "not sealed against shrinking and growing");
  register_refused(memfd(F_SEAL_SHRINK), "not sealed against growing");
  register_refused(memfd(F_SEAL_GROW), "not sealed against shrinking");
  register_refused(memfd(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), "locked (F_SEAL_SEAL)");
  register_refused(memfd(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE), "must be writable");
  register_refused(memfd(F_SEAL_SHRINK | F_SEAL_GROW, 4 << 20), "over the limit of 1048576 bytes");
  register_refused(memfd(F_SEAL_SHRINK | F_SEAL_GROW, 5000), "not a multiple of 4096");
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd keep(p[1]);
  register_refused(UniqueFd(p[0]), "the fd is a pipe, not a memfd");
  int s[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
  UniqueFd keep2(s[1]);
  register_refused(UniqueFd(s[0]), "the fd is a socket, not a memfd");
  register_refused(UniqueFd(::open("/dev/zero", O_RDWR | O_CLOEXEC)), "the fd is a character device, not a memfd");
  char path[] = "/tmp/ubroker-hostile-XXXXXX";
  UniqueFd file(::mkstemp(path));
  ASSERT_TRUE(file);
  ::unlink(path);
  ASSERT_EQ(::ftruncate(file.get(), 1 << 16), 0);
  register_refused(std::move(file), "the fd is a regular file, not a memfd");
  auto shm_file = UniqueFd(::open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));  // tmpfs, not a memfd
  if (shm_file) register_refused(std::move(shm_file), "not a memfd");
}

TEST_F(ShmHostile, FdCountsThatDoNotMatchTheFrameAreFatal) {
  {
    RawConnection raw(broker_.socket());
    raw.hello();
    raw.send_frame(register_frame(1, 1));  // announces one fd, sends none
    expect_fatal(raw, wire::FD_ERROR, "announced 1 file descriptor(s) but 0 arrived");
  }
  {
    RawConnection raw(broker_.socket());
    raw.hello();
    UniqueFd a = memfd(F_SEAL_SHRINK | F_SEAL_GROW), b = memfd(F_SEAL_SHRINK | F_SEAL_GROW);
    const int fds[] = {a.get(), b.get()};
    ASSERT_TRUE(raw.send_frame_with_fds(register_frame(1, 1, 2), fds));
    expect_fatal(raw, wire::FD_ERROR, "carries exactly one file descriptor (it announced 2)");
  }
  {
    RawConnection raw(broker_.socket());
    raw.hello();
    UniqueFd a = memfd(F_SEAL_SHRINK | F_SEAL_GROW);
    const int fds[] = {a.get()};
    wire::Header h = bulk_publish_frame("x", 1, 4160, 10);
    h.set_fd_count(1);
    ASSERT_TRUE(raw.send_frame_with_fds(h, fds));
    expect_fatal(raw, wire::FD_ERROR, "a PUBLISH frame carries no file descriptors");
  }
}

TEST_F(ShmHostile, MoreFdsThanAFrameMayCarryAreFatal) {
  RawConnection raw(broker_.socket());
  raw.hello();
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (int i = 0; i < 3; ++i) {
    owned.push_back(memfd(F_SEAL_SHRINK | F_SEAL_GROW));
    fds.push_back(owned.back().get());
  }
  ASSERT_TRUE(raw.send_frame_with_fds(register_frame(1, 1, 3), fds));
  expect_fatal(raw, wire::FD_ERROR, "it announced 3");
  // Beyond what one message may carry at all: the kernel truncates, the broker closes.
  RawConnection raw2(broker_.socket());
  raw2.hello();
  std::vector<int> many(proto::kMaxFdsPerMessage + 4, owned[0].get());
  const wire::Header reg = register_frame(1, 1, 1);
  std::vector<std::byte> frame(proto::frame_head_size(reg));
  proto::write_frame_head(frame.data(), reg, 0);
  ASSERT_EQ(sendmsg_with_fds(raw2.fd(), frame, many), static_cast<ssize_t>(frame.size()));
  expect_fatal(raw2, wire::FD_ERROR, "truncated");
}

TEST_F(ShmHostile, ReferencesOutsideTheSegmentOrToAnotherClientsSegmentAreRefused) {
  RawConnection owner(broker_.socket());
  owner.hello("owner");
  UniqueFd seg = memfd(F_SEAL_SHRINK | F_SEAL_GROW, 1 << 16);
  const int fds[] = {seg.get()};
  ASSERT_TRUE(owner.send_frame_with_fds(register_frame(1, 7), fds));
  auto ack = owner.read_frame();
  ASSERT_TRUE(ack.has_value());
  ASSERT_EQ(ack->type(), wire::ACK) << ack->DebugString();
  constexpr std::uint64_t kFirst = shm::kHeaderBytes + shm::kRecordHeaderBytes;
  owner.send_frame(bulk_publish_frame("t", 7, kFirst, 1 << 16));
  expect_refused(owner, wire::SHM_REFUSED, "past the end of the segment");
  owner.send_frame(bulk_publish_frame("t", 7, 64, 10));
  expect_refused(owner, wire::SHM_REFUSED, "offset before the ring");
  owner.send_frame(bulk_publish_frame("t", 7, kFirst + 1, 10));
  expect_refused(owner, wire::SHM_REFUSED, "offset not at a record");
  owner.send_frame(bulk_publish_frame("t", 7, kFirst, 0));
  expect_refused(owner, wire::SHM_REFUSED, "empty payload");
  // Registering the same id twice, and more segments than a client may have.
  UniqueFd again = memfd(F_SEAL_SHRINK | F_SEAL_GROW);
  const int again_fds[] = {again.get()};
  ASSERT_TRUE(owner.send_frame_with_fds(register_frame(2, 7), again_fds));
  expect_refused(owner, wire::SHM_REFUSED, "already registered");
  ASSERT_TRUE(owner.send_frame_with_fds(register_frame(3, 8), again_fds));
  ASSERT_EQ(owner.read_frame()->type(), wire::ACK);
  UniqueFd third = memfd(F_SEAL_SHRINK | F_SEAL_GROW);  // `again` is sealed by the broker now
  const int third_fds[] = {third.get()};
  ASSERT_TRUE(owner.send_frame_with_fds(register_frame(4, 9), third_fds));
  expect_refused(owner, wire::SHM_REFUSED, "limit 2 per client");

  RawConnection other(broker_.socket());
  other.hello("other");
  other.send_frame(bulk_publish_frame("t", 7, kFirst, 10));  // the owner's id, not its own
  expect_refused(other, wire::SHM_REFUSED, "segment 7 is not one this client registered");
  wire::Header release;
  release.set_type(wire::SHM_RELEASE);
  release.add_releases(1);
  other.send_frame(release);  // a token it was never given
  expect_refused(other, wire::SHM_REFUSED, "this client does not hold");
  // A frame of many bogus tokens is one answer, not one per token (expect_refused checks
  // that the next frame on the connection is the answer to its PING).
  for (std::uint64_t t = 2; t < 5000; ++t) release.add_releases(t << 32 | t);
  other.send_frame(release);
  expect_refused(other, wire::SHM_REFUSED, "release of 4999 token(s) this client does not hold");
}

TEST_F(ShmHostile, PagesNobodyWroteAreRefusedNotAllocatedByTheBroker) {
  // A segment declared large but never written: the broker would allocate (and be charged
  // for) every page it wrote a release mark into.
  register_refused(memfd(F_SEAL_SHRINK | F_SEAL_GROW, 1 << 20, true, 0), "header page was never written");
  RawConnection owner(broker_.socket());
  owner.hello("owner");
  UniqueFd seg = memfd(F_SEAL_SHRINK | F_SEAL_GROW, 1 << 20, true, 4096);  // the header only
  const int fds[] = {seg.get()};
  ASSERT_TRUE(owner.send_frame_with_fds(register_frame(1, 7), fds));
  ASSERT_EQ(owner.read_frame()->type(), wire::ACK);
  constexpr std::uint64_t kRecord = shm::kHeaderBytes + 64 * 1024;  // a page nobody wrote
  owner.send_frame(bulk_publish_frame("t", 7, kRecord + shm::kRecordHeaderBytes, 10));
  expect_refused(owner, wire::SHM_REFUSED, "was never written");
  struct stat st {};
  ASSERT_EQ(::fstat(seg.get(), &st), 0);
  EXPECT_EQ(st.st_blocks * 512, 4096) << "the broker allocated pages of the segment";
}

TEST_F(ShmHostile, ReceiversGetTheSegmentReadOnly) {
  RawConnection receiver(broker_.socket());
  receiver.hello("receiver");
  receiver.subscribe(1, "ro.test");
  Client producer = broker_.connect("producer");  // closed at the end: its segment goes with it
  auto loan = producer.loan("ro.test", 4096);
  ASSERT_TRUE(loan) << loan.error().message;
  std::memset(loan->data().data(), 0x42, 4096);
  ASSERT_TRUE(producer.publish(std::move(*loan)));
  auto d = receiver.read_frame();
  ASSERT_TRUE(d.has_value());
  ASSERT_EQ(d->type(), wire::DELIVER);
  ASSERT_TRUE(d->has_shm());
  EXPECT_EQ(d->fd_count(), 1u);
  ASSERT_EQ(receiver.received_fds().size(), 1u);
  const int fd = receiver.received_fds()[0].get();
  auto facts = shm::inspect(fd);
  ASSERT_TRUE(facts);
  void* w = ::mmap(nullptr, facts->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  EXPECT_EQ(w, MAP_FAILED) << "a receiver mapped the producer's segment writable";
  EXPECT_EQ(errno, EPERM);
  EXPECT_NE(::pwrite(fd, "x", 1, static_cast<off_t>(d->shm().offset())), 1);
  void* r = ::mmap(nullptr, facts->size, PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(r, MAP_FAILED);
  EXPECT_EQ(static_cast<const unsigned char*>(r)[d->shm().offset()], 0x42);
  EXPECT_NE(::mprotect(r, facts->size, PROT_READ | PROT_WRITE), 0);
  ::munmap(r, facts->size);
  // Its release is accepted once, and the producer's space comes back.
  wire::Header release;
  release.set_type(wire::SHM_RELEASE);
  release.add_releases(d->shm().token());
  receiver.send_frame(release);
  receiver.send_frame(release);
  ASSERT_EQ(receiver.read_frame()->error().code(), wire::SHM_REFUSED);  // the second one
  EXPECT_TRUE(eventually([&] { return broker_status(pub_).bulk_held() == 0; }));
  producer.close();
  EXPECT_TRUE(eventually([&] { return broker_status(pub_).shm_segments() == 0; }));
}

// A receiver that stops reading holds up the segment fds queued for it. Status counts them
// (fds_queued) until they are passed, so they are told apart from a leak.
TEST_F(ShmHostile, SegmentFdsQueuedForAStalledReceiverAreCounted) {
  RawConnection receiver(broker_.socket());
  receiver.hello("stalled");
  const char* topics[] = {"fdq.fill", "fdq.bulk"};
  for (std::uint32_t i = 0; i < 2; ++i) {
    receiver.subscribe(i + 1, topics[i]);
  }
  // 1 MiB of small messages it does not read: its socket fills and the rest waits in its queue.
  Client filler = broker_.connect("filler");
  const std::string block(16 * 1024, 'f');
  for (int i = 0; i < 64; ++i) ASSERT_TRUE(filler.publish("fdq.fill", block));
  ASSERT_TRUE(filler.flush());
  ASSERT_TRUE(eventually([&] { return broker_status(pub_).deliveries_queued() > 0; }));
  // Three producers, three segments: each one's fd is duplicated into the queue behind them.
  std::deque<Client> producers;
  for (int i = 0; i < 3; ++i) {
    producers.push_back(broker_.connect("producer"));
    auto loan = producers.back().loan("fdq.bulk", 4096);
    ASSERT_TRUE(loan) << loan.error().message;
    ASSERT_TRUE(producers.back().publish(std::move(*loan)));
    ASSERT_TRUE(producers.back().flush());
  }
  ASSERT_TRUE(eventually([&] { return broker_status(pub_).fds_queued() == 3; }))
      << broker_status(pub_).fds_queued() << " segment fds queued";
  EXPECT_EQ(broker_status(pub_).shm_segments(), 3u);
  // It reads on: each fd goes out with its segment's first delivery, and none stays queued.
  int bulk = 0;
  while (bulk < 3) {
    auto d = receiver.read_frame();
    ASSERT_TRUE(d.has_value()) << "no bulk delivery " << bulk + 1;
    if (d->type() == wire::DELIVER && d->has_shm()) ++bulk;
  }
  EXPECT_EQ(receiver.received_fds().size(), 3u);
  EXPECT_EQ(broker_status(pub_).fds_queued(), 0u);
}

}  // namespace
}  // namespace ubroker::test

namespace ubroker::test {
namespace {

// Registers a fresh sealed memfd of `size` on a new raw connection; returns the answer frame.
wire::Header register_on(RawConnection& raw, std::size_t size, std::uint64_t id) {
  UniqueFd fd = memfd(F_SEAL_SHRINK | F_SEAL_GROW, size);
  const int fds[] = {fd.get()};
  EXPECT_TRUE(raw.send_frame_with_fds(register_frame(id, id), fds));
  auto f = raw.read_frame();
  EXPECT_TRUE(f.has_value());
  return f ? *f : wire::Header{};
}

TEST(ShmQuota, SegmentsAndBytesPerUidAreBounded) {
  BrokerProcess broker("[limits]\nshm_max_segments_per_uid = 2\nshm_max_bytes_per_uid = 3145728\n");
  RawConnection a(broker.socket()), b(broker.socket()), c(broker.socket());
  a.hello("a");
  b.hello("b");
  c.hello("c");
  EXPECT_EQ(register_on(a, 1 << 20, 1).type(), wire::ACK);
  auto over_bytes = register_on(b, 3 << 20, 1);  // 1 MiB + 3 MiB > 3 MiB
  EXPECT_EQ(over_bytes.error().code(), wire::SHM_REFUSED);
  EXPECT_NE(over_bytes.error().message().find("shm_max_bytes_per_uid"), std::string::npos)
      << over_bytes.error().message();
  EXPECT_EQ(register_on(b, 1 << 20, 1).type(), wire::ACK);
  auto over_count = register_on(c, 1 << 20, 1);
  EXPECT_EQ(over_count.error().code(), wire::SHM_REFUSED);
  EXPECT_NE(over_count.error().message().find("has 2 segments (limit 2"), std::string::npos)
      << over_count.error().message();
  // A segment's quota comes back when its owner (with nothing outstanding) goes.
  { RawConnection gone = std::move(a); }
  EXPECT_TRUE(eventually([&] { return register_on(c, 1 << 20, 2).type() == wire::ACK; }, 10s));
}

TEST(ShmQuota, FdsInFlightPerUidAreBoundedAndTheDropsCounted) {
  // The broker's deliveries (a lane would carry p1's later payloads, and report the broker's
  // drops only with the broker's next delivery).
  BrokerProcess broker("[limits]\nshm_max_fds_in_flight_per_uid = 1\n[lanes]\nenabled = false\n");
  Client status = broker.connect("status");
  Client sub = broker.connect("sub");
  auto handle = sub.subscribe("fds.>");
  ASSERT_TRUE(handle);
  Client p1 = broker.connect("p1"), p2 = broker.connect("p2");
  auto l1 = p1.loan("fds.one", 4096);
  ASSERT_TRUE(l1);
  ASSERT_TRUE(p1.publish(std::move(*l1)));
  auto m = sub.receive(5s);
  ASSERT_TRUE(m);  // the first segment's fd reached the subscriber's uid
  auto l2 = p2.loan("fds.two", 4096);
  ASSERT_TRUE(l2);
  ASSERT_TRUE(p2.publish(std::move(*l2)));  // a second segment for the same uid: over the limit
  ASSERT_TRUE(p2.flush());
  EXPECT_TRUE(eventually([&] { return broker_status(status).bulk_dropped_fds() == 1; }, 10s));
  EXPECT_FALSE(sub.receive(200ms));
  // The drop is reported with the next delivery the subscriber does get.
  auto l3 = p1.loan("fds.one", 4096);
  ASSERT_TRUE(l3);
  ASSERT_TRUE(p1.publish(std::move(*l3)));
  auto next = sub.receive(5s);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->dropped_before(), 1u);
}

TEST(ShmQuota, BulkDeliveriesAReceiverNeverReleasesAreBoundedAndTheDropsCounted) {
  // A receiver that keeps every bulk delivery (never sends SHM_RELEASE) pins a record in the
  // publisher's segment per delivery: past shm_max_holds_per_client, further ones are dropped
  // for it and counted, and the books still balance.
  BrokerProcess broker("[limits]\nshm_max_holds_per_client = 5\n");
  Client status = broker.connect("status");
  RawConnection keeper(broker.socket());
  keeper.hello("keeper");
  keeper.subscribe(1, "holds.t");
  Client pub = broker.connect("pub");
  for (int i = 0; i < 12; ++i) {
    auto loan = pub.loan("holds.t", 4096);
    ASSERT_TRUE(loan);
    ASSERT_TRUE(pub.publish(std::move(*loan)));
  }
  ASSERT_TRUE(pub.flush());
  int delivered = 0;
  while (auto f = keeper.read_frame(std::chrono::milliseconds(300))) delivered += f->type() == wire::DELIVER;
  EXPECT_EQ(delivered, 5);
  const auto st = broker_status(status);
  EXPECT_EQ(st.bulk_dropped_holds(), 7u);
  EXPECT_EQ(st.bulk_held(), 5u);
  EXPECT_EQ(st.deliveries_accepted(), st.deliveries_written() + st.dropped_overflow() + st.bulk_dropped_fds() +
                                          st.bulk_dropped_holds() + st.dropped_disconnect() + st.deliveries_queued());
  bool charged = false;
  for (const auto& u : st.uids()) charged |= u.bulk_holds() == 5;
  EXPECT_TRUE(charged);
}

TEST(ShmLifecycle, ReadersKeepTheirViewsWhenTheBrokerGoesAway) {
  BrokerProcess broker;
  Client sub = broker.connect("sub");
  auto handle = sub.subscribe("survive");
  ASSERT_TRUE(handle);
  Client pub = broker.connect("pub");
  auto loan = pub.loan("survive", 1 << 20);
  ASSERT_TRUE(loan);
  std::memset(loan->data().data(), 0xab, loan->size());
  ASSERT_TRUE(pub.publish(std::move(*loan)));
  auto m = sub.receive(5s);
  ASSERT_TRUE(m);
  broker.process().signal(SIGKILL);
  ASSERT_TRUE(broker.process().wait(10s).has_value());
  EXPECT_TRUE(eventually([&] { return !sub.connected(); }, 10s));
  // The mapping is the reader's: the broker's death changes nothing about it.
  const auto p = m->payload();
  ASSERT_EQ(p.size(), 1u << 20);
  EXPECT_TRUE(std::all_of(p.begin(), p.end(), [](std::byte b) { return b == std::byte{0xab}; }));
}

}  // namespace
}  // namespace ubroker::test
