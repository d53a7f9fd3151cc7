// Bulk payloads through shared memory, end to end: real brokerd, real client processes, real
// memfds. Integrity at 4 KiB, 1 MiB and 64 MiB, ordering beside socket messages, fan-out to 8
// subscribers with zero payload bytes copied by the broker, the producer blocking on a full
// ring and resuming, and crashes on either side.
#include <gtest/gtest.h>
#include <signal.h>

#include <array>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <atomic>
#include <cstring>
#include <thread>

#include "test_util.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;

Process bulk_publisher(const BrokerProcess& b, const std::string& topic, std::uint64_t count, std::size_t size,
                       std::size_t segment_bytes, bool small = false, const std::string& stdin_path = "/dev/null") {
  return Process::spawn({UBROKER_TEST_PEER, "bulk-publish", b.socket(), topic, std::to_string(count),
                         std::to_string(size), std::to_string(segment_bytes), small ? "1" : "0"},
                        {}, stdin_path);
}

Process bulk_subscriber(const BrokerProcess& b, const std::string& pattern, std::uint64_t count,
                        const std::string& mode = "check") {
  return Process::spawn({UBROKER_TEST_PEER, "bulk-subscribe", b.socket(), pattern, std::to_string(count), mode});
}

// The pattern ubroker_test_peer bulk-publish writes (8-byte words: seq << 32 | index).
bool payload_ok(std::span<const std::byte> p, std::uint64_t seq) {
  for (std::size_t i = 0; i + 8 <= p.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p.data() + i, 8);
    if (w != ((seq << 32) | (i / 8))) return false;
  }
  return true;
}

std::uint64_t seq_of(const Message& m) {
  std::uint64_t w = ~0ull;
  if (m.payload().size() >= 8) std::memcpy(&w, m.payload().data(), 8);
  return w >> 32;
}

class Bulk : public ::testing::Test {
 protected:
  // The broker's path and its books (lanes_bulk_test.cpp has the lanes' path).
  BrokerProcess broker_{"[lanes]\nenabled = false\n"};
  Client status_ = broker_.connect("status");
};

void expect_integrity(BrokerProcess& broker, std::size_t size, std::uint64_t count, std::size_t segment_bytes) {
  Client sub = broker.connect("bulk-sub");
  auto handle = sub.subscribe("bulk.data");
  ASSERT_TRUE(handle);
  auto pub = bulk_publisher(broker, "bulk.data", count, size, segment_bytes);
  for (std::uint64_t i = 0; i < count; ++i) {
    auto m = sub.receive(60s);
    ASSERT_TRUE(m) << m.error().message << "\n" << pub.err();
    EXPECT_TRUE(m->shared_memory());
    ASSERT_EQ(m->payload().size(), size);
    EXPECT_EQ(seq_of(*m), i);
    EXPECT_TRUE(payload_ok(m->payload(), i)) << "message " << i << " of " << size << " bytes";
  }
  EXPECT_TRUE(wait_for_output(pub, "published " + std::to_string(count), 60s)) << pub.err();
}

TEST_F(Bulk, Integrity4KiB) { expect_integrity(broker_, 4096, 2000, 1 << 20); }
TEST_F(Bulk, Integrity1MiB) { expect_integrity(broker_, 1 << 20, 64, 8 << 20); }
TEST_F(Bulk, Integrity64MiB) { expect_integrity(broker_, 64 << 20, 3, (64 << 20) + (1 << 20)); }

TEST_F(Bulk, OrderedWithSmallMessagesOfTheSamePublisher) {
  auto sub = bulk_subscriber(broker_, "mixed", 2 * 500, "check-small");
  ASSERT_TRUE(wait_for_output(sub, "ready"));
  auto pub = bulk_publisher(broker_, "mixed", 500, 100 * 1024, 4 << 20, true);
  const auto st = sub.wait(60s);
  ASSERT_TRUE(st.has_value()) << sub.out();
  EXPECT_EQ(sub.out(), "ready\nreceived 1000 bad 0 gaps 0\n") << sub.err();
  EXPECT_EQ(exit_code(*st), 0);
}

