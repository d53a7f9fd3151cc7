// The hand-rolled DELIVER encoder must produce what protobuf itself parses into the same
// Header: every field, drops only when any is non-zero, zero scalars omitted, big varints.
#include "ubroker/proto/deliver_encoder.hpp"

#include <gtest/gtest.h>

#include <limits>

#include "ubroker.pb.h"
#include "ubroker/proto/frame_codec.hpp"

namespace ubroker::proto {
namespace {

wire::Header parse(std::span<const std::byte> head, std::size_t payload_size) {
  std::vector<std::byte> frame(head.begin(), head.end());
  frame.resize(frame.size() + payload_size, std::byte{0x77});
  auto split = split_frame(frame, {});
  EXPECT_TRUE(split && split->complete);
  EXPECT_EQ(split->payload.size(), payload_size);
  wire::Header h;
  EXPECT_TRUE(parse_header(split->header, h).has_value());
  return h;
}

TEST(DeliverEncoder, ProtobufParsesItIntoTheSameHeader) {
  DeliverEncoder enc;
  enc.begin("sensors.kitchen.temp", 42, 1000, 4321);
  const std::uint64_t ids[] = {1, 300, std::numeric_limits<std::uint64_t>::max()};
  const std::uint64_t drops[] = {0, 7, 0};
  const wire::Header h = parse(enc.head(ids, drops, 64), 64);
  EXPECT_EQ(h.type(), wire::DELIVER);
  EXPECT_EQ(h.topic(), "sensors.kitchen.temp");
  EXPECT_EQ(h.sender_id(), 42u);
  EXPECT_EQ(h.sender_uid(), 1000u);
  EXPECT_EQ(h.sender_pid(), 4321u);
  ASSERT_EQ(h.sub_ids_size(), 3);
  EXPECT_EQ(h.sub_ids(1), 300u);
  EXPECT_EQ(h.sub_ids(2), std::numeric_limits<std::uint64_t>::max());
  ASSERT_EQ(h.dropped_size(), 3);
  EXPECT_EQ(h.dropped(1), 7u);
  EXPECT_FALSE(h.retain());
}

TEST(DeliverEncoder, NoDropsFieldWithoutDropsAndZeroSenderOmitted) {
  DeliverEncoder enc;
  enc.begin("$sys.client.connected", 0, 0, 99);  // the broker's own events: sender id 0, root
  const std::uint64_t ids[] = {5};
  const std::uint64_t drops[] = {0};
  const auto head = enc.head(ids, drops, 0);
  const wire::Header h = parse(head, 0);
  EXPECT_EQ(h.dropped_size(), 0);
  EXPECT_EQ(h.sender_id(), 0u);
  EXPECT_EQ(h.sender_pid(), 99u);
  // Byte-for-byte the size protobuf would have used (field order aside).
  EXPECT_EQ(head.size() - kPrefixSize, h.ByteSizeLong());
}

TEST(DeliverEncoder, ReusableAcrossMessagesAndReceivers) {
  DeliverEncoder enc;
  for (int m = 0; m < 3; ++m) {
    std::string topic(1, 't');  // built in place: GCC 12 -O2 misfires -Wrestrict on "lit" + string
    topic += std::to_string(m);
    topic.append(static_cast<std::size_t>(200 * m), 'x');
    enc.begin(topic, 1, 2, 3);
    for (std::uint64_t r = 1; r <= 3; ++r) {
      const std::uint64_t ids[] = {r};
      const std::uint64_t drops[] = {r == 2 ? 9u : 0u};
      const wire::Header h = parse(enc.head(ids, drops, 10), 10);
      EXPECT_EQ(h.topic(), topic);
      EXPECT_EQ(h.sub_ids(0), r);
      EXPECT_EQ(h.dropped_size(), r == 2 ? 1 : 0);
    }
  }
}

// begin() skips the encoding when topic and sender are those it encoded last: any change in
// any of them must still show.
TEST(DeliverEncoder, EachBeginIsEncodedWhetherOrNotItRepeatsThePrevious) {
  struct Begin {
    std::string topic;
    std::uint64_t id;
    std::uint32_t uid, pid;
  } begins[] = {{"a.b", 1, 2, 3}, {"a.b", 1, 2, 3}, {"a.c", 1, 2, 3}, {"a.c", 4, 2, 3}, {"a.c", 4, 5, 3},
                {"a.c", 4, 5, 6}, {"a.cd", 4, 5, 6}, {"a.c", 4, 5, 6}, {"a.c", 0, 0, 0}, {"a.b", 1, 2, 3}};
  DeliverEncoder enc;
  for (const Begin& b : begins) {
    enc.begin(b.topic, b.id, b.uid, b.pid);
    const std::uint64_t ids[] = {1};
    const std::uint64_t drops[] = {0};
    const wire::Header h = parse(enc.head(ids, drops, 8), 8);
    EXPECT_EQ(h.topic(), b.topic);
    EXPECT_EQ(h.sender_id(), b.id);
    EXPECT_EQ(h.sender_uid(), b.uid);
    EXPECT_EQ(h.sender_pid(), b.pid);
  }
}

TEST(DeliverEncoder, BulkPartParsesAsShmRefAndFdCount) {
  DeliverEncoder enc;
  enc.begin("camera.frames", 3, 1000, 77);
  const std::uint64_t ids[] = {9};
  const std::uint64_t drops[] = {0};
  const ShmPart part{.segment = 12, .offset = 4096 + 64, .length = 1u << 20, .token = (5ull << 32) | 3,
                     .carries_fd = true};
  const auto head = enc.head(ids, drops, 0, &part);
  const wire::Header h = parse(head, 0);
  ASSERT_TRUE(h.has_shm());
  EXPECT_EQ(h.shm().segment(), 12u);
  EXPECT_EQ(h.shm().offset(), 4096u + 64);
  EXPECT_EQ(h.shm().length(), 1u << 20);
  EXPECT_EQ(h.shm().token(), (5ull << 32) | 3);
  EXPECT_EQ(h.fd_count(), 1u);
  EXPECT_EQ(head.size() - kPrefixSize, h.ByteSizeLong());

  const ShmPart no_fd{.segment = 12, .offset = 4096 + 64, .length = 10, .token = 0};  // token 0 omitted
  const wire::Header h2 = parse(enc.head(ids, drops, 0, &no_fd), 0);
  EXPECT_EQ(h2.fd_count(), 0u);
  EXPECT_EQ(h2.shm().token(), 0u);
  EXPECT_EQ(h2.shm().length(), 10u);
}

}  // namespace
}  // namespace ubroker::proto
