// Publish/subscribe end to end against a real brokerd: separate processes, wildcards, queue
// groups, per-publisher order, sender identity, unsubscribe.
#include <gtest/gtest.h>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <sys/socket.h>

#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "broker_process.hpp"
#include "test_util.hpp"
#include "ubroker/proto/socket_address.hpp"

namespace ubroker::test {
namespace {

void expect_peer_ok(Process& p) {
  auto st = p.wait(std::chrono::seconds(120));
  ASSERT_TRUE(st.has_value()) << "peer did not finish";
  EXPECT_EQ(exit_code(*st), 0) << p.err();
}

TEST(PubSub, BetweenProcessesWithSenderIdentity) {
  BrokerProcess broker;
  Client sub = broker.connect("sub");
  auto s = sub.subscribe("data.stream");
  ASSERT_TRUE(s.has_value()) << s.error().message;
  Process peer = publish_from_peer(broker, "data.stream", 1000, 64, 7);
  for (std::uint64_t i = 0; i < 1000; ++i) {
    auto m = sub.receive(std::chrono::seconds(10));
    ASSERT_TRUE(m.has_value()) << i << ": " << m.error().message;
    EXPECT_EQ(m->topic(), "data.stream");
    EXPECT_EQ(m->payload().size(), 64u);
    const auto d = decode(m->payload());
    ASSERT_EQ(d.seq, i);
    EXPECT_EQ(d.tag, 7u);
    // Stamped by the broker from the kernel's credentials of the peer process.
    EXPECT_EQ(m->sender().pid, static_cast<std::uint32_t>(peer.pid()));
    EXPECT_EQ(m->sender().uid, ::getuid());
    EXPECT_NE(m->sender().client_id, sub.id());
  }
  expect_peer_ok(peer);
  EXPECT_EQ(broker.stop(), 0);
}

TEST(PubSub, Wildcards) {
  BrokerProcess broker;
  Client pub = broker.connect("pub");
  Client sub = broker.connect("sub");
  std::mutex mu;
  std::map<std::string, std::vector<std::string>> got;
  std::vector<Subscription> subs;
  for (const char* pattern : {"a.b", "a.*", "a.>", ">", "*.b.*", "x.*.z"}) {
    auto s = sub.subscribe(pattern, [&, p = std::string(pattern)](const MessageView& m) {
      std::lock_guard lk(mu);
      got[p].emplace_back(m.topic);
    });
    ASSERT_TRUE(s.has_value()) << pattern;
    subs.push_back(std::move(*s));
  }
  for (const char* topic : {"a.b", "a.b.c", "a", "x.y.z", "q.b.r"}) ASSERT_TRUE(pub.publish(topic, "m").has_value());
  ASSERT_TRUE(pub.flush().has_value());
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(mu);
    return got[">"].size() == 5;
  }));
  ASSERT_TRUE(sub.flush().has_value());  // every delivery ahead of the PONG has been dispatched
  std::lock_guard lk(mu);
  using V = std::vector<std::string>;
  EXPECT_EQ(got["a.b"], (V{"a.b"}));
  EXPECT_EQ(got["a.*"], (V{"a.b"}));
  EXPECT_EQ(got["a.>"], (V{"a.b", "a.b.c"}));
  EXPECT_EQ(got[">"], (V{"a.b", "a.b.c", "a", "x.y.z", "q.b.r"}));
  EXPECT_EQ(got["*.b.*"], (V{"a.b.c", "q.b.r"}));
  EXPECT_EQ(got["x.*.z"], (V{"x.y.z"}));
}

TEST(PubSub, InvalidPatternAndTopicAreRefusedWithCodes) {
  BrokerProcess broker;
  Client c = broker.connect();
  auto s = c.subscribe("a..b");
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code, Errc::kInvalidPattern);
  auto p = c.publish("a.*", "x");
  ASSERT_FALSE(p.has_value());
  EXPECT_EQ(p.error().code, Errc::kInvalidTopic);
  p = c.publish("$sys.client.connected", "x");
  ASSERT_FALSE(p.has_value());
  EXPECT_EQ(p.error().code, Errc::kReservedTopic);
  EXPECT_TRUE(c.flush().has_value());  // the connection is fine
}

