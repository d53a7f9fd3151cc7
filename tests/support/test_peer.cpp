// ubroker_test_peer: a client in its own process for integration tests.
//   ubroker_test_peer publish ADDRESS TOPIC COUNT SIZE TAG
// publishes COUNT messages of SIZE bytes (>= 16): u64 sequence number, u64 TAG, padding;
// then flushes and prints "published COUNT".
//   ubroker_test_peer subscribe ADDRESS PATTERN COUNT
// receives COUNT messages in a callback, checks their sequence numbers, and prints
// "received COUNT gaps G seconds S" (S from the first message to the last).
//   ubroker_test_peer serve ADDRESS TOPIC MODE
// serves TOPIC: MODE "echo" replies with the request's payload, "hang" never replies.
// Prints "ready" once serving and "request" for each request; runs until killed.
//   ubroker_test_peer bulk-publish ADDRESS TOPIC COUNT SIZE SEGMENT_BYTES SMALL
// publishes COUNT payloads of SIZE bytes through shared memory (loan), filled with
// bulk_pattern(seq); with SMALL=1 a 64-byte socket message (same sequence) follows each one.
// Prints "published N" after flushing, then stays connected until its stdin closes or it is
// killed (a producer whose segment readers still use).
//   ubroker_test_peer bulk-subscribe ADDRESS PATTERN COUNT MODE
// receives COUNT messages with receive() and checks each bulk payload's every byte and the
// sequence. MODE "check" prints "received N bad B gaps G" and exits; "check-small" expects
// each bulk message followed by a small one of the same sequence (bulk-publish SMALL=1);
// "hold" keeps every message (never releasing it), prints "holding N", and waits to be killed.
//   ubroker_test_peer script ADDRESS
// runs commands from stdin and prints their outcomes (see test_peer_script.cpp).
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "ubroker/client.hpp"

namespace {

// Fills (or checks) a bulk payload: 8-byte words (seq << 32 | index), then a byte tail.
void fill_pattern(std::span<std::byte> p, std::uint64_t seq) {
  const std::size_t words = p.size() / 8;
  for (std::size_t i = 0; i < words; ++i) {
    const std::uint64_t w = (seq << 32) | i;
    std::memcpy(p.data() + i * 8, &w, 8);
  }
  for (std::size_t i = words * 8; i < p.size(); ++i) p[i] = std::byte(seq + i);
}

bool check_pattern(std::span<const std::byte> p, std::uint64_t seq) {
  const std::size_t words = p.size() / 8;
  for (std::size_t i = 0; i < words; ++i) {
    std::uint64_t w;
    std::memcpy(&w, p.data() + i * 8, 8);
    if (w != ((seq << 32) | i)) return false;
  }
  for (std::size_t i = words * 8; i < p.size(); ++i) {
    if (p[i] != std::byte(seq + i)) return false;
  }
  return true;
}

// The sequence number of a bulk or small message: the high half of the first word.
std::uint64_t seq_of(std::span<const std::byte> p) {
  std::uint64_t w = ~0ull;
  if (p.size() >= 8) std::memcpy(&w, p.data(), 8);
  return w >> 32;
}

int bulk_publish(const std::string& address, const std::string& topic, std::uint64_t count, std::size_t size,
                 std::size_t segment_bytes, bool small) {
  auto client = ubroker::Client::connect(
      {.address = address, .name = "test-peer-bulk-pub", .shm_segment_bytes = segment_bytes, .reconnect = {.enabled = false}});
  if (!client) {
    std::fprintf(stderr, "connect: %s\n", client.error().message.c_str());
    return 1;
  }
  std::vector<std::byte> tiny(64);
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    auto loan = client->loan(topic, size, std::chrono::seconds(60));
    if (!loan) {
      std::fprintf(stderr, "loan %llu: %s\n", static_cast<unsigned long long>(seq), loan.error().message.c_str());
      return 1;
    }
    fill_pattern(loan->data(), seq);
    if (auto r = client->publish(std::move(*loan)); !r) {
      std::fprintf(stderr, "publish %llu: %s\n", static_cast<unsigned long long>(seq), r.error().message.c_str());
      return 1;
    }
    if (small) {
      fill_pattern(tiny, seq);
      if (auto r = client->publish(topic, tiny); !r) return 1;
    }
  }
  if (auto r = client->flush(std::chrono::seconds(120)); !r) {
    std::fprintf(stderr, "flush: %s\n", r.error().message.c_str());
    return 1;
  }
  std::printf("published %llu\n", static_cast<unsigned long long>(count));
  std::fflush(stdout);
  char c;
  while (std::fread(&c, 1, 1, stdin) == 1) {
  }
  return 0;
}

