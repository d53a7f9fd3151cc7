// One client connection: handshake, a reader loop that splits frames and hands them to the
// Router, a writer loop that drains the bounded outbound queue with gather writes, and the
// flow-control state between them (a reader paused behind a full subscriber; publishers
// waiting for this session's queue to drain). Lives in its connection's coroutine frame;
// everything runs on the broker's event loop thread.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <expected>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "accounts.hpp"
#include "broker.hpp"
#include "chunk_pool.hpp"
#include "out_queue.hpp"
#include "retained_store.hpp"
#include "subscription.hpp"
#include "ubroker.pb.h"
#include "ubroker/proto/deliver_encoder.hpp"
#include "ubroker/proto/peer_credentials.hpp"

namespace ubroker::broker {

class Broker;

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
  [[nodiscard]] auto& subscriptions() noexcept { return subs_; }
  [[nodiscard]] const auto& subscriptions() const noexcept { return subs_; }

  // For brokerctl (admin.cpp).
  struct Counters {
    std::uint64_t published = 0;
    std::uint64_t published_bytes = 0;
    std::uint64_t deliveries = 0;
    std::uint64_t delivered_bytes = 0;
  };
  [[nodiscard]] Counters counters() const noexcept {
    return {published_, published_bytes_, deliveries_, delivered_bytes_};
  }
  [[nodiscard]] const OutQueue& queue() const noexcept { return out_; }
  [[nodiscard]] const std::string& command() const noexcept { return command_; }
  // What this connection holds, charged to it and its uid.
  [[nodiscard]] ConnectionAccount& account() noexcept { return account_; }
  [[nodiscard]] const ConnectionAccount& account() const noexcept { return account_; }
  [[nodiscard]] std::uint64_t connected_unix_ms() const noexcept { return connected_unix_ms_; }

  // The access policy changed: this connection's rights are recomputed, and subscriptions and
  // services they no longer allow are removed, each with a PERMISSION_DENIED naming it.
  // Returns how many were removed.
  std::size_t apply_grants(Grants grants);

  // Flow control, used by the Router: room in this client's queue and in its uid's budget.
  [[nodiscard]] bool has_room() const noexcept;
  [[nodiscard]] OutQueue& out() noexcept { return out_; }
  [[nodiscard]] std::size_t queued_deliveries() const noexcept { return out_.deliveries(); }
  [[nodiscard]] std::size_t queued_fds() const noexcept { return out_.fds(); }
  void add_waiter(std::uint64_t publisher_id);
  void mark_dirty();  // flushed at the end of the current read batch
  // Queues one frame: its head, then the payload (copied when small or when `chunk` is null,
  // else referenced). Returns true when the payload was copied.
  bool queue_frame(const wire::Header& h, std::span<const std::byte> payload, const ChunkRef* chunk);
  // A DELIVER frame with its head (prefix + header) already encoded.
  bool queue_delivery(std::span<const std::byte> head, std::span<const std::byte> payload, const ChunkRef* chunk);
  [[nodiscard]] bool welcomed() const noexcept { return welcomed_; }
  // A request of this client's was answered, timed out or lost its responder.
  void request_finished() noexcept { account_.credit(Resource::kPendingRequests, 1); }
  void count_delivery(std::size_t payload_bytes) noexcept {
    ++deliveries_;
    delivered_bytes_ += payload_bytes;
  }

  // Bulk deliveries, used by the Router: holds the record for this receiver and, the first
  // time it gets this segment, attaches the segment's fd to the frame about to be queued.
  // Refused (the caller counts a drop by the reason): the receiver or its uid holds as many
  // unreleased bulk deliveries as it may, or no fd could be passed for the segment.
  [[nodiscard]] std::expected<proto::ShmPart, BulkDrop> hold_bulk(const BulkRef& bulk);
  // The segment is gone for good (ShmRegistry): tell the client, which unmaps it.
  void shm_detached(std::uint64_t segment);
  [[nodiscard]] std::uint64_t bulk_held() const noexcept { return account_.used(Resource::kBulkHolds); }

  // Sends what is queued without blocking; hands over to the writer loop on EAGAIN.
  void flush();
  // Unpauses a reader held back by a full subscriber.
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

 private:
  enum class Step { kContinue, kBlocked, kClose };

