// Broker: accept loop, per-connection coroutine, deadline sweep, signals and shutdown.
#include "broker.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>
#include <csignal>

#include <malloc.h>

#include "ubroker/proto/busy_poll.hpp"
#include "process_usage.hpp"
#include "listener.hpp"
#include "log_text.hpp"
#include "session.hpp"
#include "ubroker/proto/fd_socket.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/peer_credentials.hpp"

namespace ubroker::broker {
namespace {

constexpr auto kUseTuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr auto kSweepInterval = std::chrono::milliseconds(100);
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);
constexpr auto kRefusalLogInterval = std::chrono::seconds(10);

// Completion handler for detached coroutines: an exception must not vanish.
auto log_failure(std::string what) {
  return [what = std::move(what)](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("{} failed: {}", what, ex.what());
    }
  };
}

// By errno value: Asio's accept errors do not compare equal to std::errc here.
bool out_of_resources(const std::error_code& ec) {
  const int e = ec.value();
  return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

// Best effort: one non-blocking write of a fatal Error frame to a connection we will not serve.
void refuse(asio::local::stream_protocol::socket& socket, wire::ErrorCode code, const std::string& message) {
  wire::Header h;
  h.set_type(wire::ERROR);
  h.mutable_error()->set_code(code);
  h.mutable_error()->set_message(message);
  h.mutable_error()->set_fatal(true);
  std::vector<std::byte> frame(proto::frame_head_size(h));
  proto::write_frame_head(frame.data(), h, 0);
  const iovec iov{.iov_base = frame.data(), .iov_len = frame.size()};
  (void)proto::send(socket.native_handle(), std::span(&iov, 1));
}

}  // namespace

Broker::Broker(Config config)
    : config_(std::move(config)),
      policy_(std::make_shared<const Policy>(config_.policy)),
      broker_uid_(::geteuid()),
      accounts_(config_.limits),
      acceptor_(io_),
      signals_(io_, SIGINT, SIGTERM, SIGHUP),
      sweep_timer_(io_),
      router_(stats_),
      retained_(config_.limits.retained_max_bytes, accounts_),
      shm_(config_.limits, stats_,
           [this](std::uint64_t session, std::uint64_t segment) {
             if (Session* s = find(session)) s->shm_detached(segment);
           }),
      request_timer_(io_),
      outbox_context_{.limits = config_.limits,
                      .stats = stats_,
                      .pool = pool_,
                      .shm = &shm_,
                      .dirty = dirty_,
                      .wake = [this](std::uint64_t id) {
                        if (Session* s = find(id)) s->wake_reader();
                      },
                      .wake_uid = [this](UidAccount& account) { wake_uid_waiters(account); }} {}

Broker::~Broker() = default;

Session* Broker::find(std::uint64_t id) const {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second;
}

void Broker::flush_dirty() {
  // Flushing can make more outboxes dirty (none today), so work on a swapped list.
  while (!dirty_.empty()) {
    flushing_.swap(dirty_);
    for (Outbox* o : flushing_) {
      o->mark_clean();
      if (Session* s = find(o->id())) s->flush();
    }
    flushing_.clear();
  }
}

int Broker::run(std::optional<InheritedListener> inherited) {
  Listening listening;
  if (inherited) {
    config_.socket_path = inherited->name;
    listening.fd = std::move(inherited->fd);
  } else {
    auto bound = listen_on(config_.socket_path, config_.socket_mode,
                           config_.socket_group.empty() ? std::nullopt : std::optional<gid_t>(config_.socket_gid),
                           SOMAXCONN);
    if (!bound) {
      spdlog::error("{}", bound.error());
      return 1;
    }
    listening = std::move(*bound);
  }
  std::error_code ec;
  acceptor_.assign(asio::local::stream_protocol(), listening.fd.release(), ec);
  if (ec) {
    spdlog::error("cannot use the listening socket: {}", ec.message());
    return 1;
  }
  const std::string how =
      inherited ? std::string("socket passed by systemd: its mode and group are the .socket unit's")
      : config_.socket_path.starts_with('@')
          ? std::string("abstract socket: no file, no mode, any local process can connect; the policy decides")
          : fmt::format("mode {:04o}{}", config_.socket_mode,
                        config_.socket_group.empty() ? "" : ", group " + config_.socket_group);
  spdlog::info("brokerd {} listening on {} ({}; pid {}, uid {}{})", UBROKER_VERSION, config_.socket_path, how,
               ::getpid(), broker_uid_, config_.config_file.empty() ? "" : ", config " + config_.config_file);
  log_policy(*policy_);
  asio::co_spawn(io_, accept_loop(), log_failure("accept loop"));
  asio::co_spawn(io_, sweep_loop(), log_failure("deadline sweep"));
  asio::co_spawn(io_, signal_loop(), log_failure("signal handling"));
  asio::co_spawn(io_, request_deadline_loop(), log_failure("request deadlines"));
  notify_ready();  // listening: connections wait in the backlog until the loop runs
  proto::run_with_busy_poll(io_, config_.busy_poll);
  listening.file.remove();
  spdlog::info(
      "stopped: {} connections served, {} messages in, {} deliveries, {} dropped (overflow), "
      "{} dropped (disconnect), {} publisher blocks, {} slow consumers disconnected, {} protocol errors",
      stats_.connections_accepted, stats_.messages_in, stats_.deliveries, stats_.dropped_overflow,
      stats_.dropped_disconnect, stats_.publisher_blocks, stats_.slow_consumer_disconnects, stats_.protocol_errors);
  return 0;
}

