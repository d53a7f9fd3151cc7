// The Router without a broker: clients are Outboxes over socketpairs (the other end reads what
// the router queued), so matching, queue groups, flow control, drops, the subscription budget
// and the $sys events' bounds are checked directly.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "accounts.hpp"
#include "outbox.hpp"
#include "router.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::broker {
namespace {

std::span<const std::byte> bytes(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

class RouterTest : public ::testing::Test {
 protected:
  struct Client {
    Client(RouterTest& t, std::uint64_t id, uid_t uid) : account(t.accounts_, uid) {
      int fds[2];
      EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
      mine.reset(fds[0]);
      theirs.reset(fds[1]);
      outbox = std::make_unique<Outbox>(t.ctx_, mine.get(), id, account);
    }
    // Writes what is queued and reads it on the other end: the DELIVER headers, in order (and
    // their payloads into `payloads`, when given).
    std::vector<wire::Header> take(std::vector<std::string>* payloads = nullptr) {
      (void)outbox->send_some();
      std::vector<std::byte> got(1 << 20);
      const ssize_t n = ::read(theirs.get(), got.data(), got.size());
      std::vector<wire::Header> frames;
      std::span<const std::byte> rest(got.data(), n > 0 ? static_cast<std::size_t>(n) : 0);
      while (!rest.empty()) {
        auto split = proto::split_frame(rest, {.max_frame = 1 << 20});
        if (!split || !split->complete) break;
        wire::Header h;
        EXPECT_TRUE(proto::parse_header(split->header, h).has_value());
        frames.push_back(h);
        if (payloads != nullptr) {
          payloads->emplace_back(reinterpret_cast<const char*>(split->payload.data()), split->payload.size());
        }
        rest = rest.subspan(split->frame_size);
      }
      return frames;
    }
    shm::UniqueFd mine, theirs;
    ConnectionAccount account;
    std::unique_ptr<Outbox> outbox;
  };

  Client& client(std::uint64_t id, uid_t uid = 1000) {
    clients_.push_back(std::make_unique<Client>(*this, id, uid));
    return *clients_.back();
  }
  RouteResult publish(std::string_view topic, std::uint64_t from = 99) {
    return router_.publish({.id = from, .uid = 2000, .pid = 1}, {.topic = topic, .payload = bytes("x"), .chunk = nullptr});
  }
  void subscribe(Client& c, std::uint64_t id, std::string_view pattern, std::string_view group = {},
                 wire::Overflow overflow = wire::BLOCK) {
    ASSERT_TRUE(router_.subscribe(*c.outbox, id, pattern, group, overflow, 4096).has_value());
  }
  void TearDown() override {
    for (auto& c : clients_) router_.remove_owner(*c->outbox);
  }

  Limits limits_;
  Stats stats_;
  ChunkPool pool_;
  Accounts accounts_{limits_};
  std::vector<Outbox*> dirty_;
  std::vector<std::uint64_t> woken_;
  OutboxContext ctx_{.limits = limits_,
                     .stats = stats_,
                     .pool = pool_,
                     .shm = nullptr,
                     .dirty = dirty_,
                     .wake = [this](std::uint64_t id) { woken_.push_back(id); },
                     .wake_uid = [](UidAccount&) {}};
  Router router_{stats_};
  std::vector<std::unique_ptr<Client>> clients_;
};

TEST_F(RouterTest, OneFramePerClientWithAllItsMatchesAndOneMemberPerGroup) {
  Client& a = client(1);
  Client& c = client(3);
  Client& d = client(4);
  subscribe(a, 10, "room.*");
  subscribe(a, 11, "room.>");
  subscribe(a, 12, "other");
  subscribe(c, 30, "room.kitchen", "workers");
  subscribe(d, 40, "room.kitchen", "workers");
  ASSERT_EQ(publish("room.kitchen"), RouteResult::kRouted);
  ASSERT_EQ(publish("room.kitchen"), RouteResult::kRouted);
  auto got = a.take();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].sub_ids_size(), 2);  // both matching subscriptions in one frame
  EXPECT_EQ(got[0].sender_uid(), 2000u);
  // The group's two messages went one to each member (round-robin).
  EXPECT_EQ(c.take().size(), 1u);
  EXPECT_EQ(d.take().size(), 1u);
  EXPECT_EQ(publish("nobody.here"), RouteResult::kRouted);
  EXPECT_EQ(stats_.no_subscriber, 1u);
  EXPECT_EQ(publish("bad..topic"), RouteResult::kInvalidTopic);
}

