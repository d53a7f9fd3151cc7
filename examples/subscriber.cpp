// ubroker-subscribe: prints every message matching PATTERN with its sender, as the broker
// stamped it. Stops after COUNT messages when given. A minimal example of ubroker::Client.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ubroker/client.hpp"

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fprintf(stderr,
                 "usage: %s PATTERN [COUNT]\n"
                 "Prints messages on topics matching PATTERN ('*' = one token, '>' = the rest).\n"
                 "The broker is found at $UBROKER_SOCKET or the default socket path.\n",
                 argv[0]);
    return argc < 2 ? 2 : 0;
  }
  const long count = argc > 2 ? std::strtol(argv[2], nullptr, 10) : -1;
  auto client = ubroker::Client::connect({.name = "ubroker-subscribe"});
  if (!client) {
    std::fprintf(stderr, "ubroker-subscribe: %s\n", client.error().message.c_str());
    return 1;
  }
  auto sub = client->subscribe(argv[1]);
  if (!sub) {
    std::fprintf(stderr, "ubroker-subscribe: %s\n", sub.error().message.c_str());
    return 1;
  }
  std::fprintf(stderr, "subscribed to %s\n", argv[1]);
  for (long n = 0; count < 0 || n < count; ++n) {
    auto m = client->receive();
    if (!m) {
      std::fprintf(stderr, "ubroker-subscribe: %s\n", m.error().message.c_str());
      return 1;
    }
    std::printf("%.*s [client %llu, uid %u, pid %u]: %.*s\n", static_cast<int>(m->topic().size()), m->topic().data(),
                static_cast<unsigned long long>(m->sender().client_id), m->sender().uid, m->sender().pid,
                static_cast<int>(m->text().size()), m->text().data());
    std::fflush(stdout);
  }
  return 0;
}
