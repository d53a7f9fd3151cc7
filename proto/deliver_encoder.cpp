// DeliverEncoder: protobuf varints and length-delimited fields, written by hand.
#include "ubroker/proto/deliver_encoder.hpp"

#include <cstring>

#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/headers.hpp"
#include "varint.hpp"

namespace ubroker::proto {
namespace {

// Field tags of wire::Header (field number << 3 | wire type); ubroker.proto must agree.
constexpr std::uint8_t kTypeTag = (1 << 3) | 0;     // varint
constexpr std::uint8_t kTopicTag = (2 << 3) | 2;    // length-delimited
constexpr std::uint8_t kSubIdsTag = (4 << 3) | 2;   // packed varints
constexpr std::uint8_t kDroppedTag = (5 << 3) | 2;  // packed varints
constexpr std::uint8_t kSenderIdTag = (6 << 3) | 0;
constexpr std::uint8_t kSenderUidTag = (7 << 3) | 0;
constexpr std::uint8_t kSenderPidTag = (8 << 3) | 0;
constexpr std::uint8_t kFdCountTag = (9 << 3) | 0;
constexpr std::uint8_t kShmTag[] = {(19 << 3) | 2 | 0x80, 1};  // field 19 needs a two-byte tag
constexpr std::uint64_t kDeliver = 7;                           // wire::DELIVER

// Writes a packed repeated field; returns the byte after it.
std::byte* put_packed(std::byte* p, std::uint8_t tag, std::span<const std::uint64_t> values) {
  std::size_t len = 0;
  for (auto v : values) len += varint::size(v);
  *p++ = std::byte(tag);
  p = varint::put(p, len);
  for (auto v : values) p = varint::put(p, v);
  return p;
}

// Grows `buf` (never shrinks it) so that `need` bytes fit: no allocation once warm.
void ensure(std::vector<std::byte>& buf, std::size_t need) {
  if (buf.size() < need) buf.resize(need);
}

constexpr std::size_t kMaxVarint = 10;

}  // namespace

void DeliverEncoder::begin(std::string_view topic, std::uint64_t sender_id, std::uint32_t sender_uid,
                           std::uint32_t sender_pid, std::span<const std::byte> headers) {
  if (common_len_ != 0 && sender_id == sender_id_ && sender_uid == sender_uid_ && sender_pid == sender_pid_ &&
      topic.size() == topic_len_ &&
      (topic.empty() || std::memcmp(common_.data() + topic_at_, topic.data(), topic.size()) == 0) &&
      headers.size() == headers_len_ &&
      (headers.empty() || std::memcmp(common_.data() + headers_at_, headers.data(), headers.size()) == 0)) {
    return;  // encoded already
  }
  ensure(common_, 2 + 1 + kMaxVarint + topic.size() + 3 * (1 + kMaxVarint) + headers_field_size(headers));
  std::byte* p = common_.data();
  *p++ = std::byte(kTypeTag);
  *p++ = std::byte(kDeliver);
  *p++ = std::byte(kTopicTag);
  p = varint::put(p, topic.size());
  topic_at_ = static_cast<std::size_t>(p - common_.data());
  topic_len_ = topic.size();
  if (!topic.empty()) std::memcpy(p, topic.data(), topic.size());
  p += topic.size();
  // proto3: zero scalars are not written.
  if (sender_id != 0) {
    *p++ = std::byte(kSenderIdTag);
    p = varint::put(p, sender_id);
  }
  if (sender_uid != 0) {
    *p++ = std::byte(kSenderUidTag);
    p = varint::put(p, sender_uid);
  }
  if (sender_pid != 0) {
    *p++ = std::byte(kSenderPidTag);
    p = varint::put(p, sender_pid);
  }
  p = put_headers_field(p, headers);
  headers_len_ = headers.size();
  headers_at_ = static_cast<std::size_t>(p - common_.data()) - headers.size();  // they end the field
  common_len_ = static_cast<std::size_t>(p - common_.data());
  sender_id_ = sender_id;
  sender_uid_ = sender_uid;
  sender_pid_ = sender_pid;
}

std::span<const std::byte> DeliverEncoder::head(std::span<const std::uint64_t> sub_ids,
                                                std::span<const std::uint64_t> dropped, std::size_t payload_size,
                                                const ShmPart* shm) {
  constexpr std::size_t kShmMax = 2 + kMaxVarint + 4 * (1 + kMaxVarint) + 1 + kMaxVarint;
  ensure(head_, kPrefixSize + common_len_ + 2 * (1 + kMaxVarint) + (sub_ids.size() + dropped.size()) * kMaxVarint +
                    kShmMax);
  std::byte* p = head_.data() + kPrefixSize;
  std::memcpy(p, common_.data(), common_len_);
  p += common_len_;
  p = put_packed(p, kSubIdsTag, sub_ids);
  bool any_dropped = false;
  for (auto d : dropped) any_dropped |= d != 0;
  if (any_dropped) p = put_packed(p, kDroppedTag, dropped);
  if (shm != nullptr) {
    if (shm->carries_fd) {
      *p++ = std::byte(kFdCountTag);
      *p++ = std::byte(1);
    }
    // ShmRef fields 1-4, all varints; zero ones omitted.
    const std::uint64_t fields[] = {shm->segment, shm->offset, shm->length, shm->token};
    std::size_t len = 0;
    for (std::size_t i = 0; i < 4; ++i) len += fields[i] == 0 ? 0 : 1 + varint::size(fields[i]);
    *p++ = std::byte(kShmTag[0]);
    *p++ = std::byte(kShmTag[1]);
    p = varint::put(p, len);
    for (std::size_t i = 0; i < 4; ++i) {
      if (fields[i] == 0) continue;
      *p++ = std::byte(((i + 1) << 3) | 0);
      p = varint::put(p, fields[i]);
    }
  }
  const auto header_len = static_cast<std::uint32_t>(p - head_.data() - kPrefixSize);
  write_prefix(head_.data(), static_cast<std::uint32_t>(header_len + payload_size), header_len);
  return {head_.data(), kPrefixSize + header_len};
}

}  // namespace ubroker::proto
