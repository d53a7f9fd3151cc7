// Request/reply in the open: while some client listens on the broker's own topics, every
// request, reply and failed request is published again on
//   $sys.trace.request.<topic>   from the caller:    the request's payload
//   $sys.trace.reply.<topic>     from the responder: the reply's payload
//   $sys.trace.error.<topic>     from the responder (an error reply) or the broker (id 0:
//                                NO_RESPONDERS, TIMEOUT, RESPONDER_GONE): the error's sentence
// with the message's own headers followed by the broker's (ubroker-request: the request id
// that correlates the three; ubroker-caller, ubroker-responder, ubroker-latency-us,
// ubroker-error: the code's name, ubroker-service-code). brokerctl monitor shows them. The
// copies go through Router::publish_system, so a slow tap loses them (counted), it never
// holds anyone back; and while nobody subscribes to a pattern that can match $sys. topics,
// nothing is built at all. A request topic too long for the prefix is not traced.
// Subscribing to $sys. topics needs a policy grant that starts with $sys. (docs/security.md).
// Event loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "request_table.hpp"
#include "router.hpp"

namespace ubroker::broker {

class Tracer {
 public:
  explicit Tracer(Router& router) : router_(router) {}

  // Whether anyone may be listening (what a request records so its answer is traced too).
  [[nodiscard]] bool active() const noexcept { return router_.system_listeners() != 0; }

  void request(const SenderStamp& caller, std::string_view topic, std::uint64_t request_id, std::uint64_t responder,
               std::span<const std::byte> headers, std::span<const std::byte> payload);
  // A reply or an error reply (`error`: empty for a reply, else the code's name, SERVICE_ERROR or
  // a gateway's; then `service_code` too, and the payload is its sentence).
  void answer(const SenderStamp& responder, const PendingRequest& request, std::span<const std::byte> headers,
              std::span<const std::byte> payload, std::chrono::steady_clock::duration took, std::string_view error,
              std::uint32_t service_code);
  // A request the broker ended: NO_RESPONDERS (request_id 0), TIMEOUT, RESPONDER_GONE.
  void failure(std::string_view topic, std::uint64_t request_id, std::uint64_t caller, std::string_view code,
               std::string_view message);

 private:
  struct Extra {
    std::string_view key;
    std::string value;
  };
  void emit(std::string_view kind, std::string_view topic, const SenderStamp& from, std::span<const std::byte> headers,
            std::span<const Extra> extra, std::span<const std::byte> payload);

  Router& router_;
  std::string topic_;               // reused: no allocation once warm
  std::vector<std::byte> headers_;  // reused
};

}  // namespace ubroker::broker
