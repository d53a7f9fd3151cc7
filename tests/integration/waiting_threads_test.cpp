// Threads that wait on one client (receive(), request(), flush()) while its loop is run by the
// I/O thread or by one of them (leader/followers, client/io_thread.hpp): every waiter gets its
// own answer, callbacks keep running whoever runs the loop, and nothing is left unread when
// nobody waits.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "broker_process.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using std::chrono::seconds;

std::span<const std::byte> bytes(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }
std::string text(std::span<const std::byte> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

Client connect(BrokerProcess& broker, const std::string& name) {
  return std::move(Client::connect({.address = broker.socket(), .name = name}).value());
}

TEST(WaitingThreads, ManyThreadsWaitingOnOneClientEachGetTheirOwnAnswer) {
  BrokerProcess broker;
  Client responder = connect(broker, "echo");
  auto service = responder.serve("echo", [](Request r) { (void)r.reply(r.payload()); });
  ASSERT_TRUE(service.has_value());
  Client caller = connect(broker, "caller");
  constexpr int kThreads = 4;
  constexpr int kCalls = 400;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const std::string body = std::to_string(t) + "/" + std::to_string(i);
        auto reply = caller.request("echo", bytes(body), seconds(10));
        if (!reply || text(reply->payload()) != body) wrong.fetch_add(1);
        if (i % 50 == 0 && !caller.flush(seconds(10))) wrong.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(WaitingThreads, CallbacksRunWhileAnotherThreadWaitsInReceive) {
  BrokerProcess broker;
  Client c = connect(broker, "mixed");
  auto queued = c.subscribe("queued");
  ASSERT_TRUE(queued.has_value());
  // A thread waits in receive() with no callback on the client yet: it may run the loop itself.
  auto waiting = std::async(std::launch::async, [&] { return c.receive(seconds(30)); });
  // A callback added meanwhile (its ACK reaches this follower through whoever runs the loop)
  // gets its messages while that thread still waits.
  std::atomic<int> calls{0};
  auto cb = c.subscribe("called", [&](const MessageView&) { calls.fetch_add(1); });
  ASSERT_TRUE(cb.has_value());
  Client pub = connect(broker, "pub");
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(pub.publish("called", bytes("x")));
  ASSERT_TRUE(pub.flush(seconds(10)));
  EXPECT_TRUE(eventually([&] { return calls.load() == 100; })) << calls.load();
  EXPECT_EQ(waiting.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  ASSERT_TRUE(pub.publish("queued", bytes("for the waiter")));
  auto m = waiting.get();
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_EQ(text(m->payload()), "for the waiter");
  // Nobody waits now: callbacks still run.
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(pub.publish("called", bytes("y")));
  EXPECT_TRUE(eventually([&] { return calls.load() == 200; })) << calls.load();
}

TEST(WaitingThreads, MessagesThatCameWhileNobodyWaitedAreReceivedInOrder) {
  BrokerProcess broker;
  Client c = connect(broker, "blocking");
  auto s = c.subscribe("t");
  ASSERT_TRUE(s.has_value());
  Client pub = connect(broker, "pub");
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 500; ++i) ASSERT_TRUE(pub.publish("t", bytes(std::to_string(round * 500 + i))));
    ASSERT_TRUE(pub.flush(seconds(10)));
    for (int i = 0; i < 500; ++i) {
      auto m = c.receive(seconds(10));
      ASSERT_TRUE(m.has_value()) << m.error().message;
      ASSERT_EQ(text(m->payload()), std::to_string(round * 500 + i));
    }
  }
}

TEST(WaitingThreads, APollingLoopOfZeroTimeoutReceivesGetsEveryMessage) {
  BrokerProcess broker;
  Client c = connect(broker, "polling");
  auto s = c.subscribe("polled");
  ASSERT_TRUE(s.has_value());
  ASSERT_TRUE(c.flush(seconds(10)));  // a blocking call just ended: the I/O thread may linger
  Client pub = connect(broker, "pub");
  constexpr int kCount = 200;
  for (int i = 0; i < kCount; ++i) ASSERT_TRUE(pub.publish("polled", std::to_string(i)));
  // A game loop: poll, do a frame's work, poll again, never waiting.
  int got = 0;
  EXPECT_TRUE(eventually([&] {
    while (auto m = c.receive(std::chrono::milliseconds(0))) {
      EXPECT_EQ(text(m->payload()), std::to_string(got));
      ++got;
    }
    return got == kCount;
  })) << got;
}

TEST(WaitingThreads, CloseFromAnotherThreadEndsAWaitingReceive) {
  BrokerProcess broker;
  Client c = connect(broker, "closing");
  auto s = c.subscribe("never");
  ASSERT_TRUE(s.has_value());
  auto waiting = std::async(std::launch::async, [&] { return c.receive(seconds(60)); });
  ASSERT_TRUE(c.flush(seconds(10)));  // both threads waiting at once, one of them following
  c.close();
  ASSERT_EQ(waiting.wait_for(seconds(30)), std::future_status::ready);
  auto m = waiting.get();
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code, Errc::kNotConnected);
}

TEST(WaitingThreads, ALostConnectionIsNoticedWhileNobodyWaits) {
  BrokerProcess broker;
  ConnectOptions options{.address = broker.socket(), .name = "idle"};
  options.reconnect.enabled = false;
  auto c = Client::connect(std::move(options));
  ASSERT_TRUE(c.has_value());
  ASSERT_TRUE(c->flush(seconds(10)));  // a blocking call, after which nobody waits
  broker.kill();
  EXPECT_TRUE(eventually([&] { return !c->connected(); }));
}

// A signal sent to the process (Ctrl-C's SIGINT) must reach the application's threads, not
// one of the library's: there its handler would run while the application's own blocking
// call went on (brokerctl `pub` sat in read() after Ctrl-C). Which thread the kernel picks
// is a race, so this reads the masks of the library's threads, found by their names.
struct ThreadMask {
  std::string name;
  std::uint64_t blocked = 0;
};

std::vector<ThreadMask> library_threads() {
  std::vector<ThreadMask> found;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream status(task.path() / "status");
    ThreadMask t;
    for (std::string line; std::getline(status, line);) {
      if (line.starts_with("Name:\t")) t.name = line.substr(6);
      if (line.starts_with("SigBlk:")) t.blocked = std::stoull(line.substr(7), nullptr, 16);
    }
    if (t.name.starts_with("ubroker-")) found.push_back(t);
  }
  return found;
}

void expect_blocked(const std::vector<ThreadMask>& threads) {
  for (const ThreadMask& t : threads) {
    for (int sig : {SIGINT, SIGTERM, SIGUSR1}) {
      EXPECT_NE(t.blocked & (std::uint64_t{1} << (sig - 1)), 0u) << t.name << " takes signal " << sig;
    }
  }
}

TEST(WaitingThreads, SignalsForTheProcessGoToTheApplicationsThreadsNotTheLibrarys) {
  BrokerProcess broker;
  Client c = connect(broker, "quiet");
  ASSERT_TRUE(c.flush(seconds(10)));
  ASSERT_EQ(library_threads().size(), 1u);  // the I/O thread
  expect_blocked(library_threads());
  broker.kill();  // the client's reconnect thread starts, and keeps trying
  ASSERT_TRUE(eventually([&] { return library_threads().size() == 2; }));
  expect_blocked(library_threads());
}

}  // namespace
}  // namespace ubroker::test