void Broker::fd_starved(const std::string& why) {
  ++stats_.accepts_failed;
  FdStarvation& f = fd_starvation_;
  const auto now = Clock::now();
  if (!f.since) {
    f.since = f.last_log = now;
    f.failed_since_log = 0;
    const auto nofile = fd_limit();
    const std::string limit = nofile ? std::to_string(*nofile) : "unknown";
    spdlog::warn("cannot accept connections: {} ({} connections open, RLIMIT_NOFILE {}); the connected clients are "
                 "served, and accepting is retried every {} ms",
                 why, sessions_.size(), limit, kAcceptBackoff.count());
  } else if (++f.failed_since_log; now - f.last_log >= kRefusalLogInterval) {
    spdlog::warn("still cannot accept connections: {} ({} more failed)", why, f.failed_since_log);
    f.last_log = now;
    f.failed_since_log = 0;
  }
}

void Broker::fd_recovered() {
  if (!fd_starvation_.since) return;
  spdlog::info("accepting connections again after {} ms",
               std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - *fd_starvation_.since).count());
  fd_starvation_.since.reset();
}

asio::awaitable<void> Broker::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(kUseTuple);
    if (stopping_ || ec == asio::error::operation_aborted) co_return;
    if (ec && out_of_resources(ec)) {
      // Out of fds (or memory): the clients already connected go on being served.
      fd_starved(ec.message());
      asio::steady_timer backoff(io_, kAcceptBackoff);
      co_await backoff.async_wait(kUseTuple);
      continue;
    }
    if (ec) {
      spdlog::warn("accept: {}", ec.message());
      continue;
    }
    asio::co_spawn(io_, serve(std::move(socket)), log_failure("connection"));
  }
}

bool Broker::admit(Socket& socket, const proto::PeerCredentials& peer, const Grants& grants) {
  auto turn_away = [&](wire::ErrorCode code, const std::string& message) {
    ++stats_.connections_refused;
    ++stats_.errors_sent[code];
    if (auto due = refusal_due(peer.uid, code)) {
      log_refusal(fmt::format("a connection (pid {}, uid {}, gid {})", peer.pid, peer.uid, peer.gid), message, code,
                  peer.uid, *due);
    }
    refuse(socket, code, message);
    return false;  // the caller drops the socket, which closes it
  };
  const auto& l = config_.limits;
  if (sessions_.size() >= l.max_connections) {
    return turn_away(wire::LIMIT_EXCEEDED,
                     fmt::format("connection refused: {} connections are open (limits.max_connections = {})",
                                 sessions_.size(), l.max_connections));
  }
  if (const UidAccount* a = accounts_.find(peer.uid); a != nullptr && a->at_limit(Resource::kConnections)) {
    ++accounts_.of(peer.uid).limited;
    return turn_away(wire::LIMIT_EXCEEDED,
                     fmt::format("connection refused: uid {} has {} connections open (limits.max_connections_per_uid "
                                 "= {})",
                                 peer.uid, a->used(Resource::kConnections), l.max_connections_per_uid));
  }
  if (!grants.any()) {
    return turn_away(wire::PERMISSION_DENIED,
                     fmt::format("connection refused: uid {} (gid {}) has no rights in the broker's access policy "
                                 "(default deny; see [[policy.allow]] in {})",
                                 peer.uid, peer.gid, config_.config_file.empty() ? "the config" : config_.config_file));
  }
  return true;
}

