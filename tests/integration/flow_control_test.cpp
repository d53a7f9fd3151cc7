// Flow control against a real brokerd: lossless backpressure through a slow subscriber, the
// drop policy's exact accounting, a stuck subscriber cut off while others go on, and many
// concurrent clients.
#include <gtest/gtest.h>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <condition_variable>
#include <regex>
#include <thread>

#include "broker_process.hpp"
#include "raw_connection.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

// A number from brokerd's closing summary line, e.g. "12 publisher blocks".
std::uint64_t summary_figure(const std::string& log, const std::string& what) {
  std::smatch m;
  if (!std::regex_search(log, m, std::regex("(\\d+) " + what))) return ~0ull;
  return std::stoull(m[1]);
}

TEST(FlowControl, SlowSubscriberTwoMillionMessagesZeroLoss) {
  // The broker's backpressure (its summary counts the blocks), so no lanes; a lane's own is
  // tested in lanes_test.
  BrokerProcess broker("[limits]\nqueue_max_messages = 2000\n[lanes]\nenabled = false\n");
  constexpr std::uint64_t kCount = 2'000'000;
  std::atomic<std::uint64_t> received{0}, gaps{0};
  std::uint64_t expect = 0;  // I/O thread only
  Client sub = broker.connect("slow");
  auto s = sub.subscribe("firehose", [&](const MessageView& m) {
    const auto seq = decode(m.payload).seq;
    if (seq != expect) ++gaps;
    expect = seq + 1;
    // Deliberately slow: a long stall at the start (far longer than the queue and socket
    // buffers take to fill at any speed), then short ones, so the broker must hold the
    // publisher back.
    const std::uint64_t n = ++received;
    if (n == 1) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    if (n % 5000 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  ASSERT_TRUE(s.has_value());
  Process peer = publish_from_peer(broker, "firehose", kCount, 16);
  auto st = peer.wait(std::chrono::seconds(240));
  ASSERT_TRUE(st.has_value());
  ASSERT_EQ(exit_code(*st), 0) << peer.err();
  ASSERT_TRUE(eventually([&] { return received == kCount; }, std::chrono::seconds(120))) << received.load();
  EXPECT_EQ(gaps.load(), 0u);
  EXPECT_EQ(s->dropped(), 0u);
  sub.close();
  ASSERT_EQ(broker.stop(), 0);
  const std::string log = broker.process().err();
  EXPECT_GT(summary_figure(log, "publisher blocks"), 0u) << "backpressure never engaged:\n" << log;
  EXPECT_EQ(summary_figure(log, "dropped \\(overflow\\)"), 0u) << log;
}

TEST(FlowControl, DropPolicyCountsExactlyWhatItDropped) {
  // The drop subscriber stops reading until the publisher is done, so its queue overflows
  // whatever the relative speeds; the deadline is long enough that it is not cut off.
  BrokerProcess broker("[limits]\nqueue_max_messages = 500\n[timeouts]\nslow_consumer_ms = 120000\n");
  constexpr std::uint64_t kCount = 200'000;
  std::atomic<std::uint64_t> received{0}, reported{0};
  std::mutex mu;
  std::condition_variable cv;
  bool go = false;
  Client sub = broker.connect("dropper");
  auto s = sub.subscribe("lossy",
                         [&](const MessageView& m) {
                           std::unique_lock lk(mu);
                           cv.wait(lk, [&] { return go; });
                           reported += m.dropped_before;
                           ++received;
                         },
                         {.overflow = Overflow::kDrop});
  ASSERT_TRUE(s.has_value());
  // A lossless subscriber on the same topic gets every message regardless.
  std::atomic<std::uint64_t> lossless{0};
  Client other = broker.connect("lossless");
  auto o = other.subscribe("lossy", [&](const MessageView&) { ++lossless; });
  ASSERT_TRUE(o.has_value());

  Process peer = publish_from_peer(broker, "lossy", kCount, 16);
  auto st = peer.wait(std::chrono::seconds(240));
  ASSERT_TRUE(st.has_value());
  ASSERT_EQ(exit_code(*st), 0) << peer.err();
  {
    std::lock_guard lk(mu);
    go = true;
  }
  cv.notify_all();
  // The peer flushed: the broker has routed every message (queued or dropped). Unsubscribing
  // returns after everything queued ahead of the ACK was delivered, with the exact total.
  auto total_dropped = s->unsubscribe(std::chrono::seconds(120));
  ASSERT_TRUE(total_dropped.has_value()) << total_dropped.error().message;
  EXPECT_GT(*total_dropped, 0u);
  EXPECT_EQ(received.load() + *total_dropped, kCount);
  EXPECT_LE(reported.load(), *total_dropped);
  ASSERT_TRUE(eventually([&] { return lossless == kCount; }, std::chrono::seconds(120)));
}

TEST(FlowControl, StuckSubscriberIsDisconnectedWhileOthersGoOn) {
  // The broker's own queue and its rules, so no lanes (lanes_test has a lane's stuck reader).
  BrokerProcess broker(
      "[limits]\nqueue_max_messages = 1000\n[timeouts]\nslow_consumer_ms = 300\nlinger_ms = 5000\n[lanes]\nenabled = false\n");
  constexpr std::uint64_t kCount = 100'000;
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::vector<ConnectionChange> changes;
  std::atomic<std::uint64_t> after_reconnect{0};
  auto stuck = Client::connect({.address = broker.socket(),
                                .name = "stuck",
                                .on_connection = [&](const ConnectionChange& c) {
                                  std::lock_guard lk(mu);
                                  changes.push_back(c);
                                }});
  ASSERT_TRUE(stuck.has_value()) << stuck.error().message;
  auto s1 = stuck->subscribe("feed", [&](const MessageView& m) {
    if (m.text() == "after") ++after_reconnect;
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return release; });  // stops reading entirely
  });
  ASSERT_TRUE(s1.has_value());
  std::atomic<std::uint64_t> healthy{0};
  Client good = broker.connect("healthy");
  auto s2 = good.subscribe("feed", [&](const MessageView&) { ++healthy; });
  ASSERT_TRUE(s2.has_value());

  Process peer = publish_from_peer(broker, "feed", kCount, 64);
  // The broker cuts the stuck one off after its deadline...
  ASSERT_TRUE(eventually([&] { return broker.process().err().find("SLOW_CONSUMER") != std::string::npos; }))
      << broker.process().err();
  {
    std::lock_guard lk(mu);
    release = true;
  }
  cv.notify_all();
  // ...and the publisher and the healthy subscriber go on to the end, losing nothing.
  auto st = peer.wait(std::chrono::seconds(120));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 0) << peer.err();
  ASSERT_TRUE(eventually([&] { return healthy == kCount; })) << healthy.load();
  // The stuck client reads what was already in its socket, learns why it was cut off, and
  // comes back with its subscription.
  ASSERT_TRUE(eventually([&] { return stuck->stats().reconnects == 1 && stuck->connected(); }));
  {
    std::lock_guard lk(mu);
    ASSERT_GE(changes.size(), 3u);
    EXPECT_EQ(changes[0].event, ConnectionEvent::kConnected);
    EXPECT_EQ(changes[1].event, ConnectionEvent::kDisconnected);
    ASSERT_TRUE(changes[1].reason.has_value());
    EXPECT_EQ(changes[1].reason->code, Errc::kSlowConsumer) << changes[1].reason->message;
    EXPECT_NE(changes[1].reason->message.find("no progress"), std::string::npos) << changes[1].reason->message;
    EXPECT_EQ(changes[2].event, ConnectionEvent::kReconnected);
  }
  auto why = stuck->disconnect_reason();
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(why->code, Errc::kSlowConsumer) << why->message;
  ASSERT_TRUE(good.publish("feed", "after").has_value());
  EXPECT_TRUE(eventually([&] { return after_reconnect == 1; }));
}

