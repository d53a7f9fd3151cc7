// Clients across a broker's crash and restart on the same socket path: reconnecting with
// backoff, subscriptions and services restored, requests in flight failed with BROKER_GONE,
// publishes refused or buffered while disconnected, and the shared-memory ring renewed.
#include <gtest/gtest.h>

#include <signal.h>

#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>

#include "broker_process.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;

// What on_connection reported, in order.
struct ChangeLog {
  std::mutex mu;
  std::vector<ConnectionChange> changes;

  std::function<void(const ConnectionChange&)> recorder() {
    return [this](const ConnectionChange& c) {
      std::lock_guard lk(mu);
      changes.push_back(c);
    };
  }
  std::size_t count(ConnectionEvent e) {
    std::lock_guard lk(mu);
    return static_cast<std::size_t>(
        std::count_if(changes.begin(), changes.end(), [&](const ConnectionChange& c) { return c.event == e; }));
  }
  std::vector<ConnectionChange> snapshot() {
    std::lock_guard lk(mu);
    return changes;
  }
};

Client connect_reconnecting(const BrokerProcess& broker, ChangeLog& log, ConnectOptions options = {}) {
  options.address = broker.socket();
  options.name = "reconnecting";
  options.on_connection = log.recorder();
  auto c = Client::connect(std::move(options));
  if (!c) throw std::runtime_error(c.error().message);
  return std::move(*c);
}

TEST(Reconnect, AfterACrashSubscriptionsAndServicesComeBack) {
  BrokerProcess broker;
  ChangeLog log;
  Client client = connect_reconnecting(broker, log);
  std::atomic<int> got{0};
  auto sub = client.subscribe("news.>", [&](const MessageView& m) {
    if (m.text() == "after the restart") ++got;
  });
  ASSERT_TRUE(sub.has_value());
  auto queued = client.subscribe("queued");
  ASSERT_TRUE(queued.has_value());
  auto service = client.serve("svc.echo", [](Request r) { (void)r.reply(r.text()); });
  ASSERT_TRUE(service.has_value());

  broker.kill();
  ASSERT_TRUE(eventually([&] { return log.count(ConnectionEvent::kDisconnected) == 1; }));
  EXPECT_FALSE(client.connected());
  auto refused = client.publish("news.x", "while down");
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, Errc::kNotConnected) << refused.error().message;
  auto no_sub = client.subscribe("other");
  ASSERT_FALSE(no_sub.has_value());
  EXPECT_EQ(no_sub.error().code, Errc::kNotConnected);

  broker.restart();
  ASSERT_TRUE(eventually([&] { return client.connected(); }, 10s));
  EXPECT_TRUE(eventually([&] { return log.count(ConnectionEvent::kReconnected) == 1; }));
  EXPECT_EQ(client.stats().reconnects, 1u);
  EXPECT_NE(client.id(), 0u);  // a new broker numbers clients afresh: the id may or may not repeat
  ASSERT_TRUE(client.flush().has_value());  // the restore frames went first: all in place now

  Client other = broker.connect("other");
  ASSERT_TRUE(other.publish("news.today", "after the restart").has_value());
  ASSERT_TRUE(other.publish("queued", "waiting").has_value());
  EXPECT_TRUE(eventually([&] { return got == 1; }));
  auto m = client.receive(5s);
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_EQ(m->text(), "waiting");
  EXPECT_EQ(m->subscription(), queued->id());
  auto reply = other.request("svc.echo", "ping", 5s);
  ASSERT_TRUE(reply.has_value()) << reply.error().message;
  EXPECT_EQ(reply->text(), "ping");
  // Unsubscribing a restored subscription works against the new broker.
  EXPECT_TRUE(sub->unsubscribe().has_value());
  EXPECT_EQ(broker.stop(), 0);
}

TEST(Reconnect, ARequestInFlightFailsAtOnceWithBrokerGone) {
  BrokerProcess broker;
  Client responder = broker.connect("silent");
  std::vector<Request> held;  // never answered
  std::mutex mu;
  auto service = responder.serve("svc.silent", [&](Request r) {
    std::lock_guard lk(mu);
    held.push_back(std::move(r));
  });
  ASSERT_TRUE(service.has_value());
  ChangeLog log;
  Client caller = connect_reconnecting(broker, log);
  std::promise<Result<Message>> async_done;
  caller.request_async("svc.silent", {}, 60s, [&](Result<Message> r) { async_done.set_value(std::move(r)); });
  std::optional<Result<Message>> answer;
  std::thread waiting([&] { answer = caller.request("svc.silent", "hello", 60s); });
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(mu);
    return held.size() == 2;
  }));
  const auto killed = std::chrono::steady_clock::now();
  broker.kill();
  waiting.join();
  const auto waited = std::chrono::steady_clock::now() - killed;
  ASSERT_TRUE(answer.has_value());
  ASSERT_FALSE(answer->has_value());
  EXPECT_EQ(answer->error().code, Errc::kBrokerGone) << answer->error().message;
  EXPECT_LT(waited, 30s);  // not the request's 60 s deadline
  auto async_result = async_done.get_future().get();
  ASSERT_FALSE(async_result.has_value());
  EXPECT_EQ(async_result.error().code, Errc::kBrokerGone);
}

