// Bulk payloads on direct lanes, between real processes: a payload in the publisher's shared
// memory travels on its lane as a reference, in order with the lane's other messages; the
// broker passes the segment to the subscriber with a fence and carries no payload; the
// subscriber reads it in place and lets it go into its ack segment, where the publisher takes
// the space back without the broker; a subscriber that leaves gives back what it held.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "broker_process.hpp"
#include "lanes_util.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;

// Bulk payload `n`: its number at both ends, so a payload read early or late is seen.
Result<void> publish_bulk(Client& c, const std::string& topic, std::uint64_t n, std::size_t size,
                          std::chrono::milliseconds timeout = 10s) {
  auto loan = c.loan(topic, size, timeout);
  if (!loan) return std::unexpected(loan.error());
  std::memcpy(loan->data().data(), &n, sizeof n);
  std::memcpy(loan->data().data() + size - sizeof n, &n, sizeof n);
  return c.publish(std::move(*loan));
}

std::uint64_t tail_number(std::span<const std::byte> p) {
  std::uint64_t n = ~0ull;
  if (p.size() >= sizeof n) std::memcpy(&n, p.data() + p.size() - sizeof n, sizeof n);
  return n;
}

// A lane carries `topic` from `pub` to `sub`, and `sub` has taken everything sent before.
bool lane_set_up(Client& pub, const std::string& topic, Client& sub) {
  if (!lane_carries(pub, topic, sub)) return false;
  constexpr std::uint64_t kMarker = ~0ull - 1;
  if (!pub.publish(topic, number(kMarker))) return false;
  for (;;) {
    auto m = sub.receive(10s);
    if (!m) return false;
    if (number_of(m->payload()) == kMarker) return true;
  }
}

// A ring of 60 KiB: fourteen 4 KiB payloads (4160 bytes with their record heads) fit.
constexpr std::size_t kSmallRing = 4096 + 61440;
constexpr int kFitInSmallRing = 14;

Result<Client> connect_with_ring(BrokerProcess& broker, const std::string& name, std::size_t ring) {
  return Client::connect({.address = broker.socket(), .name = name, .shm_segment_bytes = ring});
}

TEST(LaneBulk, PayloadsGoByReferenceInOrderWithSmallMessagesAndTheBrokerCarriesNone) {
  BrokerProcess broker(kLanesOn);
  Client sub = broker.connect("bulk-sub");
  auto s = sub.subscribe("bulk.t");
  ASSERT_TRUE(s);
  // 1 MiB of ring for 1000 payloads of 64 KiB: it goes round 60 times, each time on space the
  // subscriber let go by lane.
  auto pub = connect_with_ring(broker, "bulk-pub", 1u << 20);
  ASSERT_TRUE(pub);
  ASSERT_TRUE(lane_set_up(*pub, "bulk.t", sub));
  const auto before = broker_status(sub);
  constexpr std::uint64_t kCount = 2000;  // odd numbers bulk, even ones small
  constexpr std::size_t kBulk = 64 * 1024;
  std::thread publisher([&] {
    for (std::uint64_t i = 1; i <= kCount; ++i) {
      auto sent = i % 2 == 1 ? publish_bulk(*pub, "bulk.t", i, kBulk) : pub->publish("bulk.t", number(i));
      ASSERT_TRUE(sent) << "message " << i << ": " << sent.error().message;
    }
    ASSERT_TRUE(pub->flush());
  });
  for (std::uint64_t i = 1; i <= kCount; ++i) {
    auto m = sub.receive(10s);
    ASSERT_TRUE(m) << "after " << i - 1;
    ASSERT_EQ(number_of(m->payload()), i);
    ASSERT_EQ(m->shared_memory(), i % 2 == 1);
    if (i % 2 == 1) {
      ASSERT_EQ(m->payload().size(), kBulk);
      ASSERT_EQ(tail_number(m->payload()), i);
    }
    EXPECT_EQ(m->sender().client_id, pub->id());
  }
  publisher.join();
  const auto after = broker_status(sub);
  EXPECT_EQ(after.bulk_messages(), before.bulk_messages()) << "the lane carried every bulk payload";
  EXPECT_EQ(after.bulk_held(), 0u);
  EXPECT_EQ(after.payload_bytes_copied(), before.payload_bytes_copied());
  EXPECT_EQ(after.lane_delivered() - before.lane_delivered(), kCount) << after.ShortDebugString();
  EXPECT_EQ(after.lanes_broken(), 0u);
  expect_books_balance(after);
}

