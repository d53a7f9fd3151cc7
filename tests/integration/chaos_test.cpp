// Chaos: publishers (of small and of shared-memory payloads), lossless subscribers, a
// responder and a requester that survive, beside
// victim processes that are SIGKILLed and stalled (SIGSTOP) at random, while the broker itself
// is SIGKILLed and restarted on the same path. Afterwards: no survivor saw a duplicate or a
// reordering, every gap in a survivor's stream lines up with a connection that broke, every
// message published once things settled reached every survivor, every request ended, and the
// broker's books balance. UBROKER_CHAOS_SECONDS sets the length (default 12).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "broker_process.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;

constexpr int kPublishers = 2;
constexpr std::uint64_t kFinalBatch = 1000;
constexpr std::size_t kBulkSize = 100 * 1024;  // above shm_threshold: through shared memory
constexpr std::uint64_t kFinalBulk = 20;

std::vector<std::byte> bulk_payload(std::uint64_t seq) {
  std::vector<std::byte> p(kBulkSize, static_cast<std::byte>(seq * 31 + 7));
  std::memcpy(p.data(), &seq, sizeof seq);
  return p;
}

// A survivor's bulk stream: sequence numbers in arrival order, and payloads that were not
// what was published.
struct BulkStream {
  std::mutex mu;
  std::vector<std::uint64_t> seqs;
  std::uint64_t corrupt = 0;
  void add(const MessageView& m) {
    std::uint64_t seq = 0;
    bool ok = m.payload.size() == kBulkSize && m.shared_memory;
    if (ok) {
      std::memcpy(&seq, m.payload.data(), sizeof seq);
      const auto fill = static_cast<std::byte>(seq * 31 + 7);
      ok = std::all_of(m.payload.begin() + sizeof seq, m.payload.end(), [&](std::byte b) { return b == fill; });
    }
    std::lock_guard lk(mu);
    if (!ok) ++corrupt;
    seqs.push_back(seq);
  }
};

ConnectOptions survivor(const BrokerProcess& broker, const std::string& name) {
  return {.address = broker.socket(),
          .name = name,
          .reconnect = {.initial_delay = 20ms, .max_delay = 400ms},
          .offline_buffer_bytes = 1u << 20};
}

// One survivor subscriber's view: per publisher, the sequence numbers in arrival order.
struct Stream {
  std::mutex mu;
  std::map<int, std::vector<std::uint64_t>> by_publisher;
  void add(std::string_view text) {
    const auto space = text.find(' ');
    const int pub = std::stoi(std::string(text.substr(0, space)));
    const std::uint64_t seq = std::stoull(std::string(text.substr(space + 1)));
    std::lock_guard lk(mu);
    by_publisher[pub].push_back(seq);
  }
};

struct Victims {
  const BrokerProcess& broker;
  std::vector<std::optional<Process>> procs;  // optional: a Process is not assignable
  std::vector<int> kinds;

  Process spawn(int kind) {
    switch (kind) {
      case 0: return Process::spawn({UBROKER_TEST_PEER, "subscribe", broker.socket(), "chaos.pub.*", "1000000000"});
      case 1: return Process::spawn({UBROKER_TEST_PEER, "publish", broker.socket(), "chaos.victim", "1000000", "64", "9"});
      case 2: return Process::spawn({UBROKER_TEST_PEER, "serve", broker.socket(), "chaos.svc", "echo"});
      case 3:
        return Process::spawn({UBROKER_TEST_PEER, "bulk-publish", broker.socket(), "chaos.bulk.victim", "1000000",
                               "200000", "1048576", "0"});
      default:
        return Process::spawn({UBROKER_TEST_PEER, "bulk-subscribe", broker.socket(), "chaos.bulk.*", "1000000000",
                               "check"});
    }
  }
  void start(int n) {
    for (int i = 0; i < n; ++i) {
      kinds.push_back(i % 5);
      procs.emplace_back(spawn(i % 5));
    }
  }
  // Victims that died with the broker (they do not reconnect) come back.
  void respawn_dead() {
    for (std::size_t i = 0; i < procs.size(); ++i) {
      if (procs[i]->wait(0ms)) procs[i].emplace(spawn(kinds[i]));
    }
  }
};