TEST_F(RouterTest, AFullLosslessReceiverHoldsThePublisherBackUntilItDrainsAndADropOneCounts) {
  limits_.queue_max_messages = 4;
  Client& slow = client(1);
  Client& lossy = client(2);
  subscribe(slow, 1, "feed");
  subscribe(lossy, 2, "feed", {}, wire::DROP);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(publish("feed"), RouteResult::kRouted);
  EXPECT_EQ(publish("feed", 99), RouteResult::kBlocked);  // nothing delivered to anyone
  EXPECT_EQ(stats_.publisher_blocks, 1u);
  EXPECT_EQ(slow.take().size(), 4u);  // drained: the publisher is woken
  EXPECT_EQ(woken_, std::vector<std::uint64_t>{99});
  // Now the DROP subscriber is the full one: the message is dropped for it and counted, and
  // its next delivery says how many it missed.
  ASSERT_EQ(publish("feed"), RouteResult::kRouted);
  EXPECT_EQ(stats_.dropped_overflow, 1u);
  EXPECT_EQ(router_.find(*lossy.outbox, 2)->dropped, 1u);
  EXPECT_EQ(lossy.take().size(), 4u);
  ASSERT_EQ(publish("feed"), RouteResult::kRouted);
  auto next = lossy.take();
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].dropped(0), 1u);
}

TEST_F(RouterTest, SubscriptionsAreChargedAtTheirRealCostAgainstTheUidsBudget) {
  std::string tiny_tokens = "t";
  for (int i = 0; i < 100; ++i) tiny_tokens += ".a";
  const auto cost = subscription_cost(tiny_tokens);
  EXPECT_GT(cost, 100 * kIndexNodeCost);  // 201 bytes on the wire, ~32 KB in the broker
  limits_.subscription_max_bytes_per_uid = 2 * cost + 1000;  // room for two of them, not three
  Client& a = client(1, 4040);
  Client& b = client(2, 4040);  // the same uid: one budget
  ASSERT_TRUE(router_.subscribe(*a.outbox, 1, tiny_tokens, {}, wire::BLOCK, 4096).has_value());
  ASSERT_TRUE(router_.subscribe(*b.outbox, 1, tiny_tokens + ".b", {}, wire::BLOCK, 4096).has_value());
  auto refused = router_.subscribe(*a.outbox, 2, tiny_tokens + ".c", {}, wire::BLOCK, 4096);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, wire::LIMIT_EXCEEDED);
  EXPECT_NE(refused.error().message.find("subscription_max_bytes_per_uid"), std::string::npos);
  EXPECT_EQ(accounts_.find(4040)->limited, 1u);
  ASSERT_TRUE(router_.unsubscribe(*b.outbox, 1).has_value());  // credited back
  EXPECT_TRUE(router_.subscribe(*a.outbox, 2, tiny_tokens + ".c", {}, wire::BLOCK, 4096).has_value());
  router_.remove_owner(*a.outbox);
  EXPECT_EQ(accounts_.find(4040)->used(Resource::kSubscriptionBytes), 0u);
}

TEST_F(RouterTest, TheBrokersOwnEventsNeverGrowAFullQueue) {
  limits_.queue_max_messages = 2;
  Client& watcher = client(1);
  subscribe(watcher, 1, "$sys.client.>");
  for (int i = 0; i < 10; ++i) {
    router_.publish_system({.topic = "$sys.client.connected", .payload = bytes("e"), .chunk = nullptr}, {});
  }
  EXPECT_EQ(watcher.outbox->queue().messages(), 2u);
  EXPECT_EQ(stats_.dropped_overflow, 8u);
  EXPECT_EQ(router_.find(*watcher.outbox, 1)->dropped, 8u);
}

TEST_F(RouterTest, AClientWithManyMatchingSubscriptionsGetsFramesOfAtMost32Ids) {
  Client& many = client(1);
  for (std::uint64_t id = 1; id <= 70; ++id) subscribe(many, id, id % 2 ? "x.>" : "x.*");
  ASSERT_EQ(publish("x.y"), RouteResult::kRouted);
  auto got = many.take();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].sub_ids_size() + got[1].sub_ids_size() + got[2].sub_ids_size(), 70);
  for (const auto& h : got) EXPECT_LE(h.sub_ids_size(), 32);
  EXPECT_EQ(stats_.deliveries_accepted, 3u);  // each frame is a delivery of its own
}