TEST(LaneBulk, AHeldPayloadKeepsItsSpaceUntilLetGoAndALoanWaitingForItWakesThen) {
  BrokerProcess broker(kLanesOn);
  Client sub = broker.connect("holder");
  auto s = sub.subscribe("held.t");
  ASSERT_TRUE(s);
  auto pub = connect_with_ring(broker, "small-ring", kSmallRing);
  ASSERT_TRUE(pub);
  ASSERT_TRUE(lane_set_up(*pub, "held.t", sub));
  int published = 0;
  for (;; ++published) {
    auto sent = publish_bulk(*pub, "held.t", static_cast<std::uint64_t>(published), 4096, 300ms);
    if (!sent) {
      EXPECT_EQ(sent.error().code, Errc::kTimeout) << sent.error().message;
      break;
    }
    ASSERT_LT(published, 100) << "the ring never filled";
  }
  EXPECT_EQ(published, kFitInSmallRing);
  std::vector<Message> held;
  for (int i = 0; i < published; ++i) {
    auto m = sub.receive(5s);
    ASSERT_TRUE(m);
    ASSERT_TRUE(m->shared_memory());
    ASSERT_EQ(number_of(m->payload()), static_cast<std::uint64_t>(i));
    held.push_back(std::move(*m));
  }
  EXPECT_EQ(broker_status(sub).bulk_held(), 0u) << "held in the lane, not by the broker";
  EXPECT_FALSE(pub->loan("held.t", 4096, 200ms)) << "the subscriber holds the whole ring";
  // A loan waiting for the space wakes once the subscriber lets go.
  Result<Loan> loan = std::unexpected(Error{});
  EXPECT_TRUE(waits_for([&] { loan = pub->loan("held.t", 4096, 10s); }, [&] { held.clear(); }));
  ASSERT_TRUE(loan) << loan.error().message;
  ASSERT_TRUE(pub->publish(std::move(*loan)));
  auto m = sub.receive(5s);
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->shared_memory());
  expect_books_balance(broker_status(sub));
}

TEST(LaneBulk, ASubscriberThatLeavesHoldingPayloadsGivesThePublisherItsSpaceBack) {
  BrokerProcess broker(kLanesOn);
  auto sub = std::make_unique<Client>(broker.connect("leaving"));
  auto handle = sub->subscribe("leave.t");
  ASSERT_TRUE(handle);
  auto s = std::make_unique<Subscription>(std::move(*handle));
  auto pub = connect_with_ring(broker, "small-ring", kSmallRing);
  ASSERT_TRUE(pub);
  ASSERT_TRUE(lane_set_up(*pub, "leave.t", *sub));
  std::vector<Message> held;  // outlives the client: its views stay valid, their releases go nowhere
  for (int i = 0; i < kFitInSmallRing; ++i) {
    ASSERT_TRUE(publish_bulk(*pub, "leave.t", static_cast<std::uint64_t>(i), 4096, 5s));
    auto m = sub->receive(5s);
    ASSERT_TRUE(m);
    ASSERT_TRUE(m->shared_memory());
    held.push_back(std::move(*m));
  }
  EXPECT_FALSE(pub->loan("leave.t", 4096, 200ms));
  s.reset();
  sub.reset();  // disconnects; the messages it held are never released
  // The broker tells the publisher its subscriber is gone: the space comes back.
  auto loan = pub->loan("leave.t", 4096, 10s);
  ASSERT_TRUE(loan) << loan.error().message;
  for (int i = 0; i < kFitInSmallRing; ++i) EXPECT_EQ(number_of(held[i].payload()), static_cast<std::uint64_t>(i));
  EXPECT_TRUE(eventually([&] {
    const auto st = broker_status(*pub);
    return st.lanes_open() == 0 && st.lane_queued() == 0;
  }));
  expect_books_balance(broker_status(*pub));
}

