// ClientCore: the shared state behind Client and its Subscriptions.
//
// Writing: any thread appends encoded frames to `pending_` under write_mu_. The first thread
// to find no active writer becomes it and sends inline (lowest latency); frames appended by
// others meanwhile go out in the same batch. On EAGAIN the I/O thread takes over the
// writer role and waits for writability. Only the active writer touches `sending_`.
//
// Reading: whichever thread runs the client's loop reads, splits frames and dispatches them
// (deliveries to callbacks or the receive queue, answers: ACK/PONG/ERROR with a seq, to waiting
// callers), one at a time in the strand. That is the I/O thread or, while one waits in
// receive(), request() or flush() and nothing else needs the loop, the waiting caller itself
// (leader/followers, io_thread.hpp); with ConnectOptions::io, the application's threads.
//
// Reconnecting (client_reconnect.cpp): when the connection is lost for a reason that may pass
// (the broker stopped, restarted or cut this client off as slow), a reconnect thread dials
// again with exponential backoff and jitter; the I/O thread then installs the new socket,
// subscribes and serves again with the same ids, and sends the publishes that were not yet
// fully written, then those buffered while disconnected. Each connection has a generation,
// so handlers of a replaced socket know to stand down.
//
// State, grouped below by what guards it: set at construction or atomic; owned by the strand
// (the read side); state_mu_ (subscriptions, answers awaited, reconnecting); write_mu_ (bytes
// on their way out); queue_mu_ (the receive queue); ring_mu_ (the shared-memory ring).
// Clang's -Wthread-safety checks the members marked UBROKER_GUARDED_BY (annotated_mutex.hpp).
//
// Lifetime: shared by Client, Subscriptions and pending I/O handlers. A socket is shut down
// when the connection fails and closed only when the I/O thread replaces it with no writer
// active, or in the destructor, so no thread ever writes to a reused fd number.
#pragma once

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/post.hpp>
#include <asio/strand.hpp>
#include <unistd.h>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "annotated_mutex.hpp"
#include "handshake.hpp"
#include "io_thread.hpp"
#include "lane_publisher.hpp"
#include "lane_subscriber.hpp"
#include "shm_reader.hpp"
#include "ubroker.pb.h"
#include "ubroker/client.hpp"
#include "ubroker/proto/message_head.hpp"

namespace ubroker::detail {

// The read buffer holds at least one whole frame of the broker's maximum size.
std::size_t read_buffer_size(std::uint64_t max_frame_bytes);

struct SubState {
  std::uint64_t id = 0;
  wire::Header request;                    // the SUBSCRIBE or SERVE, sent again on reconnect
  Client::Handler handler;                 // empty: messages go to the receive queue
  Client::RequestHandler request_handler;  // set for a service (serve())
  std::atomic<std::uint64_t> dropped{0};
  std::atomic<bool> active{true};
  // An unsubscribe that returns without the broker's ACK (disconnected, timed out, or called
  // on the I/O thread) silences the subscription: no callback starts after that, and one
  // already running is waited for (unless it is the caller), so nothing it captured is
  // touched after unsubscribe() returns. `in_callback` counts the calls under way.
  std::atomic<bool> silenced{false};
  std::atomic<int> in_callback{0};
};

// Counts a callback in and out of SubState::in_callback, also when it throws.
class CallbackScope {
 public:
  explicit CallbackScope(SubState& s) noexcept : s_(s) { s_.in_callback.fetch_add(1); }
  ~CallbackScope() { s_.in_callback.fetch_sub(1); }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;

 private:
  SubState& s_;
};

// The broker's answer to one request (SUBSCRIBE, UNSUBSCRIBE, SERVE, PING, PROBE, REQUEST).
struct Answer {
  bool done = false;
  std::optional<Error> error;
  std::uint64_t value = 0;        // ACK.value
  std::optional<Message> reply;   // a REQUEST's REPLY
  Client::ReplyHandler callback;  // request_async(): called instead of waking a waiter
};

class ClientCore : public std::enable_shared_from_this<ClientCore> {
 public:
  ClientCore(ConnectOptions options, UniqueFd fd, Welcomed welcomed);
  ~ClientCore();
  ClientCore(const ClientCore&) = delete;
  ClientCore& operator=(const ClientCore&) = delete;

  void start();  // begins reading (and starts the own I/O thread)
  void close();

