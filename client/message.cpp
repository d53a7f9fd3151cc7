// Message: moving keeps a bulk payload's hold with the object that owns it; destroying
// releases it (batched by the ShmReader, sent by the I/O thread).
#include "ubroker/message.hpp"

#include "shm_reader.hpp"
#include "ubroker/proto/headers.hpp"

namespace ubroker {

Message::Message(Message&& o) noexcept
    : topic_(std::move(o.topic_)),
      owned_(std::move(o.owned_)),  // a moved vector keeps its buffer, so payload_ stays valid
      payload_(std::exchange(o.payload_, {})),
      sender_(o.sender_),
      subscription_(o.subscription_),
      dropped_before_(o.dropped_before_),
      retained_(o.retained_),
      headers_(std::move(o.headers_)),
      shm_(std::move(o.shm_)),
      shm_segment_(o.shm_segment_),
      shm_token_(o.shm_token_) {}

Message& Message::operator=(Message&& o) noexcept {
  if (this != &o) {
    release();
    topic_ = std::move(o.topic_);
    owned_ = std::move(o.owned_);
    payload_ = std::exchange(o.payload_, {});
    sender_ = o.sender_;
    subscription_ = o.subscription_;
    dropped_before_ = o.dropped_before_;
    retained_ = o.retained_;
    headers_ = std::move(o.headers_);
    shm_ = std::move(o.shm_);
    shm_segment_ = o.shm_segment_;
    shm_token_ = o.shm_token_;
  }
  return *this;
}

Message::~Message() { release(); }

std::size_t Headers::read(std::size_t at, HeaderField& out) const noexcept {
  if (at >= bytes_.size()) return 0;
  proto::HeaderCursor cursor(bytes_.subspan(at));
  // Checked when received: a field that does not read ends the iteration.
  if (!cursor.next(out.key, out.value)) return 0;
  return static_cast<std::size_t>(cursor.position() - bytes_.data());
}

std::size_t Headers::size() const noexcept {
  std::size_t n = 0;
  for (auto it = begin(); it != end(); ++it) ++n;
  return n;
}

std::optional<std::string_view> Headers::get(std::string_view key) const noexcept {
  for (const HeaderField& f : *this) {
    if (f.key == key) return f.value;
  }
  return std::nullopt;
}

void Message::release() noexcept {
  if (!shm_) return;
  shm_->release(shm_segment_, shm_token_);
  shm_.reset();
  payload_ = {};
}

}  // namespace ubroker
