// DeliverEncoder: protobuf varints and length-delimited fields, written by hand.
#include "ubroker/proto/deliver_encoder.hpp"

#include <cstring>

#include "ubroker/proto/frame_codec.hpp"

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

std::size_t varint_size(std::uint64_t v) {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

void put_varint(std::vector<std::byte>& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(std::byte((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(std::byte(v));
}

void put_packed(std::vector<std::byte>& out, std::uint8_t tag, std::span<const std::uint64_t> values) {
  std::size_t len = 0;
  for (auto v : values) len += varint_size(v);
  out.push_back(std::byte(tag));
  put_varint(out, len);
  for (auto v : values) put_varint(out, v);
}

}  // namespace

void DeliverEncoder::begin(std::string_view topic, std::uint64_t sender_id, std::uint32_t sender_uid,
                           std::uint32_t sender_pid) {
  common_.clear();
  common_.push_back(std::byte(kTypeTag));
  put_varint(common_, kDeliver);
  common_.push_back(std::byte(kTopicTag));
  put_varint(common_, topic.size());
  const std::size_t at = common_.size();
  common_.resize(at + topic.size());
  std::memcpy(common_.data() + at, topic.data(), topic.size());
  // proto3: zero scalars are not written.
  if (sender_id != 0) {
    common_.push_back(std::byte(kSenderIdTag));
    put_varint(common_, sender_id);
  }
  if (sender_uid != 0) {
    common_.push_back(std::byte(kSenderUidTag));
    put_varint(common_, sender_uid);
  }
  if (sender_pid != 0) {
    common_.push_back(std::byte(kSenderPidTag));
    put_varint(common_, sender_pid);
  }
}

std::span<const std::byte> DeliverEncoder::head(std::span<const std::uint64_t> sub_ids,
                                                std::span<const std::uint64_t> dropped, std::size_t payload_size,
                                                const ShmPart* shm) {
  head_.resize(kPrefixSize);
  head_.insert(head_.end(), common_.begin(), common_.end());
  put_packed(head_, kSubIdsTag, sub_ids);
  bool any_dropped = false;
  for (auto d : dropped) any_dropped |= d != 0;
  if (any_dropped) put_packed(head_, kDroppedTag, dropped);
  if (shm != nullptr) {
    if (shm->carries_fd) {
      head_.push_back(std::byte(kFdCountTag));
      put_varint(head_, 1);
    }
    // ShmRef fields 1-4, all varints; zero ones omitted.
    const std::uint64_t fields[] = {shm->segment, shm->offset, shm->length, shm->token};
    std::size_t len = 0;
    for (std::size_t i = 0; i < 4; ++i) len += fields[i] == 0 ? 0 : 1 + varint_size(fields[i]);
    head_.push_back(std::byte(kShmTag[0]));
    head_.push_back(std::byte(kShmTag[1]));
    put_varint(head_, len);
    for (std::size_t i = 0; i < 4; ++i) {
      if (fields[i] == 0) continue;
      head_.push_back(std::byte(((i + 1) << 3) | 0));
      put_varint(head_, fields[i]);
    }
  }
  const auto header_len = static_cast<std::uint32_t>(head_.size() - kPrefixSize);
  write_prefix(head_.data(), static_cast<std::uint32_t>(header_len + payload_size), header_len);
  return head_;
}

}  // namespace ubroker::proto
