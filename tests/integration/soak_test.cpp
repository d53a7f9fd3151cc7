// Soak: 200 clients of mixed behaviour against one broker for UBROKER_SOAK_SECONDS (default
// 120; an hour on demand). Publishers, lossless, dropping and grouped subscribers, responders
// and requesters, shared-memory producers and readers, slow subscribers cut off and coming
// back, and churners that connect, subscribe, publish and leave over and over. The broker's
// own fds (less connections, segments and segment fds queued to pass, all from one status
// snapshot) and RSS are sampled each second and must stay flat after warm-up; once everyone
// has left, its fds are back to where they started and its books balance.
#include <gtest/gtest.h>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <cstdlib>
#include <deque>
#include <random>
#include <thread>

#include "broker_process.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;

struct Sample {
  std::size_t fds;  // the broker's fds less connections, segments and segment fds queued to pass
  std::size_t rss_kib;
};

TEST(Soak, TwoHundredMixedClientsLeaveTheBrokersFdsAndMemoryFlat) {
  raise_fd_limit();
  const char* env = std::getenv("UBROKER_SOAK_SECONDS");
  const auto duration = std::chrono::seconds(env != nullptr ? std::atoi(env) : 120);
  std::optional<NoAsanQuarantine> no_quarantine(std::in_place);
  // Lanes on: their setup and close churn with everything else.
  BrokerProcess broker("[timeouts]\nslow_consumer_ms = 1000\n[limits]\nqueue_max_messages = 256\n[lanes]\nenabled = true\n");
  no_quarantine.reset();
  const pid_t pid = broker.process().pid();
  // The baseline: the broker with one client connected (and the start-up probe's gone).
  std::size_t fds_before = 0;
  {
    Client first = broker.connect("soak-first");
    ASSERT_TRUE(eventually([&] { return broker_status(first).connections() == 1; }));
    fds_before = open_fds(pid);
  }

  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::thread io_threads[] = {std::thread([&] { io.run(); }), std::thread([&] { io.run(); })};
  auto options = [&](const char* name) {
    return ConnectOptions{.address = broker.socket(), .name = name, .io = &io,
                          .reconnect = {.initial_delay = 20ms, .max_delay = 500ms}};
  };
  std::atomic<std::uint64_t> received{0}, answered{0}, bulk_read{0}, churn_cycles{0}, stalled{0};
  std::deque<Client> clients;  // a deque: the drivers hold pointers into it
  std::vector<Subscription> subs;
  auto add = [&](const char* name) -> Client& {
    auto c = Client::connect(options(name));
    if (!c) throw std::runtime_error(c.error().message);
    clients.push_back(std::move(*c));
    return clients.back();
  };
  auto keep = [&](Result<Subscription> s) {
    if (!s) throw std::runtime_error(s.error().message);
    subs.push_back(std::move(*s));
  };
  std::vector<Client*> publishers, requesters, producers;
  for (int i = 0; i < 20; ++i) publishers.push_back(&add("soak-pub"));
  // Eight topics; each subscriber takes one (a soak is about time, not throughput).
  auto topic = [](int i) { return "soak.t." + std::to_string(i % 8); };
  for (int i = 0; i < 60; ++i) keep(add("soak-lossless").subscribe(topic(i), [&](const MessageView&) { ++received; }));
  for (int i = 0; i < 20; ++i) {
    keep(add("soak-drop").subscribe(topic(i), [&](const MessageView&) { ++received; }, {.overflow = Overflow::kDrop}));
  }
  for (int i = 0; i < 20; ++i) {
    keep(add("soak-group").subscribe("soak.t.*", [&](const MessageView&) { ++received; }, {.group = "workers"}));
  }
  for (int i = 0; i < 10; ++i) {
    keep(add("soak-responder").serve("soak.svc." + std::to_string(i), [](Request r) { (void)r.reply(r.text()); }));
  }
  for (int i = 0; i < 10; ++i) requesters.push_back(&add("soak-requester"));
  for (int i = 0; i < 5; ++i) producers.push_back(&add("soak-producer"));
  std::vector<Client*> readers;
  for (int i = 0; i < 5; ++i) {
    Client& r = add("soak-reader");
    keep(r.subscribe("soak.bulk"));  // read by a thread below
    readers.push_back(&r);
  }
  // Slow subscribers: now and then one stops reading for longer than slow_consumer_ms, is
  // cut off, and comes back by itself.
  std::atomic<int> stall_next{-1};
  for (int i = 0; i < 30; ++i) {
    keep(add("soak-slow").subscribe(topic(i), [&, i](const MessageView&) {
      int me = i;
      if (stall_next.compare_exchange_strong(me, -1)) {
        ++stalled;
        std::this_thread::sleep_for(2500ms);  // full after ~1 s, then 1 s without progress
      }
    }));
  }
  ASSERT_EQ(clients.size(), 180u);  // and 20 churners

  std::atomic<bool> stop{false};
  std::vector<std::thread> drivers;
  drivers.emplace_back([&] {  // publishers: ~2000 messages/s together, ~30,000 deliveries/s
    std::uint64_t n = 0;
    while (!stop) {
      for (Client* p : publishers) (void)p->publish(topic(static_cast<int>(n++)), "payload of a soak message");
      std::this_thread::sleep_for(10ms);
    }
  });
  drivers.emplace_back([&] {  // requesters
    while (!stop) {
      for (std::size_t i = 0; i < requesters.size() && !stop; ++i) {
        if (requesters[i]->request("soak.svc." + std::to_string(i), "ping", 2s)) ++answered;
      }
    }
  });
  drivers.emplace_back([&] {  // shared memory: 64 KiB loans, read and released
    std::vector<std::byte> big(64 * 1024, std::byte{7});
    while (!stop) {
      for (Client* p : producers) (void)p->publish("soak.bulk", big);
      for (Client* r : readers) {
        while (auto m = r->receive(0ms)) ++bulk_read;
      }
      std::this_thread::sleep_for(20ms);
    }
  });
  drivers.emplace_back([&] {  // 20 churners, one after another
    std::mt19937 rng(7);
    while (!stop) {
      auto c = Client::connect({.address = broker.socket(), .name = "soak-churn", .reconnect = {.enabled = false}});
      if (!c) continue;
      auto s = c->subscribe(topic(static_cast<int>(rng())), [](const MessageView&) {});
      (void)c->publish("soak.retained." + std::to_string(rng() % 50), "last value", {.retain = true});
      if (rng() % 4 == 0) (void)c->publish("soak.bulk", std::vector<std::byte>(70 * 1024));
      (void)c->flush();
      ++churn_cycles;
    }
  });
  drivers.emplace_back([&] {  // a slow subscriber stalls every 3 s
    int next = 0;
    while (!stop) {
      std::this_thread::sleep_for(3s);
      stall_next = next++ % 30;
    }
  });

  // Connections, segments and the duplicates of segment fds waiting in a slow reader's queue
  // come and go with the load: what must stay flat is the rest. The broker counts all of them
  // in one status, so a connection opening between two readings cannot look like a leak.
  Client observer = broker.connect("soak-observer");
  std::vector<Sample> samples;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < duration) {
    std::this_thread::sleep_for(1s);
    const auto st = broker_status(observer);
    const std::size_t live = st.connections() + st.shm_segments() + st.fds_queued() + st.lane_fds();
    samples.push_back({st.open_fds() > live ? st.open_fds() - live : 0, rss_kib(pid)});
  }
  stop = true;
  stall_next = -1;
  for (auto& t : drivers) t.join();

  // Flat after warm-up (the first third): the second half of what follows holds no more than
  // the first half did, give or take the fds of connections coming and going.
  const std::size_t warm = samples.size() / 3;
  const std::size_t mid = warm + (samples.size() - warm) / 2;
  auto max_of = [&](std::size_t from, std::size_t to, auto field) {
    std::size_t m = 0;
    for (std::size_t i = from; i < to; ++i) m = std::max(m, samples[i].*field);
    return m;
  };
  const std::size_t fds_early = max_of(warm, mid, &Sample::fds), fds_late = max_of(mid, samples.size(), &Sample::fds);
  const std::size_t rss_early = max_of(warm, mid, &Sample::rss_kib);
  const std::size_t rss_late = max_of(mid, samples.size(), &Sample::rss_kib);
  const auto st = broker_status(observer);
  std::printf("soak: %zu s, %llu churn cycles, %llu received, %llu answered, %llu bulk read, %llu stalls, %llu slow "
              "consumers cut off; broker fds beyond connections, segments and fds queued %zu -> %zu, RSS %zu -> %zu KiB (max after warm-up, first and second half)\n",
              samples.size(), static_cast<unsigned long long>(churn_cycles.load()),
              static_cast<unsigned long long>(received.load()), static_cast<unsigned long long>(answered.load()),
              static_cast<unsigned long long>(bulk_read.load()), static_cast<unsigned long long>(stalled.load()),
              static_cast<unsigned long long>(st.slow_consumer_disconnects()), fds_early, fds_late, rss_early, rss_late);
  std::printf("soak: every 10 s, the broker's RSS KiB / its fds beyond connections, segments and fds queued:");
  for (std::size_t i = 0; i < samples.size(); i += 10) std::printf(" %zu/%zu", samples[i].rss_kib, samples[i].fds);
  std::printf("\n");
  ASSERT_GE(samples.size(), 9u);
  EXPECT_GT(churn_cycles.load(), 10u);
  EXPECT_GT(received.load(), 0u);
  EXPECT_GT(answered.load(), 0u);
  EXPECT_GT(bulk_read.load(), 0u);
  std::string every_second;  // for a failure: what each sample held
  for (const Sample& s : samples) every_second += " " + std::to_string(s.rss_kib) + "/" + std::to_string(s.fds);
  EXPECT_LE(fds_late, fds_early + 4) << "the broker's fds (beyond connections, segments and fds queued) grew; "
                                        "RSS KiB / fds each second:" << every_second;
  EXPECT_LE(rss_late, rss_early + rss_early / 10 + 2048) << "the broker's memory grew; RSS KiB / fds each second:"
                                                         << every_second;

  // Everyone leaves: the broker is back to its first fds, and every delivery is accounted for.
  subs.clear();
  clients.clear();
  observer.close();
  guard.reset();
  for (auto& t : io_threads) t.join();
  Client last = broker.connect("soak-last");
  ASSERT_TRUE(eventually([&] {
    const auto now = broker_status(last);
    return now.connections() == 1 && now.shm_segments() == 0 && now.deliveries_queued() == 0;
  }));
  const auto end = broker_status(last);
  EXPECT_EQ(open_fds(pid), fds_before);
  EXPECT_EQ(end.open_fds(), fds_before) << "the broker's own count of its fds disagrees with /proc";
  EXPECT_EQ(end.deliveries_accepted(), end.deliveries_written() + end.dropped_overflow() + end.bulk_dropped_fds() + end.bulk_dropped_holds() +
                                           end.dropped_disconnect() + end.deliveries_queued());
  EXPECT_EQ(end.bulk_held(), 0u);
  last.close();
  // A clean exit; under AddressSanitizer, LeakSanitizer finds nothing lost either.
  EXPECT_EQ(broker.stop(), 0) << broker.process().err().substr(0, 4000);
}

}  // namespace
}  // namespace ubroker::test
