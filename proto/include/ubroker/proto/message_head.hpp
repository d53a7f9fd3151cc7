// The hot frames' headers without protobuf: PUBLISH (client to broker) and DELIVER (broker to
// client) are most of the traffic, and building a wire::Header for each cost about a third of
// the broker's CPU in the first profile. decode_message_head() reads their wire bytes into a
// MessageHead view; encode_publish_head() writes a PUBLISH's. The bytes are ordinary protobuf
// wire format for wire::Header.
//
// The decoder takes only what it understands fully: a PUBLISH or DELIVER with the plain
// fields below, a printable-ASCII topic, up to kMaxIds subscription ids, and valid headers. For anything else
// (other frames, shared-memory references, unknown fields, malformed bytes) it says no, and
// the caller parses with protobuf, which decides and reports exactly as before. Where it says
// yes it agrees with protobuf field for field (fuzz_frame_decoder checks this).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace ubroker::wire {
class Header;
}

namespace ubroker::proto {

struct MessageHead {
  static constexpr std::size_t kMaxIds = 16;

  std::uint32_t type = 0;  // wire::PUBLISH or wire::DELIVER
  std::string_view topic;  // points into the decoded bytes
  std::uint64_t seq = 0;
  std::uint64_t sender_id = 0;
  std::uint32_t sender_uid = 0;
  std::uint32_t sender_pid = 0;
  std::uint32_t fd_count = 0;
  bool retain = false;
  std::span<const std::byte> headers;  // checked, canonical (headers.hpp); points into the decoded bytes
  std::array<std::uint64_t, kMaxIds> sub_id_store{};
  std::array<std::uint64_t, kMaxIds> dropped_store{};
  std::uint8_t sub_id_count = 0;
  std::uint8_t dropped_count = 0;

  [[nodiscard]] std::span<const std::uint64_t> sub_ids() const noexcept { return {sub_id_store.data(), sub_id_count}; }
  [[nodiscard]] std::span<const std::uint64_t> dropped() const noexcept { return {dropped_store.data(), dropped_count}; }
};

// True when `bytes` is a header this decoder takes whole (see above); `out` is then filled.
// False leaves `out` unspecified.
[[nodiscard]] bool decode_message_head(std::span<const std::byte> bytes, MessageHead& out) noexcept;

// The decoder's contract, for tests and the fuzzer: every field `head` holds equals the one
// protobuf parsed into `h`, and `h` holds nothing else.
[[nodiscard]] bool same_as(const MessageHead& head, const wire::Header& h);

// The prefix and header of a PUBLISH of `payload_size` bytes on `topic`, with `headers`
// (encoded as headers.hpp says; empty: none).
[[nodiscard]] std::size_t publish_head_size(std::string_view topic, bool retain,
                                            std::span<const std::byte> headers = {}) noexcept;
// Writes them to dst, which holds publish_head_size() bytes; returns that size.
std::size_t encode_publish_head(std::byte* dst, std::string_view topic, bool retain, std::size_t payload_size,
                                std::span<const std::byte> headers = {}) noexcept;

}  // namespace ubroker::proto
