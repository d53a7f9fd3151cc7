// The broker process: one Asio event loop that accepts connections, runs a Session per
// client, sweeps deadlines (handshake, slow consumers, lingering closes) and handles
// SIGTERM/SIGINT (drain and stop) and SIGHUP. Everything runs on the thread that calls run().
#pragma once

#include <google/protobuf/message_lite.h>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "accounts.hpp"
#include "chunk_pool.hpp"
#include "outbox.hpp"
#include "ubroker/proto/peer_credentials.hpp"
#include "config.hpp"
#include "policy.hpp"
#include "request_table.hpp"
#include "retained_store.hpp"
#include "lanes.hpp"
#include "router.hpp"
#include "shm_registry.hpp"
#include "stats.hpp"
#include "systemd.hpp"
#include "tracer.hpp"

namespace ubroker::broker {

class Session;
using Clock = std::chrono::steady_clock;

class Broker {
 public:
  explicit Broker(Config config);
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;
  ~Broker();

  // Listens, serves until SIGTERM/SIGINT, drains, removes the socket. Returns the exit code.
  // Serves `inherited` (a socket passed by systemd) or, without one, binds the configured
  // socket; returns the exit status.
  int run(std::optional<InheritedListener> inherited = std::nullopt);

  [[nodiscard]] const Config& config() const noexcept { return config_; }
  [[nodiscard]] Router& router() noexcept { return router_; }
  [[nodiscard]] Lanes& lanes() noexcept { return lanes_; }
  [[nodiscard]] const Lanes& lanes() const noexcept { return lanes_; }
  [[nodiscard]] ChunkPool& pool() noexcept { return pool_; }
  [[nodiscard]] Stats& stats() noexcept { return stats_; }
  [[nodiscard]] Session* find(std::uint64_t id) const;
  [[nodiscard]] RequestTable& requests() noexcept { return requests_; }
  [[nodiscard]] RetainedStore& retained() noexcept { return retained_; }
  [[nodiscard]] ShmRegistry& shm() noexcept { return shm_; }
  [[nodiscard]] Tracer& tracer() noexcept { return tracer_; }

  // A request with this deadline was added: the deadline timer may need to fire sooner.
  void request_added(Clock::time_point deadline);
  // A session is going away: its subscriptions, services and requests are released, and its
  // departure is announced.
  void session_gone(Session& s);
  // Presence events on $sys.client.* and $sys.service.*.
  void client_event(const Session& s, bool connected);
  void service_event(const Session& s, std::string_view pattern, bool up);
  // Reloads the access policy from the config file (SIGHUP and $sys.admin.reload). An invalid
  // file changes nothing; a valid one applies to every connection at once.
  std::expected<void, std::string> reload();
  [[nodiscard]] Grants grants_for(const proto::PeerCredentials& peer) const;

  // What each uid holds (accounts.hpp).
  [[nodiscard]] Accounts& accounts() noexcept { return accounts_; }
  // This uid's queues drained below half its limit: publishers waiting on it retry.
  void wake_uid_waiters(UidAccount& account);
  // Refusals are logged at most once per kRefusalLogInterval per (uid, code), with a count of
  // the ones not logged; every one is counted in the status. refusal_due() says whether this
  // one is logged (nullopt: counted only), so the line is formatted only when it is written.
  struct RefusalNote {
    std::uint64_t suppressed = 0;  // refusals of this (uid, code) not logged since the last line
    std::int64_t since_s = 0;      // seconds since that line
  };
  [[nodiscard]] std::optional<RefusalNote> refusal_due(uid_t uid, wire::ErrorCode code);
  void log_refusal(std::string_view who, std::string_view message, wire::ErrorCode code, uid_t uid,
                   const RefusalNote& note) const;
  // Answers a request on $sys.admin.* on behalf of the broker (admin.cpp).
  void answer_admin(Session& caller, const wire::Header& request, std::span<const std::byte> payload);

  // Outboxes with queued output are flushed together at the end of the current read batch.
  void flush_dirty();
  // What every client's Outbox shares with the broker.
  [[nodiscard]] OutboxContext& outbox_context() noexcept { return outbox_context_; }

 private:
  using Socket = asio::local::stream_protocol::socket;

  asio::awaitable<void> accept_loop();
  // Out of fds: counted always; logged when it starts, at most every 10 s while it lasts,
  // and when a connection is accepted again.
  void fd_starved(const std::string& why);
  void fd_recovered();
  asio::awaitable<void> serve(Socket socket);
  // Connection limits and the policy's "may this uid connect at all", before any session.
  bool admit(Socket& socket, const proto::PeerCredentials& peer, const Grants& grants);
  void log_policy(const Policy& policy) const;
  asio::awaitable<void> sweep_loop();
  asio::awaitable<void> signal_loop();
  asio::awaitable<void> request_deadline_loop();
  void publish_event(std::string_view topic, const google::protobuf::MessageLite& event);
  [[nodiscard]] wire::BrokerStatus status() const;
  // The listings, one page each (admin.cpp): the entries after `after` that fit in a frame.
  [[nodiscard]] wire::ClientList clients(const std::string& after) const;
  [[nodiscard]] wire::SubscriptionList subscriptions(const std::string& after) const;
  [[nodiscard]] wire::TopicList topics(const std::string& after);
  [[nodiscard]] wire::SegmentList segments(const std::string& after) const;
  [[nodiscard]] wire::LaneList lane_list(const std::string& after) const;
  [[nodiscard]] std::size_t page_budget() const noexcept;
  void stop(std::string_view why);
  void give_back_memory();

  Config config_;
  std::shared_ptr<const Policy> policy_;
  uid_t broker_uid_;
  Accounts accounts_;  // before everything that charges it
  struct RefusalLogState {
    Clock::time_point last;
    std::uint64_t suppressed = 0;
  };
  std::unordered_map<std::uint64_t, RefusalLogState> refusal_log_;  // by uid << 32 | code
  struct FdStarvation {
    std::optional<Clock::time_point> since;  // set while accepting fails for want of fds
    Clock::time_point last_log;
    std::uint64_t failed_since_log = 0;
  } fd_starvation_;
  asio::io_context io_{1};
  asio::local::stream_protocol::acceptor acceptor_;
  asio::signal_set signals_;
  asio::steady_timer sweep_timer_;
  Stats stats_;
  ChunkPool pool_;
  Router router_;
  Lanes lanes_{*this, router_, config_};
  Tracer tracer_{router_};
  RequestTable requests_;
  RetainedStore retained_;
  ShmRegistry shm_;
  asio::steady_timer request_timer_;
  std::vector<std::byte> event_buf_;  // scratch for presence event payloads
  Clock::time_point started_ = Clock::now();
  Clock::time_point last_rate_tick_ = Clock::now();
  std::unordered_map<std::uint64_t, Session*> sessions_;
  std::vector<Outbox*> dirty_;
  std::vector<Outbox*> flushing_;  // scratch for flush_dirty
  OutboxContext outbox_context_;
  std::uint64_t next_id_ = 1;
  bool stopping_ = false;
  std::uint64_t peak_held_ = 0;  // the most the accounts held since memory was last given back
};

}  // namespace ubroker::broker
