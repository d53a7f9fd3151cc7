// brokerbench roles (client processes) and floors (no broker).
#include "roles.hpp"

#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <chrono>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "histogram.hpp"
#include "ubroker.pb.h"
#include "ubroker/client.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/socket_address.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::bench {

std::uint64_t ns_since(Clock::time_point t) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t).count());
}

std::optional<Client> connect(const std::string& address, const std::string& name, asio::io_context* io,
                              bool manual) {
  const char* busy = std::getenv("BROKERBENCH_BUSY_POLL_US");  // set by brokerbench (--busy-poll-us)
  auto c = Client::connect({.address = address,
                            .name = name,
                            .io = io,
                            .reconnect = {.enabled = false},
                            .busy_poll = std::chrono::microseconds(busy ? std::strtoul(busy, nullptr, 10) : 0),
                            .manual_io = manual});
  if (!c) {
    std::fprintf(stderr, "brokerbench %s: %s\n", name.c_str(), c.error().message.c_str());
    return std::nullopt;
  }
  return std::move(*c);
}

namespace {


std::map<std::string, std::string> words(const std::string& line) {
  std::map<std::string, std::string> kv;
  std::istringstream in(line);
  for (std::string w; in >> w;) {
    if (auto eq = w.find('='); eq != std::string::npos) kv[w.substr(0, eq)] = w.substr(eq + 1);
  }
  return kv;
}


// W1 B: republishes every ping as a pong, from the client's I/O thread.
int role_pong(const std::string& address) {
  auto c = connect(address, "bench-pong", nullptr);
  if (!c) return 1;
  auto sub = c->subscribe("bench.ping", [&](const MessageView& m) { (void)c->publish("bench.pong", m.payload); });
  if (!sub) return 1;
  std::printf("ready\n");
  std::fflush(stdout);
  while (c->connected()) ::pause();  // until killed
  return 0;
}

// W5 responder: echoes every request from the client's I/O thread.
int role_responder(const std::string& address) {
  auto c = connect(address, "bench-responder", nullptr);
  if (!c) return 1;
  auto service = c->serve("bench.rpc", [](Request r) { (void)r.reply(r.payload()); });
  if (!service) return 1;
  std::printf("ready\n");
  std::fflush(stdout);
  while (c->connected()) ::pause();  // until killed
  return 0;
}

// W5 caller: one request at a time, awaited on this thread like role_ping.
int role_requester(const std::string& address, std::uint64_t warmup, std::uint64_t count) {
  asio::io_context io(1);
  std::optional<Client> c;
  {
    auto guard = asio::make_work_guard(io);
    std::thread helper([&] { io.run(); });
    c = connect(address, "bench-requester", &io);
    guard.reset();
    io.stop();
    helper.join();
    io.restart();
  }
  if (!c) return 1;
  std::vector<std::byte> payload(64, std::byte{0x42});
  Histogram h;
  Clock::time_point measured_from;
  for (std::uint64_t i = 0; i < warmup + count; ++i) {
    if (i == warmup) measured_from = Clock::now();
    bool done = false, ok = false;
    const auto t0 = Clock::now();
    c->request_async("bench.rpc", payload, std::chrono::seconds(10), [&](Result<Message> r) {
      ok = r.has_value() && r->payload().size() == 64;
      done = true;
    });
    while (!done) {
      if (io.run_one() == 0) return 1;
    }
    if (!ok) return 1;
    if (i >= warmup) h.record(ns_since(t0));
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - measured_from).count();
  std::printf("%s calls_per_s=%.1f\n", format(summarize(h)).c_str(), static_cast<double>(count) / seconds);
  std::fflush(stdout);
  c->close();
  return 0;
}

// W6: N idle clients, each connected, welcomed and subscribed to a topic of its own, held
// open until killed. Raw sockets speaking the protocol, so that thousands fit in one process.
int role_idle(const std::string& address, std::uint64_t n) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  auto addr = proto::make_socket_address(address);
  if (!addr) return 1;
  std::vector<shm::UniqueFd> fds;
  fds.reserve(n);
  auto exchange = [](int fd, const wire::Header& h, wire::FrameType expect) {
    std::vector<std::byte> frame(proto::frame_head_size(h));
    proto::write_frame_head(frame.data(), h, 0);
    if (!write_all(fd, frame.data(), frame.size())) return false;
    std::byte prefix[proto::kPrefixSize];
    if (!read_all(fd, prefix, sizeof prefix)) return false;
    auto split = proto::split_frame(prefix, {});
    if (!split) return false;
    std::vector<std::byte> rest(split->frame_size - proto::kPrefixSize);
    if (!read_all(fd, rest.data(), rest.size())) return false;
    std::vector<std::byte> whole(prefix, prefix + proto::kPrefixSize);
    whole.insert(whole.end(), rest.begin(), rest.end());
    wire::Header got;
    auto parts = proto::split_frame(whole, {});
    return parts && parts->complete && proto::parse_header(parts->header, got) && got.type() == expect;
  };
  for (std::uint64_t i = 0; i < n; ++i) {
    shm::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd || ::connect(fd.get(), addr->get(), addr->len) != 0) {
      std::fprintf(stderr, "brokerbench idle: connection %llu: %s\n", static_cast<unsigned long long>(i),
                   std::strerror(errno));
      return 1;
    }
    wire::Header hello;
    hello.set_type(wire::HELLO);
    hello.mutable_hello()->set_protocol_version(proto::kProtocolVersion);
    hello.mutable_hello()->set_client_name("bench-idle");
    wire::Header sub;
    sub.set_type(wire::SUBSCRIBE);
    sub.set_seq(1);
    sub.add_sub_ids(1);
    sub.set_topic("bench.idle." + std::to_string(i));
    if (!exchange(fd.get(), hello, wire::WELCOME) || !exchange(fd.get(), sub, wire::ACK)) return 1;
    fds.push_back(std::move(fd));
  }
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) ::pause();  // until killed
}

