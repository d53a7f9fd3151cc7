// A hand-rolled encoder for the one frame the broker writes per message per receiver:
// DELIVER. The parts every receiver shares (type, topic, sender) are encoded once per
// message; each receiver adds only its subscription ids (and drop counts), then the head is
// copied into its queue. The bytes are ordinary protobuf wire format for wire::Header (tests
// parse them with protobuf and compare), just without building a message per receiver.
// Not thread-safe; one instance per event loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace ubroker::proto {

// The per-receiver part of a bulk DELIVER: where the payload is, the receiver's release
// token, and whether the segment's fd rides with this frame.
struct ShmPart {
  std::uint64_t segment = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t token = 0;
  bool carries_fd = false;
};

class DeliverEncoder {
 public:
  // Starts a message: encodes the fields every receiver shares (`headers` as headers.hpp
  // says, checked by the caller; empty: none).
  void begin(std::string_view topic, std::uint64_t sender_id, std::uint32_t sender_uid, std::uint32_t sender_pid,
             std::span<const std::byte> headers = {});

  // The frame head (prefix + header) for one receiver: its subscription ids and, when any is
  // non-zero, the drops since each one's previous delivery. Valid until the next call.
  // A bulk delivery adds `shm` (its frame payload is empty).
  std::span<const std::byte> head(std::span<const std::uint64_t> sub_ids, std::span<const std::uint64_t> dropped,
                                  std::size_t payload_size, const ShmPart* shm = nullptr);

 private:
  std::vector<std::byte> common_;  // grown to fit, never shrunk: no allocation once warm
  std::size_t common_len_ = 0;     // 0: nothing encoded yet
  // What common_ holds, so a run of messages from one sender on one topic encodes it once.
  std::size_t topic_at_ = 0;
  std::size_t topic_len_ = 0;
  std::size_t headers_at_ = 0;
  std::size_t headers_len_ = 0;
  std::uint64_t sender_id_ = 0;
  std::uint32_t sender_uid_ = 0;
  std::uint32_t sender_pid_ = 0;
  std::vector<std::byte> head_;
};

}  // namespace ubroker::proto