  Result<void> publish(std::string_view topic, std::span<const std::byte> payload, const PublishOptions& options);
  Result<Loan> loan(std::string_view topic, std::size_t size, std::chrono::milliseconds timeout);
  Result<void> publish(Loan&& loan, std::span<const std::byte> headers = {});  // headers encoded
  Result<Subscription> subscribe(std::string_view pattern, Client::Handler handler, const SubscribeOptions& options);
  Result<Subscription> serve(std::string_view pattern, Client::RequestHandler handler);
  Result<Message> request(std::string_view topic, std::span<const std::byte> payload, const RequestOptions& options);
  void request_async(std::string_view topic, std::span<const std::byte> payload, const RequestOptions& options,
                     Client::ReplyHandler done);
  Result<void> reply(std::uint64_t request_id, std::span<const std::byte> payload,
                     std::span<const HeaderField> headers);
  // `kind`: kServiceError, or a gateway's kNoResponders / kTimeout.
  Result<void> reply_error(std::uint64_t request_id, std::string_view message, std::uint32_t code,
                           Errc kind = Errc::kServiceError);
  Result<void> wait_for_responder(std::string_view topic, std::chrono::milliseconds timeout);
  Result<std::uint64_t> unsubscribe(SubState& state, std::chrono::milliseconds timeout);
  Result<Message> receive(std::chrono::milliseconds timeout);
  Result<void> flush(std::chrono::milliseconds timeout);
  Result<void> set_status(std::span<const HeaderField> fields);
  Result<std::size_t> poll(std::chrono::milliseconds timeout);
  // Client::fd(): with manual_io the epoll fd that stands for the whole client (poll_fd_), else
  // the socket while connected.
  [[nodiscard]] int socket_fd() const noexcept {
    if (poll_fd_) return poll_fd_.get();
    return connected() ? fd_.load(std::memory_order_relaxed) : -1;
  }

  [[nodiscard]] std::uint64_t id() const noexcept { return client_id_.load(std::memory_order_relaxed); }
  [[nodiscard]] bool connected() const noexcept { return link_.load(std::memory_order_acquire) == LinkState::kConnected; }
  [[nodiscard]] bool closed() const noexcept { return link_.load(std::memory_order_acquire) == LinkState::kClosed; }
  [[nodiscard]] std::optional<Error> disconnect_reason() const;
  [[nodiscard]] ClientStats stats() const noexcept;

