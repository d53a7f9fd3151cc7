// ubroker-nats-bridge end to end: three real nats-server processes in a cluster, two brokerd
// ("host A", "host B"), a bridge beside each, all started and stopped here on loopback.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "broker_process.hpp"
#include "process.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A TCP port nobody listens on right now (the kernel's choice for port 0).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool port_open(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return up;
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Three nats-server processes routed to each other.
class NatsCluster {
 public:
  NatsCluster() {
    for (int i = 0; i < 3; ++i) {
      client_ports_.push_back(free_port());
      route_ports_.push_back(free_port());
    }
    for (int i = 0; i < 3; ++i) start(i);
    for (int i = 0; i < 3; ++i) {
      // Each server has routes to the two others before anything is published.
      EXPECT_TRUE(eventually([&] { return port_open(client_ports_[i]); }));
      EXPECT_TRUE(eventually([&] { return count_of(servers_[i]->err(), "Route connection created") >= 2; }))
          << servers_[i]->err();
    }
  }
  [[nodiscard]] std::string url(int i) const { return fmt::format("nats://127.0.0.1:{}", client_ports_[i]); }
  [[nodiscard]] int index_of(const std::string& url) const {
    for (int i = 0; i < 3; ++i) {
      if (url.find(fmt::format(":{}", client_ports_[i])) != std::string::npos) return i;
    }
    return -1;
  }
  void kill(int i) {
    servers_[i]->signal(SIGKILL);
    EXPECT_TRUE(servers_[i]->wait(seconds(10)).has_value());
  }

 private:
  void start(int i) {
    std::string routes;
    for (int j = 0; j < 3; ++j) {
      if (j == i) continue;
      if (!routes.empty()) routes += ",";
      routes += fmt::format("nats://127.0.0.1:{}", route_ports_[j]);
    }
    servers_[i].emplace(Process::spawn({UBROKER_NATS_SERVER, "-a", "127.0.0.1", "-p", std::to_string(client_ports_[i]),
                                        "--cluster_name", "ubroker-test", "--cluster",
                                        fmt::format("nats://127.0.0.1:{}", route_ports_[i]), "--routes", routes}));
  }
  std::vector<int> client_ports_, route_ports_;
  std::optional<Process> servers_[3];
};

struct BridgeSides {
  std::vector<std::string> exports, imports, export_services, import_services;
};

std::string list(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += fmt::format("{}\"{}\"", out.empty() ? "" : ", ", s);
  return fmt::format("[{}]", out);
}

// A bridge process beside `broker`, its config in the broker's directory.
class BridgeProcess {
 public:
  BridgeProcess(BrokerProcess& broker, const NatsCluster& nats, const std::string& name, const BridgeSides& sides,
                std::vector<int> servers = {0, 1, 2})
      : config_(fmt::format("{}/bridge-{}.toml", broker.dir(), name)) {
    std::vector<std::string> urls;
    for (int i : servers) urls.push_back(nats.url(i));
    std::ofstream(config_) << "[nats]\nservers = " << list(urls) << "\nreconnect_wait_ms = 50\n[bridge]\nname = \"" << name
                           << "\"\nexport = " << list(sides.exports) << "\nimport = " << list(sides.imports)
                           << "\nexport_services = " << list(sides.export_services)
                           << "\nimport_services = " << list(sides.import_services) << "\nrequest_timeout_ms = 3000\n";
    process_.emplace(Process::spawn({UBROKER_NATS_BRIDGE, "--socket", broker.socket(), "--config", config_}));
    EXPECT_TRUE(eventually([&] { return process_->err().find("carrying") != std::string::npos; })) << process_->err();
  }
  ~BridgeProcess() {
    process_->signal(SIGTERM);
    const auto st = process_->wait(seconds(20));
    EXPECT_TRUE(st.has_value()) << "the bridge did not stop on SIGTERM";
    if (st) {
      EXPECT_EQ(exit_code(*st), 0) << process_->err();
    }
  }
  [[nodiscard]] std::string log() const { return process_->err(); }
  // The NATS server it is connected to now (the last "connected to" line).
  [[nodiscard]] std::string nats_url() const {
    const std::string l = log();
    const std::size_t at = l.rfind("connected to nats://");
    if (at == std::string::npos) return {};
    const std::size_t start = at + std::strlen("connected to ");
    return l.substr(start, l.find('\n', start) - start);
  }

