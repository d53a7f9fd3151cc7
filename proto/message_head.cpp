// MessageHead: protobuf wire format read and written by hand for PUBLISH and DELIVER.
#include "ubroker/proto/message_head.hpp"

#include <algorithm>
#include <cstring>

#include "ubroker.pb.h"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/headers.hpp"
#include "varint.hpp"

namespace ubroker::proto {
namespace {

// wire::Header's field numbers and wire::FrameType's values; ubroker.proto must agree
// (message_head_test compares with protobuf).
enum Field : std::uint32_t {
  kType = 1,
  kTopic = 2,
  kSeq = 3,
  kSubIds = 4,
  kDropped = 5,
  kSenderId = 6,
  kSenderUid = 7,
  kSenderPid = 8,
  kFdCount = 9,
  kRetain = 12,
  kHeaders = 21,
};
constexpr std::uint32_t kVarint = 0, kLengthDelimited = 2;
constexpr std::uint64_t kPublish = 6, kDeliver = 7;

// Appends the packed varints in [p, end) to store; false when malformed or too many.
bool read_packed(const std::byte* p, const std::byte* end, std::array<std::uint64_t, MessageHead::kMaxIds>& store,
                 std::uint8_t& count) noexcept {
  while (p < end) {
    if (count == MessageHead::kMaxIds) return false;
    std::uint64_t v = 0;
    p = varint::read(p, end, v);
    if (p == nullptr) return false;
    store[count++] = v;
  }
  return true;
}

bool printable_ascii(std::string_view s) noexcept {
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return false;
  }
  return true;
}

constexpr std::byte tag(Field f, std::uint32_t wire_type) { return std::byte((f << 3) | wire_type); }

// The general case: field by field. Apart from decode_message_head, whose common case (the
// exact PUBLISH layout) then needs no registers saved for this loop.
[[gnu::noinline]] bool decode_fields(const std::byte* p, const std::byte* const end, MessageHead& out) noexcept {
  while (p < end) {
    std::uint64_t key = 0;
    p = varint::read(p, end, key);
    if (p == nullptr || key > 0xffffffffu) return false;
    const auto field = static_cast<std::uint32_t>(key >> 3);
    const auto wire_type = static_cast<std::uint32_t>(key & 7);
    if (wire_type == kLengthDelimited) {
      std::uint64_t len = 0;
      p = varint::read(p, end, len);
      if (p == nullptr || len > static_cast<std::uint64_t>(end - p)) return false;
      const std::byte* const value_end = p + len;
      switch (field) {
        case kTopic:
          // Topics protobuf might refuse as UTF-8 (and the router would refuse anyway) go the long way.
          out.topic = {reinterpret_cast<const char*>(p), static_cast<std::size_t>(len)};
          if (!printable_ascii(out.topic)) return false;
          break;
        case kSubIds:
          if (!read_packed(p, value_end, out.sub_id_store, out.sub_id_count)) return false;
          break;
        case kDropped:
          if (!read_packed(p, value_end, out.dropped_store, out.dropped_count)) return false;
          break;
        case kHeaders:
          // Only headers in the form protobuf writes, with every field valid, are taken as bytes.
          if (!out.headers.empty()) return false;  // protobuf would merge the two
          out.headers = {p, static_cast<std::size_t>(len)};
          if (check_headers(out.headers) != nullptr) return false;
          break;
        default: return false;
      }
      p = value_end;
      continue;
    }
    if (wire_type != kVarint) return false;
    std::uint64_t v = 0;
    p = varint::read(p, end, v);
    if (p == nullptr) return false;
    switch (field) {
      case kType: out.type = static_cast<std::uint32_t>(v); break;  // protobuf keeps an enum's low 32 bits
      case kSeq: out.seq = v; break;
      case kSenderId: out.sender_id = v; break;
      case kSenderUid: out.sender_uid = static_cast<std::uint32_t>(v); break;
      case kSenderPid: out.sender_pid = static_cast<std::uint32_t>(v); break;
      case kFdCount: out.fd_count = static_cast<std::uint32_t>(v); break;
      case kRetain: out.retain = v != 0; break;
      default: return false;  // a packed field sent unpacked, or a field this decoder leaves to protobuf
    }
  }
  return out.type == kPublish || out.type == kDeliver;
}

}  // namespace

