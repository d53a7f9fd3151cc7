// Messages as a receiver sees them. MessageView borrows the client's receive buffer and is
// valid only during the callback it is passed to; Message owns its bytes (from receive()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ubroker {

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

  [[nodiscard]] std::string_view text() const noexcept {
    return {reinterpret_cast<const char*>(payload.data()), payload.size()};
  }
};

class Message {
 public:
  Message() = default;
  explicit Message(const MessageView& v)
      : topic_(v.topic),
        payload_(v.payload.begin(), v.payload.end()),
        sender_(v.sender),
        subscription_(v.subscription),
        dropped_before_(v.dropped_before),
        retained_(v.retained) {}

  [[nodiscard]] std::string_view topic() const noexcept { return topic_; }
  [[nodiscard]] std::span<const std::byte> payload() const noexcept { return payload_; }
  [[nodiscard]] std::string_view text() const noexcept {
    return {reinterpret_cast<const char*>(payload_.data()), payload_.size()};
  }
  [[nodiscard]] const Sender& sender() const noexcept { return sender_; }
  [[nodiscard]] std::uint64_t subscription() const noexcept { return subscription_; }
  [[nodiscard]] std::uint64_t dropped_before() const noexcept { return dropped_before_; }
  [[nodiscard]] bool retained() const noexcept { return retained_; }

 private:
  std::string topic_;
  std::vector<std::byte> payload_;
  Sender sender_;
  std::uint64_t subscription_ = 0;
  std::uint64_t dropped_before_ = 0;
  bool retained_ = false;
};

}  // namespace ubroker