TEST(PubSub, QueueGroupDeliversEachMessageExactlyOnce) {
  BrokerProcess broker;
  constexpr std::uint64_t kCount = 3000;
  std::mutex mu;
  std::vector<std::uint64_t> seen[3];
  std::atomic<std::uint64_t> plain{0};
  std::vector<Client> members;
  std::vector<Subscription> subs;
  for (int i = 0; i < 3; ++i) {
    members.push_back(broker.connect("worker" + std::to_string(i)));
    auto s = members.back().subscribe("jobs.>",
                                      [&, i](const MessageView& m) {
                                        std::lock_guard lk(mu);
                                        seen[i].push_back(decode(m.payload).seq);
                                      },
                                      {.group = "workers"});
    ASSERT_TRUE(s.has_value());
    subs.push_back(std::move(*s));
  }
  // A subscriber outside the group still sees everything.
  Client watcher = broker.connect("watcher");
  auto w = watcher.subscribe("jobs.>", [&](const MessageView&) { ++plain; });
  ASSERT_TRUE(w.has_value());

  Process peer = publish_from_peer(broker, "jobs.render", kCount, 32, 1);
  expect_peer_ok(peer);
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(mu);
    return seen[0].size() + seen[1].size() + seen[2].size() >= kCount && plain == kCount;
  })) << "group total short";
  for (auto& c : members) ASSERT_TRUE(c.flush().has_value());
  std::lock_guard lk(mu);
  std::set<std::uint64_t> all;
  std::size_t total = 0;
  for (auto& v : seen) {
    EXPECT_GT(v.size(), 0u) << "a member got nothing";
    EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));  // each member still sees publisher order
    all.insert(v.begin(), v.end());
    total += v.size();
  }
  EXPECT_EQ(total, kCount) << "duplicates across the group";
  EXPECT_EQ(all.size(), kCount);
  EXPECT_EQ(*all.rbegin(), kCount - 1);
  EXPECT_EQ(plain.load(), kCount);
}

TEST(PubSub, AClientWithHundredsOfMatchingSubscriptionsGetsOneCallbackEach) {
  // The broker lists at most 32 subscriptions per DELIVER (a longer head could outgrow the
  // frame size the client accepts), so this message reaches the client as several frames.
  BrokerProcess broker;
  Client sub = broker.connect("many");
  std::mutex mu;
  std::map<int, int> calls;
  std::vector<Subscription> subs;
  for (int i = 0; i < 300; ++i) {
    subs.push_back(std::move(sub.subscribe(i % 2 ? "many.>" : "many.*", [&, i](const MessageView&) {
      std::lock_guard lk(mu);
      ++calls[i];
    }).value()));
  }
  Client pub = broker.connect("pub");
  ASSERT_TRUE(pub.publish("many.x", std::string(900'000, 'p')).has_value());  // near the frame limit
  ASSERT_TRUE(pub.flush().has_value());
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(mu);
    return calls.size() == 300;
  }));
  ASSERT_TRUE(sub.flush().has_value());
  std::lock_guard lk(mu);
  for (const auto& [i, n] : calls) EXPECT_EQ(n, 1) << "subscription " << i;
}

TEST(PubSub, PerPublisherOrderWithConcurrentPublishers) {
  BrokerProcess broker;
  constexpr std::uint64_t kEach = 100000;
  std::map<std::uint64_t, std::uint64_t> next;  // tag -> expected seq (I/O thread only)
  std::atomic<std::uint64_t> received{0}, out_of_order{0};
  Client sub = broker.connect("sub");
  auto s = sub.subscribe("ordered", [&](const MessageView& m) {
    const auto d = decode(m.payload);
    if (next[d.tag] != d.seq) ++out_of_order;
    next[d.tag] = d.seq + 1;
    ++received;
  });
  ASSERT_TRUE(s.has_value());
  Process a = publish_from_peer(broker, "ordered", kEach, 64, 1);
  Process b = publish_from_peer(broker, "ordered", kEach, 64, 2);
  expect_peer_ok(a);
  expect_peer_ok(b);
  ASSERT_TRUE(eventually([&] { return received == 2 * kEach; })) << received.load();
  EXPECT_EQ(out_of_order.load(), 0u);
}

