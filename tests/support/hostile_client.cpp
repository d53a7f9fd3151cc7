// ubroker_hostile: a client that misbehaves on purpose, for testing that a broker survives
// local peers that are buggy or malicious.
//   ubroker_hostile --socket PATH [--scenario NAME|all] [--rounds N]
//   ubroker_hostile --socket PATH --hog KIND
// A hog pushes one resource to the limits the broker sets for its uid (subscriptions,
// retained, partial-frames, replies, flood), prints "hog KIND: ..." with what it got and what
// was refused, then "holding" and keeps everything until it is killed.
// Each scenario opens its own connections, misbehaves, and checks that the broker answers
// the way the protocol promises (an Error with the expected code, then the close) within a
// deadline. Prints one line per scenario and round; exits 1 if the broker answered wrongly,
// hung, or stopped accepting connections, 2 on bad usage.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "send_fds.hpp"
#include "ubroker.pb.h"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/socket_address.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace {

using namespace ubroker;
using Clock = std::chrono::steady_clock;
constexpr auto kDeadline = std::chrono::seconds(10);

std::string g_address;
std::mt19937_64 g_random(20261121);

std::vector<std::byte> encode(const wire::Header& h, std::size_t payload = 0) {
  std::vector<std::byte> out(proto::frame_head_size(h) + payload);
  proto::write_frame_head(out.data(), h, payload);
  for (std::size_t i = out.size() - payload; i < out.size(); ++i) out[i] = std::byte(g_random());
  return out;
}

wire::Header hello_header() {
  wire::Header h;
  h.set_type(wire::HELLO);
  h.mutable_hello()->set_protocol_version(proto::kProtocolVersion);
  h.mutable_hello()->set_client_name("hostile");
  return h;
}

// One connection and what the broker said on it.
class Conn {
 public:
  Conn() : fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    const auto addr = proto::make_socket_address(g_address);
    if (!fd_ || !addr || ::connect(fd_.get(), addr->get(), addr->len) != 0) {
      std::fprintf(stderr, "ubroker_hostile: cannot connect to %s: %s\n", g_address.c_str(), std::strerror(errno));
      std::exit(1);
    }
    // A broker that stops reading must not hang this tool: sends give up at the deadline.
    const timeval limit{.tv_sec = std::chrono::seconds(kDeadline).count(), .tv_usec = 0};
    if (::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit) != 0) {
      std::fprintf(stderr, "ubroker_hostile: SO_SNDTIMEO: %s\n", std::strerror(errno));
      std::exit(1);
    }
  }
  // Sends; false once the broker has closed its end (that may be the point).
  bool send(std::span<const std::byte> bytes, std::span<const int> fds = {}) {
    return test::sendmsg_with_fds(fd_.get(), bytes, fds) == static_cast<ssize_t>(bytes.size());
  }
  bool send(const wire::Header& h, std::size_t payload = 0) { return send(encode(h, payload)); }
  void hello() {
    send(hello_header());
    expect_frame(wire::WELCOME);
  }
  void shutdown_write() { ::shutdown(fd_.get(), SHUT_WR); }

  // Reads frames until one of `type` (and, for errors, `code`) or the deadline; false if the
  // connection closed or the deadline passed first.
  // `otherwise`: a frame type that ends the wait with false (the answer that is not this one).
  bool expect_frame(wire::FrameType type, wire::ErrorCode code = wire::ERROR_NONE,
                    std::optional<wire::FrameType> otherwise = std::nullopt) {
    for (;;) {
      while (auto h = next_buffered()) {
        if (h->type() == type && (type != wire::ERROR || h->error().code() == code)) return true;
        if (otherwise && h->type() == *otherwise) return false;
      }
      if (!read_more()) return false;
    }
  }
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  // Errors of `code` among the frames that have arrived by now (without waiting).
  std::size_t errors_now(wire::ErrorCode code) {
    std::size_t n = 0;
    do {
      while (auto h = next_buffered()) n += h->type() == wire::ERROR && h->error().code() == code;
    } while (receive(0));
    return n;
  }
  // The broker closes the connection (after whatever it sends first) within the deadline.
  bool expect_close() {
    for (;;) {
      while (next_buffered()) {
      }
      if (!read_more()) return eof_;
    }
  }

 private:
  std::optional<wire::Header> next_buffered() {
    auto split = proto::split_frame(in_, {.max_frame = 1u << 24});
    if (!split || !split->complete) return std::nullopt;
    wire::Header h;
    if (!proto::parse_header(split->header, h)) return std::nullopt;
    in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(split->frame_size));
    return h;
  }
  bool read_more() {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(start_ + kDeadline - Clock::now());
    return left.count() > 0 && receive(static_cast<int>(left.count()));
  }
  // Waits up to `timeout_ms` for bytes and buffers them; false on timeout or EOF.
  bool receive(int timeout_ms) {
    if (eof_) return false;
    pollfd p{.fd = fd_.get(), .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    std::byte buf[65536];
    const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    in_.insert(in_.end(), buf, buf + n);
    return true;
  }

  shm::UniqueFd fd_;
  std::vector<std::byte> in_;
  bool eof_ = false;
  Clock::time_point start_ = Clock::now();
};

