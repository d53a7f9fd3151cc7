// Message headers on the wire (proto/headers.hpp) against protobuf itself: what the encoder
// writes protobuf parses field for field; the rules refuse what a text protocol could not
// carry; the fast decoder and DeliverEncoder carry headers as bytes, and leave any other form
// of them to protobuf.
#include "ubroker/proto/headers.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "ubroker.pb.h"
#include "ubroker/proto/deliver_encoder.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/message_head.hpp"

namespace ubroker::proto {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

std::vector<std::byte> encode(const Fields& fields) {
  std::size_t size = 0;
  for (const auto& [k, v] : fields) size += header_field_size(k, v);
  std::vector<std::byte> out(size);
  std::byte* p = out.data();
  for (const auto& [k, v] : fields) p = put_header_field(p, k, v);
  EXPECT_EQ(p, out.data() + out.size());
  return out;
}

Fields read_all(std::span<const std::byte> encoded) {
  Fields out;
  HeaderCursor c(encoded);
  std::string_view k, v;
  while (c.next(k, v)) out.emplace_back(k, v);
  EXPECT_EQ(c.error(), nullptr);
  return out;
}

TEST(Headers, EncodingIsWhatProtobufWritesAndParses) {
  const Fields fields = {{"trace-id", "4bf92f3577b34da6"}, {"empty", ""}, {"trace-id", "again"},
                         {"Nats-Msg-Id", "ünïcode ✓"}, {std::string(256, 'k'), std::string(3000, 'v')}};
  const auto encoded = encode(fields);
  EXPECT_EQ(check_headers(encoded), nullptr);
  EXPECT_EQ(read_all(encoded), fields);
  wire::MessageHeaders parsed;
  ASSERT_TRUE(parsed.ParseFromArray(encoded.data(), static_cast<int>(encoded.size())));
  ASSERT_EQ(parsed.fields_size(), static_cast<int>(fields.size()));
  for (int i = 0; i < parsed.fields_size(); ++i) {
    EXPECT_EQ(parsed.fields(i).key(), fields[static_cast<std::size_t>(i)].first);
    EXPECT_EQ(parsed.fields(i).value(), fields[static_cast<std::size_t>(i)].second);
  }
  // And protobuf's own serialization is the same bytes.
  const std::string again = parsed.SerializeAsString();
  EXPECT_EQ(std::vector<std::byte>(reinterpret_cast<const std::byte*>(again.data()),
                                   reinterpret_cast<const std::byte*>(again.data()) + again.size()),
            encoded);
}

TEST(Headers, FieldRulesRefuseWhatATextProtocolCouldNotCarry) {
  EXPECT_EQ(check_header_field("Content-Type", "text/plain; charset=utf-8"), nullptr);
  EXPECT_NE(check_header_field("", "v"), nullptr);
  EXPECT_NE(check_header_field(std::string(257, 'k'), "v"), nullptr);
  EXPECT_NE(check_header_field("a:b", "v"), nullptr);
  EXPECT_NE(check_header_field("a b", "v"), nullptr);
  EXPECT_NE(check_header_field("caf\xc3\xa9", "v"), nullptr);  // keys are ASCII
  EXPECT_NE(check_header_field("k", "line\r\nInjected: yes"), nullptr);
  EXPECT_NE(check_header_field("k", std::string("nul\0byte", 8)), nullptr);
  EXPECT_NE(check_header_field("k", "\xc3"), nullptr);          // truncated UTF-8
  EXPECT_NE(check_header_field("k", "\xc0\xaf"), nullptr);      // overlong
  EXPECT_NE(check_header_field("k", "\xed\xa0\x80"), nullptr);  // a surrogate
  EXPECT_NE(check_header_field("k", "\xc2\x85"), nullptr);      // C1 control (NEL)
}

TEST(Headers, TheBrokersOwnKeysAreFound) {
  EXPECT_TRUE(has_broker_header(encode({{"a", "1"}, {"ubroker-request", "2"}})));
  EXPECT_FALSE(has_broker_header(encode({{"a", "1"}, {"Ubroker-Request", "2"}, {"x-ubroker-y", "3"}})));
  EXPECT_FALSE(has_broker_header({}));
}

TEST(Headers, CheckRefusesMalformedAndOversizedEncodings) {
  // A value field first, a key twice, an unknown field, a cut-off length.
  wire::MessageHeaders odd;
  auto* f = odd.add_fields();
  f->set_key("k");
  f->set_value("v");
  std::string good = odd.SerializeAsString();
  EXPECT_EQ(check_headers(std::as_bytes(std::span(good.data(), good.size()))), nullptr);
  const std::string value_first = "\x0a\x06\x12\x01v\x0a\x01k";
  const std::string unknown = "\x0a\x06\x0a\x01k\x1a\x01x";
  const std::string truncated = "\x0a\x09\x0a\x01k";
  const std::string not_a_field = "\x12\x03\x0a\x01k";
  for (const std::string* bad : {&value_first, &unknown, &truncated, &not_a_field}) {
    EXPECT_NE(check_headers(std::as_bytes(std::span(bad->data(), bad->size()))), nullptr);
  }
  const auto big = encode({{"k", std::string(kMaxHeaderBytes, 'v')}});
  EXPECT_NE(check_headers(big), nullptr);
}

TEST(Headers, PublishAndDeliverCarryThemAsBytesThroughTheFastPaths) {
  const auto encoded = encode({{"a", "1"}, {"b", "2"}});
  // PUBLISH written by hand, parsed by protobuf and by the fast decoder alike.
  std::vector<std::byte> frame(publish_head_size("t.x", true, encoded) + 2);
  ASSERT_EQ(encode_publish_head(frame.data(), "t.x", true, 2, encoded), frame.size() - 2);
  auto split = split_frame(frame, {});
  ASSERT_TRUE(split && split->complete);
  wire::Header h;
  ASSERT_TRUE(parse_header(split->header, h).has_value());
  ASSERT_EQ(h.headers().fields_size(), 2);
  EXPECT_EQ(h.headers().fields(1).value(), "2");
  MessageHead head;
  ASSERT_TRUE(decode_message_head(split->header, head));
  EXPECT_TRUE(same_as(head, h));
  EXPECT_TRUE(std::equal(head.headers.begin(), head.headers.end(), encoded.begin(), encoded.end()));
  // DELIVER: the encoder adds them to the shared part; a change of headers is encoded anew.
  DeliverEncoder enc;
  const std::uint64_t ids[] = {3};
  for (const auto& fields : {Fields{{"a", "1"}}, Fields{{"a", "2"}}, Fields{}}) {
    const auto hdrs = encode(fields);
    enc.begin("t.x", 1, 2, 3, hdrs);
    const auto deliver = enc.head(ids, {}, 0);
    wire::Header d;
    ASSERT_TRUE(parse_header(deliver.subspan(kPrefixSize), d).has_value());
    ASSERT_EQ(d.headers().fields_size(), static_cast<int>(fields.size()));
    if (!fields.empty()) {
      EXPECT_EQ(d.headers().fields(0).value(), fields[0].second);
    }
    ASSERT_TRUE(decode_message_head(deliver.subspan(kPrefixSize), head));
    EXPECT_TRUE(same_as(head, d));
  }
}

TEST(Headers, TheFastDecoderLeavesOtherFormsToProtobuf) {
  // Valid for protobuf, but not the canonical form, not valid by the rules, or twice: declined.
  wire::Header h;
  h.set_type(wire::PUBLISH);
  h.set_topic("t");
  h.mutable_headers()->add_fields()->set_key("bad key");
  std::string bytes = h.SerializeAsString();
  MessageHead head;
  EXPECT_FALSE(decode_message_head(std::as_bytes(std::span(bytes.data(), bytes.size())), head));
  const auto one = encode({{"a", "1"}});
  std::string twice = "\x08\x06\x12\x01t";
  for (int i = 0; i < 2; ++i) {
    twice += "\xaa\x01";
    twice += static_cast<char>(one.size());
    twice.append(reinterpret_cast<const char*>(one.data()), one.size());
  }
  EXPECT_FALSE(decode_message_head(std::as_bytes(std::span(twice.data(), twice.size())), head));
}

}  // namespace
}  // namespace ubroker::proto