TEST(LaneBulk, ALosslessLaneWithAllItsHoldsOutHoldsThePublisherBackUntilOneIsLetGo) {
  BrokerProcess broker(kLanesOn);
  Client sub = broker.connect("hoarder");
  auto s = sub.subscribe("hoard.t");
  ASSERT_TRUE(s);
  Client pub = broker.connect("hoard-pub");
  ASSERT_TRUE(lane_set_up(pub, "hoard.t", sub));
  // 4096 payloads held (a lane's most): the next one waits for a release, not for room.
  std::vector<Message> held;
  constexpr std::uint64_t kHolds = 4096;
  std::thread publisher([&] {
    for (std::uint64_t i = 0; i < kHolds; ++i) ASSERT_TRUE(publish_bulk(pub, "hoard.t", i, 64)) << i;
  });
  for (std::uint64_t i = 0; i < kHolds; ++i) {
    auto m = sub.receive(10s);
    ASSERT_TRUE(m) << i;
    ASSERT_EQ(number_of(m->payload()), i);
    held.push_back(std::move(*m));
  }
  publisher.join();
  Result<void> sent;
  EXPECT_TRUE(waits_for([&] { sent = publish_bulk(pub, "hoard.t", kHolds, 64); }, [&] { held.erase(held.begin()); }));
  ASSERT_TRUE(sent) << sent.error().message;
  auto m = sub.receive(5s);
  ASSERT_TRUE(m);
  EXPECT_EQ(number_of(m->payload()), kHolds);
  const auto st = broker_status(pub);
  EXPECT_EQ(st.lane_dropped(), 0u);
  EXPECT_EQ(st.bulk_messages(), 0u);
  expect_books_balance(st);
}

// The lane closes (its subscriber stopped reading it) while the subscriber holds payloads:
// the publisher's space stays theirs until they are let go, not until the lane is gone.
TEST(LaneBulk, PayloadsHeldWhenTheLaneClosesKeepTheirSpaceUntilLetGo) {
  BrokerProcess broker(kLanesOn + "[timeouts]\nslow_consumer_ms = 300\n");
  auto sub = Client::connect({.address = broker.socket(), .name = "holder", .receive_queue = 16});
  ASSERT_TRUE(sub);
  auto s = sub->subscribe("closing.t");
  ASSERT_TRUE(s);
  auto pub = connect_with_ring(broker, "small-ring", kSmallRing);
  ASSERT_TRUE(pub);
  ASSERT_TRUE(lane_set_up(*pub, "closing.t", *sub));
  std::vector<Message> held;
  for (int i = 0; i < kFitInSmallRing; ++i) {
    ASSERT_TRUE(publish_bulk(*pub, "closing.t", static_cast<std::uint64_t>(i), 4096, 5s));
    auto m = sub->receive(5s);
    ASSERT_TRUE(m);
    ASSERT_TRUE(m->shared_memory());
    held.push_back(std::move(*m));
  }
  // Twenty small ones: sixteen fill the receive queue, the lane holds the rest unread, and
  // the broker closes the lane it sees not read.
  for (std::uint64_t i = 0; i < 20; ++i) ASSERT_TRUE(pub->publish("closing.t", number(1000 + i)));
  ASSERT_TRUE(eventually([&] { return broker_status(*pub).lanes_open() == 0; }, 10s));
  for (std::uint64_t i = 0; i < 20; ++i) {
    auto m = sub->receive(5s);
    ASSERT_TRUE(m) << i;
    ASSERT_EQ(number_of(m->payload()), 1000 + i);
  }
  EXPECT_FALSE(pub->loan("closing.t", 4096, 300ms)) << "space the subscriber still holds was given back";
  for (int i = 0; i < kFitInSmallRing; ++i) EXPECT_EQ(number_of(held[i].payload()), static_cast<std::uint64_t>(i));
  held.clear();
  auto loan = pub->loan("closing.t", 4096, 10s);
  ASSERT_TRUE(loan) << loan.error().message;
  ASSERT_TRUE(eventually([&] { return broker_status(*pub).lane_queued() == 0; }));
  const auto st = broker_status(*pub);
  EXPECT_EQ(st.lanes_broken(), 0u);
  EXPECT_EQ(st.lane_lost(), 0u);
  expect_books_balance(st);
}