 private:
  [[nodiscard]] bool on_io_thread() const;
  // Waits on `cv` (its mutex held in `lk`) until `pred` or `deadline`, running the client's
  // loop on this thread where that brings the answer sooner or at all (never on a thread
  // already inside it: see on_io_thread). These three unlock and relock a caller's lock the
  // analysis cannot name, so it skips them; `pred` runs with the lock held.
  template <class Pred>
  bool wait_until(UniqueLock& lk, std::condition_variable& cv,
                  std::chrono::steady_clock::time_point deadline, Pred pred) UBROKER_NO_THREAD_SAFETY_ANALYSIS {
    if (io_thread_) return lead_until(lk, cv, deadline, pred);
    return run_context_until(lk, cv, deadline, pred);
  }
  // With the client's own I/O thread: this thread leads (runs the loop itself while the I/O
  // thread parks) when nothing but waiters needs the loop and no other caller leads; else it
  // waits on `cv`, a follower.
  template <class Pred>
  bool lead_until(UniqueLock& lk, std::condition_variable& cv,
                  std::chrono::steady_clock::time_point deadline, Pred pred) UBROKER_NO_THREAD_SAFETY_ANALYSIS {
    if (pred()) return true;
    // A call that cannot wait (receive(0ms) in a polling loop) or that callbacks make the loop
    // busy anyway: the I/O thread reads (brought back at once should it linger after a lead).
    if (deadline <= std::chrono::steady_clock::now() || callback_work_.load(std::memory_order_relaxed) != 0) {
      io_thread_->resume();
      return cv.wait_until(lk.native(), deadline, pred);
    }
    lk.unlock();
    const IoThread::Role role = io_thread_->lead(deadline);
    lk.lock();
    // Ends the role however this returns, also when a callback run here throws.
    struct RoleEnd {
      ClientCore& core;
      IoThread::Role role;
      ~RoleEnd() {
        if (role == IoThread::Role::kFollower) {
          core.io_thread_->end_follow();
        } else {
          core.io_thread_->end_lead(core.callback_work_.load(std::memory_order_relaxed) != 0);
        }
      }
    } role_end{*this, role};
    if (role == IoThread::Role::kFollower) return cv.wait_until(lk.native(), deadline, pred);
    bool done = false;
    while (!(done = pred())) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline || io_.stopped()) break;
      lk.unlock();
      // Bounded slices only as a backstop: whatever changes `pred` from outside the loop
      // (close, a failed write) also posts to it (wake_waiters).
      (void)io_thread_->run_one(std::min<std::chrono::steady_clock::duration>(deadline - now, std::chrono::milliseconds(100)));
      lk.lock();
    }
    // The loop ran dry (closed): only another thread can still change `pred`.
    if (!done && io_.stopped()) done = cv.wait_until(lk.native(), deadline, pred);
    return done;
  }
  // A wait that must not lead: publishers held back by flow control are released by whichever
  // thread writes, which notifies `cv` but posts nothing a leader asleep in epoll would see.
  template <class Pred>
  bool follow_until(UniqueLock& lk, std::condition_variable& cv,
                    std::chrono::steady_clock::time_point deadline, Pred pred) UBROKER_NO_THREAD_SAFETY_ANALYSIS {
    if (io_thread_) {
      io_thread_->resume();
      return cv.wait_until(lk.native(), deadline, pred);
    }
    return run_context_until(lk, cv, deadline, pred);
  }
  // With ConnectOptions::io nobody may be running that context, so the waiting thread runs it
  // itself meanwhile, a millisecond at a time: its own handlers bring the answer, and the
  // application's run here too. Another thread running the context as well is fine (this one
  // notices the answer within the slice).
  template <class Pred>
  bool run_context_until(UniqueLock& lk, std::condition_variable& cv,
                         std::chrono::steady_clock::time_point deadline, Pred pred) UBROKER_NO_THREAD_SAFETY_ANALYSIS {
    const auto keep = shared_from_this();  // a handler run here may drop the last other reference
    while (!pred()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return false;
      lk.unlock();
      const auto slice = std::min<std::chrono::steady_clock::duration>(deadline - now, std::chrono::milliseconds(1));
      const bool ran = io_.run_one_for(slice) != 0;
      const bool stopped = !ran && io_.stopped();
      lk.lock();
      // Stopped (by the application, or out of work): only another thread can bring it back.
      if (stopped) return cv.wait_until(lk.native(), deadline, pred);
    }
    return true;
  }
  // Encodes one frame into pending_ and sends it (or leaves it to the active writer). An `fd`
  // (owned by the caller until the frame is out) rides on the sendmsg that starts the frame.
  Result<void> send_frame(const wire::Header& h, std::span<const std::byte> payload, int fd = -1, bool may_wait = true);
  // A control frame with fds the frame owns from now on (closed once it is out, or dropped).
  Result<void> send_frame_with_fds(const wire::Header& h, std::span<UniqueFd> owned);
  static constexpr std::size_t kMaxFdsPerFrame = 2;
  // PUBLISH.value of a message that also went by lane (ubroker.proto).
  static constexpr std::uint64_t kAlsoByLane = 1;
  // A plain PUBLISH, its head written by hand (proto/message_head.hpp).
  Result<void> send_publish(std::string_view topic, bool retain, std::span<const std::byte> headers,
                            std::span<const std::byte> payload, bool may_wait = true);
  // Waits while too much is unsent (never on the loop, which sends it): lossless backpressure.
  void wait_for_send_room();
  // Appends a frame of a `head`-byte head (written by write_head) and `payload` to the
  // outgoing bytes, under every bound; `plain_publish` frames may wait in the offline buffer.
  template <class WriteHead>
  Result<void> queue_frame(std::size_t head, bool plain_publish, std::span<const std::byte> payload, int fd,
                            const WriteHead& write_head, std::span<UniqueFd> owned = {}, bool may_wait = true);
  void drive_writes();
  void wait_writable();
  // Sends a control frame and (off the I/O thread) waits for its answer.
  Result<Answer> control_request(wire::Header& h, std::chrono::milliseconds timeout, bool wait, int fd = -1);
  // This client's shared-memory ring, created and registered with the broker on first use.
  Result<std::shared_ptr<shm::ProducerRing>> producer_ring();
  void flush_releases();  // I/O thread: sends the releases the ShmReader collected
  // A REQUEST frame with a fresh seq; `done` set means asynchronous.
  Result<std::uint64_t> send_request(std::string_view topic, std::span<const std::byte> payload,
                                     const RequestOptions& options, Client::ReplyHandler done);
  Result<Subscription> add_subscription(wire::Header& h, std::shared_ptr<SubState> state);
  // The two halves of request(): a seq registered for the answer (and, for UNSUBSCRIBE, the
  // subscription the I/O thread forgets on the ACK), then the wait.
  std::uint64_t begin_request(std::optional<std::uint64_t> unsubscribing);
  Result<Answer> finish_request(std::uint64_t seq, Result<void> sent, std::chrono::milliseconds timeout, bool wait);

  void start_read();
  void on_readable();
  void dispatch(const wire::Header& h, std::span<const std::byte> payload);
  // A DELIVER's header fields, from the fast decoder or from protobuf.
  struct DeliveryHead {
    std::string_view topic;
    std::span<const std::uint64_t> sub_ids, dropped;
    Sender sender;
    bool retain = false;
    std::span<const std::byte> headers;  // checked
    std::uint32_t fd_count = 0;
    const wire::ShmRef* shm = nullptr;  // a bulk payload's reference
    const LaneSubscriber::Bulk* lane_bulk = nullptr;  // or one a lane carried
  };
  // False: a bulk reference that cannot be used (reported, given back, nothing delivered).
  bool deliver(const DeliveryHead& h, std::span<const std::byte> payload);
  void report(const Error& e);  // an error nobody waits for: on_error, else stderr
  // Direct lanes (client_lanes.cpp): a LANE_* frame from the broker; a lane this end found
  // broken (LANE_ERROR); what the subscribing end calls back.
  void lane_frame(const wire::Header& h);
  void report_lane(std::uint64_t lane, std::string_view why, bool broken = true);
  void lane_done(std::uint64_t lane);  // LANE_CLOSE back: this end is done with the lane
  LaneSubscriber::Hooks lane_hooks();
  void deliver_request(const wire::Header& h, std::span<const std::byte> payload);
  void answer(const wire::Header& h, std::span<const std::byte> payload);

  // The connection is gone: reconnect if `why` may pass and reconnecting is on, else close
  // for good. Any thread; the first call per connection counts.
  void fail(Error why);
  [[nodiscard]] bool may_reconnect(const Error& why) const;
  // Ends the client for good (state_mu_ held; takes write_mu_): stops the I/O thread's work
  // guard and the reconnect thread, and discards what is unsent unless a writer still runs.
  void close_locked() UBROKER_REQUIRES(state_mu_);
  void stop_writing();  // the active writer gives up its role (the connection failed)
  // Fails the answers still awaited (state_mu_ held); returns the asynchronous ones to call.
  std::vector<Client::ReplyHandler> orphan_answers_locked(const Error& e) UBROKER_REQUIRES(state_mu_);
  // close() and fail(): closes the lanes on the loop that owns them.
  void close_lanes_on_strand();
  void wake_waiters();
  void notify(ConnectionChange change);  // runs on_connection on the I/O thread
  void reconnect_loop();
  // I/O thread: the new connection replaces the lost one.
  void install(std::shared_ptr<Dialed> d, unsigned attempts);
  void forget_subscription(std::uint64_t id);  // the broker removed it, or it could not be restored
  // Stops the subscription's callbacks (SubState::silenced) and, off the I/O thread, waits for
  // one under way to return.
  void silence(SubState& state);
  // write_mu_ held: the publishes not fully written, frames to restore subscriptions first.
  void rebuild_outgoing_locked() UBROKER_REQUIRES(state_mu_, write_mu_);
  // write_mu_ held: counts and drops every unsent frame (the client is closed for good).
  void discard_unsent_locked() UBROKER_REQUIRES(write_mu_);
  [[nodiscard]] std::shared_ptr<ShmReader> make_reader();
  void add_sub_locked(std::shared_ptr<SubState> state) UBROKER_REQUIRES(state_mu_);
  // Sets an answer's callback (an asynchronous request, a restore after reconnecting): counted
  // as callback work until erase_answer_locked or take_answer_callback_locked.
  void set_answer_callback_locked(std::uint64_t seq, Client::ReplyHandler callback) UBROKER_REQUIRES(state_mu_);
  [[nodiscard]] Client::ReplyHandler take_answer_callback_locked(Answer& a) UBROKER_REQUIRES(state_mu_);
  void more_callback_work() noexcept;  // callback_work_ up; a lingering I/O thread comes back
  void erase_sub_locked(std::uint64_t id) UBROKER_REQUIRES(state_mu_);
  void erase_answer_locked(std::uint64_t seq) UBROKER_REQUIRES(state_mu_);
  // Frames not fully written: the unsent part of the active batch (from the start of the
  // frame it stopped in) and everything pending.
  template <class Visit>
  void for_each_unsent_frame_locked(Visit&& visit) UBROKER_REQUIRES(write_mu_);

  // Posts `fn` to the strand; with manual_io also wakes the application (wake_fd_).
  template <class Fn>
  void post_to_strand(Fn&& fn) {
    asio::post(strand_, std::forward<Fn>(fn));
    if (io_thread_) io_thread_->resume();
    if (wake_fd_) {
      const std::uint64_t one = 1;
      (void)!::write(wake_fd_.get(), &one, sizeof one);  // full counter: already signalled
    }
  }
  // manual_io: watches `fd` (a new connection's socket) in poll_fd_, instead of `old` (-1: none).
  void watch_socket(int old, int fd);

  // ---- Set at construction, or atomics any thread reads ----
  ConnectOptions options_;
  std::atomic<std::uint64_t> client_id_;
  // From the broker's WELCOME, renewed on each reconnect.
  std::atomic<std::uint64_t> max_frame_bytes_;
  std::atomic<std::uint64_t> shm_max_segment_bytes_;
  std::atomic<int> fd_;  // owned by socket_
  std::atomic<std::uint64_t> generation_{0};  // bumped when a new connection is installed
  // The connection's state, changed under state_mu_ (read anywhere): kConnected until fail()
  // (kReconnecting, or kClosed when the reason is final), kConnected again when a reconnect
  // installs a new socket, kClosed for good after close().
  enum class LinkState : std::uint8_t { kConnected, kReconnecting, kClosed };
  std::atomic<LinkState> link_{LinkState::kConnected};
  // Subscriptions with a callback, services and asynchronous requests in subs_ / answers_:
  // while there are any, the loop has work when nobody waits, so waiters do not lead.
  std::atomic<int> callback_work_{0};
  struct Counters {
    std::atomic<std::uint64_t> reconnects{0};
    std::atomic<std::uint64_t> publishes_buffered{0};
    std::atomic<std::uint64_t> publishes_resent{0};
    std::atomic<std::uint64_t> publishes_discarded{0};
  } counters_;

  // ---- The loop ----
  std::unique_ptr<asio::io_context> own_io_;
  // manual_io: the fd the application watches. An epoll set holding the socket (readable or,
  // after a full write, writable again: edge-triggered) and wake_fd_, an eventfd every post
  // to the strand from any thread signals (a reconnect's install, releases, a write to finish),
  // so an application asleep in its own epoll always learns that poll() has work.
  UniqueFd poll_fd_;
  UniqueFd wake_fd_;
  asio::io_context& io_;
  // Every handler of this client runs in the strand: an application's io_context may be run
  // by several threads, and the read path, the writer and the reconnect install each assume
  // they run alone.
  asio::strand<asio::io_context::executor_type> strand_;
  asio::local::stream_protocol::socket socket_;  // bound to strand_: its waits complete there
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;  // own thread only
  // The client's own I/O thread (unless ConnectOptions::io or manual_io); declared after the
  // context it runs, so it ends first.
  std::optional<IoThread> io_thread_;
  std::thread reconnector_;

  // ---- Owned by the strand (whichever thread runs the loop): the read side ----
  std::vector<std::byte> rbuf_;
  std::size_t rbegin_ = 0;
  std::size_t rend_ = 0;
  wire::Header rheader_;
  std::vector<std::byte> rheaders_;  // rheader_'s headers, encoded (headers.hpp)
  proto::MessageHead mhead_;  // the fast decoder's, for DELIVER
  std::deque<UniqueFd> rfds_;                // received, not yet claimed by a frame
  std::vector<std::shared_ptr<SubState>> targets_;  // scratch: one delivery's subscriptions
  std::vector<std::uint64_t> release_batch_;      // scratch for flush_releases
  wire::Header release_header_;                   // ditto
  std::shared_ptr<ShmReader> reader_;  // bulk payloads received (replaced by install)
  LaneSubscriber lane_sub_{strand_, lane_hooks()};  // lanes this client reads (per connection)
  wire::Header lane_ack_;                           // scratch for LANE_ROUTE_ACK

  // ---- state_mu_: subscriptions, outstanding requests, the reconnect handshake ----
  // Lock order: state_mu_, then write_mu_ or queue_mu_; ring_mu_, then the lanes' publishing
  // lock (LanePublisher::set_ring), then a ring's own.
  mutable Mutex state_mu_;
  std::condition_variable answer_cv_;     // an answer is done, or the connection failed
  std::condition_variable reconnect_cv_;  // reconnect_wanted_, or closed
  std::unordered_map<std::uint64_t, std::shared_ptr<SubState>> subs_ UBROKER_GUARDED_BY(state_mu_);
  std::unordered_map<std::uint64_t, Answer> answers_ UBROKER_GUARDED_BY(state_mu_);  // by seq
  std::unordered_map<std::uint64_t, std::uint64_t> unsubscribing_ UBROKER_GUARDED_BY(state_mu_);  // seq -> sub id
  std::optional<Error> disconnect_reason_ UBROKER_GUARDED_BY(state_mu_);
  std::uint64_t next_sub_id_ UBROKER_GUARDED_BY(state_mu_) = 1;
  std::uint64_t next_seq_ UBROKER_GUARDED_BY(state_mu_) = 1;
  bool reconnect_wanted_ UBROKER_GUARDED_BY(state_mu_) = false;
  std::optional<wire::Header> status_ UBROKER_GUARDED_BY(state_mu_);  // the last set_status(), sent on each connection

  // ---- write_mu_: bytes on their way out ----
  // pending_ is appended to under the lock; the active writer (writer_active_, one thread at
  // a time) takes it as its batch, and only it touches sending_*, without the lock.
  Mutex write_mu_ UBROKER_ACQUIRED_AFTER(state_mu_);
  std::condition_variable write_cv_;  // pending_ drained below the bound, or disconnected
  std::vector<std::byte> pending_ UBROKER_GUARDED_BY(write_mu_);
  struct FdMark {
    std::size_t at;  // offset of the frame's first byte in pending_ / sending_
    int fd;
    UniqueFd owned;  // the fd itself when the frame owns it: closed once the mark is dropped
  };
  std::vector<FdMark> pending_fds_ UBROKER_GUARDED_BY(write_mu_);
  bool writer_active_ UBROKER_GUARDED_BY(write_mu_) = false;
  // What the loop itself queued in pending_ (answers to what it read: PONGs, lane segments,
  // replies, publishes from callbacks), since it cannot wait for room as publishers do: at
  // max_pending_bytes of it, reading pauses until the writer takes pending_ as its batch.
  // Publishers held back by the broker do not pause it, so this client still reads its
  // subscriptions, answers and the broker's routes while they wait.
  std::size_t loop_unsent_ UBROKER_GUARDED_BY(write_mu_) = 0;
  bool read_paused_for_writes_ UBROKER_GUARDED_BY(write_mu_) = false;  // reading stopped: loop_unsent_ at its bound
  std::uint64_t buffered_this_outage_ UBROKER_GUARDED_BY(write_mu_) = 0;  // publishes accepted since the loss
  std::vector<std::byte> sending_;  // the active writer's batch
  std::size_t sending_off_ = 0;
  std::vector<FdMark> sending_fds_;

  // ---- queue_mu_: messages for receive() ----
  Mutex queue_mu_ UBROKER_ACQUIRED_AFTER(state_mu_);
  std::condition_variable queue_cv_;
  std::deque<Message> queue_ UBROKER_GUARDED_BY(queue_mu_);
  bool read_paused_for_queue_ UBROKER_GUARDED_BY(queue_mu_) = false;  // receive() resumes reading

  // ---- The lanes this client writes: their own lock (lane_publisher.hpp), taken before
  // write_mu_ (a publish hands the broker its copy under it) ----
  LanePublisher lane_pub_{[this](std::uint64_t lane, const char* why, bool broken) { report_lane(lane, why, broken); }};

  // ---- ring_mu_: this client's shared-memory ring, made on first use ----
  Mutex ring_mu_;
  std::shared_ptr<shm::ProducerRing> ring_ UBROKER_GUARDED_BY(ring_mu_);
  static constexpr std::uint64_t kRingSegmentId = 1;  // this client's id for its one segment
};

}  // namespace ubroker::detail