 private:
  std::string config_;
  std::optional<Process> process_;
};

// The bridge's counters, from its metrics service on the local broker.
std::map<std::string, std::uint64_t> metrics(Client& c, const std::string& bridge) {
  std::map<std::string, std::uint64_t> out;
  auto r = c.request(fmt::format("bridge.{}.metrics", bridge), "", seconds(5));
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  if (!r) return out;
  const std::regex line(R"(ubroker_bridge_(\w+?)(?:_total)?\{bridge="[^"]*"\} (\d+))");
  const std::string text(r->text());
  for (std::sregex_iterator it(text.begin(), text.end(), line), end; it != end; ++it) {
    out[(*it)[1]] = std::stoull((*it)[2]);
  }
  return out;
}

std::uint64_t seq_of(std::string_view text) {
  std::uint64_t v = 0;
  std::from_chars(text.data(), text.data() + text.size(), v);
  return v;
}

// Publishes probes on `from` until one arrives on `sub` (NATS spreads subscription interest
// over the cluster's routes asynchronously); then drains what else came.
void wait_until_bridged(Client& from, Client& to, const std::string& topic) {
  auto probe = to.subscribe(topic);
  ASSERT_TRUE(probe.has_value());
  bool arrived = false;
  for (int i = 0; i < 200 && !arrived; ++i) {
    ASSERT_TRUE(from.publish(topic, "probe"));
    arrived = to.receive(milliseconds(50)).has_value();
  }
  ASSERT_TRUE(arrived) << "nothing crossed on " << topic;
  while (to.receive(milliseconds(200)).has_value()) {
  }
}

// Asks until a responder behind the bridges answers (interest spreads over NATS's routes
// asynchronously); nullopt if none did within the time `eventually` allows.
std::optional<Message> first_answer(Client& c, const std::string& topic, std::string_view body) {
  std::optional<Message> answer;
  (void)eventually([&] {
    if (auto r = c.request(topic, body, seconds(5)); r) answer.emplace(std::move(*r));
    return answer.has_value();
  });
  return answer;
}

