// The frame codec: pure functions from bytes to frames and back, no I/O, no allocation on
// decode. A frame is `u32 le frame_len | u32 le header_len | Header | payload`, where
// frame_len counts the bytes after the 8-byte prefix. Every size is checked against the
// limits, in 64-bit arithmetic, before anyone allocates for it. Thread-safe (stateless).
#pragma once

#include <cstddef>
#include <cstdint>
#include <expected>
#include <span>
#include <string_view>

namespace ubroker::wire {
class Header;
}

namespace ubroker::proto {

inline constexpr std::size_t kPrefixSize = 8;
inline constexpr std::uint32_t kProtocolVersion = 1;
inline constexpr std::uint32_t kDefaultMaxHeader = 64 * 1024;

enum class FrameError : std::uint8_t {
  kEmptyFrame = 1,    // frame_len == 0: no room for a header
  kFrameTooLarge,     // frame_len above the limit
  kBadHeaderLength,   // header_len == 0 or header_len > frame_len
  kHeaderTooLarge,    // header_len above the header limit
  kMalformedHeader,   // the header bytes are not a valid Header
  kUnknownFrameType,  // a Header whose type this protocol version does not define
  kTruncated,         // the stream ended inside a frame
};

[[nodiscard]] std::string_view describe(FrameError e) noexcept;

struct FrameLimits {
  std::uint32_t max_frame = 1u << 20;  // bytes after the prefix
  std::uint32_t max_header = kDefaultMaxHeader;
};

// What the front of a byte stream holds.
struct FrameSplit {
  bool complete = false;
  // Bytes the whole frame occupies (prefix included) once the prefix is known, else kPrefixSize.
  std::size_t frame_size = kPrefixSize;
  std::span<const std::byte> header;   // valid when complete
  std::span<const std::byte> payload;  // valid when complete
};

// Looks at the first frame in `bytes`. Checks the prefix against `limits` as soon as the
// prefix is there, so a reader knows the frame is acceptable before buffering it.
[[nodiscard]] std::expected<FrameSplit, FrameError> split_frame(std::span<const std::byte> bytes,
                                                                const FrameLimits& limits) noexcept;

// Parses header bytes into `out` (reused across calls, so steady state allocates nothing) and
// checks the frame type is one this protocol defines.
[[nodiscard]] std::expected<void, FrameError> parse_header(std::span<const std::byte> bytes, wire::Header& out);

// A stream that ends with `leftover` unparsed bytes ended cleanly only if there are none.
[[nodiscard]] inline std::expected<void, FrameError> check_clean_eof(std::size_t leftover) noexcept {
  if (leftover != 0) return std::unexpected(FrameError::kTruncated);
  return {};
}

// Writes the 8-byte prefix.
void write_prefix(std::byte* dst, std::uint32_t frame_len, std::uint32_t header_len) noexcept;

// Size of the frame's prefix + header (the header's size is computed and cached in it).
[[nodiscard]] std::size_t frame_head_size(const wire::Header& header);

// Writes prefix + header to dst, which must hold frame_head_size(header) bytes; call it right
// after frame_head_size (it uses the cached size). The payload follows, written by the caller.
std::size_t write_frame_head(std::byte* dst, const wire::Header& header, std::size_t payload_size);

}  // namespace ubroker::proto
