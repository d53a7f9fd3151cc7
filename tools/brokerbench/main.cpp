// brokerbench: ubroker's workloads (docs/benchmarks.md) beside the machine's own floor
// measured in the same run, reported as ratios. Every client is a separate process (this
// binary in a role); by default it starts its own brokerd on a temporary socket.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "plot.hpp"
#include "roles.hpp"

extern char** environ;

namespace ubroker::bench {
namespace {

using namespace std::chrono_literals;

// A child process whose stdout we read line by line.
class Child {
 public:
  static std::optional<Child> spawn(const std::vector<std::string>& args) {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return std::nullopt;
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    Child c;
    c.pid_ = ::fork();
    if (c.pid_ < 0) return std::nullopt;
    if (c.pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // no broker or client outlives the benchmark
      if (::getppid() != parent) _exit(127);
      ::dup2(out[1], STDOUT_FILENO);
      ::execve(argv[0], argv.data(), environ);
      _exit(127);
    }
    ::close(out[1]);
    c.out_ = ::fdopen(out[0], "r");
    return c;
  }
  Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)), out_(std::exchange(o.out_, nullptr)) {}
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_) std::fclose(out_);
  }
  // The next line of output ("" at EOF).
  std::string line() {
    char buf[512];
    if (!out_ || !std::fgets(buf, sizeof buf, out_)) return {};
    std::string s(buf);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  int wait() {
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }

 private:
  Child() = default;
  pid_t pid_ = -1;
  std::FILE* out_ = nullptr;
};

struct Options {
  std::string brokerd;
  std::string socket;  // empty: start our own broker
  int repeat = 3;
  std::uint64_t count = 0;  // 0: the workload's default
  std::uint64_t warmup = 10000;
  double rate = 0;  // latency64 sends per second, open loop; 0: closed loop (one at a time)
  std::string api = "io";  // latency64's client API path (roles.hpp: kLatencyApis)
  unsigned busy_poll_us = 0;  // the broker's busy_poll_us and every client's ConnectOptions::busy_poll
  std::string lanes = "on";  // the started broker's lanes.enabled (brokerd's default)
  bool cpu = false;           // latency64 also reports the CPU its processes spent
  int subscribers = 8;
  std::vector<std::uint64_t> connections{1000, 10000};
  bool json = false;
  bool limit = true;
  std::string histogram;
  std::string plot;
  std::uint64_t bulk_count = 2000;     // W4 payloads
  std::size_t bulk_size = 1u << 20;    // W4 payload bytes
};

std::string self_exe() {
  return std::filesystem::read_symlink("/proc/self/exe").string();
}