std::vector<std::byte> random_bytes(std::size_t n) {
  std::vector<std::byte> b(n);
  for (auto& x : b) x = std::byte(g_random());
  return b;
}

// Each returns an empty string when the broker behaved, else what it did wrong.
using Scenario = std::function<std::string()>;

std::string fatal(Conn& c, wire::ErrorCode code, const char* what) {
  if (!c.expect_frame(wire::ERROR, code)) return std::string(what) + ": no " + wire::ErrorCode_Name(code);
  if (!c.expect_close()) return std::string(what) + ": not closed after " + wire::ErrorCode_Name(code);
  return {};
}

std::string garbage_before_hello() {
  Conn c;
  auto junk = random_bytes(4096);
  std::memcpy(junk.data(), "\x10\x00\x00\x00\x04\x00\x00\x00", 8);  // a small frame, then junk header bytes
  c.send(junk);
  return fatal(c, wire::PROTOCOL_ERROR, "garbage before HELLO");
}

std::string garbage_after_hello() {
  Conn c;
  c.hello();
  std::vector<std::byte> junk = random_bytes(64);
  std::memcpy(junk.data(), "\x38\x00\x00\x00\x30\x00\x00\x00", 8);
  c.send(junk);
  return fatal(c, wire::PROTOCOL_ERROR, "garbage after HELLO");
}

std::string oversized_frame() {
  Conn c;
  c.hello();
  std::byte prefix[8];
  proto::write_prefix(prefix, 0x7fffffff, 16);
  c.send(prefix);
  return fatal(c, wire::FRAME_TOO_LARGE, "a 2 GiB frame announced");
}

std::string bad_header_length() {
  Conn c;
  c.hello();
  std::byte prefix[8];
  proto::write_prefix(prefix, 16, 1000);  // the header is longer than the frame
  c.send(prefix);
  return fatal(c, wire::PROTOCOL_ERROR, "header longer than its frame");
}

std::string truncated_then_gone() {
  // Half a frame and a hang-up: the broker just drops the connection (nothing to answer).
  Conn c;
  c.hello();
  wire::Header h;
  h.set_type(wire::PUBLISH);
  h.set_topic("hostile.t");
  auto frame = encode(h, 1000);
  c.send(std::span(frame).first(frame.size() / 2));
  c.shutdown_write();
  return c.expect_close() ? std::string() : "truncated frame: connection not closed";
}

std::string broker_only_frames() {
  Conn c;
  c.hello();
  wire::Header h;
  h.set_type(wire::DELIVER);
  h.set_topic("x");
  c.send(h);
  return fatal(c, wire::PROTOCOL_ERROR, "a DELIVER sent by a client");
}

