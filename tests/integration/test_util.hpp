// Helpers shared by the integration tests: decoding the test peer's payloads, waiting for
// a condition with a deadline (never a bare sleep standing in for one).
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <atomic>
#include <fstream>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>

#include "broker_process.hpp"
#include "ubroker.pb.h"

#include <gtest/gtest.h>

namespace ubroker::test {

struct PeerPayload {
  std::uint64_t seq;
  std::uint64_t tag;
};

inline PeerPayload decode(std::span<const std::byte> p) {
  PeerPayload d{~0ull, ~0ull};
  if (p.size() >= 16) {
    std::memcpy(&d.seq, p.data(), 8);
    std::memcpy(&d.tag, p.data() + 8, 8);
  }
  return d;
}

// The process's open fds, as /proc/PID/fd lists them.
inline std::size_t open_fds(pid_t pid) {
  std::size_t n = 0;
  const std::string path = "/proc/" + std::to_string(pid) + "/fd";
  const std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(path.c_str()), &::closedir);
  while (const dirent* e = dir ? ::readdir(dir.get()) : nullptr) {
    if (e->d_name[0] != '.') ++n;
  }
  return n;
}

// While alive, processes started get ASAN_OPTIONS with no quarantine: under AddressSanitizer
// freed memory waits in a quarantine that grows RSS by design, so a broker started with none
// keeps only what it holds, and its RSS can be checked for leaks. (Harmless without ASan.)
class NoAsanQuarantine {
 public:
  NoAsanQuarantine() {
    const char* asan = std::getenv("ASAN_OPTIONS");
    had_ = asan != nullptr;
    saved_ = had_ ? asan : "";
    ::setenv("ASAN_OPTIONS", (saved_ + ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0").c_str(), 1);
  }
  ~NoAsanQuarantine() {
    if (had_) {
      ::setenv("ASAN_OPTIONS", saved_.c_str(), 1);
    } else {
      ::unsetenv("ASAN_OPTIONS");
    }
  }
  NoAsanQuarantine(const NoAsanQuarantine&) = delete;
  NoAsanQuarantine& operator=(const NoAsanQuarantine&) = delete;

 private:
  bool had_ = false;
  std::string saved_;
};

// Resident memory of a process in KiB (VmRSS in /proc/PID/status), 0 if unknown.
inline std::size_t rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  std::size_t value = 0;
  while (status >> key) {
    if (key == "VmRSS:" && status >> value) return value;
    status.ignore(4096, '\n');
  }
  return 0;
}

// Polls `cond` until true or the deadline; returns its last value.
inline bool eventually(const std::function<bool()>& cond,
                       std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// Publishes `count` messages of `size` bytes (sequence number, tag, padding) from a separate
// process; it flushes before it exits 0.
inline Process publish_from_peer(const BrokerProcess& b, const std::string& topic, std::uint64_t count,
                                 std::size_t size, std::uint64_t tag = 1) {
  return Process::spawn({UBROKER_TEST_PEER, "publish", b.socket(), topic, std::to_string(count), std::to_string(size),
                         std::to_string(tag)});
}

// The broker's counters, from its $sys.admin.status service.
inline wire::BrokerStatus broker_status(Client& c) {
  wire::BrokerStatus st;
  auto r = c.request("$sys.admin.status", std::string_view{}, std::chrono::seconds(5));
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  if (r) {
    EXPECT_TRUE(st.ParseFromArray(r->payload().data(), static_cast<int>(r->payload().size())));
  }
  return st;
}

// Waits until a spawned process has printed `line` on stdout.
inline bool wait_for_output(const Process& p, const std::string& line,
                            std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  return eventually([&] { return p.out().find(line) != std::string::npos; }, timeout);
}

inline Process serve_from_peer(const BrokerProcess& b, const std::string& topic, const std::string& mode) {
  return Process::spawn({UBROKER_TEST_PEER, "serve", b.socket(), topic, mode});
}

// Runs `blocked` (a call that waits for something) while another thread, after giving it
// time to go to sleep, runs `let_go`: whether `blocked` came back only once `let_go` had begun
// (it waited for what `let_go` frees, rather than finding it free).
template <class Blocked, class LetGo>
bool waits_for(Blocked&& blocked, LetGo&& let_go) {
  std::atomic<bool> begun{false};
  std::thread other([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    begun = true;
    let_go();
  });
  blocked();
  const bool waited = begun;
  other.join();
  return waited;
}

}  // namespace ubroker::test
