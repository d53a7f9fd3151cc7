// ClientCore: lifecycle, the write path, and the calls that wait for the broker's answers.
// The read path is in client_reader.cpp.
#include "client_core.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <fmt/format.h>
#include <asio/post.hpp>
#include <array>
#include <cstring>

#include "headers.hpp"
#include "library_thread.hpp"
#include "ubroker/proto/busy_poll.hpp"
#include "ubroker/proto/fd_socket.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/topic.hpp"

namespace ubroker::detail {
namespace {

Error not_connected(const std::optional<Error>& why) {
  if (why) return {Errc::kNotConnected, fmt::format("not connected: {}", why->message)};
  return {Errc::kNotConnected, "not connected"};
}

std::chrono::steady_clock::time_point deadline_after(std::chrono::milliseconds timeout) {
  const auto now = std::chrono::steady_clock::now();
  return timeout >= std::chrono::hours(24 * 365) ? std::chrono::steady_clock::time_point::max() : now + timeout;
}

}  // namespace

std::size_t read_buffer_size(std::uint64_t max_frame_bytes) {
  return std::max<std::size_t>(256 * 1024, max_frame_bytes + proto::kPrefixSize);
}

ClientCore::ClientCore(ConnectOptions options, UniqueFd fd, Welcomed welcomed)
    : options_(std::move(options)),
      client_id_(welcomed.client_id),
      max_frame_bytes_(welcomed.limits.max_frame_bytes()),
      shm_max_segment_bytes_(welcomed.limits.shm_max_segment_bytes()),
      fd_(fd.get()),
      own_io_(options_.io ? nullptr : std::make_unique<asio::io_context>()),
      io_(options_.io ? *options_.io : *own_io_),
      strand_(asio::make_strand(io_)),
      socket_(strand_, asio::local::stream_protocol(), fd.release()),
      rbuf_(read_buffer_size(max_frame_bytes_)) {
  if (!welcomed.leftover.empty()) std::memcpy(rbuf_.data(), welcomed.leftover.data(), welcomed.leftover.size());
  rend_ = welcomed.leftover.size();
}

ClientCore::~ClientCore() {
  close();
  // The last reference may go away in a callback on one of these threads: it then ends on its own.
  if (io_thread_) io_thread_->join();
  lane_pub_.close_all();
  lane_sub_.close_all();
  if (reconnector_.joinable()) {
    if (reconnector_.get_id() == std::this_thread::get_id()) {
      reconnector_.detach();
    } else {
      reconnector_.join();
    }
  }
}

std::shared_ptr<ShmReader> ClientCore::make_reader() {
  // Releases are sent from the I/O thread; whoever drops a bulk message only queues a post.
  return std::make_shared<ShmReader>(shm_max_segment_bytes_.load(), [weak = weak_from_this()] {
    if (auto self = weak.lock(); self && self->connected()) {
      self->post_to_strand([self] { self->flush_releases(); });
    }
  });
}

void ClientCore::start() {
  reader_ = make_reader();
  lane_sub_.set_owner(weak_from_this());
  post_to_strand([self = shared_from_this()] { self->on_readable(); });
  notify({.event = ConnectionEvent::kConnected});
  if (own_io_) {
    // Manual: no thread, but the guard keeps the context from running dry between polls.
    work_.emplace(own_io_->get_executor());
    if (options_.manual_io) {
      poll_fd_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
      wake_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      epoll_event ev{.events = EPOLLIN, .data = {.fd = wake_fd_.get()}};
      if (!poll_fd_ || !wake_fd_ || ::epoll_ctl(poll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev) != 0) {
        // Without them the application can still poll on a timer; fd() then says -1.
        poll_fd_.reset();
        wake_fd_.reset();
      }
      watch_socket(-1, fd_.load());
      const std::uint64_t one = 1;  // the first poll() has the start's work to do
      if (wake_fd_) (void)!::write(wake_fd_.get(), &one, sizeof one);
      return;
    }
    // The guard keeps the thread alive while reading is paused (no operation pending) and
    // while reconnecting; closing releases it, and the thread ends once every pending handler
    // has completed, which also releases the handlers' references to this core.
    io_thread_.emplace(*own_io_, options_.busy_poll);
    io_thread_->start();
  }
}

void ClientCore::close() {
  const Error why{Errc::kNotConnected, "closed by the application"};
  std::vector<Client::ReplyHandler> orphans;
  {
    LockGuard lk(state_mu_);
    if (!closed()) {
      disconnect_reason_ = why;
      orphans = orphan_answers_locked(not_connected(why));
      close_lanes_on_strand();  // before close_locked() lets the loop run dry
      close_locked();
    }
  }
  for (auto& done : orphans) done(std::unexpected(not_connected(why)));
  wake_waiters();
  // Manual I/O: nobody else will run the handlers still pending (the socket's waits, which
  // complete now that it is shut down); run them here so they let go of this core.
  if (own_io_ && !io_thread_ && !on_io_thread()) own_io_->run();
  if (io_thread_) {
    io_thread_->stop();
    // Not from one of the client's handlers (on the I/O thread, or a caller leading): the
    // loop cannot run dry until that handler returns. The destructor joins.
    if (!strand_.running_in_this_thread()) io_thread_->join();
  }
  if (reconnector_.joinable() && reconnector_.get_id() != std::this_thread::get_id()) reconnector_.join();
}

bool ClientCore::on_io_thread() const {
  // The client's strand or, with ConnectOptions::io, any thread inside that context's run():
  // waiting there would hold up the very loop that has to bring the answer.
  return strand_.running_in_this_thread() || (!io_thread_ && io_.get_executor().running_in_this_thread());
}

std::optional<Error> ClientCore::disconnect_reason() const {
  LockGuard lk(state_mu_);
  return disconnect_reason_;
}

ClientStats ClientCore::stats() const noexcept {
  return {.reconnects = counters_.reconnects.load(),
          .publishes_buffered = counters_.publishes_buffered.load(),
          .publishes_resent = counters_.publishes_resent.load(),
          .publishes_discarded = counters_.publishes_discarded.load()};
}

bool ClientCore::may_reconnect(const Error& why) const {
  if (!options_.reconnect.enabled || options_.address.empty()) return false;
  switch (why.code) {
    case Errc::kNotConnected:   // EOF, reset: the broker stopped or died
    case Errc::kShuttingDown:   // it is stopping on purpose, probably to restart
    case Errc::kSlowConsumer:   // it cut this client off; a new connection starts empty
    case Errc::kFrameTimeout:   // this process was stalled mid-frame
    case Errc::kHandshakeTimeout:
      return true;
    default:  // kicked by an operator, refused, or a protocol fault: dialling again will not help
      return false;
  }
}

std::vector<Client::ReplyHandler> ClientCore::orphan_answers_locked(const Error& e) {
  std::vector<Client::ReplyHandler> orphans;  // asynchronous requests that will get no answer now
  for (auto it = answers_.begin(); it != answers_.end();) {
    if (it->second.callback) {
      orphans.push_back(take_answer_callback_locked(it->second));
      it = answers_.erase(it);
      continue;
    }
    if (!it->second.done) {
      it->second.done = true;
      it->second.error = e;
    }
    ++it;
  }
  // Unsubscribes in flight fail too; their subscriptions are already inactive and are not restored.
  for (const auto& [seq, id] : unsubscribing_) erase_sub_locked(id);
  unsubscribing_.clear();
  return orphans;
}

void ClientCore::close_locked() {
  link_.store(LinkState::kClosed, std::memory_order_release);
  ::shutdown(fd_.load(), SHUT_RDWR);  // wakes every thread blocked on the connection
  work_.reset();
  reconnect_cv_.notify_all();
  LockGuard wl(write_mu_);
  if (!writer_active_) discard_unsent_locked();  // else the writer does, once it stops
}

void ClientCore::close_lanes_on_strand() {
  // The lanes' waits would keep the loop from running dry, and the loop owns them. A handler
  // posted after the loop ran dry is never run: close() and fail() post this while the
  // client's work guard still keeps it going. The own loop runs it before close() or the
  // destructor joins it (so `this` is alive); an application's context may run it later, or never, so there it holds
  // the core only if it is still alive (else the destructor closed them).
  if (options_.io) {
    post_to_strand([weak = weak_from_this()] {
      if (auto self = weak.lock()) {
        self->lane_pub_.close_all();
        self->lane_sub_.close_all();
      }
    });
  } else {
    post_to_strand([this] {
      lane_pub_.close_all();
      lane_sub_.close_all();
    });
  }
}

void ClientCore::wake_waiters() {
  // A caller leading the loop sleeps in epoll, not on these: a no-op handler brings it round.
  if (io_thread_) asio::post(io_, [] {});
  answer_cv_.notify_all();
  { LockGuard lk(write_mu_); }
  write_cv_.notify_all();
  { LockGuard lk(queue_mu_); }
  queue_cv_.notify_all();
}

void ClientCore::notify(ConnectionChange change) {
  if (!options_.on_connection) return;
  post_to_strand([self = shared_from_this(), change = std::move(change)] { self->options_.on_connection(change); });
}

void ClientCore::fail(Error why) {
  std::vector<Client::ReplyHandler> orphans;
  const Error gone{Errc::kBrokerGone, fmt::format("the connection to the broker was lost: {}", why.message)};
  {
    LockGuard lk(state_mu_);
    if (!connected()) return;  // closed, or this connection already counted
    link_.store(LinkState::kReconnecting, std::memory_order_release);  // kClosed below if it is final
    // The lanes were this connection's: publishes go to the broker (or the offline buffer).
    lane_pub_.cut();
    close_lanes_on_strand();
    disconnect_reason_ = why;
    orphans = orphan_answers_locked(gone);
    if (may_reconnect(why)) {
      ::shutdown(fd_.load(), SHUT_RDWR);
      notify({.event = ConnectionEvent::kDisconnected, .reason = why});
      reconnect_wanted_ = true;
      if (!reconnector_.joinable()) reconnector_ = start_library_thread("ubroker-reconn", [this] { reconnect_loop(); });
      reconnect_cv_.notify_all();
    } else {
      notify({.event = ConnectionEvent::kClosed, .reason = why});  // before close_locked lets the I/O thread end
      close_locked();
    }
  }
  for (auto& done : orphans) done(std::unexpected(gone));
  wake_waiters();
}

// ---- writing ------------------------------------------------------------------------------

Result<void> ClientCore::send_frame(const wire::Header& h, std::span<const std::byte> payload, int fd, bool may_wait) {
  const std::size_t head = proto::frame_head_size(h);
  const bool plain_publish = h.type() == wire::PUBLISH && !h.has_shm() && fd < 0;
  return queue_frame(head, plain_publish, payload, fd,
                      [&](std::byte* at) { proto::write_frame_head(at, h, payload.size()); }, {}, may_wait);
}

Result<void> ClientCore::send_frame_with_fds(const wire::Header& h, std::span<UniqueFd> owned) {
  return queue_frame(proto::frame_head_size(h), false, {}, -1,
                     [&](std::byte* at) { proto::write_frame_head(at, h, 0); }, owned);
}

Result<void> ClientCore::send_publish(std::string_view topic, bool retain, std::span<const std::byte> headers,
                                      std::span<const std::byte> payload, bool may_wait) {
  return queue_frame(proto::publish_head_size(topic, retain, headers), true, payload, -1,
                      [&](std::byte* at) { proto::encode_publish_head(at, topic, retain, payload.size(), headers); },
                      {}, may_wait);
}

void ClientCore::wait_for_send_room() {
  UniqueLock lk(write_mu_);
  if (pending_.size() < options_.max_pending_bytes || on_io_thread()) return;
  (void)follow_until(lk, write_cv_, std::chrono::steady_clock::time_point::max(), [&] {
    write_mu_.assert_held();
    return pending_.size() < options_.max_pending_bytes || !connected();
  });
}

template <class WriteHead>
Result<void> ClientCore::queue_frame(std::size_t head, bool plain_publish, std::span<const std::byte> payload, int fd,
                                      const WriteHead& write_head, std::span<UniqueFd> owned, bool may_wait) {
  const std::uint64_t max_frame = max_frame_bytes_.load(std::memory_order_relaxed);
  if (head - proto::kPrefixSize + payload.size() > max_frame) {
    return std::unexpected(Error{Errc::kFrameTooLarge,
                                 fmt::format("message of {} bytes exceeds the broker's frame limit of {} bytes",
                                             payload.size(), max_frame)});
  }
  const bool from_loop = on_io_thread();
  UniqueLock lk(write_mu_);
  // Lossless backpressure: wait while too much is unsent (never on the I/O thread, which
  // is the one that drains it; there the bound is enforced by pausing reads instead).
  if (may_wait && pending_.size() >= options_.max_pending_bytes && !from_loop) {
    (void)follow_until(lk, write_cv_, std::chrono::steady_clock::time_point::max(),
                     [&] {
                       write_mu_.assert_held();
                       return pending_.size() < options_.max_pending_bytes || !connected();
                     });
  }
  if (!connected()) {
    // Only plain publishes may wait for the next connection: anything else belongs to this one.
    const bool bufferable = !closed() && plain_publish;
    if (!bufferable || options_.offline_buffer_bytes == 0) {
      lk.unlock();
      return std::unexpected(not_connected(disconnect_reason()));
    }
    if (pending_.size() + head + payload.size() > options_.offline_buffer_bytes) {
      return std::unexpected(Error{
          Errc::kBufferFull,
          fmt::format("not connected, and the offline buffer holds {} of its {} bytes (offline_buffer_bytes)",
                      pending_.size(), options_.offline_buffer_bytes)});
    }
    counters_.publishes_buffered.fetch_add(1, std::memory_order_relaxed);
    ++buffered_this_outage_;
  }
  const std::size_t at = pending_.size();
  pending_.resize(at + head + payload.size());
  write_head(pending_.data() + at);
  if (!payload.empty()) std::memcpy(pending_.data() + at + head, payload.data(), payload.size());
  if (from_loop) loop_unsent_ += head + payload.size();
  if (fd >= 0) pending_fds_.push_back({at, fd, {}});
  for (UniqueFd& o : owned) pending_fds_.push_back({at, o.get(), std::move(o)});
  if (writer_active_ || !connected()) return {};  // the active writer (or the next connection) sends it
  writer_active_ = true;
  lk.unlock();
  if (options_.coalesce_writes && !strand_.running_in_this_thread()) {
    // The loop becomes the writer; what callers append until it runs goes in the same write.
    post_to_strand([self = shared_from_this()] { self->drive_writes(); });
    return {};
  }
  drive_writes();
  return {};
}

void ClientCore::stop_writing() {
  LockGuard lk(write_mu_);
  writer_active_ = false;
  if (closed()) discard_unsent_locked();
}

void ClientCore::drive_writes() {
  for (;;) {
    bool took_batch = false;  // room in pending_ for publishers held back (notified unlocked)
    {
      LockGuard lk(write_mu_);
      if (!connected()) {
        // What is unsent stays for the next connection (or is discarded if there is none).
        writer_active_ = false;
        if (closed()) discard_unsent_locked();
        return;
      }
      if (sending_off_ == sending_.size()) {
        sending_.clear();
        sending_fds_.clear();
        sending_off_ = 0;
        const bool idle = pending_.empty();
        if (idle) {
          writer_active_ = false;
        } else {
          sending_.swap(pending_);
          sending_fds_.swap(pending_fds_);
          took_batch = true;
        }
        loop_unsent_ = 0;  // it is all in the batch now
        if (read_paused_for_writes_) {
          read_paused_for_writes_ = false;
          post_to_strand([self = shared_from_this()] { self->on_readable(); });
        }
        if (idle) return;
      }
    }
    if (took_batch) write_cv_.notify_all();
    // A frame with fds starts its own sendmsg, which carries them.
    std::size_t end = sending_.size();
    std::array<int, kMaxFdsPerFrame> fds{};
    std::size_t nfds = 0;
    for (const FdMark& m : sending_fds_) {
      if (m.at == sending_off_) {
        if (nfds < fds.size()) fds[nfds++] = m.fd;
      } else if (m.at > sending_off_) {
        end = m.at;
        break;
      }
    }
    const iovec iov{.iov_base = sending_.data() + sending_off_, .iov_len = end - sending_off_};
    auto sent = proto::send(fd_.load(std::memory_order_relaxed), std::span(&iov, 1), std::span<const int>(fds.data(), nfds));
    if (sent) {
      sending_off_ += *sent;
      continue;
    }
    if (proto::would_block(sent.error())) {
      wait_writable();  // the I/O thread stays the writer until the batch is out
      return;
    }
    // A broker that closes says why first (SHUTTING_DOWN, a limit, a slow consumer): when that
    // frame is already here, it is the reason, not the write that found the socket closed.
    stop_writing();
    post_to_strand([weak = weak_from_this(), gen = generation_.load(),
                    why = Error{Errc::kNotConnected, fmt::format("write to broker failed: {}", sent.error().message())}] {
      auto self = weak.lock();
      if (!self || gen != self->generation_.load()) return;  // gone, or a new connection replaced that one
      self->on_readable();
      self->fail(why);
    });
    return;
  }
}

void ClientCore::wait_writable() {
  post_to_strand([self = shared_from_this(), gen = generation_.load()] {
    if (gen != self->generation_.load()) return;  // the batch was for a replaced socket
    self->socket_.async_wait(asio::local::stream_protocol::socket::wait_write, [self, gen](const std::error_code& ec) {
      if (gen != self->generation_.load()) return;
      if (ec) {
        self->fail(Error{Errc::kNotConnected, fmt::format("waiting to write: {}", ec.message())});
        self->stop_writing();
        return;
      }
      self->drive_writes();
    });
  });
}

// ---- calls -------------------------------------------------------------------------------

Result<void> ClientCore::publish(std::string_view topic, std::span<const std::byte> payload,
                                 const PublishOptions& options) {
  if (const char* why = proto::check_topic(topic)) {
    return std::unexpected(Error{Errc::kInvalidTopic, fmt::format("invalid topic '{}': {}", topic, why)});
  }
  if (proto::is_reserved(topic)) {
    return std::unexpected(Error{Errc::kReservedTopic, fmt::format("'{}' is reserved for the broker", topic)});
  }
  thread_local std::vector<std::byte> headers;
  if (auto ok = encode_headers(options.headers, headers); !ok) return ok;
  // Large payloads go through shared memory (retained ones cannot: the broker keeps those).
  if (payload.size() >= std::max<std::size_t>(options_.shm_threshold, 1) && !options.retain &&
      shm_max_segment_bytes_.load(std::memory_order_relaxed) != 0) {
    auto l = loan(topic, payload.size(), options_.timeout);
    if (l) {
      std::memcpy(l->data().data(), payload.data(), payload.size());
      return publish(std::move(*l), headers);
    }
    // Too big for the ring but small enough for a frame: the socket takes it.
    if (l.error().code != Errc::kInvalidArgument || payload.size() > max_frame_bytes_.load(std::memory_order_relaxed) / 2) {
      return std::unexpected(l.error());
    }
  }
  if (options.retain) return send_publish(topic, true, headers, payload);  // retained values: the broker's
  // Lanes: what the topic's route names gets the message directly; the broker gets it when
  // receivers without a lane need it (or no route names a lane). The wait for room in the
  // outgoing bytes comes first, outside the lanes' lock (the loop takes that lock to change
  // routes, and the loop is what makes room).
  wait_for_send_room();
  return lane_pub_.publish(topic, headers, payload, options_.timeout, !on_io_thread(), [&](bool laned) {
    if (!laned) return send_publish(topic, false, headers, payload, false);
    // Marked: after a reconnect it is not sent again, since its lane subscribers may have it.
    thread_local wire::Header h;
    h.Clear();
    h.set_type(wire::PUBLISH);
    h.set_topic(topic.data(), topic.size());
    h.set_value(kAlsoByLane);
    if (!headers.empty()) (void)h.mutable_headers()->ParseFromArray(headers.data(), static_cast<int>(headers.size()));
    return send_frame(h, payload, -1, false);
  });
}

void ClientCore::more_callback_work() noexcept {
  // From none to some: the loop now has work while nobody waits, so a lingering I/O thread
  // must not wait out its linger.
  if (callback_work_.fetch_add(1, std::memory_order_relaxed) == 0 && io_thread_) io_thread_->resume();
}

void ClientCore::set_answer_callback_locked(std::uint64_t seq, Client::ReplyHandler callback) {
  answers_[seq].callback = std::move(callback);
  more_callback_work();
}

Client::ReplyHandler ClientCore::take_answer_callback_locked(Answer& a) {
  if (a.callback) callback_work_.fetch_sub(1, std::memory_order_relaxed);
  return std::move(a.callback);
}

void ClientCore::add_sub_locked(std::shared_ptr<SubState> state) {
  if (state->handler || state->request_handler) more_callback_work();
  const std::uint64_t id = state->id;
  subs_.emplace(id, std::move(state));
}

void ClientCore::erase_sub_locked(std::uint64_t id) {
  auto it = subs_.find(id);
  if (it == subs_.end()) return;
  if (it->second->handler || it->second->request_handler) callback_work_.fetch_sub(1, std::memory_order_relaxed);
  subs_.erase(it);
}

void ClientCore::erase_answer_locked(std::uint64_t seq) {
  auto it = answers_.find(seq);
  if (it == answers_.end()) return;
  (void)take_answer_callback_locked(it->second);  // uncounted as callback work
  answers_.erase(it);
}

std::uint64_t ClientCore::begin_request(std::optional<std::uint64_t> unsubscribing) {
  LockGuard lk(state_mu_);
  const std::uint64_t seq = next_seq_++;
  answers_[seq] = Answer{};
  if (unsubscribing) unsubscribing_[seq] = *unsubscribing;
  return seq;
}

Result<Answer> ClientCore::finish_request(std::uint64_t seq, Result<void> sent, std::chrono::milliseconds timeout,
                                          bool wait) {
  const auto keep = shared_from_this();  // a callback run while waiting may drop the last other reference
  UniqueLock lk(state_mu_);
  if (!sent || !wait) {
    answers_.erase(seq);  // an answer that comes later finds nobody waiting and is dropped
    if (!sent) return std::unexpected(sent.error());
    return Answer{.done = true};
  }
  const bool done = wait_until(lk, answer_cv_, deadline_after(timeout), [&] {
    state_mu_.assert_held();
    return answers_[seq].done;
  });
  Answer a = std::move(answers_[seq]);
  answers_.erase(seq);
  if (!done) return std::unexpected(Error{Errc::kTimeout, "timed out waiting for the broker's answer"});
  if (a.error) return std::unexpected(*a.error);
  return a;
}

Result<Answer> ClientCore::control_request(wire::Header& h, std::chrono::milliseconds timeout, bool wait, int fd) {
  const std::uint64_t seq = begin_request(std::nullopt);
  h.set_seq(seq);
  return finish_request(seq, send_frame(h, {}, fd), timeout, wait);
}

Result<Subscription> ClientCore::add_subscription(wire::Header& h, std::shared_ptr<SubState> state) {
  {
    LockGuard lk(state_mu_);
    state->id = next_sub_id_++;
    h.add_sub_ids(state->id);
    state->request = h;
    add_sub_locked(state);
  }
  auto answer = control_request(h, options_.timeout, !on_io_thread());
  // Lost before the broker answered: it stays, and is restored with the others on reconnect.
  if (!answer && answer.error().code == Errc::kBrokerGone && !closed()) {
    return Subscription(shared_from_this(), std::move(state));
  }
  if (!answer) {
    LockGuard lk(state_mu_);
    erase_sub_locked(state->id);
    return std::unexpected(answer.error());
  }
  return Subscription(shared_from_this(), std::move(state));
}

Result<Subscription> ClientCore::subscribe(std::string_view pattern, Client::Handler handler,
                                           const SubscribeOptions& options) {
  if (const char* why = proto::check_pattern(pattern)) {
    return std::unexpected(Error{Errc::kInvalidPattern, fmt::format("invalid pattern '{}': {}", pattern, why)});
  }
  auto state = std::make_shared<SubState>();
  state->handler = std::move(handler);
  wire::Header h;
  h.set_type(wire::SUBSCRIBE);
  h.set_topic(pattern.data(), pattern.size());
  h.set_group(options.group);
  h.set_overflow(options.overflow == Overflow::kDrop ? wire::DROP : wire::BLOCK);
  return add_subscription(h, std::move(state));
}

Result<Subscription> ClientCore::serve(std::string_view pattern, Client::RequestHandler handler) {
  if (const char* why = proto::check_pattern(pattern)) {
    return std::unexpected(Error{Errc::kInvalidPattern, fmt::format("invalid pattern '{}': {}", pattern, why)});
  }
  if (proto::is_reserved(pattern)) {
    return std::unexpected(Error{Errc::kReservedTopic, fmt::format("'{}' is reserved for the broker", pattern)});
  }
  auto state = std::make_shared<SubState>();
  state->request_handler = std::move(handler);
  wire::Header h;
  h.set_type(wire::SERVE);
  h.set_topic(pattern.data(), pattern.size());
  return add_subscription(h, std::move(state));
}

Result<std::uint64_t> ClientCore::send_request(std::string_view topic, std::span<const std::byte> payload,
                                               const RequestOptions& options, Client::ReplyHandler done) {
  const auto timeout = options.timeout;
  if (const char* why = proto::check_topic(topic)) {
    return std::unexpected(Error{Errc::kInvalidTopic, fmt::format("invalid topic '{}': {}", topic, why)});
  }
  if (proto::is_reserved(topic) && !topic.starts_with("$sys.admin.")) {
    return std::unexpected(Error{Errc::kReservedTopic, fmt::format("'{}' is reserved for the broker", topic)});
  }
  if (timeout.count() <= 0) return std::unexpected(Error{Errc::kInvalidArgument, "request timeout must be positive"});
  thread_local std::vector<std::byte> headers;
  if (auto ok = encode_headers(options.headers, headers); !ok) return std::unexpected(ok.error());
  const std::uint64_t seq = begin_request(std::nullopt);
  if (done) {
    LockGuard lk(state_mu_);
    set_answer_callback_locked(seq, std::move(done));
  }
  thread_local wire::Header h;
  h.Clear();
  h.set_type(wire::REQUEST);
  h.set_seq(seq);
  h.set_topic(topic.data(), topic.size());
  h.set_timeout_ms(static_cast<std::uint32_t>(std::min<std::int64_t>(timeout.count(), UINT32_MAX)));
  if (!headers.empty()) (void)h.mutable_headers()->ParseFromArray(headers.data(), static_cast<int>(headers.size()));
  if (auto sent = send_frame(h, payload); !sent) {
    LockGuard lk(state_mu_);
    erase_answer_locked(seq);
    return std::unexpected(sent.error());
  }
  return seq;
}

Result<Message> ClientCore::request(std::string_view topic, std::span<const std::byte> payload,
                                    const RequestOptions& options) {
  if (on_io_thread()) {
    return std::unexpected(
        Error{Errc::kInvalidArgument, "request() cannot wait on the client's I/O thread (or a thread running its io_context); use request_async()"});
  }
  auto seq = send_request(topic, payload, options, nullptr);
  if (!seq) return std::unexpected(seq.error());
  // The broker answers TIMEOUT at the deadline; the extra second only covers a broker that
  // stopped answering altogether.
  auto answer = finish_request(*seq, {}, options.timeout + std::chrono::seconds(1), true);
  if (!answer) return std::unexpected(answer.error());
  if (!answer->reply) return std::unexpected(Error{Errc::kProtocolError, "the broker acknowledged a request"});
  return std::move(*answer->reply);
}

void ClientCore::request_async(std::string_view topic, std::span<const std::byte> payload,
                               const RequestOptions& options, Client::ReplyHandler done) {
  auto shared_done = std::make_shared<Client::ReplyHandler>(std::move(done));
  auto seq = send_request(topic, payload, options, [shared_done](Result<Message> r) { (*shared_done)(std::move(r)); });
  if (!seq) (*shared_done)(std::unexpected(seq.error()));
}

Result<void> ClientCore::reply(std::uint64_t request_id, std::span<const std::byte> payload,
                               std::span<const HeaderField> fields) {
  thread_local std::vector<std::byte> headers;
  if (auto ok = encode_headers(fields, headers); !ok) return ok;
  thread_local wire::Header h;
  h.Clear();
  h.set_type(wire::REPLY);
  h.set_request_id(request_id);
  if (!headers.empty()) (void)h.mutable_headers()->ParseFromArray(headers.data(), static_cast<int>(headers.size()));
  return send_frame(h, payload);
}

Result<void> ClientCore::reply_error(std::uint64_t request_id, std::string_view message, std::uint32_t code,
                                     Errc kind) {
  thread_local wire::Header h;
  h.Clear();
  h.set_type(wire::REPLY);
  h.set_request_id(request_id);
  auto* e = h.mutable_error();
  e->set_code(static_cast<wire::ErrorCode>(kind));
  // proto3 strings are UTF-8: anything else would make the whole frame unreadable.
  e->set_message(utf8_or_replaced(message));
  e->set_service_code(code);
  return send_frame(h, {});
}

Result<void> ClientCore::wait_for_responder(std::string_view topic, std::chrono::milliseconds timeout) {
  if (on_io_thread())
    return std::unexpected(Error{Errc::kInvalidArgument, "wait_for_responder() cannot wait on the client's I/O thread (or a thread running its io_context)"});
  if (const char* why = proto::check_topic(topic)) {
    return std::unexpected(Error{Errc::kInvalidTopic, fmt::format("invalid topic '{}': {}", topic, why)});
  }
  // Every $sys.service.up wakes us to ask again; the subscription exists before the first
  // probe, so a service that appears in between is not missed. What the callback touches is
  // shared with it, not on this stack: should the unsubscribe at the end not be acknowledged
  // (the connection lost), a late callback still finds it alive.
  struct Ups {
    Mutex mu;
    std::condition_variable cv;
    std::uint64_t events = 0;
  };
  auto shared = std::make_shared<Ups>();
  auto ups = subscribe("$sys.service.up",
                       [shared](const MessageView&) {
                         LockGuard lk(shared->mu);
                         ++shared->events;
                         shared->cv.notify_all();
                       },
                       {});
  if (!ups) return std::unexpected(ups.error());
  const auto deadline = deadline_after(timeout);
  for (;;) {
    std::uint64_t seen;
    {
      LockGuard lk(shared->mu);
      seen = shared->events;
    }
    wire::Header h;
    h.set_type(wire::PROBE);
    h.set_topic(topic.data(), topic.size());
    auto answer = control_request(h, options_.timeout, true);
    if (!answer) return std::unexpected(answer.error());
    if (answer->value > 0) return {};
    UniqueLock lk(shared->mu);
    if (!wait_until(lk, shared->cv, deadline, [&] { return shared->events != seen || !connected(); })) {
      return std::unexpected(Error{Errc::kTimeout, fmt::format("no responder for '{}' within the timeout", topic)});
    }
    if (!connected()) return std::unexpected(not_connected(disconnect_reason()));
  }
}

Result<std::uint64_t> ClientCore::unsubscribe(SubState& state, std::chrono::milliseconds timeout) {
  if (!state.active.exchange(false)) {
    return std::unexpected(Error{Errc::kUnknownSubscription, "already unsubscribed"});
  }
  if (!connected()) {  // the broker has no subscription to end; just do not restore it
    forget_subscription(state.id);
    silence(state);
    return state.dropped.load(std::memory_order_relaxed);
  }
  // Deliveries already on their way still reach the handler; the I/O thread forgets the
  // subscription when the broker's ACK arrives, after the last of them.
  const std::uint64_t seq = begin_request(state.id);
  wire::Header h;
  h.set_type(wire::UNSUBSCRIBE);
  h.set_seq(seq);
  h.add_sub_ids(state.id);
  const bool wait = !on_io_thread();
  auto answer = finish_request(seq, send_frame(h, {}), timeout, wait);
  // On the I/O thread nothing waits for the ACK: deliveries still on their way are dropped here.
  if (!wait) silence(state);
  if (!answer) {
    {
      LockGuard lk(state_mu_);  // no ACK will come (or none in time): forget it now
      unsubscribing_.erase(seq);
      erase_sub_locked(state.id);
    }
    silence(state);
    // A connection lost meanwhile ended the subscription with it.
    if (answer.error().code == Errc::kBrokerGone) return state.dropped.load(std::memory_order_relaxed);
    return std::unexpected(answer.error());
  }
  if (wait) state.dropped.store(answer->value, std::memory_order_relaxed);
  return state.dropped.load(std::memory_order_relaxed);
}

void ClientCore::watch_socket(int old, int fd) {
  if (!poll_fd_) return;
  if (old >= 0) (void)::epoll_ctl(poll_fd_.get(), EPOLL_CTL_DEL, old, nullptr);
  if (fd < 0) return;
  epoll_event ev{.events = EPOLLIN | EPOLLOUT | EPOLLET, .data = {.fd = fd}};
  if (::epoll_ctl(poll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    // Not watched: the wake fd still brings the application round on every post.
    const std::uint64_t one = 1;
    if (wake_fd_) (void)!::write(wake_fd_.get(), &one, sizeof one);
  }
}

Result<std::size_t> ClientCore::poll(std::chrono::milliseconds timeout) {
  if (io_thread_) {
    return std::unexpected(Error{Errc::kInvalidArgument,
                                 "poll(): this client has its own I/O thread, which drives it (see "
                                 "ConnectOptions::manual_io)"});
  }
  if (on_io_thread()) {
    return std::unexpected(Error{Errc::kInvalidArgument, "poll() cannot run inside the client's own handlers"});
  }
  if (closed()) return std::unexpected(not_connected(disconnect_reason()));
  // A handler run here may drop the application's last reference (a callback that closes the
  // client): the core outlives this call.
  const auto keep = shared_from_this();
  if (poll_fd_) {
    // Consume what made fd() readable (edge-triggered socket events, the wake counter), so
    // the application's epoll sleeps again once this poll has done the work.
    std::uint64_t count = 0;
    (void)!::read(wake_fd_.get(), &count, sizeof count);  // the wake counter, back to 0
    epoll_event evs[4];
    (void)::epoll_wait(poll_fd_.get(), evs, 4, 0);  // the socket's edges, reported once
  }
  std::size_t ran = timeout.count() > 0 ? io_.run_one_for(timeout) : io_.poll_one();
  if (ran != 0) {
    while (io_.poll_one() != 0) ++ran;  // and whatever became ready meanwhile
  }
  return ran;
}

void ClientCore::silence(SubState& state) {
  state.silenced.store(true);
  // Only on the client's strand may the caller be that very callback; any other thread waits
  // (with ConnectOptions::io, the callback may be running on another thread of the context).
  if (strand_.running_in_this_thread()) return;
  while (state.in_callback.load() != 0) std::this_thread::yield();
}

Result<void> ClientCore::flush(std::chrono::milliseconds timeout) {
  if (on_io_thread()) return std::unexpected(Error{Errc::kInvalidArgument, "flush() cannot wait on the client's I/O thread (or a thread running its io_context)"});
  wire::Header h;
  h.set_type(wire::PING);
  auto answer = control_request(h, timeout, true);
  if (!answer) return std::unexpected(answer.error());
  return {};
}

Result<void> ClientCore::set_status(std::span<const HeaderField> fields) {
  std::vector<std::byte> encoded;
  if (auto ok = encode_headers(fields, encoded); !ok) return ok;
  constexpr std::size_t kMaxStatusBytes = 4096;  // the broker's bound (Session::kMaxStatusBytes)
  if (encoded.size() > kMaxStatusBytes) {
    return std::unexpected(Error{Errc::kInvalidArgument, fmt::format("status: {} bytes encoded, more than {}",
                                                                     encoded.size(), kMaxStatusBytes)});
  }
  wire::Header h;
  h.set_type(wire::STATUS);
  if (!encoded.empty()) (void)h.mutable_headers()->ParseFromArray(encoded.data(), static_cast<int>(encoded.size()));
  {
    LockGuard lk(state_mu_);
    status_ = h;
  }
  if (!connected()) {
    if (closed()) return std::unexpected(not_connected(disconnect_reason()));
    return {};  // the next connection sends it
  }
  auto sent = send_frame(h, {});
  if (!sent && !closed() && sent.error().code == Errc::kNotConnected) return {};  // lost meanwhile: sent on reconnect
  return sent;
}

Result<Message> ClientCore::receive(std::chrono::milliseconds timeout) {
  if (on_io_thread()) return std::unexpected(Error{Errc::kInvalidArgument, "receive() cannot wait on the client's I/O thread (or a thread running its io_context)"});
  const auto keep = shared_from_this();  // a callback run while waiting may drop the last other reference
  UniqueLock lk(queue_mu_);
  // While reconnecting, messages may come again: wait on.
  const bool ready =
      wait_until(lk, queue_cv_, deadline_after(timeout), [&] {
        queue_mu_.assert_held();
        return !queue_.empty() || closed();
      });
  if (queue_.empty()) {
    lk.unlock();
    if (!ready) return std::unexpected(Error{Errc::kTimeout, "no message within the timeout"});
    return std::unexpected(not_connected(disconnect_reason()));
  }
  Message m = std::move(queue_.front());
  queue_.pop_front();
  if (read_paused_for_queue_ && queue_.size() <= options_.receive_queue / 2) {
    read_paused_for_queue_ = false;
    // Not a strong reference: a loop that already ran dry (a closed client) never runs it.
    post_to_strand([weak = weak_from_this()] {
      if (auto self = weak.lock()) {
        self->on_readable();
        self->lane_sub_.resume();
      }
    });
  }
  return m;
}

}  // namespace ubroker::detail
