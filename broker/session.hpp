// One client connection: its lifecycle (handshake, open, closing, closed), a reader loop that
// fills its Inbox (the read side) and gives each frame its meaning (session_frames.cpp), and a
// writer loop that drains its Outbox (the outbound side the Router delivers to) when the
// socket was full. A reader paused behind a full receiver is woken when that receiver drains.
// Lives in its connection's coroutine frame; everything runs on the broker's event loop
// thread.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <expected>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "accounts.hpp"
#include "broker.hpp"
#include "chunk_pool.hpp"
#include "inbox.hpp"
#include "outbox.hpp"
#include "retained_store.hpp"
#include "subscription.hpp"
#include "ubroker.pb.h"
#include "ubroker/proto/deliver_encoder.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/message_head.hpp"
#include "ubroker/proto/peer_credentials.hpp"

namespace ubroker::broker {

class Broker;

// A SUBSCRIBE whose retained values are being sent over several turns (Session::replay_).
// At namespace scope: a nested struct with default member initializers is not yet
// default-constructible where std::optional of it is declared.
struct PendingReplay {
  std::uint64_t sub_id = 0;
  RetainedReplay progress;
};

class Session {
 public:
  using Socket = asio::local::stream_protocol::socket;

  Session(Broker& broker, Socket socket, proto::PeerCredentials peer, Grants grants, std::uint64_t id);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  // Runs the connection to its end; the Session may be destroyed when this returns.
  asio::awaitable<void> run();

  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  [[nodiscard]] const proto::PeerCredentials& peer() const noexcept { return peer_; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] const std::string& command() const noexcept { return command_; }
  [[nodiscard]] std::uint64_t connected_unix_ms() const noexcept { return connected_unix_ms_; }
  [[nodiscard]] bool welcomed() const noexcept { return welcomed_; }
  // What this connection holds, charged to it and its uid.
  [[nodiscard]] ConnectionAccount& account() noexcept { return account_; }
  [[nodiscard]] const ConnectionAccount& account() const noexcept { return account_; }
  // Its outbound side: what the Router delivers to.
  [[nodiscard]] Outbox& outbox() noexcept { return outbox_; }
  [[nodiscard]] const Outbox& outbox() const noexcept { return outbox_; }
  [[nodiscard]] std::uint64_t published() const noexcept { return published_; }
  [[nodiscard]] std::uint64_t published_bytes() const noexcept { return published_bytes_; }
  [[nodiscard]] std::uint64_t requests_made() const noexcept { return requests_made_; }
  [[nodiscard]] std::uint64_t replies() const noexcept { return replies_; }
  [[nodiscard]] std::uint64_t error_replies() const noexcept { return error_replies_; }
  // What the client last reported about itself (STATUS): canonical headers, at most 4 KiB, a
  // fixed part of what a connection may hold.
  [[nodiscard]] const std::string& status() const noexcept { return status_; }
  static constexpr std::size_t kMaxStatusBytes = 4096;

  // The access policy changed: this connection's rights are recomputed, and subscriptions and
  // services they no longer allow are removed, each with a PERMISSION_DENIED naming it.
  // Returns how many were removed.
  std::size_t apply_grants(Grants grants);

  // A request of this client's was answered, timed out or lost its responder.
  void request_finished() noexcept { account_.credit(Resource::kPendingRequests, 1); }
  // The segment is gone for good (ShmRegistry): tell the client, which unmaps it.
  void shm_detached(std::uint64_t segment);

  // Sends what is queued without blocking; hands over to the writer loop on EAGAIN.
  void flush();
  // Unpauses a reader held back by a full receiver.
  void wake_reader();

  // Queues an Error frame. A fatal one stops reading and closes after the flush (or linger).
  // `sub_id`: the subscription the error is about (it has been removed).
  void send_error(wire::ErrorCode code, std::string_view message, bool fatal, std::uint64_t seq = 0,
                  std::optional<std::uint64_t> sub_id = std::nullopt);
  // The broker is stopping: tell the client, flush, close.
  void begin_shutdown();
  // Closes the socket now; the loops end.
  void force_close();

