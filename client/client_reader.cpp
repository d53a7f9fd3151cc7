// ClientCore's read path, on the I/O thread only: read, split frames, dispatch.
#include <fmt/format.h>
#include <asio/post.hpp>
#include <cstdio>
#include <cstring>

#include "client_core.hpp"
#include "headers.hpp"
#include "ubroker/proto/fd_socket.hpp"
#include "ubroker/proto/frame_codec.hpp"

namespace ubroker::detail {

void ClientCore::start_read() {
  socket_.async_wait(asio::local::stream_protocol::socket::wait_read,
                     [self = shared_from_this(), gen = generation_.load()](const std::error_code& ec) {
                       if (gen != self->generation_.load()) return;  // a replaced socket's wait
                       if (ec) {
                         self->fail(Error{Errc::kNotConnected, fmt::format("waiting to read: {}", ec.message())});
                         return;
                       }
                       self->on_readable();
                     });
}

void ClientCore::on_readable() {
  const proto::FrameLimits limits{.max_frame = static_cast<std::uint32_t>(max_frame_bytes_.load(std::memory_order_relaxed) + 1024)};
  std::vector<UniqueFd> fds;
  bool drained = false;  // the last read emptied the socket
  for (;;) {
    if (!connected()) return;
    // Dispatch every complete frame buffered.
    for (;;) {
      auto split = proto::split_frame({rbuf_.data() + rbegin_, rend_ - rbegin_}, limits);
      if (!split) {
        fail(Error{Errc::kProtocolError, fmt::format("bad frame from the broker: {}", proto::describe(split.error()))});
        return;
      }
      if (!split->complete) break;
      // Plain deliveries (most of the traffic) skip protobuf; anything the fast decoder does
      // not take whole is parsed and checked in full.
      if (proto::decode_message_head(split->header, mhead_) && mhead_.type == wire::DELIVER &&
          mhead_.fd_count == 0) {
        deliver({.topic = mhead_.topic,
                 .sub_ids = mhead_.sub_ids(),
                 .dropped = mhead_.dropped(),
                 .sender = {.client_id = mhead_.sender_id, .uid = mhead_.sender_uid, .pid = mhead_.sender_pid},
                 .retain = mhead_.retain,
                 .headers = mhead_.headers},
                split->payload);
      } else if (auto p = proto::parse_header(split->header, rheader_); !p) {
        fail(Error{Errc::kProtocolError, fmt::format("bad frame from the broker: {}", proto::describe(p.error()))});
        return;
      } else if (!take_headers(rheader_, rheaders_)) {
        fail(Error{Errc::kProtocolError, "bad frame from the broker: headers that break the rules"});
        return;
      } else if (rheader_.fd_count() > rfds_.size()) {
        fail(Error{Errc::kFdError, fmt::format("the broker's frame announced {} fd(s) but {} arrived",
                                               rheader_.fd_count(), rfds_.size())});
        return;
      } else {
        dispatch(rheader_, split->payload);
      }
      rbegin_ += split->frame_size;
      if (!connected()) return;
    }
    if (!rfds_.empty() && (rbegin_ == rend_ || rfds_.size() > proto::kMaxFdsPerMessage)) {
      fail(Error{Errc::kFdError, "the broker sent file descriptors that no frame claims"});
      return;
    }
    if (rbegin_ == rend_) rbegin_ = rend_ = 0;
    // Flow control: stop reading while the application has not caught up.
    {
      LockGuard lk(queue_mu_);
      if (queue_.size() >= options_.receive_queue) {
        read_paused_for_queue_ = true;
        return;  // receive() resumes us
      }
    }
    {
      LockGuard lk(write_mu_);
      if (loop_unsent_ >= options_.max_pending_bytes && writer_active_) {
        read_paused_for_writes_ = true;
        return;  // drive_writes() resumes us
      }
    }
    if (rbuf_.size() - rend_ < 16 * 1024) {
      std::memmove(rbuf_.data(), rbuf_.data() + rbegin_, rend_ - rbegin_);
      rend_ -= rbegin_;
      rbegin_ = 0;
    }
    // Wait rather than read again only to hear EAGAIN: Asio re-arms the descriptor with every
    // wait, so it completes at once if bytes came meanwhile.
    if (drained) {
      start_read();
      return;
    }
    const std::size_t room = rbuf_.size() - rend_;
    auto got = proto::receive(fd_.load(std::memory_order_relaxed), {rbuf_.data() + rend_, room}, fds);
    if (!got) {
      if (proto::would_block(got.error())) {
        start_read();
        return;
      }
      fail(Error{Errc::kNotConnected, fmt::format("read from broker failed: {}", got.error().message())});
      return;
    }
    for (auto& fd : fds) rfds_.push_back(std::move(fd));
    fds.clear();
    if (got->eof) {
      fail(Error{Errc::kNotConnected, "the broker closed the connection"});
      return;
    }
    drained = got->bytes < room;
    rend_ += got->bytes;
  }
}

void ClientCore::dispatch(const wire::Header& h, std::span<const std::byte> payload) {
  switch (h.type()) {
    case wire::DELIVER:
      deliver({.topic = h.topic(),
               .sub_ids = {h.sub_ids().data(), static_cast<std::size_t>(h.sub_ids_size())},
               .dropped = {h.dropped().data(), static_cast<std::size_t>(h.dropped_size())},
               .sender = {.client_id = h.sender_id(), .uid = h.sender_uid(), .pid = h.sender_pid()},
               .retain = h.retain(),
               .headers = rheaders_,
               .fd_count = h.fd_count(),
               .shm = h.has_shm() ? &h.shm() : nullptr},
              payload);
      return;
    case wire::REQUEST: deliver_request(h, payload); return;
    case wire::ACK:
    case wire::PONG: answer(h, {}); return;
    case wire::REPLY: answer(h, payload); return;
    case wire::SHM_DETACH: reader_->detach(h.shm().segment()); return;
    case wire::LANE_OFFER:
    case wire::LANE_OPEN:
    case wire::LANE_ROUTE:
    case wire::LANE_FENCE:
    case wire::LANE_CLOSE: lane_frame(h); return;
    case wire::ERROR:
      if (h.error().fatal()) {
        fail(Error{static_cast<Errc>(h.error().code()), h.error().message()});
        return;
      }
      if (h.sub_ids_size() != 0) {  // the broker removed these subscriptions (a policy reload)
        for (const std::uint64_t id : h.sub_ids()) forget_subscription(id);
        report(Error{static_cast<Errc>(h.error().code()), h.error().message()});
        return;
      }
      answer(h, {});
      return;
    default:
      fail(Error{Errc::kProtocolError,
                 fmt::format("unexpected {} frame from the broker", wire::FrameType_Name(h.type()))});
  }
}

void ClientCore::report(const Error& e) {
  if (options_.on_error) {
    options_.on_error(e);
  } else {
    std::fprintf(stderr, "ubroker: %s (%s)\n", e.message.c_str(), std::string(to_string(e.code)).c_str());
  }
}

bool ClientCore::deliver(const DeliveryHead& h, std::span<const std::byte> payload) {
  MessageView view{.topic = h.topic,
                   .payload = payload,
                   .sender = h.sender,
                   .subscription = 0,
                   .dropped_before = 0,
                   .retained = h.retain,
                   .shared_memory = h.shm != nullptr || h.lane_bulk != nullptr,
                   .headers = Headers(h.headers)};
  // Shared, not raw: an application thread may forget a subscription (unsubscribing while
  // disconnected) while its callback is being called here.
  targets_.assign(h.sub_ids.size(), nullptr);
  std::uint32_t queued = 0;
  {
    LockGuard lk(state_mu_);
    for (std::size_t i = 0; i < h.sub_ids.size(); ++i) {
      if (auto it = subs_.find(h.sub_ids[i]); it != subs_.end()) {
        targets_[i] = it->second;
        queued += it->second->handler ? 0 : 1;
      }
    }
  }
  const wire::ShmRef& ref = h.shm != nullptr ? *h.shm : wire::ShmRef::default_instance();
  std::uint64_t segment = ref.segment();
  std::uint64_t token = ref.token();
  if (h.shm != nullptr) {
    if (h.fd_count == 1) {
      UniqueFd fd = std::move(rfds_.front());
      rfds_.pop_front();
      if (auto why = reader_->attach(ref.segment(), std::move(fd))) report(Error{Errc::kShmRefused, *why});
    }
    std::string why;
    auto bytes = reader_->open(ref.segment(), ref.offset(), ref.length(), ref.token(), queued, why);
    if (!bytes) {
      report(Error{Errc::kShmRefused, why});
      return false;
    }
    view.payload = *bytes;
  } else if (const LaneSubscriber::Bulk* b = h.lane_bulk) {
    std::string why;
    auto opened = reader_->open_lane(b->segment, b->offset, b->length, b->hold, queued, why);
    if (!opened) {
      report(Error{Errc::kShmRefused, why});
      return false;
    }
    view.payload = opened->payload;
    segment = opened->segment;
    token = opened->token;
  }
  for (std::size_t i = 0; i < targets_.size(); ++i) {
    SubState* sub = targets_[i].get();
    if (sub == nullptr) continue;
    view.subscription = sub->id;
    view.dropped_before = i < h.dropped.size() ? h.dropped[i] : 0;
    if (view.dropped_before != 0) sub->dropped.fetch_add(view.dropped_before, std::memory_order_relaxed);
    if (sub->handler) {
      // Counted in before `silenced` is read, so silence() either sees this call or stops it.
      const CallbackScope scope(*sub);
      if (!sub->silenced.load()) sub->handler(view);
      continue;
    }
    {
      LockGuard lk(queue_mu_);
      if (view.shared_memory) {
        // Zero copy: the message holds the view and releases it when destroyed.
        Message m(view, Message::Borrow{});
        m.shm_ = reader_;
        m.shm_segment_ = segment;
        m.shm_token_ = token;
        queue_.push_back(std::move(m));
      } else {
        queue_.emplace_back(view);
      }
    }
    queue_cv_.notify_one();  // outside the lock: the woken thread does not block on it at once
  }
  targets_.clear();  // keeps no subscription alive past its delivery
  if (view.shared_memory && queued == 0) reader_->release(segment, token);
  return true;
}

void ClientCore::deliver_request(const wire::Header& h, std::span<const std::byte> payload) {
  std::shared_ptr<SubState> service;
  if (h.sub_ids_size() == 1) {
    LockGuard lk(state_mu_);
    if (auto it = subs_.find(h.sub_ids(0)); it != subs_.end()) service = it->second;
  }
  if (service == nullptr || !service->request_handler) return;  // unserved meanwhile: the caller times out
  Request r;
  r.core_ = weak_from_this();
  r.request_id_ = h.request_id();
  r.topic_ = h.topic();
  r.payload_.assign(payload.begin(), payload.end());
  r.headers_ = rheaders_;
  r.sender_ = {.client_id = h.sender_id(), .uid = h.sender_uid(), .pid = h.sender_pid()};
  const CallbackScope scope(*service);
  if (!service->silenced.load()) service->request_handler(std::move(r));
}

void ClientCore::answer(const wire::Header& h, std::span<const std::byte> payload) {
  Client::ReplyHandler callback;
  Result<Message> result = Message{};  // ACK, PONG
  if (h.type() == wire::ERROR) {
    result = std::unexpected(Error{static_cast<Errc>(h.error().code()), h.error().message()});
  } else if (h.type() == wire::REPLY && h.has_error()) {  // the responder's error reply (or a gateway's)
    const wire::ErrorCode code = h.error().code();
    const Errc errc = code == wire::NO_RESPONDERS || code == wire::TIMEOUT ? static_cast<Errc>(code) : Errc::kServiceError;
    result = std::unexpected(Error{errc, h.error().message(), h.error().service_code()});
  } else if (h.type() == wire::REPLY) {
    result = Message(MessageView{.topic = {},
                                 .payload = payload,
                                 .sender = {.client_id = h.sender_id(), .uid = h.sender_uid(), .pid = h.sender_pid()},
                                 .headers = Headers(rheaders_)});
  }
  {
    LockGuard lk(state_mu_);
    if (auto u = unsubscribing_.find(h.seq()); u != unsubscribing_.end()) {
      // The broker sends nothing for this subscription after its ACK.
      if (h.type() == wire::ACK) {
        if (auto it = subs_.find(u->second); it != subs_.end()) {
          it->second->dropped.store(h.value(), std::memory_order_relaxed);
        }
        erase_sub_locked(u->second);
      }
      unsubscribing_.erase(u);
    }
    auto it = answers_.find(h.seq());
    if (it == answers_.end()) {
      // Nobody waits (a publish, a request made on the I/O thread, a request that timed out
      // locally): report errors, drop the rest.
      if (h.type() == wire::ERROR) {
        const Error e{static_cast<Errc>(h.error().code()), h.error().message()};
        if (options_.on_error) {
          options_.on_error(e);
        } else {
          std::fprintf(stderr, "ubroker: broker refused a request: %s (%s)\n", e.message.c_str(),
                       std::string(to_string(e.code)).c_str());
        }
      }
      return;
    }
    Answer& a = it->second;
    if (a.callback) {
      callback = take_answer_callback_locked(a);
      answers_.erase(it);
    } else {
      a.done = true;
      if (!result) a.error = result.error();
      if (result && h.type() == wire::REPLY) a.reply = std::move(*result);
      a.value = h.value();
    }
  }
  if (callback) {
    callback(std::move(result));
    return;
  }
  answer_cv_.notify_all();
}

}  // namespace ubroker::detail
