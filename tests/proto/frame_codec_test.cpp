// The frame codec against raw bytes: every malformed input has its exact error.
#include "ubroker/proto/frame_codec.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "ubroker.pb.h"

namespace ubroker::proto {
namespace {

std::vector<std::byte> prefix(std::uint32_t frame_len, std::uint32_t header_len) {
  std::vector<std::byte> b(kPrefixSize);
  write_prefix(b.data(), frame_len, header_len);
  return b;
}

std::vector<std::byte> encode(const wire::Header& h, std::string_view payload) {
  std::vector<std::byte> b(frame_head_size(h) + payload.size());
  const std::size_t head = write_frame_head(b.data(), h, payload.size());
  std::memcpy(b.data() + head, payload.data(), payload.size());
  return b;
}

wire::Header publish_header(std::string topic) {
  wire::Header h;
  h.set_type(wire::PUBLISH);
  h.set_topic(std::move(topic));
  return h;
}

TEST(FrameCodec, RoundTrip) {
  const auto bytes = encode(publish_header("a.b"), "payload");
  auto split = split_frame(bytes, {});
  ASSERT_TRUE(split.has_value());
  ASSERT_TRUE(split->complete);
  EXPECT_EQ(split->frame_size, bytes.size());
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(split->payload.data()), split->payload.size()), "payload");
  wire::Header h;
  ASSERT_TRUE(parse_header(split->header, h).has_value());
  EXPECT_EQ(h.type(), wire::PUBLISH);
  EXPECT_EQ(h.topic(), "a.b");
}

TEST(FrameCodec, PrefixIsLittleEndian) {
  const auto b = prefix(0x01020304, 0x05060708);
  EXPECT_EQ(b[0], std::byte{0x04});
  EXPECT_EQ(b[3], std::byte{0x01});
  EXPECT_EQ(b[4], std::byte{0x08});
  EXPECT_EQ(b[7], std::byte{0x05});
}

TEST(FrameCodec, EveryTruncationIsIncompleteNotAnError) {
  const auto bytes = encode(publish_header("a.b"), "xyz");
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    auto split = split_frame(std::span(bytes).first(n), {});
    ASSERT_TRUE(split.has_value()) << n;
    EXPECT_FALSE(split->complete) << n;
    EXPECT_EQ(split->frame_size, n < kPrefixSize ? kPrefixSize : bytes.size()) << n;
  }
  EXPECT_EQ(check_clean_eof(3).error(), FrameError::kTruncated);
  EXPECT_TRUE(check_clean_eof(0).has_value());
}

TEST(FrameCodec, ZeroLengthFrame) {
  EXPECT_EQ(split_frame(prefix(0, 0), {}).error(), FrameError::kEmptyFrame);
}

TEST(FrameCodec, OversizedFrameRejectedFromPrefixAlone) {
  // Only the prefix has arrived: the size is refused before anyone buffers the frame.
  EXPECT_EQ(split_frame(prefix(1025, 4), {.max_frame = 1024}).error(), FrameError::kFrameTooLarge);
  EXPECT_EQ(split_frame(prefix(0xffffffff, 4), {.max_frame = 1024}).error(), FrameError::kFrameTooLarge);
  EXPECT_TRUE(split_frame(prefix(1024, 4), {.max_frame = 1024}).has_value());
}

TEST(FrameCodec, HeaderLengths) {
  EXPECT_EQ(split_frame(prefix(10, 0), {}).error(), FrameError::kBadHeaderLength);
  EXPECT_EQ(split_frame(prefix(10, 11), {}).error(), FrameError::kBadHeaderLength);
  EXPECT_EQ(split_frame(prefix(100000, 70000), {.max_frame = 1 << 20, .max_header = 65536}).error(),
            FrameError::kHeaderTooLarge);
}

TEST(FrameCodec, CorruptHeaderBytes) {
  auto bytes = prefix(3, 3);
  for (auto b : {0xff, 0xff, 0xff}) bytes.push_back(std::byte(b));  // a varint that never ends
  auto split = split_frame(bytes, {});
  ASSERT_TRUE(split && split->complete);
  wire::Header h;
  EXPECT_EQ(parse_header(split->header, h).error(), FrameError::kMalformedHeader);
}

TEST(FrameCodec, UnknownAndMissingFrameType) {
  wire::Header h;
  h.set_type(static_cast<wire::FrameType>(99));
  auto bytes = encode(h, "");
  wire::Header out;
  EXPECT_EQ(parse_header(split_frame(bytes, {})->header, out).error(), FrameError::kUnknownFrameType);

  wire::Header untyped;
  untyped.set_topic("x");  // type 0 (unspecified)
  bytes = encode(untyped, "");
  EXPECT_EQ(parse_header(split_frame(bytes, {})->header, out).error(), FrameError::kUnknownFrameType);
}

TEST(FrameCodec, SplitsConsecutiveFrames) {
  auto a = encode(publish_header("a"), "1");
  const auto b = encode(publish_header("b"), "22");
  a.insert(a.end(), b.begin(), b.end());
  auto first = split_frame(a, {});
  ASSERT_TRUE(first && first->complete);
  auto second = split_frame(std::span(a).subspan(first->frame_size), {});
  ASSERT_TRUE(second && second->complete);
  EXPECT_EQ(second->payload.size(), 2u);
}

TEST(FrameCodec, DescribeNamesEveryError) {
  for (int e = 1; e <= static_cast<int>(FrameError::kTruncated); ++e) {
    EXPECT_NE(describe(static_cast<FrameError>(e)), "unknown frame error") << e;
  }
}

}  // namespace
}  // namespace ubroker::proto
