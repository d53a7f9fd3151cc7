// Tracer: the copies of requests and replies on $sys.trace.* (see tracer.hpp).
#include "tracer.hpp"

#include <cstring>

#include "ubroker/proto/headers.hpp"
#include "ubroker/proto/topic.hpp"

namespace ubroker::broker {

void Tracer::request(const SenderStamp& caller, std::string_view topic, std::uint64_t request_id,
                     std::uint64_t responder, std::span<const std::byte> headers, std::span<const std::byte> payload) {
  if (!active()) return;
  const Extra extra[] = {{"ubroker-request", std::to_string(request_id)},
                         {"ubroker-responder", std::to_string(responder)}};
  emit("request", topic, caller, headers, extra, payload);
}

void Tracer::answer(const SenderStamp& responder, const PendingRequest& request, std::span<const std::byte> headers,
                    std::span<const std::byte> payload, std::chrono::steady_clock::duration took,
                    std::string_view error, std::uint32_t service_code) {
  if (!active() || request.traced_topic.empty()) return;
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(took).count();
  if (!error.empty()) {
    const Extra extra[] = {{"ubroker-request", std::to_string(request.id)},
                           {"ubroker-caller", std::to_string(request.caller)},
                           {"ubroker-latency-us", std::to_string(us)},
                           {"ubroker-error", std::string(error)},
                           {"ubroker-service-code", std::to_string(service_code)}};
    emit("error", request.traced_topic, responder, headers, extra, payload);
    return;
  }
  const Extra extra[] = {{"ubroker-request", std::to_string(request.id)},
                         {"ubroker-caller", std::to_string(request.caller)},
                         {"ubroker-latency-us", std::to_string(us)}};
  emit("reply", request.traced_topic, responder, headers, extra, payload);
}

void Tracer::failure(std::string_view topic, std::uint64_t request_id, std::uint64_t caller, std::string_view code,
                     std::string_view message) {
  if (!active() || topic.empty()) return;
  const Extra extra[] = {{"ubroker-request", std::to_string(request_id)},
                         {"ubroker-caller", std::to_string(caller)},
                         {"ubroker-error", std::string(code)}};
  emit("error", topic, SenderStamp{}, {}, extra, std::as_bytes(std::span(message.data(), message.size())));
}

void Tracer::emit(std::string_view kind, std::string_view topic, const SenderStamp& from,
                  std::span<const std::byte> headers, std::span<const Extra> extra,
                  std::span<const std::byte> payload) {
  topic_.assign("$sys.trace.");
  topic_.append(kind);
  topic_.push_back('.');
  topic_.append(topic);
  if (topic_.size() > proto::kMaxTopicBytes) return;
  std::size_t size = headers.size();
  for (const Extra& e : extra) size += proto::header_field_size(e.key, e.value);
  if (size > proto::kMaxHeaderBytes) return;  // the message's own headers leave no room
  headers_.resize(size);
  std::byte* p = headers_.data();
  if (!headers.empty()) std::memcpy(p, headers.data(), headers.size());
  p += headers.size();
  for (const Extra& e : extra) p = proto::put_header_field(p, e.key, e.value);
  router_.publish_system({.topic = topic_, .payload = payload, .chunk = nullptr, .headers = headers_}, from);
}

}  // namespace ubroker::broker