TEST(PubSub, NoCallbackAfterUnsubscribeReturns) {
  BrokerProcess broker;
  Client pub = broker.connect("pub");
  Client sub = broker.connect("sub");
  std::atomic<int> calls{0};
  auto s = sub.subscribe("t", [&](const MessageView&) { ++calls; });
  ASSERT_TRUE(s.has_value());
  ASSERT_TRUE(pub.publish("t", "1").has_value());
  ASSERT_TRUE(pub.flush().has_value());
  ASSERT_TRUE(eventually([&] { return calls == 1; }));
  auto dropped = s->unsubscribe();
  ASSERT_TRUE(dropped.has_value());
  EXPECT_EQ(*dropped, 0u);
  EXPECT_FALSE(s->active());
  ASSERT_TRUE(pub.publish("t", "2").has_value());
  ASSERT_TRUE(pub.flush().has_value());
  ASSERT_TRUE(sub.flush().has_value());  // anything in flight would have arrived by now
  EXPECT_EQ(calls.load(), 1);
}

// The broker dies while a callback runs: the unsubscribe gets no ACK, and still returns only
// once that callback has, so nothing the callback uses (here, stack variables) is touched
// after unsubscribe() returned.
TEST(PubSub, UnsubscribeWithoutTheBrokersAckWaitsForTheCallbackUnderWay) {
  BrokerProcess broker;
  Client pub = broker.connect("pub");
  Client sub = broker.connect("sub");
  std::atomic<bool> entered{false}, unsubscribing{false}, finished{false};
  auto s = sub.subscribe("t", [&](const MessageView&) {
    entered = true;
    while (!unsubscribing) std::this_thread::yield();
    // Work that takes a while, begun once the unsubscribe is under way.
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
    while (std::chrono::steady_clock::now() < until) std::this_thread::yield();
    finished = true;
  });
  ASSERT_TRUE(s.has_value());
  ASSERT_TRUE(pub.publish("t", "1").has_value());
  ASSERT_TRUE(eventually([&] { return entered.load(); }));
  broker.kill();
  unsubscribing = true;
  (void)s->unsubscribe(std::chrono::seconds(5));  // fails: the broker is gone
  EXPECT_TRUE(finished.load());
  EXPECT_FALSE(s->active());
}

// ConnectOptions::io with nobody running the context: each call that waits for the broker runs
// the context itself meanwhile, so nothing deadlocks; a call that would wait on a thread
// inside the context's run() (where waiting would hold up the loop) fails at once instead.
TEST(PubSub, AnIoContextNobodyRunsIsRunByTheCallsThatWait) {
  BrokerProcess broker;
  asio::io_context io;
  auto c = Client::connect({.address = broker.socket(), .name = "own-loop", .io = &io});
  ASSERT_TRUE(c.has_value()) << c.error().message;
  Client server = broker.connect("server");
  auto service = server.serve("loop.echo", [](Request r) { (void)r.reply(r.payload()); });
  ASSERT_TRUE(service.has_value());
  ASSERT_TRUE(c->wait_for_responder("loop.echo", std::chrono::seconds(5)).has_value());
  auto sub = c->subscribe("loop.t");
  ASSERT_TRUE(sub.has_value()) << sub.error().message;
  std::atomic<int> calls{0};
  auto cb = c->subscribe("loop.cb", [&](const MessageView&) { ++calls; });
  ASSERT_TRUE(cb.has_value()) << cb.error().message;
  ASSERT_TRUE(c->publish("loop.t", "self").has_value());
  ASSERT_TRUE(c->publish("loop.cb", "callback").has_value());
  ASSERT_TRUE(c->flush().has_value());
  auto m = c->receive(std::chrono::seconds(5));
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_EQ(m->text(), "self");
  EXPECT_EQ(calls.load(), 1);  // ran on this thread, inside flush() or receive()
  auto reply = c->request("loop.echo", "ping", std::chrono::seconds(5));
  ASSERT_TRUE(reply.has_value()) << reply.error().message;
  EXPECT_EQ(reply->text(), "ping");
  // From a handler of the same context (not the client's own), waiting is refused at once.
  std::optional<Error> refused;
  asio::post(io, [&] {
    auto f = c->flush();
    if (!f) refused = f.error();
  });
  while (!refused && io.run_one_for(std::chrono::seconds(5)) != 0) {
  }
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code, Errc::kInvalidArgument);
  EXPECT_NE(refused->message.find("io_context"), std::string::npos) << refused->message;
  EXPECT_TRUE(sub->unsubscribe().has_value());
  EXPECT_TRUE(cb->unsubscribe().has_value());
}

