// The futex lane round-trip floor (issue 20): two processes ping-pong 64 bytes through two
// lanes (shm/lane.hpp), one each way, the receiver sleeping on the lane's futex between
// messages. No broker and no socket: what a round trip through direct lanes can at best cost
// on this machine, measured beside the relay floors.
#include <sys/wait.h>
#include <unistd.h>

#include "histogram.hpp"
#include "roles.hpp"
#include "ubroker/shm/lane.hpp"

namespace ubroker::bench {
namespace {

using shm::LaneReader;
using shm::LaneWriter;

// Waits for the next message on `r` and hands it to `take`; false when the lane failed.
template <class Take>
bool receive_one(LaneReader& r, Take&& take) {
  for (;;) {
    auto m = r.peek();
    if (!m) return false;
    if (*m) {
      take(**m);
      r.consume();
      return true;
    }
    if (!r.wait_for_message(std::chrono::seconds(10))) return false;
  }
}

bool send_one(LaneWriter& w, std::span<const std::byte> payload) {
  for (;;) {
    auto p = w.try_push(payload);
    if (!p) return false;
    if (*p == LaneWriter::Push::kWritten) return true;
    if (!w.wait_for_room(std::chrono::seconds(10))) return false;
  }
}

}  // namespace

Latency floor_lane(std::uint64_t warmup, std::uint64_t count) {
  constexpr std::uint64_t kCapacity = 64 * 1024;
  auto ping_w = LaneWriter::create(kCapacity);
  auto ping_r = LaneReader::create();
  auto pong_w = LaneWriter::create(kCapacity);
  auto pong_r = LaneReader::create();
  if (!ping_w || !ping_r || !pong_w || !pong_r) return {};
  if (!ping_w->attach(ping_r->ack_fd()) || !ping_r->attach(ping_w->data_fd(), kCapacity) ||
      !pong_w->attach(pong_r->ack_fd()) || !pong_r->attach(pong_w->data_fd(), kCapacity)) {
    return {};
  }
  const pid_t echo = ::fork();
  if (echo < 0) return {};
  if (echo == 0) {  // reads pings, writes them back as pongs
    std::byte buf[64];
    for (std::uint64_t i = 0; i < warmup + count; ++i) {
      if (!receive_one(*ping_r, [&](std::span<const std::byte> m) { std::copy(m.begin(), m.end(), buf); }) ||
          !send_one(*pong_w, buf)) {
        _exit(1);
      }
    }
    _exit(0);
  }
  std::byte buf[64] = {};
  Histogram h;
  for (std::uint64_t i = 0; i < warmup + count; ++i) {
    const auto t0 = Clock::now();
    if (!send_one(*ping_w, buf) || !receive_one(*pong_r, [](std::span<const std::byte>) {})) break;
    if (i >= warmup) h.record(ns_since(t0));
  }
  ::kill(echo, SIGKILL);  // done, or the lane failed: either way the echo has nothing left to do
  ::waitpid(echo, nullptr, 0);
  return summarize(h);
}

}  // namespace ubroker::bench