// A client whose publishes the broker holds back (its unsent bytes at their limit all the
// time) still reads what the broker sends it: here messages of its own subscription, for a
// lane its routes and offers. It used to stop reading until everything unsent was out, which
// a publisher that never stops never let happen.
TEST(FlowControl, APublisherHeldBackStillReadsWhatTheBrokerSendsIt) {
  BrokerProcess broker("[limits]\nqueue_max_messages = 1000\n[timeouts]\nslow_consumer_ms = 60000\n");
  std::optional<RawConnection> stuck(std::in_place, broker.socket());
  stuck->hello("stuck");
  stuck->subscribe(1, "flood");  // and never reads: the broker holds the publisher back
  Client talker = broker.connect("talker");
  auto pub = Client::connect({.address = broker.socket(), .name = "flooder", .max_pending_bytes = 64 * 1024});
  ASSERT_TRUE(pub.has_value()) << pub.error().message;
  std::atomic<int> heard{0};
  auto ctl = pub->subscribe("ctl", [&](const MessageView&) { ++heard; });
  ASSERT_TRUE(ctl.has_value());
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> published{0};
  std::thread flooder([&] {
    const std::string payload(256, 'x');
    while (!stop && pub->publish("flood", payload)) ++published;
  });
  // However the test ends: the stuck subscriber goes, so the publisher is let go and stops.
  const std::unique_ptr<void, std::function<void(void*)>> ends(&stop, [&](void*) {
    stop = true;
    stuck.reset();
    flooder.join();
  });
  ASSERT_TRUE(eventually([&] { return broker_status(talker).deliveries_queued() >= 1000; }))
      << broker_status(talker).ShortDebugString();
  const std::uint64_t held_at = published.load();
  for (int i = 1; i <= 5; ++i) {
    ASSERT_TRUE(talker.publish("ctl", "ping").has_value());
    ASSERT_TRUE(eventually([&] { return heard.load() == i; }, std::chrono::seconds(10)))
        << "message " << i << " of its subscription never read while its publishes were held back";
  }
  EXPECT_LT(published.load() - held_at, 50000u) << "the broker did not hold the publisher back";
}

