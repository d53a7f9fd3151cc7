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
#include "ubroker/proto/topic.hpp"

namespace ubroker::broker {
namespace {

constexpr auto kUseTuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::uint32_t kMaxHelloFrame = 4096;

}  // namespace

Session::Session(Broker& broker, Socket socket, proto::PeerCredentials peer, Grants grants, std::uint64_t id)
    : broker_(broker),
      socket_(std::move(socket)),
      peer_(std::move(peer)),
      grants_(std::move(grants)),
      id_(id),
      account_(broker.accounts(), peer_.uid),
      inbox_(broker.pool(), socket_.native_handle(), account_),
      outbox_(broker.outbox_context(), socket_.native_handle(), id_, account_),
      accepted_at_(Clock::now()),
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
  enter(Phase::kClosed);  // detach notices caused by what follows are not queued
  outbox_.release_all();  // a receiver that dies lets go of everything it held
  broker_.shm().owner_gone(id_);
  broker_.session_gone(*this);
  // outbox_ counts what was still queued as dropped and wakes whoever waited on it; then
  // account_ credits the rest of what this connection held to its uid.
}

std::string Session::describe() const {
  return fmt::format("client {} ({}, pid {}, uid {})", id_, name_.empty() ? "-" : name_, peer_.pid, peer_.uid);
}

asio::awaitable<void> Session::run() {
  using namespace asio::experimental::awaitable_operators;
  co_await (read_loop() || write_loop());
  enter(Phase::kClosed);
  std::error_code ignored;
  socket_.close(ignored);
}

void Session::wake_reader() {
  // The wake may come before the reader parks (the receiver drained within the same flush
  // that follows the block), so it is remembered, not only delivered.
  woken_ = true;
  if (reader_paused_) reader_wake_.cancel();
}

Session::Step Session::wait_for_room() {
  outbox_.hold_back(id_);
  return Step::kBlocked;
}

void Session::flush() {
  if (closed() || write_blocked_) return;  // the writer loop sends once the socket has room
  switch (outbox_.send_some()) {
    case Outbox::Write::kBlocked: write_blocked_ = true; break;
    case Outbox::Write::kFailed: enter(Phase::kClosed); break;
    case Outbox::Write::kDrained: break;
  }
  if (write_blocked_ || closed() || (closing() && outbox_.empty())) writer_wake_.cancel();
}

asio::awaitable<void> Session::write_loop() {
  for (;;) {
    if (closed()) break;
    if (write_blocked_) {
      auto [ec] = co_await socket_.async_wait(Socket::wait_write, kUseTuple);
      write_blocked_ = false;
      if (ec || closed()) break;
      flush();
      continue;
    }
    if (outbox_.empty()) {
      if (closing()) break;  // everything flushed: the session ends
      writer_wake_.expires_at(Clock::time_point::max());
      co_await writer_wake_.async_wait(kUseTuple);
      continue;
    }
    flush();
  }
  enter(Phase::kClosed);
}

