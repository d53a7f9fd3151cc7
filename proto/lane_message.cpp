#include "ubroker/proto/lane_message.hpp"

#include <cstring>

#include "ubroker/proto/headers.hpp"

namespace ubroker::proto {
namespace {

void put_u32(std::byte* p, std::uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}

std::uint32_t get_u32(const std::byte* p) noexcept {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::to_integer<std::uint32_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace

void encode_lane_message(std::span<std::byte> out, std::string_view topic, std::span<const std::byte> headers,
                         std::span<const std::byte> payload) noexcept {
  std::byte* p = out.data();
  put_u32(p, static_cast<std::uint32_t>(topic.size()));
  put_u32(p + 4, static_cast<std::uint32_t>(headers.size()));
  p += kLaneMessageHead;
  std::memcpy(p, topic.data(), topic.size());
  p += topic.size();
  if (!headers.empty()) std::memcpy(p, headers.data(), headers.size());
  p += headers.size();
  if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
}

const char* split_lane_message(std::span<const std::byte> record, LaneMessage& out) noexcept {
  if (record.size() < kLaneMessageHead) return "a lane message shorter than its head";
  // Each length is read once into a local, and only the local is used.
  const std::uint64_t topic_len = get_u32(record.data());
  const std::uint64_t headers_len = get_u32(record.data() + 4);
  const std::uint64_t rest = record.size() - kLaneMessageHead;
  if (topic_len > rest || headers_len > rest - topic_len) return "a lane message whose lengths pass its end";
  if (headers_len > kMaxHeaderBytes) return "a lane message with headers larger than 16 KiB";
  const std::byte* p = record.data() + kLaneMessageHead;
  out.topic = {reinterpret_cast<const char*>(p), topic_len};
  out.headers = {p + topic_len, headers_len};
  out.payload = {p + topic_len + headers_len, rest - topic_len - headers_len};
  return nullptr;
}

}  // namespace ubroker::proto
