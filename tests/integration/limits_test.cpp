// Each resource limit reached against a real brokerd: the refusal carries the right code and
// names the limit, it is counted, and other clients go on unaffected.
#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>
#include <numeric>
#include <string>
#include <vector>

#include "broker_process.hpp"
#include "raw_connection.hpp"
#include "script_peer.hpp"
#include "test_util.hpp"
#include "ubroker/proto/frame_codec.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;

class Limits : public OtherIdentitiesTest {};

TEST_F(Limits, ConnectionsPerUidRefuseThatUidOnly) {
  BrokerProcess broker(reachable("[policy]\nopen = true\n[limits]\nmax_connections_per_uid = 3\n"));
  open_dir(broker);
  std::vector<Client> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(broker.connect("root-" + std::to_string(i)));
  auto fourth = Client::connect({.address = broker.socket()});
  ASSERT_FALSE(fourth.has_value());
  EXPECT_EQ(fourth.error().code, Errc::kLimitExceeded);
  EXPECT_NE(fourth.error().message.find("uid 0 has 3 connections open (limits.max_connections_per_uid = 3)"),
            std::string::npos)
      << fourth.error().message;
  // Another uid still gets in, and the three are still served.
  EXPECT_TRUE(has_line(run_script(broker, {4040, 4040, {}}, "connect\npublish a.b\n"), "publish a.b: ok"));
  for (auto& c : clients) EXPECT_TRUE(c.flush().has_value());
  clients.pop_back();  // a slot frees once the broker has seen the connection go
  std::uint64_t refused = 1;
  EXPECT_TRUE(eventually(
      [&] {
        auto again = Client::connect({.address = broker.socket()});
        refused += !again && again.error().code == Errc::kLimitExceeded;
        return again.has_value();
      },
      5s));
  const auto st = broker_status(clients.front());
  EXPECT_EQ(st.errors_sent().at("LIMIT_EXCEEDED"), refused);  // each refusal counted, nothing else
}

TEST_F(Limits, ConnectionsInTotal) {
  BrokerProcess broker("[limits]\nmax_connections = 2\n");
  Client a = broker.connect("a");
  Client b = broker.connect("b");
  auto third = Client::connect({.address = broker.socket()});
  ASSERT_FALSE(third.has_value());
  EXPECT_EQ(third.error().code, Errc::kLimitExceeded);
  EXPECT_NE(third.error().message.find("(limits.max_connections = 2)"), std::string::npos) << third.error().message;
  EXPECT_TRUE(a.flush().has_value());
  EXPECT_TRUE(b.flush().has_value());
}

TEST_F(Limits, SubscriptionsAndPendingRequestsPerClient) {
  BrokerProcess broker("[limits]\nmax_subscriptions = 2\nmax_pending_requests = 1\n");
  Client c = broker.connect("limited");
  Client other = broker.connect("other");
  auto s1 = c.subscribe("a").value();
  auto s2 = c.subscribe("b").value();
  auto s3 = c.subscribe("c");
  ASSERT_FALSE(s3.has_value());
  EXPECT_EQ(s3.error().code, Errc::kLimitExceeded);
  EXPECT_NE(s3.error().message.find("has 2 subscriptions and services (limits.max_subscriptions = 2)"),
            std::string::npos)
      << s3.error().message;
  EXPECT_TRUE(other.subscribe("c").has_value());  // the limit is this client's

  // A responder that never answers holds the first request open.
  Process hang = Process::spawn({UBROKER_TEST_PEER, "serve", broker.socket(), "svc.hang", "hang"});
  ASSERT_TRUE(eventually([&] { return hang.out().find("ready") != std::string::npos; }, 10s));
  std::atomic<bool> first_done{false};
  c.request_async("svc.hang", {}, 10s, [&](Result<Message>) { first_done = true; });
  ASSERT_TRUE(eventually([&] { return hang.out().find("request") != std::string::npos; }, 10s));
  auto second = c.request("svc.hang", "x", 5s);
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code, Errc::kLimitExceeded);
  EXPECT_NE(second.error().message.find("(limits.max_pending_requests = 1)"), std::string::npos)
      << second.error().message;
  hang.signal(SIGKILL);
  EXPECT_TRUE(eventually([&] { return first_done.load(); }, 10s));  // RESPONDER_GONE
}

