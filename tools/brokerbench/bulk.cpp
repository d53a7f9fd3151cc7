// W4 bulk1M: 1 MiB payloads through shared memory (loan, write every byte, publish; the
// subscriber reads every byte in place), and its two floors with no broker: the zero-copy
// floor (a shared ring between two processes, futex wake-ups) and the copy path (the same
// payloads over a socketpair).
//
// Every payload is 8-byte words seq + i; the reader sums them all and compares with the
// closed form, so a payload counts only if every word arrived intact (else it is "lost").
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <span>
#include <vector>

#include "roles.hpp"
#include "ubroker/client.hpp"
#include "ubroker/shm/futex.hpp"

namespace ubroker::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kFloorSlots = 16;  // payloads in flight in the zero-copy floor

void fill(std::span<std::byte> p, std::uint64_t seq) {
  auto* w = reinterpret_cast<std::uint64_t*>(p.data());
  const std::size_t n = p.size() / 8;
  for (std::size_t i = 0; i < n; ++i) w[i] = seq + i;
}

// Reads every word; returns the sequence number when the payload is intact, else ~0.
std::uint64_t check(std::span<const std::byte> p) {
  const auto* w = reinterpret_cast<const std::uint64_t*>(p.data());
  const std::size_t n = p.size() / 8;
  if (n == 0) return ~0ull;
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += w[i];
  const std::uint64_t seq = w[0];
  return sum == seq * n + n * (n - 1) / 2 ? seq : ~0ull;
}

// Counts one received payload into `t` (sequence and integrity).
struct Tally {
  Throughput t;
  std::uint64_t next = 0;
  Clock::time_point first{}, last{};
  void add(std::uint64_t seq) {
    const auto now = Clock::now();
    if (t.received + t.lost == 0) first = now;
    last = now;
    if (seq == ~0ull) {
      ++t.lost;  // corrupt: not delivered intact
      return;
    }
    if (seq < next) {
      ++t.duplicates;
    } else {
      if (seq > next) t.lost += seq - next;
      next = seq + 1;
    }
    ++t.received;
  }
  Throughput done() {
    t.seconds = std::chrono::duration<double>(last - first).count();
    return t;
  }
};

}  // namespace

int role_bulk_pub(const std::string& address, const std::string& topic, std::uint64_t count, std::size_t size) {
  auto c = Client::connect({.address = address, .name = "bench-bulk-pub", .shm_segment_bytes = 17u << 20, .reconnect = {.enabled = false}});
  if (!c) {
    std::fprintf(stderr, "brokerbench bulk-pub: %s\n", c.error().message.c_str());
    return 1;
  }
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    auto loan = c->loan(topic, size, std::chrono::seconds(30));
    if (!loan) {
      std::fprintf(stderr, "brokerbench bulk-pub: %s\n", loan.error().message.c_str());
      return 1;
    }
    fill(loan->data(), seq);
    if (auto r = c->publish(std::move(*loan)); !r) {
      std::fprintf(stderr, "brokerbench bulk-pub: %s\n", r.error().message.c_str());
      return 1;
    }
  }
  if (!c->flush(std::chrono::seconds(60))) return 1;
  return 0;
}

int role_bulk_sub(const std::string& address, const std::string& topic, std::uint64_t count) {
  auto c = Client::connect({.address = address, .name = "bench-bulk-sub", .reconnect = {.enabled = false}});
  if (!c) {
    std::fprintf(stderr, "brokerbench bulk-sub: %s\n", c.error().message.c_str());
    return 1;
  }
  std::mutex mu;
  std::condition_variable cv;
  Tally tally;
  std::uint64_t seen = 0;
  auto sub = c->subscribe(topic, [&](const MessageView& m) {
    const std::uint64_t seq = m.shared_memory ? check(m.payload) : ~0ull;  // read in place
    std::lock_guard lk(mu);
    tally.add(seq);
    if (++seen == count) cv.notify_all();
  });
  if (!sub) return 1;
  std::printf("ready\n");
  std::fflush(stdout);
  std::unique_lock lk(mu);
  cv.wait(lk, [&] { return seen >= count || !c->connected(); });
  std::printf("%s\n", format(tally.done()).c_str());
  std::fflush(stdout);
  return 0;
}

Throughput floor_bulk_shm(std::uint64_t count, std::size_t size) {
  // Page 0: the two counters; then kFloorSlots payload slots.
  const std::size_t bytes = 4096 + kFloorSlots * size;
  void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return {};
  auto* base = static_cast<std::byte*>(mem);
  auto* published = new (base) std::atomic<std::uint32_t>(0);  // payloads written
  auto* consumed = new (base + 64) std::atomic<std::uint32_t>(0);  // payloads read
  auto slot = [&](std::uint64_t seq) { return std::span(base + 4096 + (seq % kFloorSlots) * size, size); };
  const pid_t child = ::fork();
  if (child == 0) {  // the writer
    for (std::uint64_t seq = 0; seq < count; ++seq) {
      for (;;) {
        const std::uint32_t done = consumed->load(std::memory_order_acquire);
        if (seq - done < kFloorSlots) break;
        if (!shm::futex_wait(*consumed, done, std::chrono::nanoseconds(-1))) _exit(1);
      }
      fill(slot(seq), seq);
      published->store(static_cast<std::uint32_t>(seq + 1), std::memory_order_release);
      if (!shm::futex_wake(*published, 1)) _exit(1);
    }
    _exit(0);
  }
  Tally tally;
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    for (;;) {
      const std::uint32_t have = published->load(std::memory_order_acquire);
      if (have > seq) break;
      if (!shm::futex_wait(*published, have, std::chrono::nanoseconds(-1))) return {};
    }
    tally.add(check(slot(seq)));
    consumed->store(static_cast<std::uint32_t>(seq + 1), std::memory_order_release);
    if (!shm::futex_wake(*consumed, 1)) break;
  }
  ::waitpid(child, nullptr, 0);
  ::munmap(mem, bytes);
  return tally.done();
}

Throughput floor_bulk_socket(std::uint64_t count, std::size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return {};
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(sv[0]);
    std::vector<std::byte> buf(size);
    for (std::uint64_t seq = 0; seq < count; ++seq) {
      fill(buf, seq);
      if (!write_all(sv[1], buf.data(), size)) _exit(1);
    }
    _exit(0);
  }
  ::close(sv[1]);
  std::vector<std::byte> buf(size);
  Tally tally;
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    if (!read_all(sv[0], buf.data(), size)) break;
    tally.add(check(buf));
  }
  ::close(sv[0]);
  ::waitpid(child, nullptr, 0);
  return tally.done();
}

}  // namespace ubroker::bench
