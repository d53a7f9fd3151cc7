// libFuzzer: both sides of the handshake, fed hostile bytes.
//  - Broker side: a real Broker runs in this process (its event loop on a thread, on an
//    abstract socket). Each input is what a client sends from connect on: usually a HELLO
//    and more frames, after the first byte, which picks how the input is cut into writes. The
//    connection then half-closes; the broker must answer and close within a deadline (a hang
//    is a finding) and stay up for the next input.
//  - Client side: when the first byte is odd, the input is instead the broker's answer to
//    HELLO, read by the client library's handshake over a socketpair.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <thread>

#include <spdlog/spdlog.h>

#include "broker.hpp"
#include "handshake.hpp"
#include "ubroker/proto/socket_address.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace {

std::string g_address;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_handshake: %s\n", what);
    std::abort();
  }
}

void start_broker() {
  spdlog::set_level(spdlog::level::off);
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 is refused, not worth a line per input
  g_address = "@ubroker-fuzz-" + std::to_string(::getpid());
  ubroker::broker::Config config;
  config.socket_path = g_address;
  config.timeouts.handshake = std::chrono::milliseconds(500);
  config.timeouts.frame = std::chrono::milliseconds(500);
  config.timeouts.linger = std::chrono::milliseconds(200);
  std::thread([config] {
    ubroker::broker::Broker broker(config);
    (void)broker.run();
    std::abort();  // the broker never stops on its own
  }).detach();
  const auto addr = ubroker::proto::make_socket_address(g_address).value();
  for (int i = 0; i < 500; ++i) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool up = ::connect(fd, addr.get(), addr.len) == 0;
    ::close(fd);
    if (up) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  check(false, "the broker did not come up");
}

void as_client(std::span<const std::byte> input, std::size_t cut) {
  ubroker::shm::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const auto addr = ubroker::proto::make_socket_address(g_address).value();
  check(::connect(fd.get(), addr.get(), addr.len) == 0, "connect");
  // The input in two writes, so a frame split across reads is exercised too.
  const std::size_t first = input.empty() ? 0 : cut % (input.size() + 1);
  for (auto part : {input.first(first), input.subspan(first)}) {
    if (!part.empty() && ::send(fd.get(), part.data(), part.size(), MSG_NOSIGNAL) < 0) break;  // closed on us
  }
  ::shutdown(fd.get(), SHUT_WR);
  // Whatever the broker makes of it, it answers and closes: read to EOF within a deadline.
  char buf[65536];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    pollfd p{.fd = fd.get(), .events = POLLIN, .revents = 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    check(left.count() > 0, "the broker neither answered nor closed within 5 s");
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) return;
  }
}

void as_broker_answer(std::span<const std::byte> input) {
  int sv[2];
  check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
  ubroker::shm::UniqueFd client(sv[0]), broker(sv[1]);
  if (!input.empty()) (void)::send(broker.get(), input.data(), input.size(), MSG_NOSIGNAL);
  broker.reset();  // the fake broker's answer ends here
  (void)ubroker::detail::handshake(client, "fuzz", std::chrono::milliseconds(200), true);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  start_broker();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  if (data[0] & 1) {
    as_broker_answer(input);
  } else {
    as_client(input, data[0] >> 1);
  }
  return 0;
}
