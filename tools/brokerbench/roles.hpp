// The client roles brokerbench runs as separate processes ("brokerbench role NAME ..."), and
// the machine's floors measured with no broker in between. Each prints one result line on
// standard output that the orchestrating process parses.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "histogram.hpp"
#include "ubroker/client.hpp"

namespace asio {
class io_context;
}

namespace ubroker::bench {

// Results travel as "key=value" words on one line.
struct Latency {
  std::uint64_t p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0, count = 0;  // ns
  std::uint64_t lost = 0, reordered = 0;  // open loop: replies that never came, or out of order
};
struct Throughput {
  std::uint64_t received = 0, lost = 0, reordered = 0, duplicates = 0;
  double seconds = 0;  // first to last message at the receiver
  [[nodiscard]] double rate() const { return seconds > 0 ? static_cast<double>(received) / seconds : 0; }
};

// Whole writes and reads on a blocking fd; false on EOF or an error.
bool write_all(int fd, const void* p, std::size_t n);
bool read_all(int fd, void* p, std::size_t n);

// Runs a role; argv[0] is its name. Returns the process exit code.
int run_role(int argc, char** argv);

using Clock = std::chrono::steady_clock;
std::uint64_t ns_since(Clock::time_point t);
// A client of the broker at `address` that does not reconnect (its I/O on `io` if given);
// nullopt after printing why.
// `manual`: ConnectOptions::manual_io.
std::optional<Client> connect(const std::string& address, const std::string& name, asio::io_context* io,
                              bool manual = false);

// W1's pinger (ping.cpp): one 64-byte ping at a time through the broker, timing each round
// trip, through one of the client API's paths (`api`, see latency64_apis).
int role_ping(const std::string& address, const std::string& api, std::uint64_t warmup, std::uint64_t count,
              const std::string& csv);
// The paths W1 can take: "io" (the client on this thread's io_context, run_one until the
// pong), "callback" (the pong's callback on the client's I/O thread sends the next ping),
// "receive" (publish, then receive() on this thread), "request" (request() against a
// responder instead of ping/pong), "poll" (a ConnectOptions::manual_io client driven by
// poll() on this thread).
inline constexpr const char* kLatencyApis[] = {"io", "callback", "receive", "request", "poll"};

// The relay floor's processes: a minimal epoll relay and an echo behind it. The caller
// pings through client_fd(); stop() closes it and reaps both. With `ends_in_epoll` the echo
// (and ping_over) wait in epoll_wait before each read, as event-driven clients do, instead
// of blocking in read().
class RelayFloor {
 public:
  RelayFloor() = default;
  RelayFloor(const RelayFloor&) = delete;
  RelayFloor& operator=(const RelayFloor&) = delete;
  ~RelayFloor() { stop(); }
  bool start(bool ends_in_epoll = false);
  void stop();
  [[nodiscard]] int client_fd() const { return client_; }

 private:
  int client_ = -1;
  pid_t relay_ = -1, echo_ = -1;
};

// Floors, measured in this process and children it forks.
Latency floor_relay(std::uint64_t warmup, std::uint64_t count, const std::string& histogram_csv = {},
                    bool ends_in_epoll = false);
Throughput floor_throughput(std::uint64_t count, std::size_t size);
// lane_floor.cpp: 64 B ping-pong between two processes through two shared-memory lanes with
// futex wake-ups, no broker: the floor direct lanes aim at.
Latency floor_lane(std::uint64_t warmup, std::uint64_t count);

// --rate (open_loop.cpp): W1 sent on a fixed schedule, latency from each message's intended
// send time (no coordinated omission); and the relay floor driven the same way.
int role_ping_open(const std::string& address, std::uint64_t warmup, std::uint64_t count, double rate,
                   const std::string& csv);
Latency floor_relay_open(std::uint64_t warmup, std::uint64_t count, double rate, const std::string& csv = {});

// W4 (bulk.cpp): the roles, and the zero-copy and socketpair floors for `size`-byte payloads.
int role_bulk_pub(const std::string& address, const std::string& topic, std::uint64_t count, std::size_t size);
int role_bulk_sub(const std::string& address, const std::string& topic, std::uint64_t count);
Throughput floor_bulk_shm(std::uint64_t count, std::size_t size);
Throughput floor_bulk_socket(std::uint64_t count, std::size_t size);

// A histogram's percentiles; its full distribution as CSV to `path` (nothing when empty).
Latency summarize(const Histogram& h);
void write_histogram(const Histogram& h, const std::string& path);

std::string format(const Latency& l);
std::string format(const Throughput& t);
Latency parse_latency(const std::string& line);
Throughput parse_throughput(const std::string& line);
// A named floating-point figure from a result line (0 when absent).
double parse_rate(const std::string& line, const std::string& key);

}  // namespace ubroker::bench