// A run of publishes (Router::publish_run) reaches each receiver as the same frames, in order,
// as one at a time would, and is counted the same; where it cannot be exact it declines and
// changes nothing.
TEST_F(RouterTest, ARunOfPublishesIsDeliveredAndCountedAsTheSingleOnesWouldBe) {
  Client& a = client(1);
  Client& b = client(2);
  subscribe(a, 10, "run.*");
  subscribe(a, 11, "run.>");
  subscribe(b, 20, "run.t", {}, wire::DROP);
  const std::vector<std::string> texts = {"one", "", "three", std::string(1000, 'x')};
  std::vector<std::span<const std::byte>> run;
  std::uint64_t bytes_total = 0;
  for (const auto& t : texts) {
    run.push_back(bytes(t));
    bytes_total += t.size();
  }
  const SenderStamp from{.id = 99, .uid = 2000, .pid = 1};
  ASSERT_TRUE(router_.publish_run(from, "run.t", run, bytes_total));
  // The same message sent alone, for comparison.
  ASSERT_EQ(router_.publish(from, {.topic = "run.t", .payload = bytes("alone"), .chunk = nullptr}), RouteResult::kRouted);
  for (Client* c : {&a, &b}) {
    std::vector<std::string> payloads;
    auto got = c->take(&payloads);
    ASSERT_EQ(got.size(), 5u);
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].type(), wire::DELIVER);
      EXPECT_EQ(got[i].topic(), "run.t");
      EXPECT_EQ(got[i].sender_id(), 99u);
      EXPECT_EQ(got[i].sender_uid(), 2000u);
      EXPECT_EQ(got[i].sub_ids_size(), c == &a ? 2 : 1);
      EXPECT_EQ(payloads[i], i < texts.size() ? texts[i] : "alone");
      if (i > 0) {
        EXPECT_EQ(got[i].SerializeAsString(), got[0].SerializeAsString());  // the same head each time
      }
    }
  }
  EXPECT_EQ(stats_.messages_in, 5u);
  EXPECT_EQ(stats_.bytes_in, bytes_total + 5);
  EXPECT_EQ(stats_.deliveries_accepted, 10u);
  EXPECT_EQ(stats_.deliveries, 10u);
  EXPECT_EQ(stats_.payload_copies, 8u);  // the empty payload was no copy, alone or in a run
  EXPECT_EQ(router_.find(*a.outbox, 10)->delivered, 5u);
  const auto& topics = router_.topic_stats();
  ASSERT_TRUE(topics.contains("run.t"));
  EXPECT_EQ(topics.find("run.t")->second.messages, 5u);

  // Nobody subscribed: counted, delivered to nobody.
  ASSERT_TRUE(router_.publish_run(from, "nobody.here", run, bytes_total));
  EXPECT_EQ(stats_.no_subscriber, 4u);
}

TEST_F(RouterTest, ARunDeclinesWhereOnlyOneAtATimeIsExact) {
  const SenderStamp from{.id = 99, .uid = 2000, .pid = 1};
  const std::vector<std::span<const std::byte>> run = {bytes("a"), bytes("b")};
  Client& a = client(1);
  subscribe(a, 10, "grp");
  Client& g = client(2);
  subscribe(g, 20, "grp", "workers");  // a queue group picks a member per message
  EXPECT_FALSE(router_.publish_run(from, "grp", run, 2));
  EXPECT_FALSE(router_.publish_run(from, "bad..topic", run, 2));
  // A receiver without room for the whole run.
  limits_.queue_max_messages = 3;
  Client& small = client(3);
  subscribe(small, 30, "small", {}, wire::DROP);
  ASSERT_EQ(publish("small"), RouteResult::kRouted);
  ASSERT_EQ(publish("small"), RouteResult::kRouted);
  EXPECT_FALSE(router_.publish_run(from, "small", run, 2));
  // Drops to report ride in the next DELIVER of that subscription alone.
  ASSERT_EQ(publish("small"), RouteResult::kRouted);
  ASSERT_EQ(publish("small"), RouteResult::kRouted);  // dropped: the queue holds 3
  EXPECT_EQ(router_.find(*small.outbox, 30)->dropped, 1u);
  EXPECT_EQ(small.take().size(), 3u);
  EXPECT_FALSE(router_.publish_run(from, "small", run, 2));
  // A receiver with more matching subscriptions than one frame lists gets several frames per
  // message, interleaved message by message: one at a time.
  Client& many = client(4);
  for (std::uint64_t i = 0; i < 40; ++i) subscribe(many, 100 + i, "many");
  EXPECT_FALSE(router_.publish_run(from, "many", run, 2));
  // Declining changed nothing.
  EXPECT_EQ(stats_.messages_in, 4u);
  EXPECT_TRUE(a.take().empty());
}

}  // namespace
}  // namespace ubroker::broker
