// Message headers on the wire: key/value metadata a sender attaches to a publish, request or
// reply (as NATS headers), carried end to end and never changed by the broker.
//
// In a frame they are field 21 of wire::Header, a wire::MessageHeaders, in its canonical
// encoding: for each field, in order, a HeaderField entry holding its key (field 1) and then
// its value (field 2, absent when empty), exactly as protobuf writes it. The broker and the
// client library check that encoding once (check_headers) and afterwards walk it without
// protobuf (HeaderCursor) and forward it as bytes.
//
// Keys are 1..kMaxHeaderKey bytes of printable ASCII without ':' or spaces (what a NATS
// header name may be); values are UTF-8 without control characters (no CR or LF: a value
// must survive a text protocol). All of it together at most kMaxHeaderBytes. Stateless.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

namespace ubroker::proto {

inline constexpr std::size_t kMaxHeaderBytes = 16 * 1024;  // the encoded MessageHeaders
inline constexpr std::size_t kMaxHeaderKey = 256;
// Keys the broker adds itself ($sys.trace copies: ubroker-request, ubroker-caller, ...); a
// client may not send them, so a reader can trust them.
inline constexpr std::string_view kBrokerHeaderPrefix = "ubroker-";

// Why a key/value pair cannot be a header field (a static sentence), or nullptr.
[[nodiscard]] const char* check_header_field(std::string_view key, std::string_view value) noexcept;

// The fields of checked headers, one at a time.
class HeaderCursor {
 public:
  explicit HeaderCursor(std::span<const std::byte> encoded) noexcept : p_(encoded.data()), end_(p_ + encoded.size()) {}
  // The next field; false at the end, or at bytes that are not canonical headers (then
  // error() says why).
  bool next(std::string_view& key, std::string_view& value) noexcept;
  [[nodiscard]] const char* error() const noexcept { return error_; }
  [[nodiscard]] const std::byte* position() const noexcept { return p_; }  // after the last field read

 private:
  const std::byte* p_;
  const std::byte* end_;
  const char* error_ = nullptr;
};

// Why `encoded` is not canonical, valid headers (a static sentence), or nullptr.
[[nodiscard]] const char* check_headers(std::span<const std::byte> encoded) noexcept;

// Whether checked headers hold a key that starts with kBrokerHeaderPrefix.
[[nodiscard]] bool has_broker_header(std::span<const std::byte> encoded) noexcept;

// Encoding, for a sender: the bytes one field takes, and writing them at p (returns the byte after).
[[nodiscard]] std::size_t header_field_size(std::string_view key, std::string_view value) noexcept;
std::byte* put_header_field(std::byte* p, std::string_view key, std::string_view value) noexcept;

// The headers as field 21 of a wire::Header: its size with tag and length (0 for no headers),
// and writing it at p (returns the byte after; writes nothing for no headers).
[[nodiscard]] std::size_t headers_field_size(std::span<const std::byte> encoded) noexcept;
std::byte* put_headers_field(std::byte* p, std::span<const std::byte> encoded) noexcept;

}  // namespace ubroker::proto