asio::awaitable<void> Session::park_until_closed() {
  // Reading is over; the writer ends the session once the queue is flushed (or the deadline
  // sweep closes it). `||` cancels this wait when the writer returns.
  while (!closed()) {
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
    if (closed()) break;
    if (more_waiting) {
      // A client with a large send buffer can have megabytes waiting: after one buffer's worth,
      // every other ready connection has its turn before this one reads again, so a busy
      // client delays the others by one read, not by its whole backlog.
      more_waiting = false;
      co_await asio::post(socket_.get_executor(), asio::use_awaitable);
      if (closed()) break;
    }
    if (step == Step::kClose || closing()) {
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
    inbox_.release_if_idle();
    drained = false;
    auto [ec] = co_await socket_.async_wait(Socket::wait_read, kUseTuple);
    if (ec) break;
  }
  enter(Phase::kClosed);
}

std::uint32_t Session::max_frame() const noexcept {
  // Before the handshake only a HELLO is expected, and a HELLO is small: a connection that has
  // not said who it is cannot make the broker buffer a large frame.
  return welcomed_ ? broker_.config().limits.max_frame_bytes : kMaxHelloFrame;
}

bool Session::read_some(bool& would_block, bool& drained) {
  switch (inbox_.read(max_frame())) {
    case Inbox::Read::kSome: return true;
    case Inbox::Read::kDrained: drained = true; return true;
    case Inbox::Read::kWouldBlock: would_block = true; return true;
    case Inbox::Read::kOverBudget: {
      const UidAccount& uid = account_.uid();
      send_error(wire::LIMIT_EXCEEDED,
                 fmt::format("a read buffer of {} bytes (for {} bytes of a frame received so far) would take uid {}'s "
                             "read buffers past limits.input_max_bytes_per_uid ({} bytes, {} held)",
                             inbox_.wanted(), inbox_.pending().size(), uid.uid(), uid.limit(Resource::kInputBytes),
                             uid.used(Resource::kInputBytes)),
                 true);
      return true;
    }
    case Inbox::Read::kFdError: send_error(wire::FD_ERROR, inbox_.error(), true); return true;
    case Inbox::Read::kFailed: spdlog::debug("{}: read failed: {}", describe(), inbox_.error()); return false;
    case Inbox::Read::kEof:
      if (const std::size_t pending = inbox_.pending().size(); pending != 0) {
        if (auto due = broker_.refusal_due(peer_.uid, wire::PROTOCOL_ERROR)) {
          broker_.log_refusal(describe(),
                              fmt::format("disconnected inside a frame ({} bytes of it unread)", pending),
                              wire::PROTOCOL_ERROR, peer_.uid, *due);
        }
      }
      return false;
  }
  return false;
}

std::size_t Session::publish_run(const proto::MessageHead& head, const proto::FrameSplit& first,
                                 const proto::FrameLimits& limits) {
  // Only what the run path does exactly as the single one would: no retain, no headers, small
  // payloads (copied), a topic this client was already allowed (else the single path checks
  // the policy first), not the broker's.
  constexpr std::size_t kMaxRunMessages = 64;
  constexpr std::size_t kMaxRunBytes = 16 * 1024;  // the most a run may add past a queue's limit
  if (head.retain || !head.headers.empty() || first.payload.size() > kRunPayloadMax ||
      (!grants_.all() && head.topic != last_published_) || proto::is_reserved(head.topic)) {
    return 0;
  }
  run_.clear();
  run_.push_back(first.payload);
  std::size_t frames = first.frame_size;
  std::uint64_t bytes = first.payload.size();
  // The frames that follow belong to the run while their header bytes are the first's: the
  // same type and topic, nothing else (the first was decoded and checked in full).
  std::span<const std::byte> rest = inbox_.pending().subspan(first.frame_size);
  while (run_.size() < kMaxRunMessages && frames < kMaxRunBytes) {
    auto next = proto::split_frame(rest, limits);
    if (!next || !next->complete || next->payload.size() > kRunPayloadMax ||
        next->header.size() != first.header.size() ||
        std::memcmp(next->header.data(), first.header.data(), first.header.size()) != 0) {
      break;
    }
    run_.push_back(next->payload);
    frames += next->frame_size;
    bytes += next->payload.size();
    rest = rest.subspan(next->frame_size);
  }
  const LaneFilter* lanes = lanes_capable_ ? broker_.lanes().filter(id_, head.topic) : nullptr;
  if (run_.size() < 2 || !broker_.router().publish_run(stamp(), head.topic, run_, bytes, lanes)) return 0;
  if (lanes_capable_) broker_.lanes().published(*this, head.topic);
  published_ += run_.size();
  published_bytes_ += bytes;
  return frames;
}

Session::Step Session::process_frames() {
  if (inbox_.pending().empty() && inbox_.fds().empty()) return closing() ? Step::kClose : Step::kContinue;
  const proto::FrameLimits limits{.max_frame = max_frame()};
  bool handled_any = false;
  proto::MessageHead head;
  while (!closing()) {
    auto split = proto::split_frame(inbox_.pending(), limits);
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
      // A run of small publishes on this topic, already whole in the buffer, goes as one.
      if (const std::size_t consumed = publish_run(head, *split, limits); consumed != 0) {
        inbox_.consume(consumed);
        handled_any = true;
        continue;
      }
      step = handle_publish(
          {.topic = head.topic, .payload = split->payload, .chunk = inbox_.chunk(), .headers = head.headers},
          head.retain);
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
    inbox_.consume(split->frame_size);
    handled_any = true;
    if (step == Step::kClose) return step;
  }
  // A frame's fds ride on the sendmsg that carries its first byte, so fds left over with no
  // partial frame buffered belong to no frame.
  auto& fds = inbox_.fds();
  if (!closing() && !fds.empty() && (inbox_.pending().empty() || fds.size() > proto::kMaxFdsPerMessage)) {
    send_error(wire::FD_ERROR, fmt::format("{} file descriptor(s) arrived without a frame that claims them",
                                           fds.size()), true);
    fds.clear();
    return Step::kClose;
  }
  // The slow-loris clock: runs while a frame's start is buffered without its end, from the
  // moment that frame came to the front.
  if (inbox_.pending().empty()) {
    partial_since_ = Clock::time_point::max();
  } else if (handled_any || partial_since_ == Clock::time_point::max()) {
    partial_since_ = Clock::now();
  }
  return closing() ? Step::kClose : Step::kContinue;
}

void Session::send_error(wire::ErrorCode code, std::string_view message, bool fatal, std::uint64_t seq,
                         std::optional<std::uint64_t> sub_id) {
  if (closing()) return;
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
    enter(Phase::kClosing);
    close_deadline_ = Clock::now() + broker_.config().timeouts.linger;
    reader_wake_.cancel();
  }
}