// W2/W3 receiver: checks every sequence number.
int role_sub(const std::string& address, const std::string& topic, std::uint64_t count) {
  auto c = connect(address, "bench-sub", nullptr);
  if (!c) return 1;
  std::mutex mu;
  std::condition_variable cv;
  Throughput t;
  std::uint64_t next = 0;
  Clock::time_point first, last;
  auto sub = c->subscribe(topic, [&](const MessageView& m) {
    std::uint64_t seq = ~0ull;
    if (m.payload.size() >= 8) std::memcpy(&seq, m.payload.data(), 8);
    if (t.received == 0) first = Clock::now();
    ++t.received;
    if (seq > next) t.lost += seq - next;
    if (seq < next) ++t.reordered;
    if (seq + 1 > next) next = seq + 1;
    if (seq + 1 == count) {
      last = Clock::now();
      std::lock_guard lk(mu);
      cv.notify_all();
    }
  });
  if (!sub) return 1;
  std::printf("ready\n");
  std::fflush(stdout);
  std::unique_lock lk(mu);
  cv.wait(lk, [&] { return next >= count || !c->connected(); });
  t.seconds = std::chrono::duration<double>(last - first).count();
  if (t.received > count) t.duplicates = t.received - count;
  std::printf("%s\n", format(t).c_str());
  return 0;
}

// W2/W3 sender: as fast as the API allows.
int role_pub(const std::string& address, const std::string& topic, std::uint64_t count, std::size_t size) {
  auto c = connect(address, "bench-pub", nullptr);
  if (!c) return 1;
  std::vector<std::byte> payload(std::max<std::size_t>(size, 8), std::byte{0x5a});
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    std::memcpy(payload.data(), &seq, 8);
    if (auto r = c->publish(topic, payload); !r) {
      std::fprintf(stderr, "brokerbench pub: %s\n", r.error().message.c_str());
      return 1;
    }
  }
  if (!c->flush(std::chrono::seconds(300))) return 1;
  std::printf("published=%llu\n", static_cast<unsigned long long>(count));
  return 0;
}

