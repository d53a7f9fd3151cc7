// ubroker-nats-bench: throughput through two bridges beside plain NATS on the same cluster
// (scripts/nats-bridge-bench.sh starts the servers, brokers and bridges and runs both).
//   ubroker-nats-bench bridge --pub-socket A --sub-socket B [--count N] [--size S]
//     publishes N messages on broker A, receives them on broker B (through the bridges);
//   ubroker-nats-bench nats --pub-url U1 --sub-url U2 [--count N] [--size S]
//     the same between two plain NATS C clients, one on each server.
// Prints one line: messages/s from the first message sent to the last received, and how many
// arrived (every message carries its number; order is checked).
#include <nats/nats.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "nats_handles.hpp"
#include "ubroker/client.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Tally {
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t received = 0;
  std::uint64_t next = 0;  // the number expected next
  bool ordered = true;
  Clock::time_point last;
  void saw(const void* data, std::size_t size) {
    std::uint64_t n = 0;
    if (size >= sizeof n) std::memcpy(&n, data, sizeof n);
    std::lock_guard lk(mu);
    if (n != next) ordered = false;
    next = n + 1;
    ++received;
    last = Clock::now();
    cv.notify_all();
  }
  bool wait_for(std::uint64_t count, std::chrono::seconds quiet) {
    std::unique_lock lk(mu);
    std::uint64_t seen = received;
    while (received < count) {
      if (!cv.wait_for(lk, quiet, [&] { return received != seen; })) return false;  // nothing for `quiet`
      seen = received;
    }
    return true;
  }
};

void report(const char* what, std::uint64_t count, Tally& t, Clock::time_point start) {
  std::lock_guard lk(t.mu);
  const double seconds = std::chrono::duration<double>(t.last - start).count();
  std::printf("%s: %llu of %llu messages in %.3f s: %.0f msg/s%s\n", what, static_cast<unsigned long long>(t.received),
              static_cast<unsigned long long>(count), seconds, seconds > 0 ? static_cast<double>(t.received) / seconds : 0.0,
              t.ordered ? "" : " (OUT OF ORDER)");
}

int bench_bridge(const std::string& pub_socket, const std::string& sub_socket, std::uint64_t count, std::size_t size) {
  Tally tally;  // before the clients: it outlives their callbacks
  std::atomic<bool> crossed{false};
  auto sub = ubroker::Client::connect({.address = sub_socket, .name = "nats-bench-sub"});
  // Buffered like the NATS C client's publisher in the floor.
  auto pub = ubroker::Client::connect({.address = pub_socket, .name = "nats-bench-pub", .coalesce_writes = true});
  if (!sub || !pub) {
    std::fprintf(stderr, "ubroker-nats-bench: %s\n", (!sub ? sub.error() : pub.error()).message.c_str());
    return 1;
  }
  auto s = sub->subscribe("bench.bridge", [&](const ubroker::MessageView& m) { tally.saw(m.payload.data(), m.payload.size()); });
  if (!s) return 1;
  // Until a warm-up message crosses, NATS may not know B's interest yet.
  auto probe = sub->subscribe("bench.probe", [&](const ubroker::MessageView&) { crossed = true; });
  for (int i = 0; i < 500 && !crossed; ++i) {
    (void)pub->publish("bench.probe", "?");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!crossed) {
    std::fprintf(stderr, "ubroker-nats-bench: nothing crossed the bridges\n");
    return 1;
  }
  std::vector<std::byte> payload(std::max<std::size_t>(size, 8));
  const auto start = Clock::now();
  for (std::uint64_t i = 0; i < count; ++i) {
    std::memcpy(payload.data(), &i, sizeof i);
    if (auto r = pub->publish("bench.bridge", payload); !r) {
      std::fprintf(stderr, "ubroker-nats-bench: publish: %s\n", r.error().message.c_str());
      return 1;
    }
  }
  const bool all = tally.wait_for(count, std::chrono::seconds(5));
  report("ubroker -> bridge -> NATS -> bridge -> ubroker", count, tally, start);
  return all && tally.ordered ? 0 : 1;
}