std::string wrong_fds() {
  std::string problems;
  const shm::UniqueFd null_file(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  int ends[2];
  if (!null_file || ::pipe2(ends, O_CLOEXEC) != 0) return std::string("cannot make fds to send: ") + std::strerror(errno);
  const shm::UniqueFd pipe_read(ends[0]), pipe_write(ends[1]);
  const int null_fd = null_file.get(), pipe_fd = pipe_read.get();
  {
    Conn c;  // an fd on a PUBLISH
    c.hello();
    wire::Header h;
    h.set_type(wire::PUBLISH);
    h.set_topic("hostile.fd");
    c.send(encode(h), std::span(&null_fd, 1));
    problems += fatal(c, wire::FD_ERROR, "an fd on PUBLISH");
  }
  {
    Conn c;  // SHM_REGISTER with a pipe instead of a memfd: refused, not fatal
    c.hello();
    wire::Header h;
    h.set_type(wire::SHM_REGISTER);
    h.set_seq(1);
    h.set_fd_count(1);
    h.mutable_shm()->set_segment(1);
    c.send(encode(h), std::span(&pipe_fd, 1));
    if (!c.expect_frame(wire::ERROR, wire::SHM_REFUSED)) problems += "a pipe as a segment: no SHM_REFUSED";
  }
  {
    Conn c;  // many fds on one frame
    c.hello();
    std::vector<int> many(16, null_fd);
    wire::Header h;
    h.set_type(wire::PING);
    c.send(encode(h), many);
    problems += fatal(c, wire::FD_ERROR, "16 fds on a PING");
  }
  return problems;
}

std::string half_open_handshakes() {
  // Half a HELLO, then silence: the handshake or the frame deadline, whichever is sooner,
  // closes it.
  Conn c;
  auto hello = encode(hello_header());
  c.send(std::span(hello).first(5));
  if (!c.expect_close()) return "half a HELLO: never closed";
  Conn silent;  // nothing at all
  if (!silent.expect_close()) return "a silent connection: never closed";
  Conn gone;  // connect and hang up at once
  gone.shutdown_write();
  return gone.expect_close() ? std::string() : "an immediate hang-up: not closed";
}

std::string flood() {
  // Publishes as fast as possible to a topic this connection subscribes to and never reads:
  // the broker must hold it back and then cut it off as a slow consumer, not buffer forever.
  Conn c;
  c.hello();
  wire::Header sub;
  sub.set_type(wire::SUBSCRIBE);
  sub.set_topic("hostile.flood");
  sub.set_seq(1);
  sub.add_sub_ids(1);
  c.send(sub);
  wire::Header pub;
  pub.set_type(wire::PUBLISH);
  pub.set_topic("hostile.flood");
  auto frame = encode(pub, 4000);
  std::vector<std::byte> burst;
  for (int i = 0; i < 64; ++i) burst.insert(burst.end(), frame.begin(), frame.end());
  const auto until = Clock::now() + std::chrono::seconds(8);
  while (Clock::now() < until) {
    if (!c.send(burst)) break;  // the broker closed the connection (or stopped reading it)
  }
  return c.expect_close() ? std::string() : "a flooding, never-reading client was not cut off";
}

std::string connection_burst() {
  std::vector<Conn> conns(200);
  for (auto& c : conns) c.hello();
  return {};  // all closed by the client; the broker must reclaim them (checked by the test)
}

// ---- Hogs: what one uid can make the broker hold ------------------------------------------

// Subscriptions of 400 one-byte tokens each, on many connections, until refused. Each differs
// from the others at its second token, so none shares an index node with another: the
// broker's memory grows by what it charges.
std::string hog_subscriptions(std::vector<Conn>& held) {
  std::string tail;
  for (int i = 0; i < 400; ++i) tail += ".a";
  std::size_t accepted = 0, refused = 0;
  for (int c = 0; c < 64 && refused == 0; ++c) {
    Conn& conn = held.emplace_back();
    conn.hello();
    for (std::uint64_t id = 1; id <= 1000 && refused == 0; ++id) {
      wire::Header sub;
      sub.set_type(wire::SUBSCRIBE);
      sub.set_seq(id);
      sub.add_sub_ids(id);
      sub.set_topic("hog." + std::to_string(c) + "-" + std::to_string(id) + tail);
      conn.send(sub);
      // One answer per SUBSCRIBE: an ACK or the refusal.
      if (conn.expect_frame(wire::ERROR, wire::LIMIT_EXCEEDED, wire::ACK)) {
        ++refused;
      } else {
        ++accepted;
      }
    }
  }
  return "accepted " + std::to_string(accepted) + " refused " + std::to_string(refused);
}

// Retained values on distinct topics, one byte each.
std::string hog_retained(std::vector<Conn>& held) {
  Conn& conn = held.emplace_back();
  conn.hello();
  std::vector<std::byte> burst;
  for (int i = 0; i < 200'000; ++i) {
    wire::Header pub;
    pub.set_type(wire::PUBLISH);
    pub.set_topic("hog.r." + std::to_string(i));
    pub.set_retain(true);
    auto frame = encode(pub, 1);
    burst.insert(burst.end(), frame.begin(), frame.end());
    if (burst.size() > (1 << 16)) {
      conn.send(burst);
      burst.clear();
    }
  }
  conn.send(burst);
  wire::Header ping;
  ping.set_type(wire::PING);
  ping.set_seq(1);
  conn.send(ping);
  return conn.expect_frame(wire::PONG) ? "published 200000" : "no PONG after the flood";
}

// Connections that each send the start of a large frame and stop there.
std::string hog_partial_frames(std::vector<Conn>& held) {
  std::size_t refused = 0;
  for (int c = 0; c < 600; ++c) {
    Conn& conn = held.emplace_back();
    conn.hello();
    std::byte start[64] = {};
    proto::write_prefix(start, 1000000, 16);
    conn.send(start);
  }
  for (auto& conn : held) refused += conn.errors_now(wire::LIMIT_EXCEEDED);
  return "partial frames on " + std::to_string(held.size()) + " connections, " + std::to_string(refused) +
         " refused so far";
}

// Requests for 64 KiB replies, never reading one.
std::string hog_replies(std::vector<Conn>& held) {
  Conn& conn = held.emplace_back();
  conn.hello();
  std::size_t sent = 0;
  for (std::uint64_t seq = 1; seq <= 4000; ++seq) {
    wire::Header req;
    req.set_type(wire::REQUEST);
    req.set_seq(seq);
    req.set_topic("hog.svc");
    req.set_timeout_ms(60000);
    if (!conn.send(req)) break;
    ++sent;
  }
  return "requests sent " + std::to_string(sent);
}

// Publishes (to nobody) as fast as a large socket buffer lets it, for 10 s.
std::string hog_flood(std::vector<Conn>& held) {
  Conn& conn = held.emplace_back();
  conn.hello();
  const int big = 64 << 20;
  (void)::setsockopt(conn.fd(), SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
  wire::Header pub;
  pub.set_type(wire::PUBLISH);
  pub.set_topic("hog.flood");
  auto frame = encode(pub, 64);
  std::vector<std::byte> burst;
  while (burst.size() < (1 << 20)) burst.insert(burst.end(), frame.begin(), frame.end());
  std::size_t bursts = 0;
  std::printf("flooding\n");  // the test measures the others' traffic from here on
  std::fflush(stdout);
  for (const auto until = Clock::now() + std::chrono::seconds(10); Clock::now() < until; ++bursts) {
    if (!conn.send(burst)) break;
  }
  return "flooded " + std::to_string(bursts) + " MiB";
}

int run_hog(const std::string& kind) {
  using Hog = std::string (*)(std::vector<Conn>&);
  static const std::pair<const char*, Hog> kHogs[] = {{"subscriptions", hog_subscriptions},
                                                      {"retained", hog_retained},
                                                      {"partial-frames", hog_partial_frames},
                                                      {"replies", hog_replies},
                                                      {"flood", hog_flood}};
  for (const auto& [name, hog] : kHogs) {
    if (kind != name) continue;
    std::vector<Conn> held;
    held.reserve(1024);  // the hogs keep references to what they add
    std::printf("hog %s: %s\nholding\n", name, hog(held).c_str());
    std::fflush(stdout);
    for (;;) ::pause();  // until killed
  }
  std::fprintf(stderr, "ubroker_hostile: unknown hog '%s'\n", kind.c_str());
  return 2;
}

struct Named {
  const char* name;
  Scenario run;
};

const std::vector<Named>& scenarios() {
  static const std::vector<Named> all = {
      {"garbage-before-hello", garbage_before_hello},
      {"garbage-after-hello", garbage_after_hello},
      {"oversized-frame", oversized_frame},
      {"bad-header-length", bad_header_length},
      {"truncated-frame", truncated_then_gone},
      {"broker-only-frame", broker_only_frames},
      {"wrong-fds", wrong_fds},
      {"half-open-handshake", half_open_handshakes},
      {"flood", flood},
      {"connection-burst", connection_burst},
  };
  return all;
}

int usage() {
  std::fprintf(stderr, "usage: ubroker_hostile --socket PATH [--scenario NAME|all] [--rounds N]\nscenarios:");
  for (const auto& s : scenarios()) std::fprintf(stderr, " %s", s.name);
  std::fprintf(stderr, "\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string scenario = "all";
  std::string hog;
  int rounds = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--socket") {
      g_address = argv[i + 1];
    } else if (flag == "--scenario") {
      scenario = argv[i + 1];
    } else if (flag == "--hog") {
      hog = argv[i + 1];
    } else if (flag == "--rounds") {
      rounds = std::atoi(argv[i + 1]);
    } else {
      return usage();
    }
  }
  if (g_address.empty() || rounds < 1 || argc % 2 == 0) return usage();
  if (!hog.empty()) return run_hog(hog);
  int failures = 0, ran = 0;
  for (int round = 1; round <= rounds; ++round) {
    for (const auto& s : scenarios()) {
      if (scenario != "all" && scenario != s.name) continue;
      const auto start = Clock::now();
      const std::string problem = s.run();
      ++ran;
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
      std::printf("round %d %-22s %s (%lld ms)\n", round, s.name, problem.empty() ? "ok" : problem.c_str(),
                  static_cast<long long>(ms));
      std::fflush(stdout);
      failures += !problem.empty();
    }
  }
  if (ran == 0) return usage();
  Conn still_there;  // the broker still accepts and answers
  still_there.hello();
  std::printf("%d scenario runs, %d with a wrong answer; the broker still answers\n", ran, failures);
  return failures == 0 ? 0 : 1;
}
