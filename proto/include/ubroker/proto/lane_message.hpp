// A message as a publisher writes it into a direct lane (shm/lane.hpp), and the subscriber's
// checked reading of it. The record carries only what the publisher chose: the topic, the
// headers and the payload. Who sent it, which subscriptions get it, and whether the topic
// may travel on this lane at all come from the broker (LANE_OPEN, LANE_FENCE), never from
// these bytes.
//
//   u32 topic length, u32 headers length (little-endian), the topic, the headers (canonical
//   wire::MessageHeaders, proto/headers.hpp), then the payload: the rest of the record.
//
// Stateless. split_lane_message checks the framing a hostile publisher could get wrong; the
// topic and the headers are for the reader to check in a private copy (the publisher can
// still write the ring), as LaneSubscriber does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace ubroker::proto {

inline constexpr std::size_t kLaneMessageHead = 8;

struct LaneMessage {
  std::string_view topic;
  std::span<const std::byte> headers;
  std::span<const std::byte> payload;
};

[[nodiscard]] constexpr std::size_t lane_message_size(std::string_view topic, std::span<const std::byte> headers,
                                                      std::size_t payload) noexcept {
  return kLaneMessageHead + topic.size() + headers.size() + payload;
}

// Writes the message into `out` (exactly lane_message_size bytes).
void encode_lane_message(std::span<std::byte> out, std::string_view topic, std::span<const std::byte> headers,
                         std::span<const std::byte> payload) noexcept;

// Splits a record: nullptr and `out` filled (views into `record`), or why its lengths are
// malformed (a static sentence). Nothing of the topic or the headers is checked.
[[nodiscard]] const char* split_lane_message(std::span<const std::byte> record, LaneMessage& out) noexcept;

}  // namespace ubroker::proto