  asio::awaitable<void> read_loop();
  asio::awaitable<void> write_loop();
  // Reads once into the receive chunk; false on EOF or a fatal error (already reported).
  // Reads what the socket holds; `drained` when it held less than the room offered.
  bool read_some(bool& would_block, bool& drained);
  // Processes every complete frame buffered (stops early when blocked or closing).
  Step process_frames();
  Step handle_frame(const wire::Header& h, std::span<const std::byte> payload);
  Step handle_hello(const wire::Header& h);
  Step handle_publish(std::string_view topic, bool retain, std::span<const std::byte> payload);
  Step handle_subscribe(const wire::Header& h);
  Step handle_unsubscribe(const wire::Header& h);
  Step handle_serve(const wire::Header& h);
  Step handle_request(const wire::Header& h, std::span<const std::byte> payload);
  Step handle_reply(const wire::Header& h, std::span<const std::byte> payload);
  Step handle_probe(const wire::Header& h);
  Step handle_bulk_publish(const wire::Header& h, std::span<const std::byte> payload);
  Step handle_shm_register(const wire::Header& h);
  Step handle_shm_release(const wire::Header& h);
  // Fd bookkeeping for the frame about to be handled: each frame takes its fd_count from
  // the queue of fds received so far. kContinue when the counts agree.
  Step claim_fds(const wire::Header& h);
  void release_all_holds();
  // Sends this turn's share of the retained values for the SUBSCRIBE in replay_; true when
  // they have all been sent.
  bool replay_retained(std::string_view pattern);
  void ack(std::uint64_t seq, std::uint64_t value = 0);
  void queue_control(const wire::Header& h);
  // The payload after a head already in the queue: copied at `payload_at`, or referenced.
  bool finish_frame(std::byte* payload_at, std::span<const std::byte> payload, const ChunkRef* chunk, bool copy,
                    bool delivery);
  void send_some();
  asio::awaitable<void> park_until_closed();
  [[nodiscard]] std::string describe() const;  // "client 7 (name, pid 12, uid 1000)" for logs
  void notify_waiters();
  [[nodiscard]] bool below_low_watermark() const noexcept;
  [[nodiscard]] bool own_room() const noexcept;
  // Brings the charge for this queue up to date (after every append and send).
  void account_queue();
  // Charges a new read buffer of `capacity` bytes; false (after a fatal LIMIT_EXCEEDED) when
  // it would take the uid past limits.input_max_bytes_per_uid.
  bool charge_input(std::size_t capacity, std::size_t pending);
  // The largest frame this connection may send now.
  [[nodiscard]] std::uint32_t max_frame() const noexcept;
  // Refuses a frame with a non-fatal Error, once there is room to queue the answer.
  Step refuse(wire::ErrorCode code, std::string_view message, std::uint64_t seq);
  // The policy check for `r`: nullopt when allowed, else the step after refusing.
  [[nodiscard]] std::optional<Step> deny_unless(Right r, std::string_view what, bool pattern, std::uint64_t seq);
  [[nodiscard]] PeerIdentity identity() const noexcept { return {peer_.uid, peer_.gid, peer_.groups}; }

  Broker& broker_;
  Socket socket_;
  proto::PeerCredentials peer_;
  Grants grants_;
  std::string last_published_;  // the last topic the policy allowed this client to publish on
  ConnectionAccount account_;   // charged to this connection and its uid
  std::uint64_t id_;
  std::string name_;

  bool welcomed_ = false;
  bool closing_ = false;  // stop reading; close once the queue is flushed
  bool closed_ = false;   // the socket is closed
  bool write_blocked_ = false;
  bool dirty_ = false;
  bool reader_paused_ = false;
  bool woken_ = false;  // a wake_reader() since the last processing pass
  Clock::time_point accepted_at_;
  Clock::time_point last_progress_;  // last byte written, or the queue became non-empty
  // Since when publishers have been waiting on this queue at every sweep, and how much it had
  // written then: the slow-consumer rule's measure of throughput while holding others back.
  struct Holding {
    Clock::time_point since = Clock::time_point::max();
    std::uint64_t messages_at = 0;
    std::uint64_t bytes_at = 0;
    bool seen = false;  // publishers waited on it since the last sweep
  } holding_;
  std::uint64_t written_messages_ = 0;
  std::uint64_t written_bytes_ = 0;
  Clock::time_point close_deadline_ = Clock::time_point::max();
  Clock::time_point partial_since_ = Clock::time_point::max();  // a frame's first bytes arrived, not the rest

  OutQueue out_;
  asio::steady_timer reader_wake_;
  asio::steady_timer writer_wake_;
  std::vector<std::uint64_t> waiters_;  // publishers held back by this session's full queue
  std::vector<std::uint64_t> waking_;   // scratch for notify_waiters (keeps capacity)

  ChunkRef in_;
  std::size_t in_begin_ = 0;
  std::size_t in_end_ = 0;
  std::vector<shm::UniqueFd> in_fds_;
  wire::Header header_;   // reused for every frame parsed
  wire::Header control_;  // reused for every control frame queued

  std::unordered_map<std::uint64_t, std::unique_ptr<Subscription>> subs_;
  // The SUBSCRIBE whose retained values are being sent (its frame stays buffered meanwhile).
  struct PendingReplay {
    std::uint64_t sub_id = 0;
    RetainedReplay progress;
  };
  std::optional<PendingReplay> replay_;

  // Bulk deliveries this client holds; a token is (generation << 32 | index), so a stale or
  // forged token is recognised.
  struct Hold {
    std::uint32_t record = 0;
    std::uint32_t generation = 0;
    bool live = false;
  };
  std::vector<Hold> holds_;
  std::vector<std::uint32_t> free_holds_;
  std::vector<std::uint64_t> shm_attached_;  // segments whose fd this client was sent
  shm::UniqueFd claimed_fd_;  // the fd of the frame being handled (SHM_REGISTER)

  std::uint64_t published_ = 0;
  std::uint64_t published_bytes_ = 0;
  std::string command_;  // the peer's /proc/PID/comm at accept
  std::uint64_t connected_unix_ms_ = 0;
  std::uint64_t deliveries_ = 0;
  std::uint64_t delivered_bytes_ = 0;
};

}  // namespace ubroker::broker