// One uid's clients that stop reading fill that uid's budget and no more: their queues
// together stay at limits.queue_max_bytes_per_uid (each alone could hold twice that share),
// the excess is dropped and counted, and a lossless reader of another uid gets everything.
TEST_F(Limits, QueuedBytesPerUidKeepOneUidsStalledReadersFromTakingMore) {
  constexpr std::uint64_t kPerClient = 256 * 1024;
  constexpr std::uint64_t kPerUid = 512 * 1024;
  BrokerProcess broker(reachable(fmt::format(
      "[policy]\nopen = true\n[limits]\nmax_frame_bytes = 65536\nqueue_max_messages = 1000000\nqueue_max_bytes = "
      "{}\nqueue_max_bytes_per_uid = {}\n[timeouts]\nslow_consumer_ms = 60000\n",
      kPerClient, kPerUid)));
  open_dir(broker);
  const std::string go = broker.dir() + "/go";
  std::vector<Process> stalled;
  for (int i = 0; i < 4; ++i) {
    stalled.push_back(start_script(broker, {4041, 4041, {}}, "connect 1\nsubscribe-drop flood\nwait-file " + go + "\n"));
  }
  for (auto& p : stalled) {
    ASSERT_TRUE(eventually([&] { return has_line(p.out(), "subscribe-drop flood: ok"); }, 10s)) << p.out() << p.err();
  }
  constexpr int kCount = 20000;
  Process healthy = Process::spawn(as({4040, 4040, {}}, {UBROKER_TEST_PEER, "subscribe", broker.socket(), "flood",
                                                          std::to_string(kCount)}));
  ASSERT_TRUE(eventually([&] { return healthy.out().find("ready") != std::string::npos; }, 10s)) << healthy.err();
  Process publisher = publish_from_peer(broker, "flood", kCount, 1024);
  ASSERT_TRUE(publisher.wait(60s).has_value());
  ASSERT_TRUE(healthy.wait(60s).has_value());
  EXPECT_NE(healthy.out().find("received 20000 gaps 0"), std::string::npos) << healthy.out();

  Client root = broker.connect("root");
  wire::ClientList list;
  auto r = root.request("$sys.admin.clients", std::string_view{}, 5s);
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(list.ParseFromArray(r->payload().data(), static_cast<int>(r->payload().size())));
  std::uint64_t queued = 0;
  int counted = 0;
  for (const auto& c : list.clients()) {
    if (c.uid() != 4041) continue;
    ++counted;
    queued += c.queued_bytes();
    EXPECT_LT(c.queued_bytes(), kPerClient);  // none is full by itself: the uid's budget held them
  }
  EXPECT_EQ(counted, 4);
  EXPECT_GE(queued, kPerUid - 4 * 2048);  // the budget was used ...
  EXPECT_LE(queued, kPerUid + 4 * 2048);  // ... and not exceeded (by more than a frame per client)
  EXPECT_GT(broker_status(root).dropped_overflow(), 0u);
  std::ofstream(go) << "go";
}

// Slow-loris: a frame that starts and never finishes closes the connection at the deadline.
TEST_F(Limits, AFrameStalledHalfwayIsCutOffAtTheDeadline) {
  BrokerProcess broker("[timeouts]\nframe_ms = 300\n");
  Client bystander = broker.connect("bystander");
  RawConnection raw(broker.socket());
  raw.hello();
  wire::Header h;
  h.set_type(wire::PUBLISH);
  h.set_topic("a.b");
  std::vector<std::byte> frame(proto::frame_head_size(h) + 100);
  proto::write_frame_head(frame.data(), h, 100);
  const auto start = std::chrono::steady_clock::now();
  raw.send_bytes(std::span(frame).first(frame.size() - 40));  // 40 bytes short
  auto e = raw.read_frame(5s);
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->type(), wire::ERROR);
  EXPECT_EQ(e->error().code(), wire::FRAME_TIMEOUT);
  EXPECT_TRUE(e->error().fatal());
  EXPECT_NE(e->error().message().find("timeouts.frame_ms = 300"), std::string::npos) << e->error().message();
  EXPECT_GE(waited, 300ms);
  EXPECT_TRUE(raw.wait_closed(5s));
  EXPECT_TRUE(bystander.flush().has_value());
  EXPECT_EQ(broker_status(bystander).errors_sent().at("FRAME_TIMEOUT"), 1u);
}

// A client that sends whole frames, however slowly, is not a slow-loris.
TEST_F(Limits, WholeFramesSentSlowlyAreNotCutOff) {
  BrokerProcess broker("[timeouts]\nframe_ms = 200\n");
  Client sub = broker.connect("sub");
  auto s = sub.subscribe("a.b").value();
  Client pub = broker.connect("pub");
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(pub.publish("a.b", "slow").has_value());
    ASSERT_TRUE(pub.flush().has_value());
    std::this_thread::sleep_for(150ms);  // the pace under test, not a wait for a condition
  }
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(sub.receive(5s).has_value());
  EXPECT_TRUE(pub.connected());
}

}  // namespace
}  // namespace ubroker::test