  // Called periodically by the broker: enforces handshake, slow-consumer and linger deadlines.
  void check_deadlines(Clock::time_point now);

  // Direct lanes (lanes.hpp): whether this client uses them (its HELLO and the config say so),
  // whether it may publish on a topic, a LANE_* frame queued with the fds that ride on it, the
  // SUBACK of a SUBSCRIBE that waited for publishers to take their routes, and a cut-off (a
  // fatal error, then the close).
  [[nodiscard]] bool lanes_capable() const noexcept { return lanes_capable_; }
  [[nodiscard]] bool may_publish(std::string_view topic) const noexcept;
  void send_lane_frame(const wire::Header& h, std::vector<shm::UniqueFd> fds);
  void subscribed(std::uint64_t seq);
  void cut_off(wire::ErrorCode code, std::string_view message);

 private:
  enum class Step { kContinue, kBlocked, kClose };
  // The connection's life, in order: waiting for HELLO; open; closing (reading stopped, the
  // queue flushing until it is empty or the deadline passes); closed (the socket is closed and
  // both loops end). It only moves forward.
  enum class Phase { kHandshake, kOpen, kClosing, kClosed };
  void enter(Phase p) noexcept {
    if (p > phase_) phase_ = p;
  }
  [[nodiscard]] bool closing() const noexcept { return phase_ >= Phase::kClosing; }
  [[nodiscard]] bool closed() const noexcept { return phase_ == Phase::kClosed; }

  asio::awaitable<void> read_loop();
  asio::awaitable<void> write_loop();
  // Reads once into the inbox; false when the connection is over (EOF, a failed read). A
  // read refused by the budget or with truncated fds is answered with a fatal error.
  bool read_some(bool& would_block, bool& drained);
  // Processes every complete frame buffered (stops early when blocked or closing).
  Step process_frames();
  Step handle_frame(const wire::Header& h, std::span<const std::byte> payload);
  Step handle_hello(const wire::Header& h);
  // A plain publish (its payload in the frame), `retain`ed or not.
  Step handle_publish(const Published& msg, bool retain);
  // The publish `head` (decoded from `first`) and the same-topic publishes whole in the inbox
  // after it, routed as one run (Router::publish_run); the bytes of the frames it took, or 0
  // when the run path does not apply and `first` goes the single way.
  std::size_t publish_run(const proto::MessageHead& head, const proto::FrameSplit& first,
                          const proto::FrameLimits& limits);
  static constexpr std::size_t kRunPayloadMax = 1024;  // payloads a run copies (Outbox copies these too)
  // The frame's headers in their encoded form (proto/headers.hpp; empty when it has none), or
  // the step after refusing `what` (a publish, request, reply) with INVALID_HEADERS.
  [[nodiscard]] std::optional<Step> take_headers(const wire::Header& h, std::string_view what,
                                                 std::span<const std::byte>& encoded);
  Step handle_subscribe(const wire::Header& h);
  Step handle_unsubscribe(const wire::Header& h);
  Step handle_serve(const wire::Header& h);
  Step handle_request(const wire::Header& h, std::span<const std::byte> payload);
  Step handle_reply(const wire::Header& h, std::span<const std::byte> payload);
  Step handle_probe(const wire::Header& h);
  Step handle_status(const wire::Header& h);
  Step handle_bulk_publish(const wire::Header& h, std::span<const std::byte> headers,
                           std::span<const std::byte> payload);
  Step handle_shm_register(const wire::Header& h);
  Step handle_shm_release(const wire::Header& h);
  // Fd bookkeeping for the frame about to be handled: each frame takes its fd_count from
  // the queue of fds received so far. kContinue when the counts agree.
  Step claim_fds(const wire::Header& h);
  // Sends this turn's share of the retained values for the SUBSCRIBE in replay_; true when
  // they have all been sent.
  bool replay_retained(std::string_view pattern);
  void ack(std::uint64_t seq, std::uint64_t value = 0);
  void queue_control(const wire::Header& h);
  // Holds this session's reader back until its own queue has room.
  Step wait_for_room();
  asio::awaitable<void> park_until_closed();
  [[nodiscard]] std::string describe() const;  // "client 7 (name, pid 12, uid 1000)" for logs
  // The largest frame this connection may send now.
  [[nodiscard]] std::uint32_t max_frame() const noexcept;
  // Refuses a frame with a non-fatal Error, once there is room to queue the answer.
  Step refuse(wire::ErrorCode code, std::string_view message, std::uint64_t seq);
  // The policy check for `r`: nullopt when allowed, else the step after refusing.
  [[nodiscard]] std::optional<Step> deny_unless(Right r, std::string_view what, bool pattern, std::uint64_t seq);
  [[nodiscard]] PeerIdentity identity() const noexcept { return {peer_.uid, peer_.gid, peer_.groups}; }
  // Who its messages say sent them.
  [[nodiscard]] SenderStamp stamp() const noexcept {
    return {id_, peer_.uid, static_cast<std::uint32_t>(peer_.pid)};
  }