int bulk_subscribe(const std::string& address, const std::string& pattern, std::uint64_t count,
                   const std::string& mode) {
  auto client = ubroker::Client::connect({.address = address, .name = "test-peer-bulk-sub", .reconnect = {.enabled = false}});
  if (!client) {
    std::fprintf(stderr, "connect: %s\n", client.error().message.c_str());
    return 1;
  }
  auto sub = client->subscribe(pattern);
  if (!sub) return 1;
  std::printf("ready\n");
  std::fflush(stdout);
  std::vector<ubroker::Message> held;
  std::uint64_t received = 0, bad = 0, gaps = 0, expect = 0;
  const bool pairs = mode == "check-small";
  while (received < count) {
    auto m = client->receive(std::chrono::seconds(60));
    if (!m) break;
    const std::uint64_t seq = seq_of(m->payload());
    const bool small_expected = pairs && received % 2 == 1;
    if (seq != (pairs ? received / 2 : expect)) ++gaps;
    expect = seq + 1;
    // Every loan travels in shared memory; the 64-byte messages go over the socket.
    if (m->shared_memory() == small_expected || !check_pattern(m->payload(), seq)) ++bad;
    ++received;
    if (mode == "hold") held.push_back(std::move(*m));
  }
  if (mode == "hold") {
    std::printf("holding %zu\n", held.size());
    std::fflush(stdout);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  std::printf("received %llu bad %llu gaps %llu\n", static_cast<unsigned long long>(received),
              static_cast<unsigned long long>(bad), static_cast<unsigned long long>(gaps));
  return received == count && bad == 0 && gaps == 0 ? 0 : 1;
}

int subscribe(const std::string& address, const std::string& pattern, std::uint64_t count) {
  auto client = ubroker::Client::connect({.address = address, .name = "test-peer-sub", .reconnect = {.enabled = false}});
  if (!client) {
    std::fprintf(stderr, "connect: %s\n", client.error().message.c_str());
    return 1;
  }
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t received = 0, gaps = 0, expect = 0;
  std::chrono::steady_clock::time_point first, last;
  auto sub = client->subscribe(pattern, [&](const ubroker::MessageView& m) {
    std::uint64_t seq = ~0ull;
    if (m.payload.size() >= 8) std::memcpy(&seq, m.payload.data(), 8);
    std::lock_guard lk(mu);
    if (received == 0) first = std::chrono::steady_clock::now();
    if (seq != expect) ++gaps;
    expect = seq + 1;
    if (++received == count) {
      last = std::chrono::steady_clock::now();
      cv.notify_all();
    }
  });
  if (!sub) {
    std::fprintf(stderr, "subscribe: %s\n", sub.error().message.c_str());
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  std::unique_lock lk(mu);
  // Nothing notifies on a disconnect: look again every 100 ms, so a subscriber the broker
  // cut off reports what it got instead of waiting forever.
  while (!cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return received >= count || !client->connected(); })) {
  }
  if (auto why = client->disconnect_reason(); why && received < count) {
    std::fprintf(stderr, "disconnected: %s\n", why->message.c_str());
  }
  std::printf("received %llu gaps %llu seconds %.6f\n", static_cast<unsigned long long>(received),
              static_cast<unsigned long long>(gaps), std::chrono::duration<double>(last - first).count());
  return received == count && gaps == 0 ? 0 : 1;
}