void on_nats(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  ubroker::bridge::NatsMsg owned(msg);
  static_cast<Tally*>(closure)->saw(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
}

int bench_nats(const std::string& pub_url, const std::string& sub_url, std::uint64_t count, std::size_t size) {
  using namespace ubroker::bridge;
  Tally tally;  // before the connections: it outlives their callbacks
  std::atomic<bool> crossed{false};
  natsConnection *pub_raw = nullptr, *sub_raw = nullptr;
  if (natsStatus s = natsConnection_ConnectTo(&sub_raw, sub_url.c_str()); s != NATS_OK) {
    std::fprintf(stderr, "ubroker-nats-bench: %s\n", nats_error("connecting", s).c_str());
    return 1;
  }
  NatsConnection sub_conn(sub_raw);
  if (natsStatus s = natsConnection_ConnectTo(&pub_raw, pub_url.c_str()); s != NATS_OK) {
    std::fprintf(stderr, "ubroker-nats-bench: %s\n", nats_error("connecting", s).c_str());
    return 1;
  }
  NatsConnection pub_conn(pub_raw);
  natsSubscription* sub_handle = nullptr;
  if (natsConnection_Subscribe(&sub_handle, sub_raw, "floor.nats", on_nats, &tally) != NATS_OK) return 1;
  NatsSubscription sub(sub_handle);
  (void)natsSubscription_SetPendingLimits(sub_handle, 1 << 20, 256 << 20);  // as the bridge sets its own
  natsSubscription* probe_handle = nullptr;
  (void)natsConnection_Subscribe(
      &probe_handle, sub_raw, "floor.probe",
      [](natsConnection*, natsSubscription*, natsMsg* m, void* c) {
        natsMsg_Destroy(m);
        static_cast<std::atomic<bool>*>(c)->store(true);
      },
      &crossed);
  NatsSubscription probe(probe_handle);
  (void)natsConnection_Flush(sub_raw);
  for (int i = 0; i < 500 && !crossed; ++i) {
    (void)natsConnection_PublishString(pub_raw, "floor.probe", "?");
    (void)natsConnection_Flush(pub_raw);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<char> payload(std::max<std::size_t>(size, 8));
  const auto start = Clock::now();
  for (std::uint64_t i = 0; i < count; ++i) {
    std::memcpy(payload.data(), &i, sizeof i);
    if (natsConnection_Publish(pub_raw, "floor.nats", payload.data(), static_cast<int>(payload.size())) != NATS_OK) return 1;
  }
  (void)natsConnection_Flush(pub_raw);
  const bool all = tally.wait_for(count, std::chrono::seconds(5));
  report("NATS C client -> NATS -> NATS C client", count, tally, start);
  int64_t dropped = 0;
  (void)natsSubscription_GetDropped(sub_handle, &dropped);
  if (dropped > 0) std::printf("  (the subscriber's client dropped %lld: it fell behind)\n", static_cast<long long>(dropped));
  return all && tally.ordered ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ubroker-nats-bench: messages/s through two ubroker-nats-bridges beside plain NATS C clients"};
  std::uint64_t count = 200000;
  std::size_t size = 64;
  std::string pub_socket, sub_socket, pub_url, sub_url;
  auto* bridge = app.add_subcommand("bridge", "ubroker on host A -> bridges -> ubroker on host B");
  bridge->add_option("--pub-socket", pub_socket, "Host A's broker socket")->required();
  bridge->add_option("--sub-socket", sub_socket, "Host B's broker socket")->required();
  auto* nats = app.add_subcommand("nats", "a NATS C client publisher -> a NATS C client subscriber");
  nats->add_option("--pub-url", pub_url, "The publisher's NATS server")->required();
  nats->add_option("--sub-url", sub_url, "The subscriber's NATS server")->required();
  for (auto* sub : {bridge, nats}) {
    sub->add_option("--count", count, "Messages (default 200000)");
    sub->add_option("--size", size, "Payload bytes (default 64, at least 8)");
  }
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  int status = bridge->parsed() ? bench_bridge(pub_socket, sub_socket, count, size) : bench_nats(pub_url, sub_url, count, size);
  nats_CloseAndWait(5000);
  return status;
}
