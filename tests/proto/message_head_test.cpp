// The fast decoder and encoder of PUBLISH and DELIVER heads against protobuf itself: what
// the decoder takes, it reads exactly as protobuf does; what it cannot take whole, it leaves
// to protobuf (returns false) rather than guess.
#include "ubroker/proto/message_head.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "ubroker.pb.h"
#include "ubroker/proto/deliver_encoder.hpp"
#include "ubroker/proto/frame_codec.hpp"

namespace ubroker::proto {
namespace {

std::span<const std::byte> bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// Decodes h's protobuf encoding (kept in `wire_bytes`, which `out` points into); false when
// the decoder declines it.
bool decodes(const wire::Header& h, MessageHead& out, std::string& wire_bytes) {
  wire_bytes = h.SerializeAsString();
  if (!decode_message_head(bytes(wire_bytes), out)) return false;
  EXPECT_TRUE(same_as(out, h)) << h.ShortDebugString();
  return true;
}

TEST(MessageHead, TakesEveryPlainDeliverProtobufWrites) {
  wire::Header h;
  h.set_type(wire::DELIVER);
  h.set_topic("sensors.kitchen.temp");
  h.set_sender_id(std::numeric_limits<std::uint64_t>::max());
  h.set_sender_uid(1000);
  h.set_sender_pid(4321);
  h.set_retain(true);
  for (std::uint64_t id : {1ull, 300ull, 1ull << 40}) h.add_sub_ids(id);
  for (std::uint64_t d : {0ull, 7ull, 0ull}) h.add_dropped(d);
  MessageHead head;
  std::string storage;
  ASSERT_TRUE(decodes(h, head, storage));
  EXPECT_EQ(head.topic, "sensors.kitchen.temp");
  ASSERT_EQ(head.sub_ids().size(), 3u);
  EXPECT_EQ(head.sub_ids()[2], 1ull << 40);
  EXPECT_EQ(head.dropped()[1], 7u);
  EXPECT_TRUE(head.retain);
}

TEST(MessageHead, ReadsWhatTheDeliverEncoderWrites) {
  DeliverEncoder enc;
  enc.begin("a.b", 9, 0, 77);
  const std::uint64_t ids[] = {5, 6};
  const std::uint64_t drops[] = {0, 0};
  const auto frame = enc.head(ids, drops, 64);
  auto split = split_frame(frame, {});
  ASSERT_TRUE(split);  // incomplete (no payload here), but the header length is known
  MessageHead head;
  ASSERT_TRUE(decode_message_head(frame.subspan(kPrefixSize), head));
  EXPECT_EQ(head.type, static_cast<std::uint32_t>(wire::DELIVER));
  EXPECT_EQ(head.topic, "a.b");
  EXPECT_EQ(head.sender_id, 9u);
  EXPECT_EQ(head.sender_uid, 0u);
  EXPECT_EQ(head.sender_pid, 77u);
  ASSERT_EQ(head.sub_ids().size(), 2u);
  EXPECT_EQ(head.sub_ids()[1], 6u);
  EXPECT_TRUE(head.dropped().empty());
}

TEST(MessageHead, PublishHeadIsWhatProtobufParses) {
  // Under 128 bytes the decoder reads the layout directly; from 128 on (a two-byte length) it
  // goes field by field.
  for (const std::size_t length : {1, 127, 128, 200})
  for (const bool retain : {false, true}) {
    const std::string topic(length, 't');
    std::vector<std::byte> frame(publish_head_size(topic, retain) + 3, std::byte{0x55});
    ASSERT_EQ(encode_publish_head(frame.data(), topic, retain, 3), frame.size() - 3);
    auto split = split_frame(frame, {});
    ASSERT_TRUE(split && split->complete);
    EXPECT_EQ(split->payload.size(), 3u);
    wire::Header h;
    ASSERT_TRUE(parse_header(split->header, h).has_value());
    EXPECT_EQ(h.type(), wire::PUBLISH);
    EXPECT_EQ(h.topic(), topic);
    EXPECT_EQ(h.retain(), retain);
    MessageHead head;
    ASSERT_TRUE(decode_message_head(split->header, head));
    EXPECT_TRUE(same_as(head, h));
  }
}

wire::Header header(wire::FrameType type, const std::string& topic) {
  wire::Header h;
  h.set_type(type);
  h.set_topic(topic);
  return h;
}

TEST(MessageHead, LeavesEverythingElseToProtobuf) {
  MessageHead head;
  std::string storage;
  EXPECT_FALSE(decodes(header(wire::SUBSCRIBE, "a.>"), head, storage)) << "another frame type";
  wire::Header bulk = header(wire::PUBLISH, "a");
  bulk.mutable_shm()->set_segment(1);
  EXPECT_FALSE(decodes(bulk, head, storage)) << "a shared-memory reference";
  wire::Header grouped = header(wire::PUBLISH, "a");
  grouped.set_group("g");
  EXPECT_FALSE(decodes(grouped, head, storage)) << "a field the decoder does not know";
  EXPECT_FALSE(decodes(header(wire::PUBLISH, "caf\xc3\xa9"), head, storage)) << "a topic that is not printable ASCII";
  wire::Header many = header(wire::DELIVER, "a");
  for (std::uint64_t i = 0; i <= MessageHead::kMaxIds; ++i) many.add_sub_ids(i);
  EXPECT_FALSE(decodes(many, head, storage)) << "more subscription ids than it holds";

  // sub_ids one by one (unpacked): valid protobuf, not what the broker writes.
  const std::string unpacked = std::string("\x08\x07\x12\x01" "a" "\x20\x05", 7);
  wire::Header parsed;
  ASSERT_TRUE(parsed.ParseFromString(unpacked));
  EXPECT_EQ(parsed.sub_ids_size(), 1);
  EXPECT_FALSE(decode_message_head(bytes(unpacked), head));

  for (const std::string& bad : {std::string("\x08", 1), std::string("\x08\x86", 2), std::string("\x12\x05" "ab", 4),
                                 std::string("\x0a\x01" "a", 3)}) {
    EXPECT_FALSE(decode_message_head(bytes(bad), head)) << "truncated or mistyped";
  }
}

// Bytes that start like encode_publish_head's layout but differ after the topic: where the
// decoder accepts them, it reads what protobuf reads; where protobuf refuses, so does it.
TEST(MessageHead, NearMissesOfThePublishLayoutAgreeWithProtobuf) {
  const std::string lead("\x08\x06\x12\x02" "ab", 6);
  struct Case {
    std::string bytes;
    bool accepted;
  } cases[] = {
      {lead, true},
      {lead + std::string("\x60\x01", 2), true},
      {lead + std::string("\x60\x00", 2), true},              // retain written as false
      {lead + std::string("\x60\x02", 2), true},              // any non-zero is true
      {lead + std::string("\x60", 1), false},                  // truncated retain
      {lead + std::string("\x18\x05", 2), true},              // a sequence number after the topic
      {lead + std::string("\x08\x07", 2), true},              // a second type: the last one counts
      {std::string("\x08\x06\x12\x02" "a\x01", 6), false},  // not printable
      {std::string("\x08\x06\x12\x03" "ab", 6), false},      // topic longer than the bytes
  };
  for (const Case& c : cases) {
    MessageHead head;
    const bool decoded = decode_message_head(bytes(c.bytes), head);
    EXPECT_EQ(decoded, c.accepted) << testing::PrintToString(c.bytes);
    if (!decoded) continue;
    wire::Header h;
    ASSERT_TRUE(h.ParseFromString(c.bytes)) << testing::PrintToString(c.bytes);
    EXPECT_TRUE(same_as(head, h)) << h.ShortDebugString();
  }
}

}  // namespace
}  // namespace ubroker::proto
