#include "ubroker/proto/lane_message.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ubroker/proto/headers.hpp"

namespace ubroker::proto {
namespace {

std::span<const std::byte> bytes(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

std::vector<std::byte> encode(std::string_view topic, std::span<const std::byte> headers, std::string_view payload) {
  std::vector<std::byte> out(lane_message_size(topic, headers, payload.size()));
  encode_lane_message(out, topic, headers, bytes(payload));
  return out;
}

TEST(LaneMessage, RoundTripsTopicHeadersAndPayload) {
  std::vector<std::byte> headers(header_field_size("k", "v"));
  (void)put_header_field(headers.data(), "k", "v");
  const auto record = encode("a.b", headers, "hello");
  LaneMessage m;
  ASSERT_EQ(split_lane_message(record, m), nullptr);
  EXPECT_EQ(m.topic, "a.b");
  EXPECT_EQ(m.headers.size(), headers.size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m.payload.data()), m.payload.size()), "hello");
  const auto empty = encode("t", {}, "");
  ASSERT_EQ(split_lane_message(empty, m), nullptr);
  EXPECT_TRUE(m.payload.empty());
  EXPECT_TRUE(m.headers.empty());
}

TEST(LaneMessage, EveryRecordWhoseLengthsAreWrongIsRefusedWithItsReason) {
  LaneMessage m;
  auto record = encode("a.b", {}, "xyz");
  EXPECT_STREQ(split_lane_message(std::span(record).first(7), m), "a lane message shorter than its head");
  auto long_topic = record;
  long_topic[0] = std::byte{200};
  EXPECT_STREQ(split_lane_message(long_topic, m), "a lane message whose lengths pass its end");
  auto huge = record;
  huge[7] = std::byte{0xff};  // headers length near 4 GiB: must not overflow the sum
  EXPECT_STREQ(split_lane_message(huge, m), "a lane message whose lengths pass its end");
  // The topic and headers are only split, for the reader to check in its own copy.
  auto bad_topic = encode("a..b", {}, "x");
  ASSERT_EQ(split_lane_message(bad_topic, m), nullptr);
  EXPECT_EQ(m.topic, "a..b");
}

}  // namespace
}  // namespace ubroker::proto
