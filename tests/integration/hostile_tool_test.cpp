// The hostile-client tool (tests/support/hostile_client.cpp) against a real brokerd while
// well-behaved clients exchange messages: the broker answers every misbehaviour as the
// protocol promises, the good traffic arrives complete and in order, and afterwards the
// broker's open fds are back where they were and its memory has not grown with each round.
#include <chrono>
#include <cstdlib>
#include <string>

#include "broker_process.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;

Process hostile(const BrokerProcess& b, int rounds) {
  return Process::spawn({UBROKER_HOSTILE, "--socket", b.socket(), "--rounds", std::to_string(rounds)});
}

TEST(HostileTool, BrokerSurvivesEveryScenarioWhileWellBehavedClientsKeepWorking) {
  // slow_consumer_ms: short enough that the flood scenario is cut off soon, long enough that
  // the good subscriber, sharing two cores with everything else (and ASan), is not.
  std::optional<NoAsanQuarantine> no_quarantine(std::in_place);
  BrokerProcess broker("[timeouts]\nhandshake_ms = 300\nframe_ms = 300\nslow_consumer_ms = 2000\n");
  no_quarantine.reset();
  const pid_t pid = broker.process().pid();

  // A first round warms the broker's pools and caches up; what it holds after that is the
  // baseline the later rounds must come back to.
  Process warmup = hostile(broker, 1);
  ASSERT_TRUE(warmup.wait(60s).has_value());
  ASSERT_NE(warmup.out().find("0 with a wrong answer"), std::string::npos) << warmup.out() << warmup.err();
  Client root = broker.connect("root");  // connected for the baseline and the checks after
  ASSERT_TRUE(eventually([&] { return broker_status(root).connections() == 1; }, 10s));
  const std::size_t fds_before = open_fds(pid);
  const std::size_t rss_before = rss_kib(pid);

  constexpr int kMessages = 200000;
  Process subscriber =
      Process::spawn({UBROKER_TEST_PEER, "subscribe", broker.socket(), "good.traffic", std::to_string(kMessages)});
  ASSERT_TRUE(eventually([&] { return subscriber.out().find("ready") != std::string::npos; }, 10s));
  Process attacks = hostile(broker, 3);
  Process publisher = publish_from_peer(broker, "good.traffic", kMessages, 64);

  ASSERT_TRUE(attacks.wait(120s).has_value());
  EXPECT_NE(attacks.out().find("30 scenario runs, 0 with a wrong answer; the broker still answers"), std::string::npos)
      << attacks.out() << attacks.err();
  ASSERT_TRUE(publisher.wait(60s).has_value());
  ASSERT_TRUE(subscriber.wait(60s).has_value()) << subscriber.out() << subscriber.err();
  EXPECT_NE(subscriber.out().find("received 200000 gaps 0"), std::string::npos)
      << subscriber.out() << subscriber.err() << broker.process().err();

  const auto st = broker_status(root);
  EXPECT_GE(st.protocol_errors(), 4u * 4);  // four rounds of the fatal scenarios
  EXPECT_GE(st.slow_consumer_disconnects(), 4u);
  EXPECT_GE(st.errors_sent().at("FD_ERROR"), 4u * 2);
  // Every connection the attacks opened is gone, and so are their fds.
  EXPECT_TRUE(eventually([&] { return broker_status(root).connections() == 1; }, 10s));
  EXPECT_TRUE(eventually([&] { return open_fds(pid) <= fds_before; }, 10s))
      << open_fds(pid) << " fds open, " << fds_before << " before";
  const std::size_t rss_after = rss_kib(pid);
  // Three more rounds (800+ connections, floods of 4 KB messages) and 200,000 good messages
  // may touch more of the allocator's arenas, but not grow memory round after round.
  EXPECT_LT(rss_after, rss_before + 16 * 1024) << "RSS " << rss_before << " KiB -> " << rss_after << " KiB";
  std::printf("broker RSS %zu KiB -> %zu KiB, fds %zu -> %zu\n", rss_before, rss_after, fds_before, open_fds(pid));
  EXPECT_EQ(broker.stop(), 0);
}

}  // namespace
}  // namespace ubroker::test