TEST(NatsBridge, TenThousandMessagesCrossOnceInOrderAndNothingLoops) {
  NatsCluster nats;
  BrokerProcess a, b;
  // Both hosts export and import the same subjects: only the identity rules keep it from looping.
  const BridgeSides sides{.exports = {"sensors.>", "sensors.*.temp"}, .imports = {"sensors.>", "sensors.*.temp"}};
  BridgeProcess bridge_a(a, nats, "host-a", sides), bridge_b(b, nats, "host-b", sides);
  Client pub = a.connect("publisher"), on_b = b.connect("subscriber-b"), on_a = a.connect("subscriber-a");
  wait_until_bridged(pub, on_b, "sensors.probe.temp");
  auto sub_b = on_b.subscribe("sensors.>");
  ASSERT_TRUE(sub_b.has_value());
  auto sub_a = on_a.subscribe("sensors.>");
  ASSERT_TRUE(sub_a.has_value());
  constexpr std::uint64_t kCount = 10000;
  const HeaderField app_headers[] = {{"unit", "celsius"}, {"Bridge-Origin", "forged"}};
  for (std::uint64_t i = 0; i < kCount; ++i) {
    ASSERT_TRUE(pub.publish("sensors.kitchen.temp", std::to_string(i), PublishOptions{.headers = app_headers}));
  }
  for (std::uint64_t i = 0; i < kCount; ++i) {
    auto m = on_b.receive(seconds(20));
    ASSERT_TRUE(m.has_value()) << "message " << i << ": " << m.error().message;
    ASSERT_EQ(seq_of(m->text()), i);
    if (i == 0) {
      EXPECT_EQ(m->headers().get("unit"), "celsius");
      EXPECT_EQ(m->headers().get("Bridge-Origin"), "host-a");  // the forged one is not passed on
      EXPECT_EQ(m->headers().get("Bridge-Hop"), "host-b");
      EXPECT_EQ(m->headers().get("Bridge-Sender"), fmt::format("{}/{}/{}", ::getuid(), ::getpid(), pub.id()));
      EXPECT_TRUE(m->headers().get("Bridge-Seq").has_value());
    }
  }
  for (std::uint64_t i = 0; i < kCount; ++i) {
    auto m = on_a.receive(seconds(20));
    ASSERT_TRUE(m.has_value());
    ASSERT_EQ(seq_of(m->text()), i);
  }
  // The books: A exported each once and imported nothing back; B imported each once and
  // exported none of them again.
  auto ma = metrics(on_a, "host-a");
  auto mb = metrics(on_b, "host-b");
  EXPECT_EQ(ma["exported"], mb["imported"]);
  EXPECT_GE(ma["exported"], kCount);
  EXPECT_EQ(ma["imported"], 0u);
  EXPECT_EQ(mb["exported"], 0u);
  EXPECT_EQ(mb["import_lost"], 0u);
  // Operators see the same books in `brokerctl clients` (the bridge's status).
  EXPECT_TRUE(eventually([&] {
    Process ctl = Process::spawn({UBROKER_BROKERCTL, "--socket", a.socket(), "clients"});
    return ctl.wait(seconds(10)) && ctl.out().find(fmt::format("exported={}", ma["exported"])) != std::string::npos &&
           ctl.out().find("nats=connected") != std::string::npos;
  }));
  // Nothing arrives after the books closed: an echo would show as an extra message.
  ASSERT_TRUE(pub.publish("sensors.last", "end"));
  auto last = on_a.receive(seconds(10));
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->text(), "end");
  EXPECT_FALSE(on_a.receive(milliseconds(0)).has_value());
}

TEST(NatsBridge, TwoBridgesOnOneHostDoNotLoopThroughEachOther) {
  NatsCluster nats;
  BrokerProcess a, b;
  // Two bridges beside broker A (as with two clusters, or two names), each exporting and
  // importing the same subjects: each imports what the other exported, and without the
  // Bridge-Hop rule the other would export it again, for ever.
  const BridgeSides sides{.exports = {"x.>"}, .imports = {"x.>"}};
  BridgeProcess a1(a, nats, "host-a1", sides), a2(a, nats, "host-a2", sides), bridge_b(b, nats, "host-b", sides);
  Client pub = a.connect("publisher"), on_b = b.connect("subscriber");
  auto sub = on_b.subscribe("x.>");
  ASSERT_TRUE(sub.has_value());
  std::uint64_t published = 0;
  std::optional<Message> first;
  for (int i = 0; i < 200 && !first; ++i) {  // until NATS knows every interest
    ASSERT_TRUE(pub.publish("x.probe", "?"));
    ++published;
    if (auto m = on_b.receive(milliseconds(50)); m) first.emplace(std::move(*m));
  }
  ASSERT_TRUE(first.has_value());
  for (int i = 0; i < 100; ++i, ++published) ASSERT_TRUE(pub.publish("x.data", std::to_string(i)));
  // Each bridge of A exports each local message once, and nothing it imported: the books
  // settle at exactly that, however long one waits.
  auto exported_by_a = [&] { return metrics(pub, "host-a1")["exported"] + metrics(pub, "host-a2")["exported"]; };
  EXPECT_TRUE(eventually([&] { return exported_by_a() == 2 * published; })) << exported_by_a() << " vs " << 2 * published;
  ASSERT_TRUE(pub.publish("x.last", "end"));  // a marker behind everything that could still loop
  ++published;
  bool saw_last = false;
  for (int i = 0; i < 10000 && !saw_last; ++i) {
    auto m = on_b.receive(seconds(10));
    ASSERT_TRUE(m.has_value());
    saw_last = m->text() == "end";
  }
  EXPECT_EQ(exported_by_a(), 2 * published);
  EXPECT_EQ(metrics(on_b, "host-b")["exported"], 0u);
}