bool decode_message_head(std::span<const std::byte> bytes, MessageHead& out) noexcept {
  out.type = 0;
  out.topic = {};
  out.seq = out.sender_id = 0;
  out.sender_uid = out.sender_pid = out.fd_count = 0;
  out.retain = false;
  out.headers = {};
  out.sub_id_count = out.dropped_count = 0;
  const std::byte* p = bytes.data();
  const std::byte* const end = p + bytes.size();
  // First, the exact layout encode_publish_head writes: type, a topic under 128 bytes, and
  // retain when set. Anything else takes the field loop below.
  if (bytes.size() >= 4 && p[0] == tag(kType, kVarint) && p[1] == std::byte(kPublish) &&
      p[2] == tag(kTopic, kLengthDelimited) && std::to_integer<std::size_t>(p[3]) < 0x80) {
    const auto len = std::to_integer<std::size_t>(p[3]);
    const std::size_t rest = bytes.size() - 4;
    if (rest == len || (rest == len + 2 && p[4 + len] == tag(kRetain, kVarint) && p[5 + len] == std::byte(1))) {
      out.type = kPublish;
      out.topic = {reinterpret_cast<const char*>(p + 4), len};
      out.retain = rest != len;
      return printable_ascii(out.topic);
    }
  }
  return decode_fields(p, end, out);
}

bool same_as(const MessageHead& head, const wire::Header& h) {
  wire::Header only = h;  // what is left once the fields the head holds are cleared
  only.clear_type();
  only.clear_topic();
  only.clear_seq();
  only.clear_sub_ids();
  only.clear_dropped();
  only.clear_sender_id();
  only.clear_sender_uid();
  only.clear_sender_pid();
  only.clear_fd_count();
  only.clear_retain();
  only.clear_headers();
  HeaderCursor fields(head.headers);
  std::string_view key, value;
  for (const auto& f : h.headers().fields()) {
    if (!fields.next(key, value) || key != f.key() || value != f.value()) return false;
  }
  if (fields.next(key, value)) return false;
  const auto equal = [](std::span<const std::uint64_t> a, const auto& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  };
  return only.ByteSizeLong() == 0 && static_cast<std::uint32_t>(h.type()) == head.type && h.topic() == head.topic &&
         h.seq() == head.seq && equal(head.sub_ids(), h.sub_ids()) && equal(head.dropped(), h.dropped()) &&
         h.sender_id() == head.sender_id && h.sender_uid() == head.sender_uid && h.sender_pid() == head.sender_pid &&
         h.fd_count() == head.fd_count && h.retain() == head.retain;
}

std::size_t publish_head_size(std::string_view topic, bool retain, std::span<const std::byte> headers) noexcept {
  return kPrefixSize + 2 + 1 + varint::size(topic.size()) + topic.size() + (retain ? 2 : 0) +
         headers_field_size(headers);
}

std::size_t encode_publish_head(std::byte* dst, std::string_view topic, bool retain, std::size_t payload_size,
                                std::span<const std::byte> headers) noexcept {
  std::byte* p = dst + kPrefixSize;
  *p++ = tag(kType, kVarint);
  *p++ = std::byte(kPublish);
  *p++ = tag(kTopic, kLengthDelimited);
  p = varint::put(p, topic.size());
  if (!topic.empty()) std::memcpy(p, topic.data(), topic.size());
  p += topic.size();
  if (retain) {
    *p++ = tag(kRetain, kVarint);
    *p++ = std::byte(1);
  }
  p = put_headers_field(p, headers);
  const auto header_len = static_cast<std::uint32_t>(p - dst - kPrefixSize);
  write_prefix(dst, static_cast<std::uint32_t>(header_len + payload_size), header_len);
  return static_cast<std::size_t>(p - dst);
}

}  // namespace ubroker::proto