// ConnectOptions::manual_io: no I/O thread; poll() on the application's thread runs the
// callbacks there, fd() tells when there is work, and the calls that wait drive themselves.
TEST(PubSub, AManualClientIsDrivenByPollOnTheCallingThread) {
  BrokerProcess broker;
  auto c = Client::connect({.address = broker.socket(), .name = "manual", .manual_io = true});
  ASSERT_TRUE(c.has_value()) << c.error().message;
  std::thread::id ran_on;
  int calls = 0;
  auto s = c->subscribe("man.t", [&](const MessageView&) {
    ran_on = std::this_thread::get_id();
    ++calls;
  });
  ASSERT_TRUE(s.has_value()) << s.error().message;
  Client pub = broker.connect("pub");
  ASSERT_TRUE(pub.publish("man.t", "x").has_value());
  ASSERT_TRUE(pub.flush().has_value());
  pollfd p{.fd = c->fd(), .events = POLLIN, .revents = 0};
  ASSERT_GE(p.fd, 0);
  ASSERT_EQ(::poll(&p, 1, 5000), 1);  // the socket says there is work
  while (calls == 0) {
    auto ran = c->poll(std::chrono::seconds(5));
    ASSERT_TRUE(ran.has_value()) << ran.error().message;
    ASSERT_GT(*ran, 0u);
  }
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  auto idle = c->poll(std::chrono::milliseconds(0));
  ASSERT_TRUE(idle.has_value());
  Client server = broker.connect("server");
  auto service = server.serve("man.echo", [](Request r) { (void)r.reply(r.payload()); });
  ASSERT_TRUE(service.has_value());
  auto reply = c->request("man.echo", "hi", std::chrono::seconds(5));  // drives itself while it waits
  ASSERT_TRUE(reply.has_value()) << reply.error().message;
  EXPECT_EQ(reply->text(), "hi");
  // A client with its own I/O thread needs no driving.
  auto own = pub.poll();
  ASSERT_FALSE(own.has_value());
  EXPECT_EQ(own.error().code, Errc::kInvalidArgument);
  EXPECT_TRUE(s->unsubscribe().has_value());
  // An application asleep in its own epoll on fd() is woken for everything, a reconnect
  // included (the fd stays the same), and needs no timer.
  const int watched = c->fd();
  const int outer = ::epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(outer, 0);
  epoll_event ev{.events = EPOLLIN, .data = {.fd = watched}};
  ASSERT_EQ(::epoll_ctl(outer, EPOLL_CTL_ADD, watched, &ev), 0);
  auto drive_until = [&](const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      epoll_event out{};
      if (::epoll_wait(outer, &out, 1, 20000) == 1) (void)c->poll();
    }
    return done();
  };
  int later = 0;
  auto again = c->subscribe("man.r", [&](const MessageView&) { ++later; });  // restored on reconnect
  ASSERT_TRUE(again.has_value());
  broker.kill();
  broker.restart();
  ASSERT_TRUE(drive_until([&] { return c->connected(); })) << "not woken for the reconnect";
  EXPECT_EQ(c->fd(), watched);
  // Retained: it arrives whether the restored subscription reaches the new broker first or not.
  Client pub2 = broker.connect("pub2");
  ASSERT_TRUE(pub2.publish("man.r", "after", {.retain = true}).has_value());
  ASSERT_TRUE(pub2.flush().has_value());
  ASSERT_TRUE(drive_until([&] { return later == 1; })) << "not woken for the message";
  ::close(outer);
  // Once closed it says so, rather than reporting an endless run of empty polls.
  c->close();
  auto after = c->poll(std::chrono::seconds(1));
  ASSERT_FALSE(after.has_value());
  EXPECT_EQ(after.error().code, Errc::kNotConnected);
}

