// ubroker_test_peer: a client in its own process for integration tests.
//   ubroker_test_peer publish ADDRESS TOPIC COUNT SIZE TAG
// publishes COUNT messages of SIZE bytes (>= 16): u64 sequence number, u64 TAG, padding;
// then flushes and prints "published COUNT".
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ubroker/client.hpp"

int main(int argc, char** argv) {
  if (argc != 7 || std::string(argv[1]) != "publish") {
    std::fprintf(stderr, "usage: %s publish ADDRESS TOPIC COUNT SIZE TAG\n", argv[0]);
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
