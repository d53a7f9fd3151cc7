// ubroker-publish: publishes each MESSAGE argument on TOPIC, or each line of standard input
// when there are none. A minimal example of ubroker::Client.
#include <cstdio>
#include <iostream>
#include <string>

#include "ubroker/client.hpp"

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fprintf(stderr,
                 "usage: %s TOPIC [MESSAGE...]\n"
                 "Publishes each MESSAGE on TOPIC (or each line of standard input).\n"
                 "The broker is found at $UBROKER_SOCKET or the default socket path.\n",
                 argv[0]);
    return argc < 2 ? 2 : 0;
  }
  auto client = ubroker::Client::connect({.name = "ubroker-publish"});
  if (!client) {
    std::fprintf(stderr, "ubroker-publish: %s\n", client.error().message.c_str());
    return 1;
  }
  auto publish = [&](std::string_view text) {
    if (auto r = client->publish(argv[1], text); !r) {
      std::fprintf(stderr, "ubroker-publish: %s\n", r.error().message.c_str());
      return false;
    }
    return true;
  };
  if (argc > 2) {
    for (int i = 2; i < argc; ++i) {
      if (!publish(argv[i])) return 1;
    }
  } else {
    for (std::string line; std::getline(std::cin, line);) {
      if (!publish(line)) return 1;
    }
  }
  // Make sure the broker has everything before the connection closes.
  if (auto r = client->flush(); !r) {
    std::fprintf(stderr, "ubroker-publish: %s\n", r.error().message.c_str());
    return 1;
  }
  return 0;
}
