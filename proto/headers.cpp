// Message headers: the canonical protobuf encoding of wire::MessageHeaders, by hand.
#include "ubroker/proto/headers.hpp"

#include <cstring>

#include "ubroker/proto/utf8.hpp"
#include "varint.hpp"

namespace ubroker::proto {
namespace {

constexpr std::byte kFieldTag{(1 << 3) | 2};  // MessageHeaders.fields
constexpr std::byte kKeyTag{(1 << 3) | 2};    // HeaderField.key
constexpr std::byte kValueTag{(2 << 3) | 2};  // HeaderField.value
constexpr std::byte kHeadersTag[] = {std::byte((21 << 3) | 2 | 0x80), std::byte(1)};  // wire::Header.headers

// Valid UTF-8 without control characters (C0, DEL, C1).
bool text_without_controls(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    char32_t cp = 0;
    const std::size_t n = utf8_sequence(s, i, cp);
    if (n == 0 || cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) return false;
    i += n;
  }
  return true;
}

// A length-delimited field at p with tag `tag`: its bytes, and p moved past it.
bool read_string(const std::byte*& p, const std::byte* end, std::byte tag, std::string_view& out) noexcept {
  if (p >= end || *p != tag) return false;
  std::uint64_t len = 0;
  const std::byte* q = varint::read(p + 1, end, len);
  if (q == nullptr || len > static_cast<std::uint64_t>(end - q)) return false;
  out = {reinterpret_cast<const char*>(q), static_cast<std::size_t>(len)};
  p = q + len;
  return true;
}

std::size_t string_field_size(std::size_t len) noexcept { return 1 + varint::size(len) + len; }

std::byte* put_string(std::byte* p, std::byte tag, std::string_view s) noexcept {
  *p++ = tag;
  p = varint::put(p, s.size());
  if (!s.empty()) std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

}  // namespace

const char* check_header_field(std::string_view key, std::string_view value) noexcept {
  if (key.empty()) return "a header key is empty";
  if (key.size() > kMaxHeaderKey) return "a header key is longer than 256 bytes";
  for (const char c : key) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == ':') return "a header key may hold only printable ASCII without ':' or spaces";
  }
  if (!text_without_controls(value)) return "a header value must be UTF-8 without control characters (no CR or LF)";
  return nullptr;
}

bool HeaderCursor::next(std::string_view& key, std::string_view& value) noexcept {
  if (p_ >= end_ || error_ != nullptr) return false;
  std::string_view entry;
  if (!read_string(p_, end_, kFieldTag, entry)) {
    error_ = "headers are not a canonical list of fields";
    return false;
  }
  const auto* q = reinterpret_cast<const std::byte*>(entry.data());
  const auto* const entry_end = q + entry.size();
  value = {};
  if (!read_string(q, entry_end, kKeyTag, key) || (q < entry_end && !read_string(q, entry_end, kValueTag, value)) ||
      q != entry_end) {
    error_ = "a header field is not a key followed by a value";
    return false;
  }
  if (const char* why = check_header_field(key, value)) {
    error_ = why;
    return false;
  }
  return true;
}

const char* check_headers(std::span<const std::byte> encoded) noexcept {
  if (encoded.size() > kMaxHeaderBytes) return "headers are larger than 16 KiB";
  HeaderCursor c(encoded);
  std::string_view key, value;
  while (c.next(key, value)) {
  }
  return c.error();
}

bool has_broker_header(std::span<const std::byte> encoded) noexcept {
  HeaderCursor c(encoded);
  std::string_view key, value;
  while (c.next(key, value)) {
    if (key.starts_with(kBrokerHeaderPrefix)) return true;
  }
  return false;
}

std::size_t header_field_size(std::string_view key, std::string_view value) noexcept {
  const std::size_t entry = string_field_size(key.size()) + (value.empty() ? 0 : string_field_size(value.size()));
  return string_field_size(entry);
}

std::byte* put_header_field(std::byte* p, std::string_view key, std::string_view value) noexcept {
  *p++ = kFieldTag;
  p = varint::put(p, string_field_size(key.size()) + (value.empty() ? 0 : string_field_size(value.size())));
  p = put_string(p, kKeyTag, key);
  if (!value.empty()) p = put_string(p, kValueTag, value);
  return p;
}

std::size_t headers_field_size(std::span<const std::byte> encoded) noexcept {
  return encoded.empty() ? 0 : sizeof kHeadersTag + varint::size(encoded.size()) + encoded.size();
}

std::byte* put_headers_field(std::byte* p, std::span<const std::byte> encoded) noexcept {
  if (encoded.empty()) return p;
  std::memcpy(p, kHeadersTag, sizeof kHeadersTag);
  p = varint::put(p + sizeof kHeadersTag, encoded.size());
  std::memcpy(p, encoded.data(), encoded.size());
  return p + encoded.size();
}

}  // namespace ubroker::proto