TEST_F(Bulk, FanOutToEightSubscribersWithNoPayloadCopied) {
  constexpr std::uint64_t kCount = 200;
  constexpr std::size_t kSize = 256 * 1024;
  std::vector<Process> subs;
  for (int i = 0; i < 8; ++i) subs.push_back(bulk_subscriber(broker_, "fan.>", kCount));
  for (auto& s : subs) ASSERT_TRUE(wait_for_output(s, "ready"));
  const auto before = broker_status(status_);
  auto pub = bulk_publisher(broker_, "fan.out", kCount, kSize, 4 << 20);
  for (auto& s : subs) {
    const auto st = s.wait(60s);
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(s.out(), "ready\nreceived 200 bad 0 gaps 0\n") << s.err();
  }
  ASSERT_TRUE(wait_for_output(pub, "published 200")) << pub.err();
  const auto after = broker_status(status_);
  EXPECT_EQ(after.bulk_messages() - before.bulk_messages(), kCount);
  EXPECT_EQ(after.bulk_bytes() - before.bulk_bytes(), kCount * kSize);
  EXPECT_EQ(after.bulk_deliveries() - before.bulk_deliveries(), 8 * kCount);
  EXPECT_EQ(after.payload_bytes_copied(), before.payload_bytes_copied());  // not one bulk byte copied
  // A small message over the socket is copied (a control that the counter counts at all).
  auto control = status_.subscribe("control.copy", [](const MessageView&) {});
  ASSERT_TRUE(control);
  ASSERT_TRUE(status_.publish("control.copy", std::string(100, 'x')));
  ASSERT_TRUE(status_.flush());
  EXPECT_GT(broker_status(status_).payload_bytes_copied(), after.payload_bytes_copied());
}

// An application's io_context run by four threads: each client's handlers (its reads, the
// releases it sends for bulk messages it is done with, its writes) still run one at a time,
// in a strand. A shared io_context is what the soak found broken: protobuf aborted on a
// header two of one client's handlers wrote at once. Under ThreadSanitizer (the CI's TSan
// step runs this file) any overlap is also a report.
TEST_F(Bulk, AnIoContextRunByFourThreadsRunsEachClientsHandlersOneAtATime) {
  constexpr std::uint64_t kCount = 2000;  // 16 KiB each through a 4 MiB ring: the producer
  constexpr std::size_t kSize = 16 * 1024;  // needs the readers' releases to finish
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&] { io.run(); });
  struct Reader {
    std::atomic<int> inside{0};
    std::atomic<std::uint64_t> received{0}, overlaps{0}, bad{0};
  };
  std::array<Reader, 3> readers;
  std::vector<Client> clients;
  std::vector<Subscription> subs;
  for (auto& r : readers) {
    auto c = Client::connect({.address = broker_.socket(), .name = "mt-reader", .io = &io});
    ASSERT_TRUE(c) << c.error().message;
    clients.push_back(std::move(*c));
    auto sub = clients.back().subscribe("mt.bulk", [&r](const MessageView& m) {
      if (r.inside.fetch_add(1) != 0) ++r.overlaps;
      std::uint64_t w = ~0ull;
      if (m.payload.size() >= 8) std::memcpy(&w, m.payload.data(), 8);
      if (!m.shared_memory || m.payload.size() != kSize || (w >> 32) != r.received.load() ||
          !payload_ok(m.payload, w >> 32)) {
        ++r.bad;
      }
      ++r.received;
      r.inside.fetch_sub(1);
    });
    ASSERT_TRUE(sub) << sub.error().message;
    subs.push_back(std::move(*sub));
  }
  auto pub = bulk_publisher(broker_, "mt.bulk", kCount, kSize, 4 << 20);
  EXPECT_TRUE(wait_for_output(pub, "published " + std::to_string(kCount), 60s)) << pub.err();
  for (auto& r : readers) {
    EXPECT_TRUE(eventually([&] { return r.received.load() == kCount; }, 30s)) << r.received.load();
    EXPECT_EQ(r.overlaps.load(), 0u);
    EXPECT_EQ(r.bad.load(), 0u);
  }
  subs.clear();
  clients.clear();
  guard.reset();
  for (auto& t : threads) t.join();
}

TEST_F(Bulk, ProducerBlocksOnAFullRingAndResumesWhenReadersRelease) {
  Client sub = broker_.connect("holder");
  auto handle = sub.subscribe("ring.full");
  ASSERT_TRUE(handle);
  Client pub = broker_.connect("producer");
  // A ring of 60 KiB: twelve 4 KiB records (each 4160 bytes with its header) fit, a 15th cannot.
  ConnectOptions small{.address = broker_.socket(), .name = "small-ring", .shm_segment_bytes = 4096 + 61440};
  auto producer = Client::connect(small);
  ASSERT_TRUE(producer);
  std::vector<Message> held;
  int published = 0;
  for (;; ++published) {
    auto loan = producer->loan("ring.full", 4096, 300ms);
    if (!loan) {
      EXPECT_EQ(loan.error().code, Errc::kTimeout) << loan.error().message;
      break;
    }
    ASSERT_TRUE(producer->publish(std::move(*loan)));
    ASSERT_LT(published, 100) << "the ring never filled";
  }
  EXPECT_EQ(published, 14);  // 61440 / 4160
  for (int i = 0; i < published; ++i) {
    auto m = sub.receive(5s);
    ASSERT_TRUE(m);
    held.push_back(std::move(*m));
  }
  EXPECT_EQ(broker_status(status_).bulk_held(), 14u);
  // A loan waiting on the futex wakes once the reader lets go (the broker marks releases).
  Result<Loan> loan = std::unexpected(Error{});
  EXPECT_TRUE(waits_for([&] { loan = producer->loan("ring.full", 4096, 10s); }, [&] { held.clear(); }));
  ASSERT_TRUE(loan) << loan.error().message;
  EXPECT_TRUE(eventually([&] { return broker_status(status_).bulk_held() == 0; }));
}