TEST(Chaos, KillsStallsAndBrokerRestartsLoseNothingUncounted) {
  const char* env = std::getenv("UBROKER_CHAOS_SECONDS");
  const auto duration = std::chrono::seconds(env != nullptr ? std::atoi(env) : 12);
  BrokerProcess broker("[limits]\nqueue_max_messages = 20000\n[timeouts]\nslow_consumer_ms = 1000\n");

  Stream streams[2];
  BulkStream bulk_streams[2];
  std::vector<Client> subscribers;
  std::vector<Subscription> subs;
  for (int i = 0; i < 2; ++i) {
    auto c = Client::connect(survivor(broker, "survivor-sub"));
    ASSERT_TRUE(c.has_value()) << c.error().message;
    subscribers.push_back(std::move(*c));
    auto s = subscribers.back().subscribe("chaos.pub.*", [&, i](const MessageView& m) { streams[i].add(m.text()); });
    ASSERT_TRUE(s.has_value());
    subs.push_back(std::move(*s));
    auto b = subscribers.back().subscribe("chaos.bulk.survivor", [&, i](const MessageView& m) { bulk_streams[i].add(m); });
    ASSERT_TRUE(b.has_value());
    subs.push_back(std::move(*b));
  }
  auto responder = Client::connect(survivor(broker, "survivor-responder"));
  ASSERT_TRUE(responder.has_value());
  auto service = responder->serve("chaos.svc", [](Request r) { (void)r.reply(r.text()); });
  ASSERT_TRUE(service.has_value());

  // Publishers: a publish the library refused is tried again, so every number is published once.
  std::atomic<bool> stop_publishing{false};
  std::vector<Client> publishers;
  std::vector<std::uint64_t> published(kPublishers, 0);
  for (int p = 0; p < kPublishers; ++p) {
    auto c = Client::connect(survivor(broker, "survivor-pub"));
    ASSERT_TRUE(c.has_value());
    publishers.push_back(std::move(*c));
  }
  auto publish_one = [&](int p) {
    const std::string topic = "chaos.pub." + std::to_string(p);
    for (;;) {
      if (publishers[static_cast<std::size_t>(p)].publish(topic, std::to_string(p) + " " + std::to_string(published[static_cast<std::size_t>(p)]))) {
        ++published[static_cast<std::size_t>(p)];
        return;
      }
      std::this_thread::sleep_for(2ms);  // not connected and the buffer is full: wait for the broker
    }
  };
  std::vector<std::thread> publisher_threads;
  for (int p = 0; p < kPublishers; ++p) {
    publisher_threads.emplace_back([&, p] {
      while (!stop_publishing) {
        publish_one(p);
        std::this_thread::sleep_for(300us);  // a few thousand a second: sanitizer builds keep up
      }
    });
  }
  // A shared-memory publisher: its ring is registered again with each new broker.
  auto bulk_publisher = Client::connect(survivor(broker, "survivor-bulk"));
  ASSERT_TRUE(bulk_publisher.has_value());
  std::uint64_t bulk_published = 0;
  auto publish_bulk = [&] {
    while (!bulk_publisher->publish("chaos.bulk.survivor", bulk_payload(bulk_published))) {
      std::this_thread::sleep_for(5ms);  // no ring while disconnected
    }
    ++bulk_published;
  };
  publisher_threads.emplace_back([&] {
    while (!stop_publishing) {
      publish_bulk();
      std::this_thread::sleep_for(10ms);
    }
  });
  std::atomic<bool> stop_requesting{false};
  std::map<Errc, int> request_failures;
  int request_successes = 0;
  auto requester = Client::connect(survivor(broker, "survivor-requester"));
  ASSERT_TRUE(requester.has_value());
  std::thread requesting([&] {
    while (!stop_requesting) {
      auto r = requester->request("chaos.svc", "ping", 2s);
      if (r) {
        ++request_successes;
      } else {
        ++request_failures[r.error().code];
        std::this_thread::sleep_for(5ms);
      }
    }
  });

  Victims victims{broker, {}, {}};
  victims.start(10);
  std::mt19937 rng(12345);
  int broker_restarts = 0, victims_killed = 0, stalls = 0;
  const auto start = std::chrono::steady_clock::now();
  auto next_restart = start + 3s;
  while (std::chrono::steady_clock::now() - start < duration) {
    std::this_thread::sleep_for(100ms);
    if (std::chrono::steady_clock::now() >= next_restart) {
      broker.kill();
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 300));
      broker.restart();
      ++broker_restarts;
      next_restart = std::chrono::steady_clock::now() + 3s;
      victims.respawn_dead();
      continue;
    }
    Process& victim = *victims.procs[rng() % victims.procs.size()];
    if (rng() % 3 == 0) {
      victim.signal(SIGSTOP);  // a stall: long ones are cut off as slow consumers
      std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 1500));
      victim.signal(SIGCONT);
      ++stalls;
    } else {
      victim.signal(SIGKILL);
      ++victims_killed;
    }
    victims.respawn_dead();
  }
  for (auto& v : victims.procs) v->signal(SIGKILL);
  stop_requesting = true;
  requesting.join();
  stop_publishing = true;
  for (auto& t : publisher_threads) t.join();

  // Settled: everyone connected and subscribed again, then a final batch that must arrive whole.
  auto all_connected = [&] {
    for (Client* c : {&subscribers[0], &subscribers[1], &publishers[0], &publishers[1], &*bulk_publisher}) {
      if (!c->connected()) return false;
    }
    return true;
  };
  ASSERT_TRUE(eventually(all_connected, 20s));
  // A flush cut short by one more reconnect (a survivor starved of CPU can be cut off as slow
  // too) is tried again: what counts is a subscription in place before the final batch.
  auto flush_settled = [](Client& c) {
    Error last{};
    EXPECT_TRUE(eventually([&] {
      auto f = c.flush(5s);
      if (!f) last = f.error();
      return f.has_value();
    }, 20s)) << last.message;
  };
  for (Client& c : subscribers) flush_settled(c);
  std::vector<std::uint64_t> final_from(kPublishers);
  for (int p = 0; p < kPublishers; ++p) {
    final_from[static_cast<std::size_t>(p)] = published[static_cast<std::size_t>(p)];
    for (std::uint64_t i = 0; i < kFinalBatch; ++i) publish_one(p);
    flush_settled(publishers[static_cast<std::size_t>(p)]);
  }
  const std::uint64_t final_bulk_from = bulk_published;
  for (std::uint64_t i = 0; i < kFinalBulk; ++i) publish_bulk();
  flush_settled(*bulk_publisher);
  for (Stream& s : streams) {
    ASSERT_TRUE(eventually([&] {
      std::lock_guard lk(s.mu);
      for (int p = 0; p < kPublishers; ++p) {
        const auto& seqs = s.by_publisher[p];
        if (seqs.empty() || seqs.back() + 1 != published[static_cast<std::size_t>(p)]) return false;
      }
      return true;
    }, 20s));
  }

  for (BulkStream& s : bulk_streams) {
    ASSERT_TRUE(eventually([&] {
      std::lock_guard lk(s.mu);
      return !s.seqs.empty() && s.seqs.back() + 1 == bulk_published;
    }, 20s));
  }
  std::printf("chaos: %d broker restarts, %d victims killed, %d stalls; published %llu and %llu, %llu bulk; requests: "
              "%d answered, %d failed\n",
              broker_restarts, victims_killed, stalls, static_cast<unsigned long long>(published[0]),
              static_cast<unsigned long long>(published[1]), static_cast<unsigned long long>(bulk_published),
              request_successes,
              [&] { int n = 0; for (auto& [c, k] : request_failures) n += k; return n; }());
  EXPECT_GE(broker_restarts, 2);
  for (int i = 0; i < 2; ++i) {
    std::lock_guard lk(streams[i].mu);
    const std::uint64_t sub_breaks = subscribers[static_cast<std::size_t>(i)].stats().reconnects;
    for (int p = 0; p < kPublishers; ++p) {
      const auto& seqs = streams[i].by_publisher[p];
      const std::uint64_t pub_breaks = publishers[static_cast<std::size_t>(p)].stats().reconnects;
      std::uint64_t gaps = 0, missing = 0;
      for (std::size_t k = 1; k < seqs.size(); ++k) {
        ASSERT_GT(seqs[k], seqs[k - 1]) << "subscriber " << i << " publisher " << p << ": duplicate or reordering at " << k;
        if (seqs[k] != seqs[k - 1] + 1) {
          ++gaps;
          missing += seqs[k] - seqs[k - 1] - 1;
        }
      }
      std::printf("subscriber %d, publisher %d: %zu received, %llu missing in %llu gaps; %llu + %llu reconnects\n", i,
                  p, seqs.size(), static_cast<unsigned long long>(missing), static_cast<unsigned long long>(gaps),
                  static_cast<unsigned long long>(sub_breaks), static_cast<unsigned long long>(pub_breaks));
      // A stream only breaks where a connection did.
      EXPECT_LE(gaps, sub_breaks + pub_breaks) << "subscriber " << i << " publisher " << p;
      // The final batch arrived whole.
      const auto from = std::find(seqs.begin(), seqs.end(), final_from[static_cast<std::size_t>(p)]);
      ASSERT_NE(from, seqs.end());
      EXPECT_EQ(static_cast<std::uint64_t>(seqs.end() - from), kFinalBatch);
    }
  }
  for (int i = 0; i < 2; ++i) {
    std::lock_guard lk(bulk_streams[i].mu);
    const auto& seqs = bulk_streams[i].seqs;
    EXPECT_EQ(bulk_streams[i].corrupt, 0u) << "subscriber " << i << ": bulk payloads not as published";
    std::uint64_t gaps = 0;
    for (std::size_t k = 1; k < seqs.size(); ++k) {
      ASSERT_GT(seqs[k], seqs[k - 1]) << "subscriber " << i << ": bulk duplicate or reordering at " << k;
      gaps += seqs[k] != seqs[k - 1] + 1 ? 1 : 0;
    }
    std::printf("subscriber %d, bulk: %zu received in %llu gaps\n", i, seqs.size(), static_cast<unsigned long long>(gaps));
    EXPECT_LE(gaps, subscribers[static_cast<std::size_t>(i)].stats().reconnects + bulk_publisher->stats().reconnects);
    const auto from = std::find(seqs.begin(), seqs.end(), final_bulk_from);
    ASSERT_NE(from, seqs.end());
    EXPECT_EQ(static_cast<std::uint64_t>(seqs.end() - from), kFinalBulk);
  }
  EXPECT_GT(request_successes, 0);
  for (const auto& [code, n] : request_failures) {
    EXPECT_TRUE(code == Errc::kBrokerGone || code == Errc::kNotConnected || code == Errc::kNoResponders ||
                code == Errc::kResponderGone || code == Errc::kTimeout)
        << to_string(code) << " x" << n;
  }
  auto st = broker_status(subscribers[0]);
  ASSERT_TRUE(eventually([&] {
    st = broker_status(subscribers[0]);
    return st.deliveries_queued() == 0;
  }));
  EXPECT_EQ(st.deliveries_accepted(), st.deliveries_written() + st.dropped_overflow() + st.bulk_dropped_fds() + st.bulk_dropped_holds() +
                                          st.dropped_disconnect() + st.deliveries_queued());
}

}  // namespace
}  // namespace ubroker::test