// The publisher leaves (the lane closes while its subscriber holds payloads), the subscriber's
// client is destroyed, and only then are the payloads let go: their views stayed valid, and
// the release (with the lane's answer pending) touches nothing of the client that is gone.
TEST(LaneBulk, PayloadsHeldPastTheirLaneAndTheirClientAreLetGoSafely) {
  BrokerProcess broker(kLanesOn);
  auto sub = std::make_unique<Client>(broker.connect("outliving"));
  auto handle = sub->subscribe("outlive.t");
  ASSERT_TRUE(handle);
  auto s = std::make_unique<Subscription>(std::move(*handle));
  auto pub = std::make_unique<Client>(broker.connect("leaving-pub"));
  ASSERT_TRUE(lane_set_up(*pub, "outlive.t", *sub));
  std::vector<Message> held;
  for (std::uint64_t i = 0; i < 8; ++i) {
    ASSERT_TRUE(publish_bulk(*pub, "outlive.t", i, 4096));
    auto m = sub->receive(5s);
    ASSERT_TRUE(m);
    ASSERT_TRUE(m->shared_memory());
    held.push_back(std::move(*m));
  }
  pub.reset();  // the lane closes; its subscriber's answer waits for the eight
  ASSERT_TRUE(eventually([&] { return broker_status(*sub).lanes_open() == 0; }));
  ASSERT_TRUE(sub->flush());  // the LANE_CLOSE was read
  s.reset();
  sub.reset();
  for (std::uint64_t i = 0; i < 8; ++i) EXPECT_EQ(number_of(held[i].payload()), i);
  held.clear();
}

TEST(LaneBulk, ACallbackSubscriberReleasesEachPayloadAsItsHandlerReturns) {
  BrokerProcess broker(kLanesOn);
  Client sub = broker.connect("callback-sub");
  std::atomic<std::uint64_t> seen{0}, in_order{0};
  auto s = sub.subscribe("cb.t", [&](const MessageView& m) {
    if (!m.shared_memory) return;
    in_order += number_of(m.payload) == seen.load() + 1 ? 1 : 0;
    ++seen;
  });
  ASSERT_TRUE(s);
  auto pub = connect_with_ring(broker, "small-ring", kSmallRing);
  ASSERT_TRUE(pub);
  ASSERT_TRUE(eventually([&] {
    if (!pub->publish("cb.t", number(0))) return false;
    return broker_status(*pub).lane_delivered() > 0;
  }));
  // Twenty rings' worth through a ring of fourteen records: each comes back as its handler returns.
  constexpr std::uint64_t kCount = 20 * kFitInSmallRing;
  for (std::uint64_t i = 1; i <= kCount; ++i) ASSERT_TRUE(publish_bulk(*pub, "cb.t", i, 4096, 10s)) << i;
  ASSERT_TRUE(eventually([&] { return seen.load() == kCount; })) << seen.load();
  EXPECT_EQ(in_order.load(), kCount);
  const auto st = broker_status(*pub);
  EXPECT_EQ(st.bulk_messages(), 0u);
  expect_books_balance(st);
}

}  // namespace
}  // namespace ubroker::test
