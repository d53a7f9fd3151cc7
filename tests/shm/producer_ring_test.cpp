// ProducerRing: reservation, wrap-around, reclaim in ring order, blocking when full, and a
// producer and a releasing thread racing (this file also runs under ThreadSanitizer).
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "ubroker/shm/futex.hpp"
#include "ubroker/shm/producer_ring.hpp"

namespace ubroker::shm {
namespace {

using namespace std::chrono_literals;
constexpr auto kNoWait = std::chrono::steady_clock::time_point::min();

auto soon(std::chrono::milliseconds d = 5s) { return std::chrono::steady_clock::now() + d; }

// The broker's half of a release, done in-process.
void release(ProducerRing& ring, std::byte* base, const PayloadRef& ref) {
  (void)ring;
  mark_released(base, ref);
  if (publish_releases(base)) {
    ASSERT_TRUE(futex_wake(reinterpret_cast<SegmentHeader*>(base)->release_seq, INT32_MAX));
  }
}

struct RingUnderTest {
  std::shared_ptr<ProducerRing> ring;
  Mapping peer;  // a second mapping, as the broker has
  static RingUnderTest make(std::uint64_t bytes) {
    auto r = ProducerRing::create(bytes);
    EXPECT_TRUE(r);
    auto m = Mapping::map((*r)->fd(), (*r)->size(), Access::kReadWrite);
    EXPECT_TRUE(m);
    return {std::move(*r), std::move(*m)};
  }
};

TEST(ProducerRing, SlotsAreInsideTheRingAndPassTheBrokersCheck) {
  auto t = RingUnderTest::make(1 << 20);
  auto a = t.ring->reserve(100, kNoWait);
  ASSERT_TRUE(a);
  auto b = t.ring->reserve(5000, kNoWait);
  ASSERT_TRUE(b);
  EXPECT_EQ(check_ref(t.ring->size(), a->ref), nullptr);
  EXPECT_EQ(check_ref(t.ring->size(), b->ref), nullptr);
  EXPECT_EQ(a->ref.offset, kHeaderBytes + kRecordHeaderBytes);
  EXPECT_EQ(b->ref.offset, a->ref.offset + 128 + kRecordHeaderBytes);  // 100 rounded to 128
  EXPECT_EQ(t.ring->used_bytes(), 192u + 5056u + 64u);
}

TEST(ProducerRing, CheckRefRefusesEverythingOutsideTheRing) {
  constexpr std::uint64_t size = 1 << 20;
  EXPECT_STREQ(check_ref(size, {.offset = 0, .length = 10}), "offset before the ring");
  EXPECT_STREQ(check_ref(size, {.offset = kHeaderBytes + 64, .length = 0}), "empty payload");
  EXPECT_STREQ(check_ref(size, {.offset = kHeaderBytes + 64, .length = size}), "past the end of the segment");
  EXPECT_STREQ(check_ref(size, {.offset = size + 64, .length = 1}), "past the end of the segment");
  EXPECT_STREQ(check_ref(size, {.offset = kHeaderBytes + 64, .length = ~0ull}), "past the end of the segment");
  EXPECT_STREQ(check_ref(size, {.offset = kHeaderBytes + 65, .length = 1}), "offset not at a record");
}

TEST(ProducerRing, TooLargeForTheRingIsAnErrorNotAWait) {
  auto t = RingUnderTest::make(64 * 1024);
  auto r = t.ring->reserve(t.ring->max_payload() + 1, soon());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), std::errc::message_size);
  EXPECT_TRUE(t.ring->reserve(t.ring->max_payload(), kNoWait));  // the whole ring fits once
}