int serve(const std::string& address, const std::string& topic, const std::string& mode) {
  auto client = ubroker::Client::connect({.address = address, .name = "test-peer-serve", .reconnect = {.enabled = false}});
  if (!client) {
    std::fprintf(stderr, "connect: %s\n", client.error().message.c_str());
    return 1;
  }
  std::vector<ubroker::Request> held;  // "hang": requests kept unanswered (I/O thread only)
  auto service = client->serve(topic, [&](ubroker::Request r) {
    std::printf("request\n");
    std::fflush(stdout);
    if (mode == "echo") {
      std::vector<std::byte> body(r.payload().begin(), r.payload().end());
      (void)r.reply(body);
    } else {
      held.push_back(std::move(r));
    }
  });
  if (!service) {
    std::fprintf(stderr, "serve: %s\n", service.error().message.c_str());
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  while (client->connected()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  return 0;
}

}  // namespace

int run_script(const std::string& address);  // test_peer_script.cpp

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "script") return run_script(argv[2]);
  if (argc == 8 && std::string(argv[1]) == "bulk-publish") {
    return bulk_publish(argv[2], argv[3], std::strtoull(argv[4], nullptr, 10), std::strtoull(argv[5], nullptr, 10),
                        std::strtoull(argv[6], nullptr, 10), std::string(argv[7]) == "1");
  }
  if (argc == 6 && std::string(argv[1]) == "bulk-subscribe") {
    return bulk_subscribe(argv[2], argv[3], std::strtoull(argv[4], nullptr, 10), argv[5]);
  }
  if (argc == 5 && std::string(argv[1]) == "serve") return serve(argv[2], argv[3], argv[4]);
  if (argc == 5 && std::string(argv[1]) == "subscribe") {
    return subscribe(argv[2], argv[3], std::strtoull(argv[4], nullptr, 10));
  }
  if (argc != 7 || std::string(argv[1]) != "publish") {
    std::fprintf(stderr,
                 "usage: %s publish ADDRESS TOPIC COUNT SIZE TAG\n"
                 "       %s subscribe ADDRESS PATTERN COUNT\n",
                 argv[0], argv[0]);
    return 2;
  }
  const std::string address = argv[2], topic = argv[3];
  const std::uint64_t count = std::strtoull(argv[4], nullptr, 10);
  const std::size_t size = std::max<std::size_t>(16, std::strtoull(argv[5], nullptr, 10));
  const std::uint64_t tag = std::strtoull(argv[6], nullptr, 10);
  // A small unsent buffer: what a publisher already handed its client when a lane's route
  // comes goes through the broker, and the default (8 MiB, some 200,000 small messages) would
  // have a test's whole stream sent that way before its lane is ever used.
  auto client = ubroker::Client::connect({.address = address,
                                          .name = "test-peer-" + std::to_string(tag),
                                          .max_pending_bytes = 256 * 1024,
                                          .reconnect = {.enabled = false}});
  if (!client) {
    std::fprintf(stderr, "connect: %s\n", client.error().message.c_str());
    return 1;
  }
  std::vector<std::byte> payload(size, std::byte{0x5a});
  std::memcpy(payload.data() + 8, &tag, 8);
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    std::memcpy(payload.data(), &seq, 8);
    if (auto r = client->publish(topic, payload); !r) {
      std::fprintf(stderr, "publish %llu: %s\n", static_cast<unsigned long long>(seq), r.error().message.c_str());
      return 1;
    }
  }
  if (auto r = client->flush(std::chrono::seconds(120)); !r) {
    std::fprintf(stderr, "flush: %s\n", r.error().message.c_str());
    return 1;
  }
  std::printf("published %llu\n", static_cast<unsigned long long>(count));
  return 0;
}