TEST(Reconnect, OfflineBufferHoldsPublishesUpToItsBoundAndSendsThemAfterTheRestore) {
  BrokerProcess broker;
  ChangeLog log;
  Client client = connect_reconnecting(broker, log, {.offline_buffer_bytes = 4096});
  std::mutex mu;
  std::vector<std::string> seen;
  auto sub = client.subscribe("buffered", [&](const MessageView& m) {
    std::lock_guard lk(mu);
    seen.emplace_back(m.text());
  });
  ASSERT_TRUE(sub.has_value());
  broker.kill();
  ASSERT_TRUE(eventually([&] { return log.count(ConnectionEvent::kDisconnected) == 1; }));
  const std::string payload(100, 'x');
  int accepted = 0;
  Error overflow{};
  for (int i = 0; i < 1000; ++i) {
    auto r = client.publish("buffered", std::to_string(i) + payload);
    if (!r) {
      overflow = r.error();
      break;
    }
    ++accepted;
  }
  EXPECT_EQ(overflow.code, Errc::kBufferFull) << overflow.message;
  EXPECT_NE(overflow.message.find("offline_buffer_bytes"), std::string::npos) << overflow.message;
  EXPECT_GT(accepted, 20);   // ~130-byte frames in 4 KiB
  EXPECT_LT(accepted, 4096 / 100);
  EXPECT_EQ(client.stats().publishes_buffered, static_cast<std::uint64_t>(accepted));

  broker.restart();
  // The client's own subscription is restored before its buffered publishes go out, so it
  // receives every one of them, in order.
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(mu);
    return seen.size() == static_cast<std::size_t>(accepted);
  }, 10s)) << seen.size() << " of " << accepted;
  std::lock_guard lk(mu);
  for (int i = 0; i < accepted; ++i) EXPECT_EQ(seen[static_cast<std::size_t>(i)], std::to_string(i) + payload);
  EXPECT_EQ(client.stats().publishes_discarded, 0u);
}

TEST(Reconnect, PublishesNotFullyWrittenAreSentAgainInOrder) {
  BrokerProcess broker;
  ChangeLog log;
  Client client =
      connect_reconnecting(broker, log, {.max_pending_bytes = 64 * 1024, .offline_buffer_bytes = 1u << 20});
  std::mutex mu;
  std::vector<std::uint64_t> seen;
  auto sub = client.subscribe("seq", [&](const MessageView& m) {
    std::lock_guard lk(mu);
    seen.push_back(std::stoull(std::string(m.text())));
  });
  ASSERT_TRUE(sub.has_value());
  // A stopped broker reads nothing: the socket's buffer fills, then the client's own.
  broker.process().signal(SIGSTOP);
  std::atomic<std::uint64_t> accepted{0};
  std::thread publisher([&] {
    const std::string pad(200, '.');
    for (std::uint64_t i = 0; i < 20'000; ++i) {
      if (!client.publish("seq", std::to_string(i) + " " + pad)) return;
      accepted = i + 1;
    }
  });
  // Blocked: its buffer is full and the broker does not read.
  for (std::uint64_t before = ~0ull; before != accepted.load();) {
    before = accepted.load();
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_GT(accepted.load(), 0u);
  ASSERT_LT(accepted.load(), 20'000u);
  broker.kill();  // what sat in the dead broker's socket buffer is lost with it
  publisher.join();
  broker.restart();
  ASSERT_TRUE(eventually([&] { return client.connected(); }, 10s));
  ASSERT_TRUE(client.flush().has_value());
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(mu);
    return !seen.empty() && seen.back() + 1 == accepted.load();
  }, 10s));
  std::lock_guard lk(mu);
  // Exactly a suffix of what was published, in order: no gap, no duplicate.
  const std::uint64_t first = seen.front();
  for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], first + i);
  EXPECT_GT(first, 0u);  // the messages the kernel had taken for the dead broker
  const ClientStats st = client.stats();
  EXPECT_GT(st.publishes_resent, 0u);
  EXPECT_EQ(st.publishes_resent + st.publishes_buffered, seen.size());
  EXPECT_EQ(st.publishes_discarded, 0u);
}

