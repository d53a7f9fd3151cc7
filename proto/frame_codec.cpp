// Frame codec implementation. The prefix is little-endian on the wire regardless of host.
#include "ubroker/proto/frame_codec.hpp"

#include <bit>
#include <cstring>

#include "ubroker.pb.h"

namespace ubroker::proto {
namespace {

// One 32-bit move each (GCC 12 does not merge four std::byte stores into one).
std::uint32_t load_le32(const std::byte* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) v = std::byteswap(v);
  return v;
}

void store_le32(std::byte* p, std::uint32_t v) noexcept {
  if constexpr (std::endian::native == std::endian::big) v = std::byteswap(v);
  std::memcpy(p, &v, sizeof v);
}

}  // namespace

std::string_view describe(FrameError e) noexcept {
  switch (e) {
    case FrameError::kEmptyFrame: return "empty frame (frame length 0)";
    case FrameError::kFrameTooLarge: return "frame larger than the maximum frame size";
    case FrameError::kBadHeaderLength: return "header length is zero or exceeds the frame length";
    case FrameError::kHeaderTooLarge: return "header larger than the maximum header size";
    case FrameError::kMalformedHeader: return "malformed frame header";
    case FrameError::kUnknownFrameType: return "unknown frame type";
    case FrameError::kTruncated: return "stream ended inside a frame";
  }
  return "unknown frame error";
}

std::expected<FrameSplit, FrameError> split_frame(std::span<const std::byte> bytes,
                                                  const FrameLimits& limits) noexcept {
  FrameSplit split;
  if (bytes.size() < kPrefixSize) return split;
  const std::uint64_t frame_len = load_le32(bytes.data());
  const std::uint64_t header_len = load_le32(bytes.data() + 4);
  if (frame_len == 0) return std::unexpected(FrameError::kEmptyFrame);
  if (frame_len > limits.max_frame) return std::unexpected(FrameError::kFrameTooLarge);
  if (header_len == 0 || header_len > frame_len) return std::unexpected(FrameError::kBadHeaderLength);
  if (header_len > limits.max_header) return std::unexpected(FrameError::kHeaderTooLarge);
  split.frame_size = kPrefixSize + frame_len;
  if (bytes.size() < split.frame_size) return split;
  split.complete = true;
  split.header = bytes.subspan(kPrefixSize, header_len);
  split.payload = bytes.subspan(kPrefixSize + header_len, frame_len - header_len);
  return split;
}

std::expected<void, FrameError> parse_header(std::span<const std::byte> bytes, wire::Header& out) {
  if (!out.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return std::unexpected(FrameError::kMalformedHeader);
  }
  if (out.type() == wire::FRAME_UNSPECIFIED || !wire::FrameType_IsValid(out.type())) {
    return std::unexpected(FrameError::kUnknownFrameType);
  }
  return {};
}

void write_prefix(std::byte* dst, std::uint32_t frame_len, std::uint32_t header_len) noexcept {
  store_le32(dst, frame_len);
  store_le32(dst + 4, header_len);
}

std::size_t frame_head_size(const wire::Header& header) {
  return kPrefixSize + header.ByteSizeLong();
}

std::size_t write_frame_head(std::byte* dst, const wire::Header& header, std::size_t payload_size) {
  const auto header_len = static_cast<std::uint32_t>(header.GetCachedSize());
  write_prefix(dst, static_cast<std::uint32_t>(header_len + payload_size), header_len);
  header.SerializeWithCachedSizesToArray(reinterpret_cast<std::uint8_t*>(dst + kPrefixSize));
  return kPrefixSize + header_len;
}

}  // namespace ubroker::proto