asio::awaitable<void> Broker::serve(Socket socket) {
  auto peer = proto::read_peer_credentials(socket.native_handle());
  if (!peer && out_of_resources(peer.error())) {
    // Accepting took the last fd, and checking the peer needs one more (a pidfd).
    fd_starved(peer.error().message());
    refuse(socket, wire::LIMIT_EXCEEDED,
           "the broker is out of file descriptors (RLIMIT_NOFILE); try again later");
    co_return;
  }
  if (!peer) {
    ++stats_.connections_refused;
    spdlog::warn("dropping a connection: cannot read peer credentials: {}", peer.error().message());
    co_return;
  }
  fd_recovered();
  Grants grants = grants_for(*peer);
  if (!admit(socket, *peer, grants)) co_return;
  const std::uint64_t id = next_id_++;
  ++stats_.connections_accepted;
  Session session(*this, std::move(socket), std::move(*peer), std::move(grants), id);
  sessions_.emplace(id, &session);
  if (stopping_) session.begin_shutdown();
  co_await session.run();
  sessions_.erase(id);
}

asio::awaitable<void> Broker::sweep_loop() {
  for (;;) {
    sweep_timer_.expires_after(kSweepInterval);
    co_await sweep_timer_.async_wait(kUseTuple);
    const auto now = Clock::now();
    for (auto& [id, s] : sessions_) s->check_deadlines(now);
    lanes_.sweep(now);
    if (now - last_rate_tick_ >= std::chrono::seconds(1)) {
      router_.tick_rates(std::chrono::duration<double>(now - last_rate_tick_).count());
      last_rate_tick_ = now;
      give_back_memory();
    }
    flush_dirty();
    if (stopping_ && sessions_.empty()) {
      std::error_code ignored;
      signals_.cancel(ignored);
      request_timer_.cancel();
      co_return;
    }
  }
}

asio::awaitable<void> Broker::signal_loop() {
  for (;;) {
    auto [ec, signo] = co_await signals_.async_wait(kUseTuple);
    if (ec) co_return;
    if (signo == SIGHUP) {
      (void)reload();  // an invalid file is logged and changes nothing
      continue;
    }
    if (stopping_) {
      spdlog::warn("{} again: closing every connection now", signo == SIGINT ? "SIGINT" : "SIGTERM");
      for (auto& [id, s] : sessions_) s->force_close();
      continue;
    }
    stop(signo == SIGINT ? "SIGINT" : "SIGTERM");
  }
}

asio::awaitable<void> Broker::request_deadline_loop() {
  for (;;) {
    const auto next = requests_.next_deadline();
    request_timer_.expires_at(next ? *next : Clock::time_point::max());
    co_await request_timer_.async_wait(kUseTuple);
    if (stopping_ && sessions_.empty()) co_return;
    requests_.expire(Clock::now(), [&](const PendingRequest& p) {
      ++stats_.request_timeouts;
      if (p.topic != nullptr) ++p.topic->served.timeouts;
      if (Session* responder = find(p.responder)) {
        if (ServiceCounts* counts = router_.service_counts(responder->outbox(), p.service)) ++counts->timeouts;
      }
      tracer_.failure(p.traced_topic, p.id, p.caller, "TIMEOUT", "no reply before the request's deadline");
      if (Session* caller = find(p.caller)) {
        caller->request_finished();
        caller->send_error(wire::TIMEOUT, "no reply before the request's deadline", false, p.caller_seq);
      }
    });
    flush_dirty();
  }
}

Grants Broker::grants_for(const proto::PeerCredentials& peer) const {
  return Grants(policy_, {.uid = peer.uid, .gid = peer.gid, .groups = peer.groups}, broker_uid_);
}

void Broker::log_policy(const Policy& policy) const {
  if (policy.open) {
    spdlog::warn("ACCESS POLICY IS OPEN: every local user may publish, subscribe, request, serve and administer "
                 "everything (policy.open = true; for single-user development only)");
  } else {
    spdlog::info("access policy: uid {} and root may do everything; {} rule(s) for others; everyone else is denied",
                 broker_uid_, policy.rules.size());
  }
}

std::expected<void, std::string> Broker::reload() {
  // The service manager sees the reload begin and end (READY=1 again), whatever its outcome.
  notify_reloading();
  struct ReadyAgain {
    ~ReadyAgain() { notify_ready(); }
  } ready_again;
  if (config_.config_file.empty()) {
    spdlog::info("reload: brokerd was started without --config; the default policy stays");
    return {};
  }
  Config fresh;
  auto loaded = load_config_file(config_.config_file, fresh);
  if (loaded) loaded = validate(fresh);
  if (!loaded) {
    spdlog::error("reload refused, the current policy stays: {}", loaded.error());
    return loaded;
  }
  policy_ = std::make_shared<const Policy>(std::move(fresh.policy));
  spdlog::info("reload: policy reloaded from {} (other settings take effect at restart)", config_.config_file);
  log_policy(*policy_);
  std::size_t revoked = 0;
  for (auto& [id, s] : sessions_) revoked += s->apply_grants(grants_for(s->peer()));
  if (revoked != 0) spdlog::warn("reload: {} subscription(s) and service(s) no longer allowed were removed", revoked);
  (void)lanes_.subscriptions_changed();  // removed subscriptions, and publish rights taken away
  flush_dirty();
  return {};
}

