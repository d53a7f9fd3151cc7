// Connecting to a broker: the socket connect and the HELLO/WELCOME exchange, done
// synchronously with a deadline before the client's I/O machinery starts. Any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "ubroker.pb.h"
#include "ubroker/client.hpp"

namespace ubroker::detail {

struct Welcomed {
  std::uint64_t client_id = 0;
  wire::Limits limits;
  std::vector<std::byte> leftover;  // bytes read past the WELCOME frame
};

// A connected, non-blocking, close-on-exec socket to `address` (a path or "@name").
// `wait_for_listener`: while nothing listens there yet, dial again until the timeout.
[[nodiscard]] Result<UniqueFd> connect_socket(const std::string& address, std::chrono::milliseconds timeout,
                                                   bool wait_for_listener = false);

// Checks that `fd` is a connected AF_UNIX stream socket and makes it non-blocking.
[[nodiscard]] Result<void> check_adopted(const UniqueFd& fd);

// Checks with SO_PEERCRED that the process at the other end runs as a uid in `trusted`
// (empty: $UBROKER_BROKER_UID, else this process's uid and root).
[[nodiscard]] Result<void> check_broker_uid(const UniqueFd& fd, const std::vector<uid_t>& trusted);

// Sends HELLO (offering direct lanes if `lanes`) and waits for WELCOME (or the broker's Error).
[[nodiscard]] Result<Welcomed> handshake(const UniqueFd& fd, const std::string& name,
                                         std::chrono::milliseconds timeout, bool lanes);

// The broker's uid check and the handshake, on a connected socket.
[[nodiscard]] Result<Welcomed> greet(const UniqueFd& fd, const ConnectOptions& options);

struct Dialed {
  UniqueFd fd;
  Welcomed welcomed;
};
// connect_socket() to options.address, then greet(): a first connect (waiting for the broker
// to start if asked) or a reconnect.
[[nodiscard]] Result<Dialed> dial(const ConnectOptions& options, bool wait_for_broker = false);

}  // namespace ubroker::detail