class Broker {
 public:
  explicit Broker(const Options& o) {
    if (!o.socket.empty()) {
      socket_ = o.socket;
      return;
    }
    dir_ = std::filesystem::temp_directory_path() / ("brokerbench-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    socket_ = (dir_ / "ubroker.sock").string();
    // Every bench client runs as this uid: connscale's idle clients must fit the per-uid
    // connection limit as well as the total.
    std::uint64_t most = 0;
    for (auto n : o.connections) most = std::max<std::uint64_t>(most, n);
    const std::uint64_t room = std::max<std::uint64_t>(16384, most + 256);
    const auto config = (dir_ / "brokerd.toml").string();
    std::ofstream(config) << "busy_poll_us = " << o.busy_poll_us << "\n[limits]\nmax_connections = " << room
                          << "\nmax_connections_per_uid = " << room << "\n[lanes]\nenabled = "
                          << (o.lanes == "on" ? "true" : "false") << "\n";
    if (auto c = Child::spawn({o.brokerd, "--socket", socket_, "--config", config, "--log-level", "warn"})) {
      child_.emplace(std::move(*c));
    }
    for (int i = 0; i < 500 && !std::filesystem::exists(socket_); ++i) std::this_thread::sleep_for(10ms);
  }
  ~Broker() {
    child_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  [[nodiscard]] const std::string& socket() const { return socket_; }
  [[nodiscard]] pid_t pid() const { return child_ ? child_->pid() : -1; }
  // Resident memory of the broker we started, in KiB (0 when using someone else's).
  [[nodiscard]] std::uint64_t rss_kib() const {
    if (!child_) return 0;
    std::FILE* f = std::fopen(("/proc/" + std::to_string(child_->pid()) + "/status").c_str(), "r");
    if (!f) return 0;
    char line[256];
    std::uint64_t kib = 0;
    while (std::fgets(line, sizeof line, f)) {
      if (std::sscanf(line, "VmRSS: %llu kB", reinterpret_cast<unsigned long long*>(&kib)) == 1) break;
    }
    std::fclose(f);
    return kib;
  }

 private:
  std::filesystem::path dir_;
  std::string socket_;
  std::optional<Child> child_;
};

std::optional<Child> role(const std::vector<std::string>& args) {
  std::vector<std::string> a = {self_exe(), "role"};
  a.insert(a.end(), args.begin(), args.end());
  return Child::spawn(a);
}

struct Result {
  std::string workload, metric, unit;
  std::vector<double> runs, floor_runs;
  bool lower_is_better = true;
  std::uint64_t lost = 0, reordered = 0, duplicates = 0;
  std::string note;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string fmt_open_loop(double rate) {
  char s[64];
  std::snprintf(s, sizeof s, "open loop at %.0f/s, from intended send times", rate);
  return s;
}

void progress(const std::string& what) {
  if (::isatty(STDERR_FILENO)) std::fprintf(stderr, "\r\033[K%s", what.c_str());
}

// Records one run of a round-trip workload (and its floor, driven the same way: closed or
// open loop). False when the client process gave no result line: the run is then missing,
// and the caller reports it.
bool record_rtt(const std::string& line, const Options& o, std::uint64_t count, Result& p50, Result& p99,
                const std::string& floor_csv = {}) {
  if (line.empty()) return false;
  const Latency l = parse_latency(line);
  p50.runs.push_back(static_cast<double>(l.p50) / 1000);
  p99.runs.push_back(static_cast<double>(l.p99) / 1000);
  p50.lost += l.lost;
  p50.reordered += l.reordered;
  p99.lost += l.lost;
  p99.reordered += l.reordered;
  if (o.limit) {
    const Latency f = o.rate > 0 ? floor_relay_open(o.warmup, count, o.rate, floor_csv)
                                 : floor_relay(o.warmup, count, floor_csv);
    p50.floor_runs.push_back(static_cast<double>(f.p50) / 1000);
    p99.floor_runs.push_back(static_cast<double>(f.p99) / 1000);
  }
  return true;
}

// W1 latency64: A pings B through the broker, one message at a time; with --rate, on a
// fixed schedule (open loop), latency counted from each message's intended send time.
// In a closed loop with --limit, `ends` gets the same figures beside a second floor: the
// relay hop with both ends waiting in epoll_wait before each read, as every event-driven
// client (this library's included) waits, instead of blocking in read(). On some machines
// that wait costs more than the whole hop; this pair shows how much. `lane` puts the same
// figures beside a third floor: the round trip through shared-memory lanes with futex
// wake-ups and no broker (floor_lane), where direct lanes aim.
struct EpollEnds {
  Result p50, p99;
  Result lane_p50, lane_p99;
};

// CPU seconds a process has used so far (user + system, from /proc; 0 when unreadable).
double cpu_seconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto close = all.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return 0;
  std::istringstream rest(all.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {  // fields 14 and 15: utime, stime
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

void latency64(const Options& o, Result& p50, Result& p99, EpollEnds& ends, Result& cpu) {
  const std::string api_note = o.api == "io" ? std::string() : "api: " + o.api + "; ";
  const std::string note = api_note + (o.rate > 0 ? fmt_open_loop(o.rate) + "; floor: epoll relay hop, same schedule"
                                                  : "floor: epoll relay hop");
  p50 = {"latency64", "RTT p50", "us", {}, {}, true, 0, 0, 0, note};
  p99 = {"latency64", "RTT p99", "us", {}, {}, true, 0, 0, 0, note};
  const std::string ends_note = api_note + "floor: epoll relay hop, its ends waiting in epoll too";
  ends.p50 = {"latency64", "RTT p50", "us", {}, {}, true, 0, 0, 0, ends_note};
  ends.p99 = {"latency64", "RTT p99", "us", {}, {}, true, 0, 0, 0, ends_note};
  const std::string lane_note = api_note + "floor: futex lane round trip, no broker (where direct lanes aim)";
  ends.lane_p50 = {"latency64", "RTT p50", "us", {}, {}, true, 0, 0, 0, lane_note};
  ends.lane_p99 = {"latency64", "RTT p99", "us", {}, {}, true, 0, 0, 0, lane_note};
  cpu = {"latency64", "CPU s/100k RTT", "s", {}, {}, true, 0, 0, 0,
         api_note + fmt::format("broker, pinger and ponger together; busy poll {} us", o.busy_poll_us)};
  const std::uint64_t count = o.count ? o.count : 100000;
  // The first run's distributions: to --histogram, and to scratch files for --plot.
  const auto scratch = std::filesystem::temp_directory_path() / ("brokerbench-plot-" + std::to_string(::getpid()));
  std::string ubroker_csv = o.histogram, floor_csv;
  if (!o.plot.empty()) {
    std::filesystem::create_directories(scratch);
    if (ubroker_csv.empty()) ubroker_csv = (scratch / "ubroker.csv").string();
    if (o.limit) floor_csv = (scratch / "floor.csv").string();
  }
  for (int r = 0; r < o.repeat; ++r) {
    progress("latency64 run " + std::to_string(r + 1) + "/" + std::to_string(o.repeat));
    Broker broker(o);
    auto pong = role({o.api == "request" ? "responder" : "pong", broker.socket()});
    if (!pong || pong->line() != "ready") return;
    const std::string csv = r == 0 ? ubroker_csv : std::string();
    const double cpu_before = cpu_seconds(broker.pid()) + cpu_seconds(pong->pid());
    auto ping = o.rate > 0 ? role({"ping-open", broker.socket(), std::to_string(o.warmup), std::to_string(count),
                                   std::to_string(o.rate), csv})
                           : role({"ping", broker.socket(), std::to_string(o.warmup), std::to_string(count), csv,
                                   o.api});
    if (!ping) return;
    const std::string line = ping->line();
    // The pinger reports its own CPU (it has exited by the time we could read /proc).
    const double spent = cpu_seconds(broker.pid()) + cpu_seconds(pong->pid()) - cpu_before + parse_rate(line, "cpu_s");
    cpu.runs.push_back(spent / static_cast<double>(o.warmup + count) * 100000);
    if (!record_rtt(line, o, count, p50, p99, r == 0 ? floor_csv : std::string())) return;
    if (o.limit && o.rate == 0) {
      const Latency f = floor_relay(o.warmup, count, {}, true);
      ends.p50.runs.push_back(p50.runs.back());
      ends.p99.runs.push_back(p99.runs.back());
      ends.p50.floor_runs.push_back(static_cast<double>(f.p50) / 1000);
      ends.p99.floor_runs.push_back(static_cast<double>(f.p99) / 1000);
      const Latency lane = floor_lane(o.warmup, count);
      ends.lane_p50.runs.push_back(p50.runs.back());
      ends.lane_p99.runs.push_back(p99.runs.back());
      ends.lane_p50.floor_runs.push_back(static_cast<double>(lane.p50) / 1000);
      ends.lane_p99.floor_runs.push_back(static_cast<double>(lane.p99) / 1000);
    }
  }
  if (!o.plot.empty()) {
    std::vector<PlotSeries> series = {{"ubroker (64 B via brokerd)", ubroker_csv}};
    if (!floor_csv.empty()) series.push_back({"floor: epoll relay hop", floor_csv});
    const std::string title = "latency64: round-trip distribution, first run" +
                              (o.rate > 0 ? " (" + fmt_open_loop(o.rate) + ")" : std::string());
    (void)write_latency_plot(o.plot, title, series);
    std::error_code ignored;
    std::filesystem::remove_all(scratch, ignored);
  }
}

// W5 reqrep64: a request/reply round trip, one caller, one responder.
void reqrep64(const Options& o, Result& p50, Result& p99, Result& calls) {
  p50 = {"reqrep64", "RTT p50", "us", {}, {}, true, 0, 0, 0, "floor: epoll relay hop"};
  p99 = {"reqrep64", "RTT p99", "us", {}, {}, true, 0, 0, 0, "floor: epoll relay hop"};
  calls = {"reqrep64", "calls", "/s", {}, {}, false, 0, 0, 0, "floor: 1 / relay p50"};
  const std::uint64_t count = o.count ? o.count : 100000;
  for (int r = 0; r < o.repeat; ++r) {
    progress("reqrep64 run " + std::to_string(r + 1) + "/" + std::to_string(o.repeat));
    Broker broker(o);
    auto responder = role({"responder", broker.socket()});
    if (!responder || responder->line() != "ready") return;
    auto requester = role({"requester", broker.socket(), std::to_string(o.warmup), std::to_string(count)});
    if (!requester) return;
    const std::string line = requester->line();
    if (!record_rtt(line, o, count, p50, p99)) return;
    calls.runs.push_back(parse_rate(line, "calls_per_s"));
    if (o.limit) calls.floor_runs.push_back(p50.floor_runs.back() > 0 ? 1e6 / p50.floor_runs.back() : 0);
  }
}

// W6 connscale: broker memory per idle subscribed client, and W1 beside them.
void connscale(const Options& o, std::uint64_t n, Result& rss, Result& p50, Result& p99) {
  const std::string tag = "connscale" + std::to_string(n);
  rss = {tag, "broker RSS/client", "KiB", {}, {}, true, 0, 0, 0, "no floor"};
  p50 = {tag, "W1 p50 with idle", "us", {}, {}, true, 0, 0, 0, "floor: W1 p50 without them, same broker"};
  p99 = {tag, "W1 p99 with idle", "us", {}, {}, true, 0, 0, 0, "floor: W1 p99 without them, same broker"};
  const std::uint64_t count = o.count ? o.count : 20000;
  for (int r = 0; r < o.repeat; ++r) {
    progress(tag + " run " + std::to_string(r + 1) + "/" + std::to_string(o.repeat));
    Broker broker(o);
    auto pong = role({"pong", broker.socket()});
    if (!pong || pong->line() != "ready") return;
    auto w1 = [&]() -> std::optional<Latency> {
      auto ping = role({"ping", broker.socket(), std::to_string(o.warmup), std::to_string(count), ""});
      if (!ping) return std::nullopt;
      return parse_latency(ping->line());
    };
    const auto before = w1();
    const std::uint64_t rss_before = broker.rss_kib();
    auto idle = role({"idle", broker.socket(), std::to_string(n)});
    if (!idle || idle->line() != "ready" || !before) return;
    const std::uint64_t rss_after = broker.rss_kib();
    const auto with = w1();
    if (!with) return;
    rss.runs.push_back(static_cast<double>(rss_after - std::min(rss_after, rss_before)) / static_cast<double>(n));
    p50.runs.push_back(static_cast<double>(with->p50) / 1000);
    p99.runs.push_back(static_cast<double>(with->p99) / 1000);
    p50.floor_runs.push_back(static_cast<double>(before->p50) / 1000);
    p99.floor_runs.push_back(static_cast<double>(before->p99) / 1000);
  }
}

// W2 thru64 / W3 fanout64: one publisher, N subscribers, every sequence number checked.
void throughput(const Options& o, int subscribers, Result& res) {
  const bool fanout = subscribers > 1;
  res = {
      fanout ? "fanout64" : "thru64",     fanout ? "aggregate delivered" : "delivered", "msg/s", {}, {}, false, 0, 0, 0,
      "floor: socketpair, batched writes"};
  const std::uint64_t count = o.count ? o.count : (fanout ? 500000 : 2000000);
  for (int r = 0; r < o.repeat; ++r) {
    progress(res.workload + " run " + std::to_string(r + 1) + "/" + std::to_string(o.repeat));
    Broker broker(o);
    std::vector<Child> subs;
    for (int i = 0; i < subscribers; ++i) {
      auto s = role({"sub", broker.socket(), "bench.data", std::to_string(count)});
      if (!s || s->line() != "ready") return;
      subs.push_back(std::move(*s));
    }
    auto pub = role({"pub", broker.socket(), "bench.data", std::to_string(count), "64"});
    double aggregate = 0;
    for (auto& s : subs) {
      const Throughput t = parse_throughput(s.line());
      aggregate += t.rate();
      res.lost += t.lost + (count - std::min(count, t.received));
      res.reordered += t.reordered;
      res.duplicates += t.duplicates;
    }
    if (pub) pub->wait();
    res.runs.push_back(aggregate);
    if (o.limit) res.floor_runs.push_back(floor_throughput(count, 64).rate());
  }
}

// W4 bulk1M: one publisher, one subscriber, payloads through shared memory; two floors.
void bulk(const Options& o, Result& vs_shm, Result& vs_socket) {
  const std::size_t kSize = o.bulk_size;
  vs_shm = {"bulk1M", "payload", "GB/s", {}, {}, false, 0, 0, 0, "floor: shared ring, no broker"};
  vs_socket = {"bulk1M", "payload", "GB/s", {}, {}, false, 0, 0, 0, "floor: socketpair copy"};
  const std::uint64_t count = o.bulk_count;
  const auto gbps = [&](const Throughput& t) { return t.rate() * kSize / 1e9; };
  for (int r = 0; r < o.repeat; ++r) {
    progress("bulk1M run " + std::to_string(r + 1) + "/" + std::to_string(o.repeat));
    Broker broker(o);
    auto sub = role({"bulk-sub", broker.socket(), "bench.bulk", std::to_string(count)});
    if (!sub || sub->line() != "ready") return;
    auto pub = role({"bulk-pub", broker.socket(), "bench.bulk", std::to_string(count), std::to_string(kSize)});
    const Throughput t = parse_throughput(sub->line());
    vs_shm.lost += t.lost + (count - std::min(count, t.received + t.lost));
    vs_shm.duplicates += t.duplicates;
    if (pub) pub->wait();
    vs_shm.runs.push_back(gbps(t));
    vs_socket.runs.push_back(gbps(t));
    if (o.limit) {
      vs_shm.floor_runs.push_back(gbps(floor_bulk_shm(count, kSize)));
      vs_socket.floor_runs.push_back(gbps(floor_bulk_socket(count, kSize)));
    }
  }
  vs_socket.lost = vs_shm.lost;
  vs_socket.duplicates = vs_shm.duplicates;
}

void report(const std::vector<Result>& results, const Options& o) {
  progress("");
  if (::isatty(STDERR_FILENO)) std::fprintf(stderr, "\r\033[K");
  if (o.json) {
    for (const auto& r : results) {
      std::printf(
          "{\"workload\":\"%s\",\"metric\":\"%s\",\"unit\":\"%s\",\"median\":%.3f,\"min\":%.3f,\"max\":%.3f,"
          "\"floor\":%.3f,\"ratio\":%.3f,\"runs\":%zu,\"lost\":%llu,\"reordered\":%llu,\"duplicates\":%llu,"
          "\"note\":\"%s\"}\n",
          r.workload.c_str(), r.metric.c_str(), r.unit.c_str(), median(r.runs),
          r.runs.empty() ? 0 : *std::min_element(r.runs.begin(), r.runs.end()),
          r.runs.empty() ? 0 : *std::max_element(r.runs.begin(), r.runs.end()), median(r.floor_runs),
          median(r.floor_runs) > 0 ? median(r.runs) / median(r.floor_runs) : 0, r.runs.size(),
          static_cast<unsigned long long>(r.lost), static_cast<unsigned long long>(r.reordered),
          static_cast<unsigned long long>(r.duplicates), r.note.c_str());
    }
    return;
  }
  std::printf("%-10s %-20s %14s %14s %14s %8s  %s\n", "WORKLOAD", "METRIC", "UBROKER", "(MIN..MAX)", "FLOOR", "RATIO",
              "VERDICT");
  for (const auto& r : results) {
    char range[64];
    std::snprintf(range, sizeof range, "%.1f..%.1f",
                  r.runs.empty() ? 0 : *std::min_element(r.runs.begin(), r.runs.end()),
                  r.runs.empty() ? 0 : *std::max_element(r.runs.begin(), r.runs.end()));
    const double f = median(r.floor_runs);
    char ratio[32] = "-";
    if (f > 0) std::snprintf(ratio, sizeof ratio, "%.2fx", median(r.runs) / f);
    const bool clean = r.lost == 0 && r.reordered == 0 && r.duplicates == 0;
    std::printf("%-10s %-20s %14.1f %14s %14.1f %8s  %s  (%s)\n", r.workload.c_str(), (r.metric + " " + r.unit).c_str(),
                median(r.runs), range, f, ratio,
                clean ? "ok"
                      : ("LOSSY: lost " + std::to_string(r.lost) + ", reordered " + std::to_string(r.reordered) +
                         ", duplicates " + std::to_string(r.duplicates))
                            .c_str(),
                r.note.c_str());
  }
  std::printf("(median of %d runs; 2 cores: broker and clients share them; ratio = ubroker / floor)\n", o.repeat);
}

}  // namespace
}  // namespace ubroker::bench

int main(int argc, char** argv) {
  using namespace ubroker::bench;
  if (argc >= 2 && std::string(argv[1]) == "role") return run_role(argc - 2, argv + 2);
  CLI::App app{
      "brokerbench: ubroker's workloads beside the machine's own floor, measured in the same run.\n"
      "Workloads (docs/benchmarks.md; brokerbench(1)): latency64 (W1), thru64 (W2), fanout64 (W3), bulk1M (W4,\n"
      "shared memory), reqrep64 (W5), connscale (W6), all."};
  Options o;
  o.brokerd = (std::filesystem::path(std::filesystem::read_symlink("/proc/self/exe")).parent_path().parent_path() /
               "broker" / "brokerd")
                  .string();
  if (!std::filesystem::exists(o.brokerd)) {
    o.brokerd =
        (std::filesystem::path(std::filesystem::read_symlink("/proc/self/exe")).parent_path() / "brokerd").string();
  }
  std::string workload;
  app.add_option("workload", workload, "latency64, thru64, fanout64, bulk1M, reqrep64, connscale or all")
      ->required()
      ->check(CLI::IsMember({"latency64", "thru64", "fanout64", "bulk1M", "reqrep64", "connscale", "all"}));
  app.add_option("--brokerd", o.brokerd, "brokerd to start (default: the one built beside brokerbench)");
  app.add_option("--socket", o.socket, "Use a running broker instead of starting one");
  app.add_option("--repeat", o.repeat, "Runs per workload; the median is reported (default 3)")
      ->check(CLI::PositiveNumber);
  app.add_option("--count", o.count, "Messages (default: BENCH.md's, per workload)");
  app.add_option("--warmup", o.warmup, "Latency warm-up round trips (default 10000)");
  app.add_option("--rate", o.rate,
                 "latency64 open loop: send R messages per second on a fixed schedule whatever the replies do, "
                 "and count each latency from the message's intended send time, so a stall shows in every "
                 "message behind it (no coordinated omission); the floor runs on the same schedule. Default: "
                 "closed loop, one message in flight")
      ->check(CLI::Range(1.0, 10e6));
  app.add_option("--api", o.api,
                 "latency64's path through the client API: io (the client on the pinger's io_context, run_one; the "
                 "default), callback (the pong's callback sends the next ping), receive (publish, then receive()), "
                 "request (request() against a responder), poll (a manual_io client driven by poll())")
      ->check(CLI::IsMember(std::vector<std::string>(std::begin(kLatencyApis), std::end(kLatencyApis))));
  app.add_option("--busy-poll-us", o.busy_poll_us,
                 "Busy polling for the broker (busy_poll_us) and every client (ConnectOptions::busy_poll), in "
                 "microseconds (default 0)")
      ->check(CLI::Range(0u, 10000u));
  app.add_option("--lanes", o.lanes,
                 "Direct lanes in the broker brokerbench starts (lanes.enabled): on (the default, as brokerd's) or off")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_flag("--cpu", o.cpu,
               "latency64 also reports the CPU seconds the broker, pinger and ponger spent per 100k round trips");
  app.add_option("--connections", o.connections, "connscale idle client counts (default 1000 10000)");
  app.add_option("--subscribers", o.subscribers, "fanout64 subscribers (default 8)")->check(CLI::PositiveNumber);
  app.add_option("--bulk-count", o.bulk_count, "bulk1M payloads per run (default 2000)")->check(CLI::PositiveNumber);
  app.add_option("--bulk-size", o.bulk_size, "bulk1M payload bytes (default 1048576)")
      ->check(CLI::Range(std::size_t{64}, std::size_t{256} << 20));
  app.add_option("--histogram", o.histogram, "Write latency64's first run's full distribution as CSV");
  app.add_option("--plot", o.plot,
                 "Draw latency64's first run's distribution, beside its floor's, as an SVG (percentile on a log "
                 "axis)");
  bool no_limit = false;
  app.add_flag("--no-limit", no_limit, "Skip measuring the floors");
  app.footer(
      "Each figure is the median of --repeat runs, beside its floor: the same work with no broker, measured in the\n"
      "same run (docs/benchmarks.md). RATIO = ubroker / floor. latency64 in a closed loop has two floors: the epoll\n"
      "relay hop, and the same hop with its ends waiting in epoll as event-driven clients do. Exit status 1 when a\n"
      "run lost, reordered or duplicated a message, or did not complete. docs/performance.md has results.");
  app.add_flag("--json", o.json, "One JSON object per result line");
  CLI11_PARSE(app, argc, argv);
  o.limit = !no_limit;
  // The client roles read their busy-poll window from the environment brokerbench passes on.
  ::setenv("BROKERBENCH_BUSY_POLL_US", std::to_string(o.busy_poll_us).c_str(), 1);
  if (o.rate > 0 && o.api != "io") {
    std::fprintf(stderr, "brokerbench: --rate (open loop) drives the io path only; leave out --api\n");
    return 2;
  }
#ifndef __OPTIMIZE__
  std::fprintf(stderr, "brokerbench: WARNING: this build is not optimised (no -O); figures mislead\n");
#endif
#ifndef NDEBUG
  std::fprintf(stderr, "brokerbench: WARNING: this build has assertions on; figures mislead\n");
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  std::fprintf(stderr, "brokerbench: WARNING: built with a sanitizer; figures mislead\n");
#endif
  std::vector<Result> results;
  if (workload == "latency64" || workload == "all") {
    Result p50, p99, cpu;
    EpollEnds ends;
    latency64(o, p50, p99, ends, cpu);
    results.push_back(p50);
    results.push_back(p99);
    if (!ends.p50.floor_runs.empty()) {
      results.push_back(ends.p50);
      results.push_back(ends.p99);
      results.push_back(ends.lane_p50);
      results.push_back(ends.lane_p99);
    }
    if (o.cpu) results.push_back(cpu);
  }
  if (workload == "reqrep64" || workload == "all") {
    Result p50, p99, calls;
    reqrep64(o, p50, p99, calls);
    results.push_back(p50);
    results.push_back(p99);
    results.push_back(calls);
  }
  if (workload == "connscale" || workload == "all") {
    for (std::uint64_t n : o.connections) {
      Result rss, p50, p99;
      connscale(o, n, rss, p50, p99);
      results.push_back(rss);
      results.push_back(p50);
      results.push_back(p99);
    }
  }
  if (workload == "bulk1M" || workload == "all") {
    Result vs_shm, vs_socket;
    bulk(o, vs_shm, vs_socket);
    results.push_back(vs_shm);
    results.push_back(vs_socket);
  }
  if (workload == "thru64" || workload == "all") {
    Result r;
    throughput(o, 1, r);
    results.push_back(r);
  }
  if (workload == "fanout64" || workload == "all") {
    Result r;
    throughput(o, o.subscribers, r);
    results.push_back(r);
  }
  report(results, o);
  for (const auto& r : results) {
    if (r.runs.size() != static_cast<std::size_t>(o.repeat)) {
      std::fprintf(stderr, "brokerbench: %s did not complete every run\n", r.workload.c_str());
      return 1;
    }
    if (r.lost || r.reordered || r.duplicates) return 1;
  }
  return 0;
}