TEST_F(Bulk, SubscriberKilledWhileHoldingFreesItsReferences) {
  auto holder = bulk_subscriber(broker_, "held.data", 14, "hold");
  ASSERT_TRUE(wait_for_output(holder, "ready"));
  ConnectOptions small{.address = broker_.socket(), .name = "small-ring", .shm_segment_bytes = 4096 + 61440};
  auto producer = Client::connect(small);
  ASSERT_TRUE(producer);
  for (int i = 0; i < 14; ++i) {
    auto loan = producer->loan("held.data", 4096, 5s);
    ASSERT_TRUE(loan) << loan.error().message;
    std::memset(loan->data().data(), 0, 8);  // sequence i in the high half of word 0
    const std::uint64_t w = std::uint64_t(i) << 32;
    std::memcpy(loan->data().data(), &w, 8);
    ASSERT_TRUE(producer->publish(std::move(*loan)));
  }
  ASSERT_TRUE(wait_for_output(holder, "holding 14")) << holder.err();
  EXPECT_FALSE(producer->loan("held.data", 4096, 200ms));  // full: the holder releases nothing
  holder.signal(SIGKILL);
  auto loan = producer->loan("held.data", 4096, 10s);
  ASSERT_TRUE(loan) << loan.error().message;
  EXPECT_TRUE(eventually([&] { return broker_status(status_).bulk_held() == 0; }));
}

TEST_F(Bulk, ReadersFinishWhatTheyHoldAfterTheProducerIsKilled) {
  Client sub = broker_.connect("reader");
  auto handle = sub.subscribe("dying.producer");
  ASSERT_TRUE(handle);
  auto pub = bulk_publisher(broker_, "dying.producer", 100000, 64 * 1024, 4 << 20);
  std::vector<Message> held;
  for (int i = 0; i < 20; ++i) {
    auto m = sub.receive(30s);
    ASSERT_TRUE(m) << m.error().message;
    held.push_back(std::move(*m));
  }
  pub.signal(SIGKILL);
  ASSERT_TRUE(pub.wait(10s).has_value());
  EXPECT_FALSE(wait_for_output(pub, "published", 100ms));  // killed mid-stream
  // Whatever was delivered before the kill can still be received and read in full.
  while (auto m = sub.receive(500ms)) held.push_back(std::move(*m));
  for (std::size_t i = 0; i < held.size(); ++i) {
    EXPECT_EQ(seq_of(held[i]), i);
    EXPECT_TRUE(payload_ok(held[i].payload(), i)) << "message " << i;
  }
  EXPECT_GE(broker_status(status_).shm_segments(), 1u);  // alive while read
  held.clear();
  EXPECT_TRUE(eventually([&] { return broker_status(status_).shm_segments() == 0; }));
}

TEST_F(Bulk, PlainPublishAboveTheThresholdGoesThroughSharedMemory) {
  Client sub = broker_.connect("sub");
  auto handle = sub.subscribe("plain.big");
  ASSERT_TRUE(handle);
  Client pub = broker_.connect("pub");
  std::vector<std::byte> big(3 << 20, std::byte{7});  // larger than the 1 MiB frame limit
  ASSERT_TRUE(pub.publish("plain.big", big));
  std::vector<std::byte> below(1000, std::byte{8});
  ASSERT_TRUE(pub.publish("plain.big", below));
  auto m1 = sub.receive(10s);
  ASSERT_TRUE(m1);
  EXPECT_TRUE(m1->shared_memory());
  EXPECT_TRUE(std::equal(m1->payload().begin(), m1->payload().end(), big.begin(), big.end()));
  auto m2 = sub.receive(10s);
  ASSERT_TRUE(m2);
  EXPECT_FALSE(m2->shared_memory());
  EXPECT_EQ(m2->payload().size(), 1000u);
}

}  // namespace
}  // namespace ubroker::test