// Reads n bytes, first waiting in epoll_wait each time when `ep` is an epoll set holding fd
// (as an event-driven client waits), else blocking in read().
bool read_waiting(int ep, int fd, void* p, std::size_t n) {
  if (ep < 0) return read_all(fd, p, n);
  auto* b = static_cast<char*>(p);
  while (n > 0) {
    epoll_event got{};
    if (::epoll_wait(ep, &got, 1, -1) < 0 && errno != EINTR) return false;
    const ssize_t r = ::read(fd, b, n);
    if (r <= 0) return false;
    b += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// An epoll set holding fd (level-triggered), or none when the end blocks in read().
shm::UniqueFd epoll_for(int fd, bool in_epoll) {
  if (!in_epoll) return {};
  shm::UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev{.events = EPOLLIN, .data = {.fd = fd}};
  if (!ep || ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) != 0) _exit(1);  // the floor then reports nothing
  return ep;
}

void echo_loop(int fd, bool in_epoll) {
  const shm::UniqueFd ep = epoll_for(fd, in_epoll);
  char buf[64];
  while (read_waiting(ep.get(), fd, buf, sizeof buf) && write_all(fd, buf, sizeof buf)) {
  }
  _exit(0);
}

Histogram ping_over(int fd, std::uint64_t warmup, std::uint64_t count, bool in_epoll) {
  const shm::UniqueFd ep = epoll_for(fd, in_epoll);
  char buf[64] = {};
  Histogram h;
  for (std::uint64_t i = 0; i < warmup + count; ++i) {
    const auto t0 = Clock::now();
    if (!write_all(fd, buf, sizeof buf) || !read_waiting(ep.get(), fd, buf, sizeof buf)) break;
    if (i >= warmup) h.record(ns_since(t0));
  }
  return h;
}

// Forwards bytes between two sockets with epoll, like a minimal broker hop.
void relay_loop(int a, int b) {
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{.events = EPOLLIN, .data = {.fd = a}};
  if (ep < 0 || ::epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev) != 0) _exit(1);  // the floor run then reports nothing
  ev.data.fd = b;
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, b, &ev) != 0) _exit(1);
  char buf[65536];
  for (;;) {
    epoll_event got[2];
    const int n = ::epoll_wait(ep, got, 2, -1);
    for (int i = 0; i < n; ++i) {
      const int from = got[i].data.fd, to = from == a ? b : a;
      const ssize_t r = ::read(from, buf, sizeof buf);
      if (r <= 0 || !write_all(to, buf, static_cast<std::size_t>(r))) _exit(0);
    }
  }
}

}  // namespace

Latency summarize(const Histogram& h) {
  return {h.quantile(0.5), h.quantile(0.9), h.quantile(0.99), h.quantile(0.999), h.max(), h.count()};
}

void write_histogram(const Histogram& h, const std::string& path) {
  if (path.empty()) return;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "w"), &std::fclose);
  if (!f) {
    std::fprintf(stderr, "brokerbench: cannot write %s: %s\n", path.c_str(), std::strerror(errno));
    return;
  }
  h.write_csv(f.get());
  if (std::ferror(f.get()) != 0 || std::fclose(f.release()) != 0) {
    std::fprintf(stderr, "brokerbench: writing %s failed: %s\n", path.c_str(), std::strerror(errno));
  }
}

std::string format(const Latency& l) {
  char s[256];
  std::snprintf(s, sizeof s, "p50=%llu p90=%llu p99=%llu p999=%llu max=%llu count=%llu lost=%llu reordered=%llu",
                static_cast<unsigned long long>(l.p50), static_cast<unsigned long long>(l.p90),
                static_cast<unsigned long long>(l.p99), static_cast<unsigned long long>(l.p999),
                static_cast<unsigned long long>(l.max), static_cast<unsigned long long>(l.count),
                static_cast<unsigned long long>(l.lost), static_cast<unsigned long long>(l.reordered));
  return s;
}

std::string format(const Throughput& t) {
  char s[256];
  std::snprintf(s, sizeof s, "received=%llu lost=%llu reordered=%llu duplicates=%llu seconds=%.6f",
                static_cast<unsigned long long>(t.received), static_cast<unsigned long long>(t.lost),
                static_cast<unsigned long long>(t.reordered), static_cast<unsigned long long>(t.duplicates), t.seconds);
  return s;
}

Latency parse_latency(const std::string& line) {
  auto kv = words(line);
  auto u = [&](const char* k) { return kv.contains(k) ? std::stoull(kv[k]) : 0ull; };
  return {u("p50"), u("p90"), u("p99"), u("p999"), u("max"), u("count"), u("lost"), u("reordered")};
}

Throughput parse_throughput(const std::string& line) {
  auto kv = words(line);
  auto u = [&](const char* k) { return kv.contains(k) ? std::stoull(kv[k]) : 0ull; };
  Throughput t{u("received"), u("lost"), u("reordered"), u("duplicates"), 0};
  if (kv.contains("seconds")) t.seconds = std::stod(kv["seconds"]);
  return t;
}

double parse_rate(const std::string& line, const std::string& key) {
  auto kv = words(line);
  return kv.contains(key) ? std::stod(kv[key]) : 0;
}