void Session::queue_control(const wire::Header& h) {
  outbox_.queue_frame(h, {}, nullptr);
}

bool Session::may_publish(std::string_view topic) const noexcept {
  return grants_.allows_topic(Right::kPublish, topic);
}

void Session::subscribed(std::uint64_t seq) {
  ack(seq);
  for (HeldAnswer& a : held_answers_) {
    if (!a.pong && a.seq == seq) a.done = true;
  }
  while (!held_answers_.empty() && (held_answers_.front().pong || held_answers_.front().done)) {
    if (held_answers_.front().pong) {
      control_.Clear();
      control_.set_type(wire::PONG);
      control_.set_seq(held_answers_.front().seq);
      queue_control(control_);
    }
    held_answers_.pop_front();
  }
  wake_reader();  // a PING held back by a full held_answers_ may go on
}

void Session::send_lane_frame(const wire::Header& h, std::vector<shm::UniqueFd> fds) {
  if (closing()) return;
  // Lane frames are few (setup, route changes) and always sent: at most a few per lane and
  // topic beyond the queue's limit, like the errors that name a removed subscription.
  for (auto& fd : fds) outbox_.attach_fd(std::move(fd));
  queue_control(h);
}

void Session::cut_off(wire::ErrorCode code, std::string_view message) {
  if (closing()) return;
  send_error(code, message, true);
  flush();
}

void Session::begin_shutdown() {
  if (closing()) return;
  send_error(wire::SHUTTING_DOWN, "the broker is shutting down", true);
  close_deadline_ = Clock::now() + broker_.config().timeouts.shutdown;
  flush();
}

void Session::force_close() {
  if (closed()) return;
  enter(Phase::kClosed);
  std::error_code ignored;
  socket_.close(ignored);
  reader_wake_.cancel();
  writer_wake_.cancel();
}

void Session::check_deadlines(Clock::time_point now) {
  if (closed()) return;
  const auto& t = broker_.config().timeouts;
  if (closing()) {
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
                           inbox_.pending().size(), t.frame.count()),
               true);
    flush();
    return;
  }
  if (auto why = outbox_.slow(now, t.slow_consumer)) {
    const std::size_t queued = outbox_.queue().messages();
    const std::size_t dropped = outbox_.cut_off();
    ++broker_.stats().slow_consumer_disconnects;
    send_error(wire::SLOW_CONSUMER,
               fmt::format("{} ({} messages queued; timeouts.slow_consumer_ms); {} queued messages dropped", *why,
                           queued, dropped),
               true);
    flush();
  }
}

}  // namespace ubroker::broker
