// Errors of the ubroker client API: a code the program can act on and a sentence a person
// can read. Codes 1..99 are the broker's (same numbers as ErrorCode in ubroker.proto);
// 100+ arise in the client itself.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "ubroker/export.h"
#include "ubroker/result.hpp"

namespace ubroker {

enum class Errc : int {
  kProtocolError = 1,
  kUnsupportedVersion = 2,
  kHandshakeTimeout = 3,
  kFrameTooLarge = 4,
  kInvalidTopic = 5,
  kInvalidPattern = 6,
  kReservedTopic = 7,
  kDuplicateSubscription = 8,
  kUnknownSubscription = 9,
  kLimitExceeded = 10,
  kSlowConsumer = 11,
  kShuttingDown = 12,
  kPermissionDenied = 13,
  kFdError = 14,
  kNoResponders = 15,    // nobody serves the requested topic
  kResponderGone = 16,   // the responder disconnected before replying
  kTimeout = 17,         // no reply (or answer) before the deadline
  kUnknownRequest = 18,  // a reply to a request that is unknown, finished or someone else's
  kKicked = 19,          // an operator disconnected this client
  kNotFound = 20,        // an admin request named something that does not exist
  kShmRefused = 21,      // the broker refused a shared-memory segment or reference (the message says why)
  kFrameTimeout = 22,    // a frame this client started did not arrive whole in time
  kInvalidConfig = 23,   // an admin reload found the broker's config file invalid
  kServiceError = 24,    // the responder answered with an error (Error::service_code: its own code)
  kInvalidHeaders = 25,  // headers that break the rules of HeaderField (the message says which)

  kConnectFailed = 100,    // no broker reachable at the address (the message says why)
  kNotConnected = 101,     // the connection is closed (the message says why)
  kInvalidArgument = 103,  // the call's arguments are unusable
  kUntrustedBroker = 104,  // the socket's owner is not a uid this client trusts as its broker
  kBrokerGone = 105,       // the connection was lost before the broker answered
  kBufferFull = 106,       // disconnected, and the offline buffer has no room for this publish
};

// The code's name, e.g. "SLOW_CONSUMER".
[[nodiscard]] UBROKER_API std::string_view to_string(Errc code) noexcept;

struct Error {
  Errc code;
  std::string message;
  std::uint32_t service_code = 0;  // kServiceError: the code the responder gave (0: none)
};

// std::expected<T, Error> under C++23, the same interface and layout under C++20 (result.hpp).
template <class T>
using Result = BasicResult<T, Error>;

}  // namespace ubroker