TEST(NatsBridge, RequestsCrossBothWaysWithNoRespondersAndTimeouts) {
  NatsCluster nats;
  BrokerProcess a, b;
  BridgeProcess bridge_a(a, nats, "host-a", {.export_services = {"math.>"}, .import_services = {"remote.>", "ghost.>"}});
  BridgeProcess bridge_b(b, nats, "host-b", {.export_services = {"remote.>"}, .import_services = {"math.>"}});
  Client on_a = a.connect("a"), on_b = b.connect("b");
  auto math = on_a.serve("math.>", [](Request r) {
    if (r.topic() == "math.never") return;  // held: the caller times out
    const HeaderField back[] = {{"served-by", "host-a"}};
    (void)r.reply(std::string(r.text()) + "=2", back);
  });
  ASSERT_TRUE(math.has_value());
  auto remote = on_b.serve("remote.echo", [](Request r) { (void)r.reply(r.text()); });
  ASSERT_TRUE(remote.has_value());
  // NATS learns each side's interest through the routes: ask until it answers.
  std::optional<Message> reply = first_answer(on_b, "math.add", "1+1");
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->text(), "1+1=2");
  EXPECT_EQ(reply->headers().get("served-by"), "host-a");
  std::optional<Message> back = first_answer(on_a, "remote.echo", "ping");
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->text(), "ping");

  // No responder anywhere: behind NATS (nobody exports ghost.>), on the far host (host A
  // serves math.> but nothing on B), and with no bridge at all. Each within a second: the
  // answer is NO_RESPONDERS, not the TIMEOUT a one-second deadline would give.
  auto ghost = on_a.request("ghost.x", "?", seconds(1));
  ASSERT_FALSE(ghost.has_value());
  EXPECT_EQ(ghost.error().code, Errc::kNoResponders) << ghost.error().message;
  auto far = on_a.request("remote.nobody", "?", seconds(1));
  ASSERT_FALSE(far.has_value());
  EXPECT_EQ(far.error().code, Errc::kNoResponders) << far.error().message;
  auto none = on_b.request("nothing.here", "?", seconds(1));
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code, Errc::kNoResponders);

  // A timeout is a timeout.
  auto slow = on_b.request("math.never", "?", milliseconds(500));
  ASSERT_FALSE(slow.has_value());
  EXPECT_EQ(slow.error().code, Errc::kTimeout);
}

TEST(NatsBridge, TrafficSurvivesTheNatsServerBeingKilledAndEveryMessageIsCounted) {
  NatsCluster nats;
  BrokerProcess a, b;
  // Each bridge knows all three servers; B starts on another server than A.
  BridgeProcess bridge_a(a, nats, "host-a", {.exports = {"stream.>"}}, {0, 1, 2});
  BridgeProcess bridge_b(b, nats, "host-b", {.imports = {"stream.>"}}, {2, 1, 0});
  Client pub = a.connect("publisher"), on_b = b.connect("subscriber");
  wait_until_bridged(pub, on_b, "stream.probe");
  const int a_server = nats.index_of(bridge_a.nats_url());
  ASSERT_GE(a_server, 0) << bridge_a.log();
  auto sub = on_b.subscribe("stream.data");
  ASSERT_TRUE(sub.has_value());
  constexpr std::uint64_t kCount = 20000;
  std::atomic<std::uint64_t> received{0}, last{0};
  std::atomic<bool> ordered{true};
  std::thread reader([&] {
    for (;;) {
      auto m = on_b.receive(seconds(15));
      if (!m) return;
      const std::uint64_t seq = seq_of(m->text());
      if (received.load() != 0 && seq <= last.load()) ordered = false;
      last = seq;
      ++received;
      if (seq == kCount - 1) return;
    }
  });
  for (std::uint64_t i = 0; i < kCount; ++i) {
    if (i == kCount / 4) nats.kill(a_server);
    ASSERT_TRUE(pub.publish("stream.data", std::to_string(i)));
    if (i % 1000 == 999) std::this_thread::sleep_for(milliseconds(10));  // a stream, not one burst
  }
  reader.join();
  EXPECT_TRUE(ordered.load()) << "a message arrived twice or out of order";
  EXPECT_EQ(last.load(), kCount - 1) << "traffic did not resume through another server";
  EXPECT_TRUE(eventually([&] { return bridge_a.log().find("NATS: reconnected to") != std::string::npos; }));
  auto ma = metrics(pub, "host-a");
  auto mb = metrics(on_b, "host-b");
  // Every message published on A was delivered on B or counted where it stopped.
  const std::uint64_t counted = ma["export_dropped_buffer_full"] + ma["export_failed"] + mb["import_lost"] +
                                mb["import_dropped_slow"] + mb["import_failed"];
  EXPECT_EQ(received.load() + counted, kCount) << "received " << received.load() << ", counted " << counted << "\nA: " << broker_status(pub).ShortDebugString() << "\nB: " << broker_status(on_b).ShortDebugString();
  EXPECT_GE(ma["nats_reconnects"], 1u);
}

