// Retained messages: a late subscriber gets the last value first, then live traffic with no
// gap or duplicate; wildcards; clearing; the byte bound evicts and counts.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <mutex>
#include <set>
#include <thread>

#include "broker_process.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

constexpr PublishOptions kRetain{.retain = true};

TEST(Retained, LateSubscriberGetsTheLastValueThenLiveInOrder) {
  BrokerProcess broker;
  Client pub = broker.connect("pub");
  ASSERT_TRUE(pub.publish("config.level", "1", kRetain).has_value());
  ASSERT_TRUE(pub.publish("config.level", "2", kRetain).has_value());
  ASSERT_TRUE(pub.flush().has_value());
  Client sub = broker.connect("late");
  auto s = sub.subscribe("config.level");
  ASSERT_TRUE(s.has_value());
  ASSERT_TRUE(pub.publish("config.level", "3").has_value());
  ASSERT_TRUE(pub.publish("config.level", "4", kRetain).has_value());
  auto m = sub.receive(std::chrono::seconds(5));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->text(), "2");
  EXPECT_TRUE(m->retained());
  EXPECT_EQ(m->sender().client_id, pub.id());  // the original publisher's identity
  for (const char* want : {"3", "4"}) {
    m = sub.receive(std::chrono::seconds(5));
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->text(), want);
    EXPECT_FALSE(m->retained());
  }
  ASSERT_TRUE(sub.flush().has_value());
  EXPECT_FALSE(sub.receive(std::chrono::milliseconds(100)).has_value());  // nothing doubled
}

TEST(Retained, WildcardSubscriptionGetsEveryMatchingTopic) {
  BrokerProcess broker;
  Client pub = broker.connect("pub");
  for (const char* t : {"room.kitchen.temp", "room.hall.temp", "room.hall.humidity", "garden.temp"}) {
    ASSERT_TRUE(pub.publish(t, t, kRetain).has_value());
  }
  ASSERT_TRUE(pub.flush().has_value());
  Client sub = broker.connect("sub");
  std::mutex mu;
  std::set<std::string> got;
  auto s = sub.subscribe("room.*.temp", [&](const MessageView& m) {
    std::lock_guard lk(mu);
    EXPECT_TRUE(m.retained);
    got.emplace(m.topic);
  });
  ASSERT_TRUE(s.has_value());
  // subscribe() returns after the ACK, which the broker sends after the retained values.
  std::lock_guard lk(mu);
  EXPECT_EQ(got, (std::set<std::string>{"room.kitchen.temp", "room.hall.temp"}));
}

TEST(Retained, EmptyRetainedPublishClearsTheTopic) {
  BrokerProcess broker;
  Client pub = broker.connect("pub");
  ASSERT_TRUE(pub.publish("status", "up", kRetain).has_value());
  ASSERT_TRUE(pub.publish("status", std::string_view{}, kRetain).has_value());
  ASSERT_TRUE(pub.publish("status.other", "kept", kRetain).has_value());
  ASSERT_TRUE(pub.flush().has_value());
  Client sub = broker.connect("sub");
  auto s = sub.subscribe("status.>");
  ASSERT_TRUE(s.has_value());
  auto s2 = sub.subscribe("status");
  ASSERT_TRUE(s2.has_value());
  auto m = sub.receive(std::chrono::seconds(5));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->topic(), "status.other");
  EXPECT_FALSE(sub.receive(std::chrono::milliseconds(100)).has_value());
  EXPECT_EQ(broker_status(sub).retained_topics(), 1u);
}

TEST(Retained, ByteBoundEvictsTheOldestAndCounts) {
  BrokerProcess broker("[limits]\nretained_max_bytes = 10000\n");
  Client pub = broker.connect("pub");
  const std::string payload(90, 'x');
  for (int i = 0; i < 20; ++i) {
    std::string topic = "t.item";  // built up in place: GCC 12 -O2 misfires -Wrestrict on "lit" + string
    if (i < 10) topic += '0';
    topic += std::to_string(i);
    ASSERT_EQ(topic.size(), 8u);
    ASSERT_TRUE(pub.publish(topic, payload + "..", kRetain).has_value());
  }
  ASSERT_TRUE(pub.flush().has_value());
  // Each value costs what it really takes (entry, topic, index nodes), more than its 100
  // bytes: some fit, the rest are evicted oldest first, and everything is counted.
  const auto st = broker_status(pub);
  EXPECT_LE(st.retained_bytes(), 10000u);
  EXPECT_GE(st.retained_topics(), 2u);
  EXPECT_LT(st.retained_topics(), 20u);
  EXPECT_EQ(st.retained_evicted(), 20u - st.retained_topics());
  ASSERT_EQ(st.uids_size(), 1);
  EXPECT_EQ(st.uids(0).retained_bytes(), st.retained_bytes());  // charged to the publisher's uid
  Client sub = broker.connect("sub");
  std::set<std::string> got;
  std::mutex mu;
  auto s = sub.subscribe("t.>", [&](const MessageView& m) {
    std::lock_guard lk(mu);
    got.emplace(m.topic);
  });
  ASSERT_TRUE(s.has_value());
  std::lock_guard lk(mu);
  ASSERT_EQ(got.size(), st.retained_topics());
  EXPECT_EQ(*got.begin(), fmt::format("t.item{:02}", 20 - got.size()));  // the ones written last survive
  EXPECT_EQ(*got.rbegin(), "t.item19");
}

TEST(Retained, AReplayLargerThanTheSubscribersQueueArrivesWholeAndInOrderBeforeTheAck) {
  // The queue holds 64 messages; the store 2,000 values. The replay is paced by the queue
  // (it never holds more than its limit), and still every value arrives, then the ACK.
  BrokerProcess broker("[limits]\nqueue_max_messages = 64\n");
  Client pub = broker.connect("pub");
  constexpr int kValues = 2000;
  for (int i = 0; i < kValues; ++i) {
    ASSERT_TRUE(pub.publish(fmt::format("big.{:04}", i), fmt::format("value {}", i), kRetain).has_value());
  }
  ASSERT_TRUE(pub.flush().has_value());
  Client sub = broker.connect("sub");
  std::vector<std::string> got;
  std::mutex mu;
  auto s = sub.subscribe("big.*", [&](const MessageView& m) {
    std::this_thread::sleep_for(std::chrono::microseconds(20));  // a reader slower than the broker
    std::lock_guard lk(mu);
    got.emplace_back(m.topic);
  });
  ASSERT_TRUE(s.has_value());
  std::lock_guard lk(mu);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kValues));  // all of them before subscribe() returned
  for (int i = 0; i < kValues; ++i) EXPECT_EQ(got[i], fmt::format("big.{:04}", i));
}

}  // namespace
}  // namespace ubroker::test