TEST(FlowControl, ASteadyButTooSlowConsumerHoldingPublishersBackIsCutOff) {
  // It reads one 4 KiB message every 20 ms (200 KB/s): always progressing, and fast enough
  // that the kernel's socket buffer drains well within slow_consumer_ms, so the no-progress
  // rule never fires; but while the publisher waits on it, it takes less than half its queue
  // (256 messages, 1 MiB) per slow_consumer_ms.
  BrokerProcess broker(
      "[limits]\nmax_frame_bytes = 262144\nqueue_max_messages = 256\nqueue_max_bytes = 1048576\n"
      "[timeouts]\nslow_consumer_ms = 2000\n");
  RawConnection slow(broker.socket());
  slow.hello("slow");
  slow.subscribe(1, "steady");
  Process peer = publish_from_peer(broker, "steady", 5000, 4096);
  std::optional<wire::Header> why;
  int read = 0;
  for (; read < 2000 && !why; ++read) {
    auto f = slow.read_frame();
    ASSERT_TRUE(f.has_value()) << "closed before it was told why, after " << read << " messages";
    if (f->type() == wire::ERROR) why = f;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(why.has_value()) << "never cut off";
  EXPECT_EQ(why->error().code(), wire::SLOW_CONSUMER);
  EXPECT_NE(why->error().message().find("publishers held back for"), std::string::npos) << why->error().message();
  std::printf("cut off after reading %d messages: %s\n", read, why->error().message().c_str());
  // The publisher, no longer held back by it, finishes.
  auto st = peer.wait(std::chrono::seconds(60));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 0) << peer.err();
}

TEST(FlowControl, FiveHundredConcurrentClientsOnOneIoContext) {
  raise_fd_limit();
  BrokerProcess broker;
  constexpr int kClients = 500;
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::thread io_thread([&] { io.run(); });
  std::vector<Client> clients;
  std::vector<Subscription> subs;
  std::vector<std::atomic<int>> got(kClients);
  for (int i = 0; i < kClients; ++i) {
    auto c = Client::connect({.address = broker.socket(), .name = "fleet" + std::to_string(i), .io = &io});
    ASSERT_TRUE(c.has_value()) << i << ": " << c.error().message;
    clients.push_back(std::move(*c));
    for (std::string topic : {std::string("fleet.all"), "fleet." + std::to_string(i)}) {
      auto s = clients.back().subscribe(topic, [&got, i](const MessageView&) { ++got[i]; });
      ASSERT_TRUE(s.has_value()) << s.error().message;
      subs.push_back(std::move(*s));
    }
  }
  Client pub = broker.connect("pub");
  ASSERT_TRUE(pub.publish("fleet.all", "everyone").has_value());
  for (int i = 0; i < kClients; ++i) ASSERT_TRUE(pub.publish("fleet." + std::to_string(i), "you").has_value());
  ASSERT_TRUE(pub.flush().has_value());
  ASSERT_TRUE(eventually([&] {
    for (auto& g : got) {
      if (g.load() < 2) return false;
    }
    return true;
  }));
  for (auto& g : got) EXPECT_EQ(g.load(), 2);
  subs.clear();
  clients.clear();
  // Closed clients leave no work behind: the io_context runs dry on its own.
  guard.reset();
  io_thread.join();
  EXPECT_EQ(broker.stop(), 0);
}

}  // namespace
}  // namespace ubroker::test
