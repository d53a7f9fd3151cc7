// Protobuf base-128 varints, for the hand-written codecs of the hot frames
// (deliver_encoder.cpp, message_head.cpp). Internal to proto/.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ubroker::proto::varint {

inline std::size_t size(std::uint64_t v) noexcept {
  std::size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

// Writes v at p; returns the byte after it.
inline std::byte* put(std::byte* p, std::uint64_t v) noexcept {
  while (v >= 0x80) {
    *p++ = std::byte((v & 0x7f) | 0x80);
    v >>= 7;
  }
  *p++ = std::byte(v);
  return p;
}

// Reads a varint at p (at most 10 bytes, before end); nullptr when malformed. Bits beyond
// 64 are dropped, as protobuf drops them.
inline const std::byte* read(const std::byte* p, const std::byte* end, std::uint64_t& v) noexcept {
  v = 0;
  for (int shift = 0; shift < 70 && p < end; shift += 7) {
    const auto b = std::to_integer<std::uint64_t>(*p++);
    v |= (b & 0x7f) << shift;
    if ((b & 0x80) == 0) return p;
  }
  return nullptr;
}

}  // namespace ubroker::proto::varint
