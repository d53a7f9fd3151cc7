// libFuzzer: the frame decoder on an arbitrary byte stream, as the broker reads it from a
// client. Every frame that decodes must survive a round trip: re-encoded with the codec, it
// splits and parses to the same header and payload. Any crash, sanitizer report or broken
// round trip is a finding, and so is the fast decoder of PUBLISH and DELIVER heads
// (message_head.hpp) disagreeing with protobuf.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "ubroker.pb.h"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/message_head.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 is refused, not worth a line per input
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ubroker;
  std::span<const std::byte> rest(reinterpret_cast<const std::byte*>(data), size);
  const proto::FrameLimits limits{.max_frame = 1u << 16, .max_header = 1u << 14};
  wire::Header header, again;  // reused, as the broker reuses its own
  proto::MessageHead fast_head;
  std::vector<std::byte> encoded;
  while (!rest.empty()) {
    auto split = proto::split_frame(rest, limits);
    if (!split) return 0;
    check(split->frame_size >= proto::kPrefixSize);
    if (!split->complete) {
      check(split->frame_size > rest.size() || rest.size() < proto::kPrefixSize);
      return 0;
    }
    check(split->frame_size <= rest.size());
    check(split->header.size() + split->payload.size() + proto::kPrefixSize == split->frame_size);
    // Where the hand-written decoder of the hot frames takes a header, protobuf must parse
    // it to the very same fields.
    const bool fast = proto::decode_message_head(split->header, fast_head);
    if (!proto::parse_header(split->header, header)) {
      check(!fast);
      return 0;
    }
    if (fast) check(proto::same_as(fast_head, header));

    const std::size_t head = proto::frame_head_size(header);
    encoded.resize(head + split->payload.size());
    proto::write_frame_head(encoded.data(), header, split->payload.size());
    if (!split->payload.empty()) std::memcpy(encoded.data() + head, split->payload.data(), split->payload.size());
    // The re-encoded header may be larger than the limits allow (protobuf's encoding of
    // what was parsed need not be the bytes that came in); only then may it not split.
    auto resplit = proto::split_frame(encoded, limits);
    if (resplit && resplit->complete) {
      check(proto::parse_header(resplit->header, again).has_value());
      check(again.SerializeAsString() == header.SerializeAsString());
      check(resplit->payload.size() == split->payload.size());
      check(std::memcmp(resplit->payload.data(), split->payload.data(), split->payload.size()) == 0);
    }
    rest = rest.subspan(split->frame_size);
  }
  return 0;
}
