// Messages as a receiver sees them. MessageView borrows the client's receive buffer (or the
// sender's shared memory) and is valid only during the callback it is passed to. Message
// owns its bytes (from receive()); a bulk payload stays where it is in shared memory, as a
// read-only view that is valid while the Message lives, and is released when it goes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
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

// One header: key/value metadata sent with a message, request or reply (as NATS headers).
// Keys are 1..256 bytes of printable ASCII without ':' or spaces; values are UTF-8 without
// control characters (no CR or LF); a message's headers together take at most 16 KiB. A key
// may repeat. Keys that start with "ubroker-" are the broker's (its $sys.trace copies carry
// them). Sending anything else fails with kInvalidHeaders.
struct HeaderField {
  std::string_view key;
  std::string_view value;
};

// A received message's headers, read in place: valid while the message (or view) they came
// from is. Iterating yields HeaderField in the order the sender gave them.
class UBROKER_API Headers {
 public:
  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = HeaderField;
    using difference_type = std::ptrdiff_t;
    using pointer = const HeaderField*;
    using reference = const HeaderField&;
    iterator() = default;
    reference operator*() const noexcept { return field_; }
    pointer operator->() const noexcept { return &field_; }
    iterator& operator++() noexcept {
      at_ = next_;
      settle();
      return *this;
    }
    iterator operator++(int) noexcept {
      iterator was = *this;
      ++*this;
      return was;
    }
    friend bool operator==(const iterator& a, const iterator& b) noexcept { return a.at_ == b.at_; }

   private:
    friend class Headers;
    iterator(const Headers* owner, std::size_t at) noexcept : owner_(owner), at_(at) {
      if (owner_ != nullptr) settle();
    }
    void settle() noexcept {  // reads the field at at_; none there: this is the end
      next_ = owner_->read(at_, field_);
      if (next_ == 0) at_ = owner_->bytes_.size();
    }
    const Headers* owner_ = nullptr;
    std::size_t at_ = 0;
    std::size_t next_ = 0;
    HeaderField field_;
  };

  Headers() = default;
  [[nodiscard]] bool empty() const noexcept { return bytes_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept;
  // The first value given for `key` (compared exactly), or nullopt.
  [[nodiscard]] std::optional<std::string_view> get(std::string_view key) const noexcept;
  [[nodiscard]] iterator begin() const noexcept { return iterator(this, 0); }
  [[nodiscard]] iterator end() const noexcept { return iterator(nullptr, bytes_.size()); }

 private:
  friend class detail::ClientCore;
  friend class Message;
  friend class Request;
  explicit Headers(std::span<const std::byte> encoded) noexcept : bytes_(encoded) {}
  // Reads the field at offset `at` into `out`; returns the offset after it, or 0 when there
  // is none (the end).
  [[nodiscard]] std::size_t read(std::size_t at, HeaderField& out) const noexcept;
  std::span<const std::byte> bytes_;  // checked by the library when received
};

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
  Headers headers;                   // the sender's metadata (empty when it sent none)

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
        retained_(v.retained),
        headers_(v.headers.bytes_.begin(), v.headers.bytes_.end()) {}
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
  [[nodiscard]] Headers headers() const noexcept { return Headers(headers_); }

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
        retained_(v.retained),
        headers_(v.headers.bytes_.begin(), v.headers.bytes_.end()) {}
  void release() noexcept;

  std::string topic_;
  std::vector<std::byte> owned_;
  std::span<const std::byte> payload_;  // owned_, or shared memory held through shm_
  Sender sender_;
  std::uint64_t subscription_ = 0;
  std::uint64_t dropped_before_ = 0;
  bool retained_ = false;
  std::vector<std::byte> headers_;  // encoded, as received
  std::shared_ptr<detail::ShmReader> shm_;
  std::uint64_t shm_segment_ = 0;
  std::uint64_t shm_token_ = 0;
};

}  // namespace ubroker