TEST(ProducerRing, ReclaimsOnlyInRingOrder) {
  auto t = RingUnderTest::make(kHeaderBytes + 4 * 1024);
  auto a = t.ring->reserve(1000, kNoWait);
  auto b = t.ring->reserve(1000, kNoWait);
  auto c = t.ring->reserve(1000, kNoWait);
  ASSERT_TRUE(a && b && c);
  EXPECT_FALSE(t.ring->reserve(1000, kNoWait));  // full
  release(*t.ring, t.peer.data(), b->ref);       // out of order: a still holds the tail
  EXPECT_FALSE(t.ring->reserve(1000, kNoWait));
  release(*t.ring, t.peer.data(), a->ref);  // now a and b come back
  auto d = t.ring->reserve(1000, kNoWait);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->ref.offset, a->ref.offset);  // wrapped: padding took the end of the ring
}

TEST(ProducerRing, AbandonedSlotsComeBack) {
  auto t = RingUnderTest::make(kHeaderBytes + 4096);
  auto a = t.ring->reserve(4000, kNoWait);
  ASSERT_TRUE(a);
  t.ring->abandon(a->ref);
  EXPECT_EQ(t.ring->used_bytes(), 0u);
  EXPECT_TRUE(t.ring->reserve(4000, kNoWait));
}

TEST(ProducerRing, FullRingTimesOut) {
  auto t = RingUnderTest::make(kHeaderBytes + 4096);
  ASSERT_TRUE(t.ring->reserve(4000, kNoWait));
  auto r = t.ring->reserve(10, soon(50ms));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), std::errc::timed_out);
}

TEST(ProducerRing, BlockedProducerWakesWhenAnotherThreadReleases) {
  auto t = RingUnderTest::make(kHeaderBytes + 4096);
  auto a = t.ring->reserve(4000, kNoWait);
  ASSERT_TRUE(a);
  std::thread releaser([&] {
    std::this_thread::sleep_for(50ms);
    release(*t.ring, t.peer.data(), a->ref);
  });
  auto b = t.ring->reserve(4000, soon(10s));
  releaser.join();
  ASSERT_TRUE(b) << b.error().message();
}

// One thread reserves, writes a numbered pattern and hands refs over; another checks every
// byte through its own mapping and releases, in a different order now and then. Runs the ring
// through many wraps with waits on both sides.
TEST(ProducerRing, ProducerAndReleaserRaceThroughManyWraps) {
  auto t = RingUnderTest::make(kHeaderBytes + 64 * 1024);
  constexpr int kMessages = 8000;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<PayloadRef> handed;
  bool done = false;
  std::thread consumer([&] {
    std::deque<PayloadRef> held;
    int checked = 0;
    for (;;) {
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return !handed.empty() || done; });
      if (handed.empty() && done) break;
      held.push_back(handed.front());
      handed.pop_front();
      lk.unlock();
      const PayloadRef ref = held.back();
      const std::byte* p = t.peer.data() + ref.offset;
      const auto expect = std::byte(static_cast<unsigned char>(checked));
      for (std::uint64_t i = 0; i < ref.length; ++i) ASSERT_EQ(p[i], expect) << "message " << checked;
      ++checked;
      // Release two at a time, newest first, so reclaim sees out-of-order releases.
      if (held.size() == 2) {
        release(*t.ring, t.peer.data(), held[1]);
        release(*t.ring, t.peer.data(), held[0]);
        held.clear();
      }
    }
    for (auto& r : held) release(*t.ring, t.peer.data(), r);
    EXPECT_EQ(checked, kMessages);
  });
  for (int i = 0; i < kMessages; ++i) {
    const std::uint64_t len = 1 + static_cast<std::uint64_t>(i * 7919) % 9000;
    auto s = t.ring->reserve(len, soon(10s));
    ASSERT_TRUE(s) << s.error().message();
    std::memset(s->data.data(), i & 0xff, s->data.size());
    std::lock_guard lk(mu);
    handed.push_back(s->ref);
    cv.notify_one();
  }
  {
    std::lock_guard lk(mu);
    done = true;
    cv.notify_one();
  }
  consumer.join();
  EXPECT_EQ(t.ring->used_bytes(), 0u);
}

}  // namespace
}  // namespace ubroker::shm
