// brokerbench's W1 pinger through each path of the client API (roles.hpp: role_ping). Every
// path sends the same 64-byte payload one at a time and times from just before the send to
// the moment the answer is in the application's hands, so the paths compare as they are.
#include <sys/resource.h>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "roles.hpp"

namespace ubroker::bench {
namespace {

// The pong's subscription callback, on the client's I/O thread, records the round trip and
// sends the next ping itself: no thread of the application in the loop.
bool ping_by_callback(Client& c, std::uint64_t total, std::uint64_t warmup, const std::vector<std::byte>& payload,
                      Histogram& h) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false, failed = false;
  std::uint64_t i = 0;
  Clock::time_point t0;
  auto sub = c.subscribe("bench.pong", [&](const MessageView&) {
    if (i >= warmup) h.record(ns_since(t0));
    if (++i == total) {
      std::lock_guard lk(mu);
      done = true;
      cv.notify_one();
      return;
    }
    t0 = Clock::now();
    if (!c.publish("bench.ping", payload)) {
      std::lock_guard lk(mu);
      failed = done = true;
      cv.notify_one();
    }
  });
  if (!sub || !c.flush()) return false;
  t0 = Clock::now();
  if (!c.publish("bench.ping", payload)) return false;
  std::unique_lock lk(mu);
  return cv.wait_for(lk, std::chrono::minutes(10), [&] { return done; }) && !failed;
}

// publish(), then receive() on this thread.
bool ping_by_receive(Client& c, std::uint64_t total, std::uint64_t warmup, const std::vector<std::byte>& payload,
                     Histogram& h) {
  auto sub = c.subscribe("bench.pong");
  if (!sub || !c.flush()) return false;
  for (std::uint64_t i = 0; i < total; ++i) {
    const auto t0 = Clock::now();
    if (!c.publish("bench.ping", payload)) return false;
    auto m = c.receive(std::chrono::seconds(10));
    if (!m) return false;
    if (i >= warmup) h.record(ns_since(t0));
  }
  return true;
}

// request() against the responder role (bench.rpc).
bool ping_by_request(Client& c, std::uint64_t total, std::uint64_t warmup, const std::vector<std::byte>& payload,
                     Histogram& h) {
  for (std::uint64_t i = 0; i < total; ++i) {
    const auto t0 = Clock::now();
    auto r = c.request("bench.rpc", payload, std::chrono::seconds(10));
    if (!r || r->payload().size() != payload.size()) return false;
    if (i >= warmup) h.record(ns_since(t0));
  }
  return true;
}

// A manual client (no I/O thread): poll() on this thread until the pong's callback has run.
bool ping_by_poll(Client& c, std::uint64_t total, std::uint64_t warmup, const std::vector<std::byte>& payload,
                  Histogram& h) {
  bool got = false;
  auto sub = c.subscribe("bench.pong", [&](const MessageView&) { got = true; });
  if (!sub || !c.flush()) return false;
  for (std::uint64_t i = 0; i < total; ++i) {
    got = false;
    const auto t0 = Clock::now();
    if (!c.publish("bench.ping", payload)) return false;
    while (!got) {
      auto ran = c.poll(std::chrono::seconds(10));
      if (!ran || *ran == 0) return false;
    }
    if (i >= warmup) h.record(ns_since(t0));
  }
  return true;
}

// The client on this thread's io_context: run_one until the pong's callback has run.
int ping_by_io(const std::string& address, std::uint64_t total, std::uint64_t warmup,
               const std::vector<std::byte>& payload, Histogram& h) {
  asio::io_context io(1);
  bool got = false;
  std::optional<Client> c;
  std::optional<Subscription> sub;
  {
    // Set-up waits for the broker's answers, so the io_context runs on a helper meanwhile.
    auto guard = asio::make_work_guard(io);
    std::thread helper([&] { io.run(); });
    c = connect(address, "bench-ping", &io);
    if (c) {
      auto s = c->subscribe("bench.pong", [&](const MessageView&) { got = true; });
      if (s) sub.emplace(std::move(*s));
    }
    guard.reset();
    io.stop();
    helper.join();
    io.restart();
  }
  if (!c || !sub) return 1;
  for (std::uint64_t i = 0; i < total; ++i) {
    got = false;
    const auto t0 = Clock::now();
    if (!c->publish("bench.ping", payload)) return 1;
    while (!got) {
      if (io.run_one() == 0) return 1;  // the connection ended
    }
    if (i >= warmup) h.record(ns_since(t0));
  }
  c->close();
  return 0;
}

}  // namespace

int role_ping(const std::string& address, const std::string& api, std::uint64_t warmup, std::uint64_t count,
              const std::string& csv) {
  const std::vector<std::byte> payload(64, std::byte{0x42});
  Histogram h;
  if (api == "io") {
    if (ping_by_io(address, warmup + count, warmup, payload, h) != 0) return 1;
  } else {
    auto c = connect(address, "bench-ping-" + api, nullptr, api == "poll");
    if (!c) return 1;
    bool ok = false;
    if (api == "callback") ok = ping_by_callback(*c, warmup + count, warmup, payload, h);
    if (api == "receive") ok = ping_by_receive(*c, warmup + count, warmup, payload, h);
    if (api == "request") ok = ping_by_request(*c, warmup + count, warmup, payload, h);
    if (api == "poll") ok = ping_by_poll(*c, warmup + count, warmup, payload, h);
    if (!ok) {
      std::fprintf(stderr, "brokerbench ping (%s): a round trip failed\n", api.c_str());
      return 1;
    }
    c->close();
  }
  write_histogram(h, csv);
  rusage self{};
  ::getrusage(RUSAGE_SELF, &self);
  const double cpu = static_cast<double>(self.ru_utime.tv_sec + self.ru_stime.tv_sec) +
                     static_cast<double>(self.ru_utime.tv_usec + self.ru_stime.tv_usec) / 1e6;
  std::printf("%s cpu_s=%.4f\n", format(summarize(h)).c_str(), cpu);
  std::fflush(stdout);
  return 0;
}

}  // namespace ubroker::bench
