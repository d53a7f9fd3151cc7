// UTF-8 as protobuf and JSON accept it: shortest form, no surrogates, at most U+10FFFF. One
// decoder for the header rules, the library's error sentences and brokerctl's JSON.
#pragma once

#include <cstddef>
#include <string_view>

namespace ubroker::proto {

// The length of the valid UTF-8 sequence at s[at] (1 to 4), its code point in `cp`; 0 when
// the bytes there are not one.
[[nodiscard]] inline std::size_t utf8_sequence(std::string_view s, std::size_t at, char32_t& cp) noexcept {
  const auto b = static_cast<unsigned char>(s[at]);
  const std::size_t n = b < 0x80 ? 1 : (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 0;
  if (n == 0 || s.size() - at < n) return 0;
  cp = n == 1 ? b : n == 2 ? b & 0x1f : n == 3 ? b & 0x0f : b & 0x07;
  for (std::size_t k = 1; k < n; ++k) {
    const auto c = static_cast<unsigned char>(s[at + k]);
    if ((c & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (c & 0x3f);
  }
  static constexpr char32_t kShortest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kShortest[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

}  // namespace ubroker::proto