void Broker::wake_uid_waiters(UidAccount& account) {
  std::vector<std::uint64_t> waiting;
  waiting.swap(account.waiters);
  for (std::uint64_t id : waiting) {
    if (Session* s = find(id)) s->wake_reader();
  }
}

std::optional<Broker::RefusalNote> Broker::refusal_due(uid_t uid, wire::ErrorCode code) {
  const auto now = Clock::now();
  if (refusal_log_.size() > 4096) refusal_log_.clear();  // bounded whatever the mix of uids
  auto& state = refusal_log_[(std::uint64_t{uid} << 32) | static_cast<std::uint32_t>(code)];
  if (state.last != Clock::time_point{} && now - state.last < kRefusalLogInterval) {
    ++state.suppressed;
    return std::nullopt;
  }
  const RefusalNote note{.suppressed = state.suppressed,
                         .since_s = std::chrono::duration_cast<std::chrono::seconds>(now - state.last).count()};
  state.last = now;
  state.suppressed = 0;
  return note;
}

void Broker::log_refusal(std::string_view who, std::string_view message, wire::ErrorCode code, uid_t uid,
                         const RefusalNote& note) const {
  // The message quotes what the client sent (topics, patterns): escaped, so it stays one line.
  if (note.suppressed != 0) {
    spdlog::warn("{}: refused: {} ({}; {} more {} refusal(s) of uid {} in the last {} s were counted, not logged)",
                 who, escape_for_log(message), wire::ErrorCode_Name(code), note.suppressed,
                 wire::ErrorCode_Name(code), uid, note.since_s);
  } else {
    spdlog::warn("{}: refused: {} ({})", who, escape_for_log(message), wire::ErrorCode_Name(code));
  }
}

void Broker::request_added(Clock::time_point deadline) {
  if (deadline < request_timer_.expiry()) request_timer_.cancel();  // the loop re-arms
}

void Broker::session_gone(Session& s) {
  std::vector<std::string> services;
  for (const auto& [id, sub] : router_.subscriptions_of(s.outbox())) {
    if (sub->service) services.push_back(sub->pattern);
  }
  router_.remove_owner(s.outbox());
  lanes_.session_gone(s.id());
  requests_.drop_session(s.id(), [&](const PendingRequest& p) {
    ++stats_.responder_gone;
    if (p.topic != nullptr) ++p.topic->served.timeouts;  // unanswered, as far as the topic goes
    tracer_.failure(p.traced_topic, p.id, p.caller, "RESPONDER_GONE", "the responder disconnected before replying");
    if (Session* caller = find(p.caller)) {
      caller->request_finished();
      caller->send_error(wire::RESPONDER_GONE,
                         fmt::format("the responder (client {}) disconnected before replying", s.id()), false,
                         p.caller_seq);
    }
  });
  if (s.welcomed()) {
    for (const auto& pattern : services) service_event(s, pattern, false);
    client_event(s, false);
  }
  flush_dirty();
}

void Broker::give_back_memory() {
  // glibc keeps freed heap for reuse: after clients that held a lot go away (a uid's worth of
  // subscriptions, queues, retained values), the broker's resident set would stay at its peak.
  // Once what the accounts hold has fallen well below the peak since the last trim, the free
  // memory goes back to the kernel.
  constexpr std::uint64_t kTrimAfterBytes = 32u << 20;
  const std::uint64_t held = accounts_.memory_bytes();
  peak_held_ = std::max(peak_held_, held);
  if (peak_held_ - held < kTrimAfterBytes) return;
  ::malloc_trim(0);
  peak_held_ = held;
}

void Broker::stop(std::string_view why) {
  stopping_ = true;
  notify_stopping();
  spdlog::info("{}: stopping; flushing {} connections (deadline {} ms)", why, sessions_.size(),
               config_.timeouts.shutdown.count());
  std::error_code ignored;
  acceptor_.close(ignored);
  for (auto& [id, s] : sessions_) s->begin_shutdown();
}

}  // namespace ubroker::broker