int run_role(int argc, char** argv) {
  const std::string role = argc > 0 ? argv[0] : "";
  auto arg = [&](int i) { return i < argc ? std::string(argv[i]) : std::string(); };
  auto num = [&](int i) { return std::strtoull(arg(i).c_str(), nullptr, 10); };
  if (role == "pong") return role_pong(arg(1));
  if (role == "ping") return role_ping(arg(1), arg(5).empty() ? "io" : arg(5), num(2), num(3), arg(4));
  if (role == "ping-open") return role_ping_open(arg(1), num(2), num(3), std::strtod(arg(4).c_str(), nullptr), arg(5));
  if (role == "sub") return role_sub(arg(1), arg(2), num(3));
  if (role == "pub") return role_pub(arg(1), arg(2), num(3), num(4));
  if (role == "responder") return role_responder(arg(1));
  if (role == "bulk-pub") return role_bulk_pub(arg(1), arg(2), num(3), num(4));
  if (role == "bulk-sub") return role_bulk_sub(arg(1), arg(2), num(3));
  if (role == "idle") return role_idle(arg(1), num(2));
  if (role == "requester") return role_requester(arg(1), num(2), num(3));
  std::fprintf(stderr, "brokerbench: unknown role '%s'\n", role.c_str());
  return 2;
}

bool RelayFloor::start(bool ends_in_epoll) {
  int ab[2], bc[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ab) != 0) return false;
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, bc) != 0) {
    ::close(ab[0]);
    ::close(ab[1]);
    return false;
  }
  relay_ = ::fork();
  if (relay_ == 0) {
    ::close(ab[0]);
    ::close(bc[1]);
    relay_loop(ab[1], bc[0]);
  }
  echo_ = relay_ > 0 ? ::fork() : -1;
  if (echo_ == 0) {
    ::close(ab[0]);
    ::close(ab[1]);
    ::close(bc[0]);
    echo_loop(bc[1], ends_in_epoll);
  }
  ::close(ab[1]);
  ::close(bc[0]);
  ::close(bc[1]);
  client_ = ab[0];
  if (relay_ < 0 || echo_ < 0) {
    stop();
    return false;
  }
  return true;
}

void RelayFloor::stop() {
  if (client_ >= 0) ::close(client_);  // the relay sees end of file and exits; the echo follows
  client_ = -1;
  for (pid_t* p : {&relay_, &echo_}) {
    if (*p > 0) ::waitpid(*p, nullptr, 0);
    *p = -1;
  }
}

Latency floor_relay(std::uint64_t warmup, std::uint64_t count, const std::string& csv, bool ends_in_epoll) {
  RelayFloor floor;
  if (!floor.start(ends_in_epoll)) return {};
  const Histogram h = ping_over(floor.client_fd(), warmup, count, ends_in_epoll);
  floor.stop();
  write_histogram(h, csv);
  return summarize(h);
}

Throughput floor_throughput(std::uint64_t count, std::size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return {};
  const pid_t child = ::fork();
  if (child == 0) {  // the sender: messages batched into 64 KiB writes
    ::close(sv[0]);
    std::vector<char> batch;
    batch.reserve(65536 + size);
    std::vector<char> msg(size, 0x5a);
    for (std::uint64_t seq = 0; seq < count; ++seq) {
      std::memcpy(msg.data(), &seq, 8);
      batch.insert(batch.end(), msg.begin(), msg.end());
      if (batch.size() >= 65536 || seq + 1 == count) {
        if (!write_all(sv[1], batch.data(), batch.size())) _exit(1);
        batch.clear();
      }
    }
    _exit(0);
  }
  ::close(sv[1]);
  Throughput t;
  std::vector<char> buf(65536 + size);
  std::size_t have = 0;
  std::uint64_t next = 0;
  Clock::time_point first{}, last{};
  while (next < count) {
    const ssize_t r = ::read(sv[0], buf.data() + have, buf.size() - have);
    if (r <= 0) break;
    if (t.received == 0 && have == 0) first = Clock::now();
    have += static_cast<std::size_t>(r);
    std::size_t off = 0;
    for (; off + size <= have; off += size) {
      std::uint64_t seq;
      std::memcpy(&seq, buf.data() + off, 8);
      if (seq != next) ++t.lost;
      next = seq + 1;
      ++t.received;
    }
    std::memmove(buf.data(), buf.data() + off, have - off);
    have -= off;
  }
  last = Clock::now();
  ::close(sv[0]);
  ::waitpid(child, nullptr, 0);
  t.seconds = std::chrono::duration<double>(last - first).count();
  return t;
}

bool write_all(int fd, const void* p, std::size_t n) {
  const auto* b = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, b, n);
    if (w <= 0) return false;
    b += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_all(int fd, void* p, std::size_t n) {
  auto* b = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = ::read(fd, b, n);
    if (r <= 0) return false;
    b += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

}  // namespace ubroker::bench
