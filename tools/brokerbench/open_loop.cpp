// --rate: open-loop latency. A closed loop (send, wait, send) stops sending while a reply is
// late, so one stall delays only one sample and the tail looks better than any user sees:
// coordinated omission. Here a sender thread keeps to a fixed schedule whatever the replies
// do, every message carries the time it was *meant* to leave, and the receiver measures from
// that time; a stall then shows in every message that queued behind it.
//
// Message: 8 bytes sequence number, 8 bytes intended send time (steady clock, ns), padding.
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "roles.hpp"
#include "ubroker/client.hpp"

namespace ubroker::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kMessageSize = 64;

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

// The sender's timetable: message i is due at start + i / rate.
class Schedule {
 public:
  explicit Schedule(double rate) : period_ns_(1e9 / rate) {
    // Sleeps end up to 50 us late by default (timer slack); the schedule needs them on time.
    if (::prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0) != 0) std::perror("brokerbench: PR_SET_TIMERSLACK");
    start_ns_ = now_ns();
  }
  [[nodiscard]] std::uint64_t due(std::uint64_t i) const {
    return start_ns_ + static_cast<std::uint64_t>(static_cast<double>(i) * period_ns_);
  }
  // Sleeps until message i is due; returns at once when the sender is behind (it then sends
  // without pause, and the lateness shows in the latencies).
  void wait_for(std::uint64_t i) const {
    const std::uint64_t at = due(i);
    if (now_ns() >= at) return;
    const timespec ts{.tv_sec = static_cast<time_t>(at / 1000000000), .tv_nsec = static_cast<long>(at % 1000000000)};
    while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
  }

 private:
  double period_ns_;
  std::uint64_t start_ns_ = 0;
};

void stamp(std::byte* msg, std::uint64_t seq, std::uint64_t intended) {
  std::memcpy(msg, &seq, 8);
  std::memcpy(msg + 8, &intended, 8);
}

// What the receiving side of a run collected; the receiver thread alone writes it until the
// sender has joined it.
struct Collected {
  Histogram h;
  std::uint64_t warmup = 0;
  std::uint64_t received = 0, duplicates_or_reordered = 0, next = 0;
  void add(const std::byte* msg, std::uint64_t at) {
    std::uint64_t seq = 0, intended = 0;
    std::memcpy(&seq, msg, 8);
    std::memcpy(&intended, msg + 8, 8);
    ++received;
    if (seq < next) ++duplicates_or_reordered;
    next = std::max(next, seq + 1);
    if (seq >= warmup) h.record(at > intended ? at - intended : 0);
  }
  [[nodiscard]] Latency result(std::uint64_t sent) const {
    Latency l = summarize(h);
    l.lost = sent > received ? sent - received : 0;
    l.reordered = duplicates_or_reordered;
    return l;
  }
};

}  // namespace

int role_ping_open(const std::string& address, std::uint64_t warmup, std::uint64_t count, double rate,
                   const std::string& csv) {
  auto c = Client::connect({.address = address, .name = "bench-ping-open", .reconnect = {.enabled = false}});
  if (!c) {
    std::fprintf(stderr, "brokerbench ping-open: %s\n", c.error().message.c_str());
    return 1;
  }
  const std::uint64_t total = warmup + count;
  std::mutex mu;
  std::condition_variable cv;
  Collected got;
  got.warmup = warmup;
  // Replies arrive on the client's I/O thread while this thread keeps the schedule.
  auto sub = c->subscribe("bench.pong", [&](const MessageView& m) {
    const std::uint64_t at = now_ns();
    if (m.payload.size() < 16) return;
    std::lock_guard lk(mu);
    got.add(m.payload.data(), at);
    if (got.received == total) cv.notify_all();
  });
  if (!sub) return 1;
  std::vector<std::byte> msg(kMessageSize, std::byte{0x42});
  const Schedule schedule(rate);
  for (std::uint64_t i = 0; i < total; ++i) {
    schedule.wait_for(i);
    stamp(msg.data(), i, schedule.due(i));
    if (auto r = c->publish("bench.ping", msg); !r) {
      std::fprintf(stderr, "brokerbench ping-open: %s\n", r.error().message.c_str());
      return 1;
    }
  }
  // Replies still owed get 10 s; what has not come back by then counts as lost.
  std::unique_lock lk(mu);
  cv.wait_for(lk, std::chrono::seconds(10), [&] { return got.received >= total || !c->connected(); });
  write_histogram(got.h, csv);
  std::printf("%s\n", format(got.result(total)).c_str());
  std::fflush(stdout);
  lk.unlock();
  c->close();
  return 0;
}

Latency floor_relay_open(std::uint64_t warmup, std::uint64_t count, double rate, const std::string& csv) {
  RelayFloor floor;
  if (!floor.start()) return {};
  const int fd = floor.client_fd();
  const std::uint64_t total = warmup + count;
  Collected got;
  got.warmup = warmup;
  std::thread receiver([&] {
    std::byte msg[kMessageSize];
    while (got.received < total && read_all(fd, msg, sizeof msg)) got.add(msg, now_ns());
  });
  std::byte msg[kMessageSize] = {};
  const Schedule schedule(rate);
  for (std::uint64_t i = 0; i < total; ++i) {
    schedule.wait_for(i);
    stamp(msg, i, schedule.due(i));
    if (!write_all(fd, msg, sizeof msg)) {
      // The receiver would wait for echoes that cannot come; if even shutdown fails, the
      // socket is gone and its read fails too.
      if (::shutdown(fd, SHUT_RDWR) != 0) std::perror("brokerbench: shutdown");
      break;
    }
  }
  receiver.join();
  floor.stop();
  write_histogram(got.h, csv);
  return got.result(total);
}

}  // namespace ubroker::bench