  Broker& broker_;
  Socket socket_;
  proto::PeerCredentials peer_;
  Grants grants_;
  std::string last_published_;  // the last topic the policy allowed this client to publish on
  std::uint64_t id_;
  ConnectionAccount account_;  // charged to this connection and its uid; before the boxes
  Inbox inbox_;                // what it sent, not yet handled
  Outbox outbox_;              // what it is sent
  std::string name_;

  Phase phase_ = Phase::kHandshake;
  bool welcomed_ = false;       // it said HELLO (its departure is announced)
  bool write_blocked_ = false;  // the socket is full: the writer loop waits for it
  bool reader_paused_ = false;  // the reader waits for a receiver's room
  bool woken_ = false;          // a wake_reader() since the last processing pass
  Clock::time_point accepted_at_;
  Clock::time_point close_deadline_ = Clock::time_point::max();
  Clock::time_point partial_since_ = Clock::time_point::max();  // a frame's first bytes arrived, not the rest

  asio::steady_timer reader_wake_;
  asio::steady_timer writer_wake_;

  wire::Header header_;   // reused for every frame parsed
  wire::Header control_;  // reused for every control frame queued
  std::vector<std::byte> headers_buf_;  // a parsed frame's headers, encoded again (take_headers)
  std::vector<std::span<const std::byte>> run_;  // publish_run's payloads (reused)

  // The SUBSCRIBE whose retained values are being sent (its frame stays buffered meanwhile).
  std::optional<PendingReplay> replay_;
  shm::UniqueFd claimed_fd_;  // the fd of the frame being handled (SHM_REGISTER, LANE_SEGMENT)
  shm::UniqueFd claimed_wake_fd_;  // LANE_SEGMENT's second: a subscriber's wake socket
  bool lanes_capable_ = false;
  // SUBSCRIBEs whose ACK waits for publishers to take their routes, and the PINGs that came
  // after one, in order: a flush() answered only once the subscriptions before it are in
  // place for every publisher, as without lanes. Bounded: at limits.queue_max_messages held
  // answers a further PING waits (this client's reader is held back until a SUBACK goes),
  // and a client has at most limits.max_subscriptions SUBSCRIBEs in flight.
  struct HeldAnswer {
    std::uint64_t seq;
    bool pong;       // a PING's answer (else a SUBACK)
    bool done;       // a SUBACK sent already
  };
  std::deque<HeldAnswer> held_answers_;

  std::uint64_t published_ = 0;
  std::uint64_t published_bytes_ = 0;
  std::uint64_t requests_made_ = 0;
  std::uint64_t replies_ = 0;        // sent as a responder
  std::uint64_t error_replies_ = 0;  // the same, errors
  std::string status_;
  std::string command_;  // the peer's /proc/PID/comm at accept
  std::uint64_t connected_unix_ms_ = 0;
};

}  // namespace ubroker::broker