// The same with or without coalesced writes (ConnectOptions::coalesce_writes: the client's
// loop writes what the threads append).
class PublishingThreads : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(PubSub, PublishingThreads, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "Coalesced" : "Inline"; });

TEST_P(PublishingThreads, FromManyThreadsOfOneClientEachKeepsItsOrder) {
  BrokerProcess broker;
  constexpr int kThreads = 4;
  constexpr std::uint64_t kEach = 50000;
  std::uint64_t next[kThreads] = {};  // I/O thread only
  std::atomic<std::uint64_t> received{0}, out_of_order{0};
  Client sub = broker.connect("sub");
  auto s = sub.subscribe("mt", [&](const MessageView& m) {
    const auto d = decode(m.payload);
    if (d.tag >= kThreads || next[d.tag] != d.seq) ++out_of_order;
    if (d.tag < kThreads) next[d.tag] = d.seq + 1;
    ++received;
  });
  ASSERT_TRUE(s.has_value());
  auto connected = Client::connect({.address = broker.socket(), .name = "pub", .coalesce_writes = GetParam()});
  ASSERT_TRUE(connected.has_value());
  Client pub = std::move(*connected);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::byte payload[16];
      const std::uint64_t tag = static_cast<std::uint64_t>(t);
      std::memcpy(payload + 8, &tag, 8);
      for (std::uint64_t seq = 0; seq < kEach; ++seq) {
        std::memcpy(payload, &seq, 8);
        if (!pub.publish("mt", payload)) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(pub.flush(std::chrono::seconds(120)).has_value());
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE(eventually([&] { return received == kThreads * kEach; })) << received.load();
  EXPECT_EQ(out_of_order.load(), 0u);  // each thread's messages stay in its order
}

TEST(PubSub, ReceiveQueuePausesAndResumesReading) {
  BrokerProcess broker;
  constexpr std::uint64_t kCount = 30000;  // far more than the client's receive queue holds
  auto c = Client::connect({.address = broker.socket(), .name = "late", .receive_queue = 1000});
  ASSERT_TRUE(c.has_value());
  auto s = c->subscribe("backlog");
  ASSERT_TRUE(s.has_value());
  Process peer = publish_from_peer(broker, "backlog", kCount, 64, 1);
  // A consumer that starts late: the queue fills, the I/O thread stops reading, and every
  // receive() below must bring it back.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (std::uint64_t i = 0; i < kCount; ++i) {
    auto m = c->receive(std::chrono::seconds(10));
    ASSERT_TRUE(m.has_value()) << i << ": " << m.error().message;
    ASSERT_EQ(decode(m->payload()).seq, i);
  }
  expect_peer_ok(peer);
}

TEST(PubSub, ConnectThroughAnInheritedFd) {
  BrokerProcess broker;
  Client sub = broker.connect("sub");
  auto s = sub.subscribe("inherited");
  ASSERT_TRUE(s.has_value());
  // The parent connects; the child (the example publisher) gets the fd via UBROKER_FD.
  const auto addr = proto::make_socket_address(broker.socket()).value();
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);  // no CLOEXEC: the child inherits it
  ASSERT_EQ(::connect(fd, addr.get(), addr.len), 0);
  Process child = Process::spawn({UBROKER_EXAMPLE_PUBLISH, "inherited", "via-fd"},
                                 {"UBROKER_FD=" + std::to_string(fd), "UBROKER_SOCKET=/nonexistent"});
  ::close(fd);
  auto st = child.wait(std::chrono::seconds(10));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 0) << child.err();
  auto m = sub.receive(std::chrono::seconds(5));
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_EQ(m->text(), "via-fd");
  // SO_PEERCRED names the process that connected: an inherited fd keeps its parent's identity.
  EXPECT_EQ(m->sender().pid, static_cast<std::uint32_t>(::getpid()));
}

}  // namespace
}  // namespace ubroker::test