TEST(NatsBridge, ALocalBrokerRestartIsSurvived) {
  NatsCluster nats;
  BrokerProcess a, b;
  BridgeProcess bridge_a(a, nats, "host-a", {.exports = {"up.>"}, .imports = {"down.>"}});
  BridgeProcess bridge_b(b, nats, "host-b", {.exports = {"down.>"}, .imports = {"up.>"}});
  {
    Client pub = a.connect("publisher"), on_b = b.connect("subscriber");
    wait_until_bridged(pub, on_b, "up.before");
  }
  a.stop();
  a.restart();
  EXPECT_TRUE(eventually([&] { return bridge_a.log().find("local broker: reconnected") != std::string::npos; }))
      << bridge_a.log();
  Client pub = a.connect("publisher"), on_b = b.connect("subscriber");
  wait_until_bridged(pub, on_b, "up.after");  // exports resubscribed
  wait_until_bridged(on_b, pub, "down.after");  // imports published into the new broker
}

TEST(NatsBridge, BulkPayloadsCrossUpToTheNatsMaximumAndLargerOnesAreCounted) {
  NatsCluster nats;
  BrokerProcess a, b;
  BridgeProcess bridge_a(a, nats, "host-a", {.exports = {"bulk.>"}});
  BridgeProcess bridge_b(b, nats, "host-b", {.imports = {"bulk.>"}});
  Client pub = a.connect("publisher"), on_b = b.connect("subscriber");
  wait_until_bridged(pub, on_b, "bulk.probe");
  auto sub = on_b.subscribe("bulk.data");
  ASSERT_TRUE(sub.has_value());
  // 512 KiB travels through shared memory locally (above the client's shm threshold) and
  // crosses; 2 MiB is above nats-server's default max_payload (1 MiB) and is refused.
  std::vector<std::byte> fits(512 * 1024, std::byte{0x5a}), too_big(2 * 1024 * 1024, std::byte{0x33});
  ASSERT_TRUE(pub.publish("bulk.data", too_big));
  ASSERT_TRUE(pub.publish("bulk.data", fits));
  auto m = on_b.receive(seconds(20));
  ASSERT_TRUE(m.has_value()) << m.error().message;
  ASSERT_EQ(m->payload().size(), fits.size());
  EXPECT_TRUE(std::equal(fits.begin(), fits.end(), m->payload().begin()));
  auto ma = metrics(pub, "host-a");
  EXPECT_EQ(ma["export_refused_too_large"], 1u);
  EXPECT_NE(bridge_a.log().find("above the NATS server's max_payload"), std::string::npos) << bridge_a.log();
}

TEST(NatsBridge, AConfigWithAMistakeSaysWhereAndExitsOne) {
  BrokerProcess a;
  const std::string path = fmt::format("{}/bad.toml", a.dir());
  std::ofstream(path) << "[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n[bridge]\nname = \"host-a\"\nexprot = [\"x.>\"]\n";
  Process p = Process::spawn({UBROKER_NATS_BRIDGE, "--socket", a.socket(), "--config", path});
  const auto st = p.wait(seconds(10));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 1);
  EXPECT_NE(p.err().find("line 5: unknown key 'bridge.exprot'"), std::string::npos) << p.err();
}

}  // namespace
}  // namespace ubroker::test
