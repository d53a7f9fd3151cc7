// Broker: accept loop, per-connection coroutine, deadline sweep, signals and shutdown.
#include "broker.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>
#include <csignal>

#include "listener.hpp"
#include "session.hpp"
#include "ubroker/proto/fd_socket.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/peer_credentials.hpp"

namespace ubroker::broker {
namespace {

constexpr auto kUseTuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr auto kSweepInterval = std::chrono::milliseconds(100);
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);

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
      acceptor_(io_),
      signals_(io_, SIGINT, SIGTERM, SIGHUP),
      sweep_timer_(io_),
      router_(stats_),
      retained_(config_.limits.retained_max_bytes),
      shm_(config_.limits, stats_,
           [this](std::uint64_t session, std::uint64_t segment) {
             if (Session* s = find(session)) s->shm_detached(segment);
           }),
      request_timer_(io_) {}

Broker::~Broker() = default;

Session* Broker::find(std::uint64_t id) const {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second;
}

void Broker::flush_dirty() {
  // Flushing can make more sessions dirty (none today), so work on a swapped list.
  while (!dirty_.empty()) {
    flushing_.swap(dirty_);
    for (Session* s : flushing_) s->flush();
    flushing_.clear();
  }
}

void Broker::forget(Session& s) {
  dirty_.erase(std::remove(dirty_.begin(), dirty_.end(), &s), dirty_.end());
}

int Broker::run() {
  auto listening = listen_on(config_.socket_path, config_.socket_mode, SOMAXCONN);
  if (!listening) {
    spdlog::error("{}", listening.error());
    return 1;
  }
  std::error_code ec;
  acceptor_.assign(asio::local::stream_protocol(), listening->fd.release(), ec);
  if (ec) {
    spdlog::error("cannot use the listening socket: {}", ec.message());
    return 1;
  }
  spdlog::info("brokerd {} listening on {} (pid {}, mode {:04o}{})", UBROKER_VERSION, config_.socket_path, ::getpid(),
               config_.socket_mode, config_.config_file.empty() ? "" : ", config " + config_.config_file);
  asio::co_spawn(io_, accept_loop(), log_failure("accept loop"));
  asio::co_spawn(io_, sweep_loop(), log_failure("deadline sweep"));
  asio::co_spawn(io_, signal_loop(), log_failure("signal handling"));
  asio::co_spawn(io_, request_deadline_loop(), log_failure("request deadlines"));
  io_.run();
  listening->file.remove();
  spdlog::info(
      "stopped: {} connections served, {} messages in, {} deliveries, {} dropped (overflow), "
      "{} dropped (disconnect), {} publisher blocks, {} slow consumers disconnected, {} protocol errors",
      stats_.connections_accepted, stats_.messages_in, stats_.deliveries, stats_.dropped_overflow,
      stats_.dropped_disconnect, stats_.publisher_blocks, stats_.slow_consumer_disconnects, stats_.protocol_errors);
  return 0;
}

asio::awaitable<void> Broker::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(kUseTuple);
    if (stopping_ || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // Out of fds or memory: keep serving existing clients, retry shortly.
      if (out_of_resources(ec)) {
        spdlog::warn("accept: {}; retrying in {} ms", ec.message(), kAcceptBackoff.count());
        asio::steady_timer backoff(io_, kAcceptBackoff);
        co_await backoff.async_wait(kUseTuple);
      } else {
        spdlog::warn("accept: {}", ec.message());
      }
      continue;
    }
    if (sessions_.size() >= config_.limits.max_connections) {
      ++stats_.connections_refused;
      spdlog::warn("refusing a connection: {} connections open (limits.max_connections)", sessions_.size());
      refuse(socket, wire::LIMIT_EXCEEDED,
             fmt::format("too many connections (limits.max_connections = {})", config_.limits.max_connections));
      continue;  // the socket closes as it goes out of scope
    }
    asio::co_spawn(io_, serve(std::move(socket)), log_failure("connection"));
  }
}

asio::awaitable<void> Broker::serve(Socket socket) {
  auto peer = proto::read_peer_credentials(socket.native_handle());
  if (!peer) {
    ++stats_.connections_refused;
    spdlog::warn("dropping a connection: cannot read peer credentials: {}", peer.error().message());
    co_return;
  }
  const std::uint64_t id = next_id_++;
  ++stats_.connections_accepted;
  Session session(*this, std::move(socket), std::move(*peer), id);
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
    if (now - last_rate_tick_ >= std::chrono::seconds(1)) {
      router_.tick_rates(std::chrono::duration<double>(now - last_rate_tick_).count());
      last_rate_tick_ = now;
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
      reload();
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
      if (Session* caller = find(p.caller)) {
        --caller->pending_requests();
        caller->send_error(wire::TIMEOUT, "no reply before the request's deadline", false, p.caller_seq);
      }
    });
    flush_dirty();
  }
}

void Broker::reload() {
  spdlog::info("reload: nothing to reload in this version (no policy file yet)");
}

void Broker::request_added(Clock::time_point deadline) {
  if (deadline < request_timer_.expiry()) request_timer_.cancel();  // the loop re-arms
}

void Broker::session_gone(Session& s) {
  std::vector<std::string> services;
  for (const auto& [id, sub] : s.subscriptions()) {
    if (sub->service) services.push_back(sub->pattern);
  }
  router_.remove_session(s);
  requests_.drop_session(s.id(), [&](const PendingRequest& p) {
    ++stats_.responder_gone;
    if (Session* caller = find(p.caller)) {
      --caller->pending_requests();
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

void Broker::stop(std::string_view why) {
  stopping_ = true;
  spdlog::info("{}: stopping; flushing {} connections (deadline {} ms)", why, sessions_.size(),
               config_.timeouts.shutdown.count());
  std::error_code ignored;
  acceptor_.close(ignored);
  for (auto& [id, s] : sessions_) s->begin_shutdown();
}

}  // namespace ubroker::broker