TEST(Reconnect, BacksOffAndGivesUpAfterMaxAttempts) {
  BrokerProcess broker;
  ChangeLog log;
  Client client =
      connect_reconnecting(broker, log, {.reconnect = {.initial_delay = 100ms, .max_delay = 400ms, .max_attempts = 4}});
  broker.kill();
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return log.count(ConnectionEvent::kClosed) == 1; }, 20s));
  // Waits of at least 50, 100, 200 and 200 ms (half of 100, 200, 400, 400): never faster.
  EXPECT_GE(std::chrono::steady_clock::now() - killed, 550ms);
  const auto changes = log.snapshot();
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_EQ(changes[1].event, ConnectionEvent::kDisconnected);
  EXPECT_EQ(changes[2].event, ConnectionEvent::kClosed);
  EXPECT_EQ(changes[2].attempts, 4u);
  ASSERT_TRUE(changes[2].reason.has_value());
  EXPECT_NE(changes[2].reason->message.find("gave up reconnecting after 4 attempts"), std::string::npos)
      << changes[2].reason->message;
  // Closed for good: even a broker that comes back is not dialled again.
  broker.restart();
  std::this_thread::sleep_for(500ms);
  EXPECT_FALSE(client.connected());
  EXPECT_EQ(client.publish("x", "y").error().code, Errc::kNotConnected);
}

TEST(Reconnect, TurnedOffALostConnectionClosesTheClient) {
  BrokerProcess broker;
  ChangeLog log;
  Client client = connect_reconnecting(broker, log, {.reconnect = {.enabled = false}});
  ASSERT_TRUE(client.publish("t", "x").has_value());
  broker.kill();
  ASSERT_TRUE(eventually([&] { return log.count(ConnectionEvent::kClosed) == 1; }));
  EXPECT_EQ(log.count(ConnectionEvent::kDisconnected), 0u);
  auto r = client.receive(100ms);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kNotConnected);  // at once, not a timeout
}

TEST(Reconnect, AKickedClientStaysOut) {
  BrokerProcess broker;
  ChangeLog log;
  Client client = connect_reconnecting(broker, log);
  Client admin = broker.connect("admin");
  wire::KickRequest kick;
  kick.set_client_id(client.id());
  const std::string body = kick.SerializeAsString();
  auto kicked = admin.request("$sys.admin.kick", body, 5s);
  ASSERT_TRUE(kicked.has_value()) << kicked.error().message;
  ASSERT_TRUE(eventually([&] { return log.count(ConnectionEvent::kClosed) == 1; }));
  EXPECT_EQ(client.disconnect_reason()->code, Errc::kKicked);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(client.stats().reconnects, 0u);
}

TEST(Reconnect, ALoanFromBeforeTheCrashIsRefusedAndANewRingWorks) {
  BrokerProcess broker;
  ChangeLog log;
  Client producer = connect_reconnecting(broker, log, {.shm_segment_bytes = 1u << 20});
  auto old_loan = producer.loan("bulk", 4096);
  ASSERT_TRUE(old_loan.has_value()) << old_loan.error().message;
  broker.kill();
  broker.restart();
  ASSERT_TRUE(eventually([&] { return producer.connected(); }, 10s));
  Client reader = broker.connect("reader");
  auto sub = reader.subscribe("bulk");
  ASSERT_TRUE(sub.has_value());
  auto stale = producer.publish(std::move(*old_loan));
  ASSERT_FALSE(stale.has_value());
  EXPECT_EQ(stale.error().code, Errc::kInvalidArgument);
  EXPECT_NE(stale.error().message.find("connection lost"), std::string::npos) << stale.error().message;
  auto fresh = producer.loan("bulk", 4096);
  ASSERT_TRUE(fresh.has_value()) << fresh.error().message;
  std::memset(fresh->data().data(), 0x5a, fresh->size());
  ASSERT_TRUE(producer.publish(std::move(*fresh)).has_value());
  auto m = reader.receive(5s);
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_TRUE(m->shared_memory());
  ASSERT_EQ(m->payload().size(), 4096u);
  EXPECT_EQ(m->payload()[4095], std::byte{0x5a});
}

TEST(Reconnect, ManyClientsComeBackAfterARestart) {
  raise_fd_limit();
  BrokerProcess broker;
  constexpr int kClients = 100;
  std::vector<Client> clients;
  std::vector<Subscription> subs;
  std::atomic<int> got{0};
  for (int i = 0; i < kClients; ++i) {
    auto c = Client::connect({.address = broker.socket(), .name = "many"});
    ASSERT_TRUE(c.has_value()) << c.error().message;
    clients.push_back(std::move(*c));
    auto s = clients.back().subscribe("all", [&](const MessageView&) { ++got; });
    ASSERT_TRUE(s.has_value());
    subs.push_back(std::move(*s));
  }
  broker.kill();
  broker.restart();
  ASSERT_TRUE(eventually([&] {
    return std::all_of(clients.begin(), clients.end(), [](const Client& c) { return c.connected(); });
  }, 20s));
  for (Client& c : clients) ASSERT_TRUE(c.flush().has_value());
  Client pub = broker.connect("pub");
  ASSERT_TRUE(pub.publish("all", "hello").has_value());
  EXPECT_TRUE(eventually([&] { return got == kClients; })) << got.load();
  const auto status = broker_status(pub);
  EXPECT_EQ(status.connections(), static_cast<std::uint64_t>(kClients + 1));
}

}  // namespace
}  // namespace ubroker::test
