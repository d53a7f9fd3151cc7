// Messages as a receiver sees them. MessageView borrows the client's receive buffer (or the
// sender's shared memory) and is valid only during the callback it is passed to. Message
// owns its bytes (from receive()); a bulk payload stays where it is in shared memory, as a
// read-only view that is valid while the Message lives, and is released when it goes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ubroker/export.h"

namespace ubroker {

namespace detail {
class ClientCore;
class ShmReader;
}  // namespace detail

// Who sent a message, as stamped by the broker from the kernel's credentials (not claimed by
// the sender).
struct Sender {
  std::uint64_t client_id = 0;
  std::uint32_t uid = 0;
  std::uint32_t pid = 0;
};

struct MessageView {
  std::string_view topic;
  std::span<const std::byte> payload;
  Sender sender;
  std::uint64_t subscription = 0;    // the subscription this delivery is for
  std::uint64_t dropped_before = 0;  // messages the broker dropped for it since the previous one (DROP policy)
  bool retained = false;             // a retained value sent on subscribing, not live traffic
  bool shared_memory = false;        // the payload is read in place from the sender's shared memory

  [[nodiscard]] std::string_view text() const noexcept {
    return {reinterpret_cast<const char*>(payload.data()), payload.size()};
  }
};

class UBROKER_API Message {
 public:
  Message() = default;
  // A copy of the view's bytes.
  explicit Message(const MessageView& v)
      : topic_(v.topic),
        owned_(v.payload.begin(), v.payload.end()),
        payload_(owned_),
        sender_(v.sender),
        subscription_(v.subscription),
        dropped_before_(v.dropped_before),
        retained_(v.retained) {}
  Message(Message&& o) noexcept;
  Message& operator=(Message&& o) noexcept;
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;
  ~Message();

  [[nodiscard]] std::string_view topic() const noexcept { return topic_; }
  [[nodiscard]] std::span<const std::byte> payload() const noexcept { return payload_; }
  [[nodiscard]] std::string_view text() const noexcept {
    return {reinterpret_cast<const char*>(payload_.data()), payload_.size()};
  }
  // The payload is a view of the sender's shared memory (released when this Message goes).
  [[nodiscard]] bool shared_memory() const noexcept { return shm_ != nullptr; }
  [[nodiscard]] const Sender& sender() const noexcept { return sender_; }
  [[nodiscard]] std::uint64_t subscription() const noexcept { return subscription_; }
  [[nodiscard]] std::uint64_t dropped_before() const noexcept { return dropped_before_; }
  [[nodiscard]] bool retained() const noexcept { return retained_; }

 private:
  friend class detail::ClientCore;
  struct Borrow {};
  // The view's payload stays where it is (a bulk payload; the caller sets shm_).
  Message(const MessageView& v, Borrow)
      : topic_(v.topic),
        payload_(v.payload),
        sender_(v.sender),
        subscription_(v.subscription),
        dropped_before_(v.dropped_before),
        retained_(v.retained) {}
  void release() noexcept;

  std::string topic_;
  std::vector<std::byte> owned_;
  std::span<const std::byte> payload_;  // owned_, or shared memory held through shm_
  Sender sender_;
  std::uint64_t subscription_ = 0;
  std::uint64_t dropped_before_ = 0;
  bool retained_ = false;
  std::shared_ptr<detail::ShmReader> shm_;
  std::uint64_t shm_segment_ = 0;
  std::uint64_t shm_token_ = 0;
};

}  // namespace ubroker
