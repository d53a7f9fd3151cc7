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
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ubroker/client.hpp"

namespace {

int subscribe(const std::string& address, const std::string& pattern, std::uint64_t count) {
  auto client = ubroker::Client::connect({.address = address, .name = "test-peer-sub"});
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
  cv.wait(lk, [&] { return received >= count || !client->connected(); });
  std::printf("received %llu gaps %llu seconds %.6f\n", static_cast<unsigned long long>(received),
              static_cast<unsigned long long>(gaps), std::chrono::duration<double>(last - first).count());
  return received == count && gaps == 0 ? 0 : 1;
}

int serve(const std::string& address, const std::string& topic, const std::string& mode) {
  auto client = ubroker::Client::connect({.address = address, .name = "test-peer-serve"});
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

int main(int argc, char** argv) {
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
  auto client = ubroker::Client::connect({.address = address, .name = "test-peer-" + std::to_string(tag)});
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
