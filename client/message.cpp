// Message: moving keeps a bulk payload's hold with the object that owns it; destroying
// releases it (batched by the ShmReader, sent by the I/O thread).
#include "ubroker/message.hpp"

#include "shm_reader.hpp"

namespace ubroker {

Message::Message(Message&& o) noexcept
    : topic_(std::move(o.topic_)),
      owned_(std::move(o.owned_)),  // a moved vector keeps its buffer, so payload_ stays valid
      payload_(std::exchange(o.payload_, {})),
      sender_(o.sender_),
      subscription_(o.subscription_),
      dropped_before_(o.dropped_before_),
      retained_(o.retained_),
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
    shm_ = std::move(o.shm_);
    shm_segment_ = o.shm_segment_;
    shm_token_ = o.shm_token_;
  }
  return *this;
}

Message::~Message() { release(); }

void Message::release() noexcept {
  if (!shm_) return;
  shm_->release(shm_segment_, shm_token_);
  shm_.reset();
  payload_ = {};
}

}  // namespace ubroker
