// Session: the connection's I/O loops and flow control. Frame semantics are in
// session_frames.cpp. Reads and writes are raw recvmsg/sendmsg (proto/fd_socket) after Asio
// readiness waits, always tried before waiting (Asio's reactor is edge-triggered).
#include "session.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>
#include <cstring>
#include <fstream>

#include <sys/syscall.h>
#include <unistd.h>

#include "broker.hpp"
#include "log_text.hpp"
#include "ubroker/proto/fd_socket.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/message_head.hpp"

namespace ubroker::broker {
namespace {

constexpr auto kUseTuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t kMinReadRoom = 16 * 1024;
constexpr std::uint32_t kMaxHelloFrame = 4096;

}  // namespace

Session::Session(Broker& broker, Socket socket, proto::PeerCredentials peer, Grants grants, std::uint64_t id)
    : broker_(broker),
      socket_(std::move(socket)),
      peer_(std::move(peer)),
      grants_(std::move(grants)),
      account_(broker.accounts(), peer_.uid),
      id_(id),
      accepted_at_(Clock::now()),
      last_progress_(accepted_at_),
      out_(broker.pool()),
      reader_wake_(socket_.get_executor()),
      writer_wake_(socket_.get_executor()) {
  connected_unix_ms_ = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  // Best effort: the process may be gone already; then brokerctl shows "-".
  std::ifstream comm("/proc/" + std::to_string(peer_.pid) + "/comm");
  std::getline(comm, command_);
  command_ = printable(command_, 64);  // the process sets it (prctl): any bytes
  // The pidfd pins the process we identified: if it has exited by now, the pid may have been
  // recycled while we read /proc, and the name could be a stranger's. After this check the
  // pidfd has served (uid and gid come from SO_PEERCRED, fixed at connect); it is closed so
  // each client costs the broker one fd, not two.
  if (peer_.pidfd && ::syscall(SYS_pidfd_send_signal, peer_.pidfd.get(), 0, nullptr, 0) != 0) command_.clear();
  peer_.pidfd.reset();
}

Session::~Session() {
  closed_ = true;       // detach notices caused by what follows are not queued
  release_all_holds();  // a receiver that dies lets go of everything it held
  broker_.session_gone(*this);
  broker_.forget(*this);
  broker_.stats().dropped_disconnect += out_.deliveries();
  notify_waiters();
  account_.set(Resource::kQueuedBytes, 0);
  if (!account_.uid().waiters.empty()) broker_.wake_uid_waiters(account_.uid());
  // account_ credits the rest of what this connection held to its uid.
}

std::string Session::describe() const {
  return fmt::format("client {} ({}, pid {}, uid {})", id_, name_.empty() ? "-" : name_, peer_.pid, peer_.uid);
}

asio::awaitable<void> Session::run() {
  using namespace asio::experimental::awaitable_operators;
  co_await (read_loop() || write_loop());
  closed_ = true;
  std::error_code ignored;
  socket_.close(ignored);
}

bool Session::own_room() const noexcept {
  const auto& l = broker_.config().limits;
  return out_.messages() < l.queue_max_messages && out_.bytes() < l.queue_max_bytes;
}

bool Session::has_room() const noexcept {
  return own_room() && !account_.uid().at_limit(Resource::kQueuedBytes);
}

void Session::account_queue() {
  const bool shrank = account_.set(Resource::kQueuedBytes, out_.bytes());
  UidAccount& uid = account_.uid();
  if (shrank && !uid.waiters.empty() && uid.used(Resource::kQueuedBytes) <= uid.limit(Resource::kQueuedBytes) / 2) {
    broker_.wake_uid_waiters(uid);
  }
}

bool Session::below_low_watermark() const noexcept {
  const auto& l = broker_.config().limits;
  return out_.messages() <= l.queue_max_messages / 2 && out_.bytes() <= l.queue_max_bytes / 2;
}

void Session::add_waiter(std::uint64_t publisher_id) {
  // Held back by the uid's budget rather than this queue: any of the uid's queues draining
  // may free it, so it waits on the uid.
  auto& waiters = own_room() ? account_.uid().waiters : waiters_;
  if (&waiters == &waiters_) {
    holding_.seen = true;
    if (holding_.since == Clock::time_point::max()) {
      holding_.since = Clock::now();
      holding_.messages_at = written_messages_;
      holding_.bytes_at = written_bytes_;
    }
  }
  if (waiters.empty() || waiters.back() != publisher_id) waiters.push_back(publisher_id);
}

void Session::notify_waiters() {
  if (waiters_.empty()) return;
  waking_.swap(waiters_);
  for (std::uint64_t id : waking_) {
    if (Session* s = broker_.find(id)) s->wake_reader();
  }
  waking_.clear();
}

void Session::wake_reader() {
  // The wake may come before the reader parks (the subscriber drained within the same
  // flush that follows the block), so it is remembered, not only delivered.
  woken_ = true;
  if (reader_paused_) reader_wake_.cancel();
}

void Session::mark_dirty() {
  // A queue that just became non-empty starts its slow-consumer clock now.
  if (out_.messages() == 1) last_progress_ = Clock::now();
  if (!dirty_) {
    dirty_ = true;
    broker_.mark_dirty(*this);
  }
}

void Session::flush() {
  dirty_ = false;
  if (closed_ || write_blocked_) return;
  send_some();
  if (write_blocked_ || closed_ || (closing_ && out_.empty())) writer_wake_.cancel();
}

void Session::send_some() {
  std::array<iovec, 256> iov;
  while (!out_.empty()) {
    int fd = -1;
    const std::size_t n = out_.gather(iov, fd);
    std::size_t offered = 0;
    for (std::size_t i = 0; i < n; ++i) offered += iov[i].iov_len;
    auto sent = proto::send(socket_.native_handle(), std::span(iov.data(), n),
                            fd < 0 ? std::span<const int>() : std::span<const int>(&fd, 1));
    if (!sent) {
      if (proto::would_block(sent.error())) {
        write_blocked_ = true;
      } else {
        spdlog::debug("{}: write failed: {}", describe(), sent.error().message());
        closed_ = true;
      }
      break;
    }
    const auto done = out_.consume(*sent);
    broker_.stats().deliveries_written += done.deliveries;
    written_messages_ += done.messages;
    written_bytes_ += *sent;
    account_queue();
    last_progress_ = Clock::now();
    if (*sent < offered) {  // the socket buffer is full: the next try would say EAGAIN
      write_blocked_ = true;
      break;
    }
  }
  if (!waiters_.empty() && below_low_watermark()) notify_waiters();
}

asio::awaitable<void> Session::write_loop() {
  for (;;) {
    if (closed_) break;
    if (write_blocked_) {
      auto [ec] = co_await socket_.async_wait(Socket::wait_write, kUseTuple);
      write_blocked_ = false;
      if (ec || closed_) break;
      send_some();
      continue;
    }
    if (out_.empty()) {
      if (closing_) break;  // everything flushed: the session ends
      writer_wake_.expires_at(Clock::time_point::max());
      co_await writer_wake_.async_wait(kUseTuple);
      continue;
    }
    send_some();
  }
  closed_ = true;
}

asio::awaitable<void> Session::park_until_closed() {
  // Reading is over; the writer ends the session once the queue is flushed (or the deadline
  // sweep closes it). `||` cancels this wait when the writer returns.
  while (!closed_) {
    reader_wake_.expires_at(Clock::time_point::max());
    co_await reader_wake_.async_wait(kUseTuple);
  }
}

asio::awaitable<void> Session::read_loop() {
  bool drained = false;       // the last read emptied the socket
  bool more_waiting = false;  // the last read filled the buffer: the socket may hold more
  for (;;) {
    woken_ = false;
    const Step step = process_frames();
    broker_.flush_dirty();
    if (closed_) break;
    if (more_waiting) {
      // A client with a large send buffer can have megabytes waiting: after one buffer's worth,
      // every other ready connection has its turn before this one reads again, so a busy
      // client delays the others by one read, not by its whole backlog.
      more_waiting = false;
      co_await asio::post(socket_.get_executor(), asio::use_awaitable);
      if (closed_) break;
    }
    if (step == Step::kClose || closing_) {
      co_await park_until_closed();
      break;
    }
    if (step == Step::kBlocked) {
      if (!woken_) {
        reader_paused_ = true;
        reader_wake_.expires_at(Clock::time_point::max());
        co_await reader_wake_.async_wait(kUseTuple);
        reader_paused_ = false;
      } else {
        // Woken already (or a paced replay goes on): the others have their turn first.
        co_await asio::post(socket_.get_executor(), asio::use_awaitable);
      }
      continue;
    }
    // After a read that emptied the socket, wait rather than read again only to hear EAGAIN:
    // Asio re-arms the descriptor with every wait, so the wait completes at once if bytes
    // came meanwhile. One syscall less per message when traffic is sparse.
    if (!drained) {
      bool would_block = false;
      if (!read_some(would_block, drained)) break;
      if (!would_block) {
        more_waiting = !drained;
        continue;  // process what came first
      }
    }
    if (in_ && in_begin_ == in_end_) {  // idle sessions hold no buffer
      in_.reset();
      account_.set(Resource::kInputBytes, 0);
    }
    drained = false;
    auto [ec] = co_await socket_.async_wait(Socket::wait_read, kUseTuple);
    if (ec) break;
  }
  closed_ = true;
}

std::uint32_t Session::max_frame() const noexcept {
  // Before the handshake only a HELLO is expected, and a HELLO is small: a connection that has
  // not said who it is cannot make the broker buffer a large frame.
  return welcomed_ ? broker_.config().limits.max_frame_bytes : kMaxHelloFrame;
}

bool Session::read_some(bool& would_block, bool& drained) {
  std::size_t pending = in_ ? in_end_ - in_begin_ : 0;
  // Bytes the partial frame at the front needs in all (its prefix was checked already).
  std::size_t need = proto::kPrefixSize;
  if (in_ && pending >= proto::kPrefixSize) {
    auto split = proto::split_frame({in_->data() + in_begin_, pending}, {.max_frame = max_frame()});
    if (split) need = split->frame_size;
  }
  if (!in_ || in_->capacity() - in_end_ < kMinReadRoom || in_->capacity() - in_begin_ < need) {
    if (in_ && in_.unique() && in_->capacity() >= need + kMinReadRoom) {
      std::memmove(in_->data(), in_->data() + in_begin_, pending);
    } else {
      ChunkRef fresh = broker_.pool().acquire(need + kMinReadRoom);
      if (!charge_input(fresh->capacity(), pending)) return true;  // refused: closing
      if (pending != 0) std::memcpy(fresh->data(), in_->data() + in_begin_, pending);
      in_ = std::move(fresh);
    }
    in_begin_ = 0;
    in_end_ = pending;
  }
  auto got = proto::receive(socket_.native_handle(), {in_->data() + in_end_, in_->capacity() - in_end_}, in_fds_);
  if (!got) {
    if (proto::would_block(got.error())) {
      would_block = true;
      return true;
    }
    if (got.error().category() == proto::transport_category()) {
      send_error(wire::FD_ERROR, got.error().message(), true);
      return true;
    }
    spdlog::debug("{}: read failed: {}", describe(), got.error().message());
    return false;
  }
  if (got->eof) {
    if (pending != 0) {
      if (auto due = broker_.refusal_due(peer_.uid, wire::PROTOCOL_ERROR)) {
        broker_.log_refusal(describe(), fmt::format("disconnected inside a frame ({} bytes of it unread)", pending),
                            wire::PROTOCOL_ERROR, peer_.uid, *due);
      }
    }
    return false;
  }
  drained = got->bytes < in_->capacity() - in_end_;
  in_end_ += got->bytes;
  return true;
}

bool Session::charge_input(std::size_t capacity, std::size_t pending) {
  UidAccount& uid = account_.uid();
  const std::uint64_t held = account_.used(Resource::kInputBytes);
  if (capacity <= held || uid.fits(Resource::kInputBytes, capacity - held)) {
    account_.set(Resource::kInputBytes, capacity);
    return true;
  }
  ++uid.limited;
  send_error(wire::LIMIT_EXCEEDED,
             fmt::format("a read buffer of {} bytes (for {} bytes of a frame received so far) would take uid {}'s read "
                         "buffers past limits.input_max_bytes_per_uid ({} bytes, {} held)",
                         capacity, pending, uid.uid(), uid.limit(Resource::kInputBytes),
                         uid.used(Resource::kInputBytes)),
             true);
  return false;
}

Session::Step Session::process_frames() {
  if (!in_) return closing_ ? Step::kClose : Step::kContinue;
  const proto::FrameLimits limits{.max_frame = max_frame()};
  const std::size_t began_at = in_begin_;
  proto::MessageHead head;
  while (!closing_) {
    auto split = proto::split_frame({in_->data() + in_begin_, in_end_ - in_begin_}, limits);
    if (!split) {
      const bool too_large = split.error() == proto::FrameError::kFrameTooLarge;
      send_error(too_large ? wire::FRAME_TOO_LARGE : wire::PROTOCOL_ERROR,
                 !too_large  ? std::string(proto::describe(split.error()))
                 : welcomed_ ? fmt::format("frame larger than the limit of {} bytes (limits.max_frame_bytes)",
                                           limits.max_frame)
                             : fmt::format("frame larger than {} bytes before HELLO", limits.max_frame),
                 true);
      return Step::kClose;
    }
    if (!split->complete) break;
    Step step;
    // Plain publishes (most of the traffic) skip protobuf; everything else, and anything the
    // fast decoder does not take whole, is parsed and checked in full.
    if (welcomed_ && proto::decode_message_head(split->header, head) && head.type == wire::PUBLISH &&
        head.fd_count == 0) {
      step = handle_publish(head.topic, head.retain, split->payload);
    } else if (auto parsed = proto::parse_header(split->header, header_); !parsed) {
      send_error(wire::PROTOCOL_ERROR, proto::describe(parsed.error()), true);
      return Step::kClose;
    } else {
      step = handle_frame(header_, split->payload);
    }
    if (step == Step::kBlocked) {  // the frame stays buffered for the retry; it is whole
      partial_since_ = Clock::time_point::max();
      return step;
    }
    in_begin_ += split->frame_size;
    if (step == Step::kClose) return step;
  }
  // A frame's fds ride on the sendmsg that carries its first byte, so fds left over with no
  // partial frame buffered belong to no frame.
  if (!closing_ && !in_fds_.empty() && (in_begin_ == in_end_ || in_fds_.size() > proto::kMaxFdsPerMessage)) {
    send_error(wire::FD_ERROR, fmt::format("{} file descriptor(s) arrived without a frame that claims them",
                                           in_fds_.size()), true);
    in_fds_.clear();
    return Step::kClose;
  }
  // The slow-loris clock: runs while a frame's start is buffered without its end, from the
  // moment that frame came to the front.
  if (in_begin_ == in_end_) {
    partial_since_ = Clock::time_point::max();
  } else if (in_begin_ != began_at || partial_since_ == Clock::time_point::max()) {
    partial_since_ = Clock::now();
  }
  if (in_begin_ == in_end_ && in_.unique()) in_begin_ = in_end_ = 0;
  return closing_ ? Step::kClose : Step::kContinue;
}

void Session::send_error(wire::ErrorCode code, std::string_view message, bool fatal, std::uint64_t seq,
                         std::optional<std::uint64_t> sub_id) {
  if (closing_ || closed_) return;
  control_.Clear();
  control_.set_type(wire::ERROR);
  control_.set_seq(seq);
  if (sub_id) control_.add_sub_ids(*sub_id);
  auto* e = control_.mutable_error();
  e->set_code(code);
  e->set_message(message.data(), message.size());
  e->set_fatal(fatal);
  queue_control(control_);
  auto& stats = broker_.stats();
  if (code == wire::PROTOCOL_ERROR || code == wire::FRAME_TOO_LARGE || code == wire::FD_ERROR ||
      code == wire::FRAME_TIMEOUT) {
    ++stats.protocol_errors;
  }
  if (static_cast<std::size_t>(code) < stats.errors_sent.size()) ++stats.errors_sent[code];
  // Answers to a request that found nobody are not refusals of this client; the rest are,
  // logged with who it is (rate-limited per uid and code: a client can send refusable frames
  // much faster than anyone can read a log).
  const bool answer = code == wire::NO_RESPONDERS || code == wire::RESPONDER_GONE || code == wire::TIMEOUT ||
                      code == wire::NOT_FOUND || code == wire::SHUTTING_DOWN;
  if (!answer) {
    if (auto due = broker_.refusal_due(peer_.uid, code)) {
      broker_.log_refusal(describe(), fatal ? fmt::format("{}; closing the connection", message) : std::string(message),
                          code, peer_.uid, *due);
    }
  }
  if (fatal) {
    closing_ = true;
    close_deadline_ = Clock::now() + broker_.config().timeouts.linger;
    reader_wake_.cancel();
  }
}

void Session::queue_control(const wire::Header& h) {
  queue_frame(h, {}, nullptr);
}

bool Session::queue_frame(const wire::Header& h, std::span<const std::byte> payload, const ChunkRef* chunk) {
  const std::size_t head = proto::frame_head_size(h);
  const std::size_t size = payload.size();
  const bool copy = size <= Router::kInlinePayloadMax || chunk == nullptr;
  std::byte* p = out_.append_inline(head + (copy ? size : 0));
  proto::write_frame_head(p, h, size);
  return finish_frame(p + head, payload, chunk, copy, h.type() == wire::DELIVER);
}

bool Session::queue_delivery(std::span<const std::byte> head, std::span<const std::byte> payload,
                             const ChunkRef* chunk) {
  const bool copy = payload.size() <= Router::kInlinePayloadMax || chunk == nullptr;
  std::byte* p = out_.append_inline(head.size() + (copy ? payload.size() : 0));
  std::memcpy(p, head.data(), head.size());
  return finish_frame(p + head.size(), payload, chunk, copy, true);
}

bool Session::finish_frame(std::byte* payload_at, std::span<const std::byte> payload, const ChunkRef* chunk,
                           bool copy, bool delivery) {
  if (copy) {
    if (!payload.empty()) std::memcpy(payload_at, payload.data(), payload.size());
  } else {
    out_.append_ref(*chunk, payload.data(), payload.size());
  }
  out_.end_message(delivery);
  account_queue();
  mark_dirty();
  return copy && !payload.empty();
}

void Session::begin_shutdown() {
  if (closed_ || closing_) return;
  send_error(wire::SHUTTING_DOWN, "the broker is shutting down", true);
  close_deadline_ = Clock::now() + broker_.config().timeouts.shutdown;
  flush();
}

void Session::force_close() {
  if (closed_) return;
  closed_ = true;
  std::error_code ignored;
  socket_.close(ignored);
  reader_wake_.cancel();
  writer_wake_.cancel();
}

void Session::check_deadlines(Clock::time_point now) {
  if (closed_) return;
  const auto& t = broker_.config().timeouts;
  if (closing_) {
    if (now >= close_deadline_) force_close();
    return;
  }
  if (!welcomed_ && now - accepted_at_ > t.handshake) {
    send_error(wire::HANDSHAKE_TIMEOUT, fmt::format("no HELLO within {} ms (timeouts.handshake_ms)", t.handshake.count()),
               true);
    flush();
    return;
  }
  if (partial_since_ != Clock::time_point::max() && now - partial_since_ > t.frame) {
    send_error(wire::FRAME_TIMEOUT,
               fmt::format("a frame started {} ms ago is still incomplete ({} bytes of it arrived; timeouts.frame_ms = "
                           "{})",
                           std::chrono::duration_cast<std::chrono::milliseconds>(now - partial_since_).count(),
                           in_end_ - in_begin_, t.frame.count()),
               true);
    flush();
    return;
  }
  // A queue is stuck when it is full itself, or when it holds bytes its uid's budget needs
  // (without this, clients that each stay under their own limit could hold their uid at its
  // budget, and the publishers behind it, forever).
  // And a consumer that reads, but so slowly that it holds publishers back while draining less
  // than half its queue per slow_consumer_ms (in messages and in bytes), is cut off too:
  // progress alone does not entitle it to stall its publishers for ever. A hold lasts while
  // publishers wait on this queue at every sweep; it ends at a sweep that finds none waiting.
  const bool uid_full = account_.uid().at_limit(Resource::kQueuedBytes);
  const bool stuck = (!own_room() || (uid_full && !out_.empty())) && now - last_progress_ > t.slow_consumer;
  bool too_slow = false;
  std::string slowness;
  if (!waiters_.empty()) holding_.seen = true;
  if (!holding_.seen) {
    holding_.since = Clock::time_point::max();
  } else if (holding_.since != Clock::time_point::max() && now - holding_.since > t.slow_consumer) {
    const auto& l = broker_.config().limits;
    const double periods = std::chrono::duration<double>(now - holding_.since) / t.slow_consumer;
    const std::uint64_t messages = written_messages_ - holding_.messages_at;
    const std::uint64_t bytes = written_bytes_ - holding_.bytes_at;
    too_slow = static_cast<double>(messages) < periods * static_cast<double>(l.queue_max_messages / 2) &&
               static_cast<double>(bytes) < periods * static_cast<double>(l.queue_max_bytes / 2);
    if (too_slow) {
      slowness = fmt::format("publishers held back for {} ms while it took {} messages ({} bytes), less than half its "
                             "queue per slow_consumer_ms",
                             std::chrono::duration_cast<std::chrono::milliseconds>(now - holding_.since).count(),
                             messages, bytes);
    }
  }
  holding_.seen = false;
  if (stuck || too_slow) {
    const std::size_t queued = out_.messages();
    const bool own_full = !own_room();
    const std::size_t dropped = out_.discard_unsent().deliveries;
    account_queue();
    broker_.stats().dropped_disconnect += dropped;
    ++broker_.stats().slow_consumer_disconnects;
    const std::string what =
        !stuck ? slowness
        : own_full ? fmt::format("outbound queue full (limits.queue_max_messages/queue_max_bytes) with no progress "
                                 "for {} ms",
                                 t.slow_consumer.count())
                   : fmt::format("uid {}'s queues at limits.queue_max_bytes_per_uid with no progress for {} ms",
                                 peer_.uid, t.slow_consumer.count());
    send_error(wire::SLOW_CONSUMER,
               fmt::format("{} ({} messages queued; timeouts.slow_consumer_ms); {} queued messages dropped", what,
                           queued, dropped),
               true);
    flush();
    notify_waiters();
  }
}

}  // namespace ubroker::broker
