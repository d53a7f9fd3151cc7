// ClientCore's reconnecting: the dial loop with backoff and jitter, on its own thread so a
// slow dial never blocks an application's io_context; and the I/O thread's switch to the new
// connection: subscriptions and services sent again first, then the publishes not yet written.
#include <fmt/format.h>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <cstring>
#include <limits>
#include <random>

#include "client_core.hpp"
#include "ubroker/proto/frame_codec.hpp"

namespace ubroker::detail {
namespace {

// The wait before dial `attempt` (1-based): uniform in [d/2, d], d = min(max, initial * 2^(attempt-1)).
std::chrono::milliseconds backoff(const ReconnectOptions& o, unsigned attempt, std::minstd_rand& rng) {
  const std::int64_t initial = std::max<std::int64_t>(o.initial_delay.count(), 1);
  const std::int64_t cap = std::max<std::int64_t>(o.max_delay.count(), initial);
  std::int64_t d = initial;
  for (unsigned i = 1; i < attempt && d < cap; ++i) d *= 2;
  d = std::min(d, cap);
  return std::chrono::milliseconds(std::uniform_int_distribution<std::int64_t>(d / 2, d)(rng));
}

bool is_plain_publish(const wire::Header& h) {
  return h.type() == wire::PUBLISH && !h.has_shm();
}

void append_frame(std::vector<std::byte>& out, const wire::Header& h, std::span<const std::byte> payload) {
  const std::size_t head = proto::frame_head_size(h);
  const std::size_t at = out.size();
  out.resize(at + head + payload.size());
  proto::write_frame_head(out.data() + at, h, payload.size());
  if (!payload.empty()) std::memcpy(out.data() + at + head, payload.data(), payload.size());
}

}  // namespace

void ClientCore::reconnect_loop() {
  std::minstd_rand rng(std::random_device{}());
  UniqueLock lk(state_mu_);
  for (;;) {
    reconnect_cv_.wait(lk.native(), [&] {
      state_mu_.assert_held();
      return closed() || reconnect_wanted_;
    });
    if (closed()) return;
    reconnect_wanted_ = false;
    for (unsigned attempt = 1;; ++attempt) {
      if (reconnect_cv_.wait_for(lk.native(), backoff(options_.reconnect, attempt, rng), [&] { return closed(); })) {
        return;
      }
      lk.unlock();
      auto dialed = dial(options_);
      lk.lock();
      if (closed()) return;
      if (dialed) {
        auto self = weak_from_this().lock();
        if (!self) return;  // being destroyed
        // Moved, not copied: were this thread left holding the last reference, the core would
        // be destroyed here, with state_mu_ held.
        post_to_strand([self = std::move(self), d = std::make_shared<Dialed>(std::move(*dialed)), attempt] {
          self->install(std::move(d), attempt);
        });
        break;
      }
      if (options_.reconnect.max_attempts != 0 && attempt >= options_.reconnect.max_attempts) {
        Error why{Errc::kNotConnected,
                  fmt::format("gave up reconnecting after {} attempts: {}", attempt, dialed.error().message)};
        disconnect_reason_ = why;
        notify({.event = ConnectionEvent::kClosed, .reason = std::move(why), .attempts = attempt});
        close_locked();
        lk.unlock();
        wake_waiters();
        return;
      }
    }
  }
}

void ClientCore::install(std::shared_ptr<Dialed> d, unsigned attempts) {
  lane_pub_.close_all();  // the old connection's (before the locks: publish() takes the lanes' first)
  lane_sub_.close_all();
  {
    // This client's ring was known only to the old broker; a loan needs a new one. (Not
    // under state_mu_: producer_ring() takes ring_mu_ first. No ring can be registered
    // meanwhile: that needs a connection.)
    LockGuard rl(ring_mu_);
    ring_.reset();
  }
  UniqueLock sl(state_mu_);  // lock order: state_mu_, then write_mu_
  if (closed()) return;      // the new socket closes with `d`
  UniqueLock wl(write_mu_);
  if (writer_active_) {
    // A writer still holds the old socket (and is failing on it now): switch once it lets go.
    auto timer = std::make_shared<asio::steady_timer>(strand_, std::chrono::milliseconds(1));
    timer->async_wait([self = shared_from_this(), timer, d = std::move(d), attempts](const std::error_code&) mutable {
      self->install(std::move(d), attempts);
    });
    return;
  }
  writer_active_ = true;  // held through the switch; drive_writes() below gives it up
  generation_.fetch_add(1);
  watch_socket(fd_.load(), -1);  // before its number can be reused
  std::error_code ec;
  socket_.close(ec);  // the old socket's pending waits complete, see the new generation, stand down
  socket_.assign(asio::local::stream_protocol(), d->fd.get(), ec);
  if (ec) {
    fd_.store(-1);
    writer_active_ = false;
    reconnect_wanted_ = true;  // try again with another dial
    reconnect_cv_.notify_all();
    return;
  }
  fd_.store(d->fd.release());
  watch_socket(-1, fd_.load());

  const wire::Limits& limits = d->welcomed.limits;
  client_id_.store(d->welcomed.client_id);
  max_frame_bytes_.store(limits.max_frame_bytes());
  shm_max_segment_bytes_.store(limits.shm_max_segment_bytes());
  const std::vector<std::byte>& leftover = d->welcomed.leftover;
  rbuf_.resize(std::max(rbuf_.size(), read_buffer_size(limits.max_frame_bytes())));
  if (!leftover.empty()) std::memcpy(rbuf_.data(), leftover.data(), leftover.size());
  rbegin_ = 0;
  rend_ = leftover.size();
  rfds_.clear();
  // Bulk payloads: messages still held keep the old reader and its mappings; the new broker's
  // segments get a fresh one.
  reader_ = make_reader();
  rebuild_outgoing_locked();
  read_paused_for_writes_ = false;
  link_.store(LinkState::kConnected, std::memory_order_release);
  counters_.reconnects.fetch_add(1, std::memory_order_relaxed);
  notify({.event = ConnectionEvent::kReconnected, .attempts = attempts});
  wl.unlock();
  sl.unlock();
  drive_writes();
  on_readable();
}

template <class Visit>
void ClientCore::for_each_unsent_frame_locked(Visit&& visit) {
  const proto::FrameLimits any{.max_frame = std::numeric_limits<std::uint32_t>::max(),
                               .max_header = std::numeric_limits<std::uint32_t>::max()};
  wire::Header h;
  auto walk = [&](const std::vector<std::byte>& buf, std::size_t written) {
    for (std::size_t at = 0; at < buf.size();) {
      auto split = proto::split_frame({buf.data() + at, buf.size() - at}, any);
      if (!split || !split->complete || !proto::parse_header(split->header, h)) return;  // cannot happen: we wrote them
      // A frame the broker did not get whole was discarded by it: it may be sent again.
      if (at + split->frame_size > written) visit(h, split->payload);
      at += split->frame_size;
    }
  };
  walk(sending_, sending_off_);
  walk(pending_, 0);
}

void ClientCore::rebuild_outgoing_locked() {
  std::vector<std::byte> out;
  // Subscriptions and services first, under their old ids: the publishes behind them, and
  // whatever the broker delivers, find them in place.
  for (const auto& [id, sub] : subs_) {
    if (!sub->active.load()) continue;
    const std::uint64_t seq = next_seq_++;
    set_answer_callback_locked(seq, [weak = weak_from_this(), id, pattern = sub->request.topic()](Result<Message> r) {
      if (r || r.error().code == Errc::kBrokerGone || r.error().code == Errc::kNotConnected) return;
      auto self = weak.lock();
      if (!self) return;
      self->forget_subscription(id);
      self->report(Error{r.error().code, fmt::format("'{}' could not be restored after reconnecting: {}", pattern,
                                                     r.error().message)});
    });
    wire::Header h = sub->request;
    h.set_seq(seq);
    append_frame(out, h, {});
  }
  if (status_) append_frame(out, *status_, {});
  std::uint64_t carried = 0;
  for_each_unsent_frame_locked([&](const wire::Header& h, std::span<const std::byte> payload) {
    if (is_plain_publish(h) && h.value() != kAlsoByLane) {
      append_frame(out, h, payload);
      ++carried;
    } else if (h.type() == wire::PUBLISH) {
      // Its segment was the old broker's, or its lane subscribers may have it: sent again, it
      // could reach them twice.
      counters_.publishes_discarded.fetch_add(1, std::memory_order_relaxed);  // its segment was the old broker's
    }
    // Other frames (answers awaited, releases, replies) belonged to the old connection.
  });
  counters_.publishes_resent.fetch_add(carried - std::min(carried, buffered_this_outage_), std::memory_order_relaxed);
  buffered_this_outage_ = 0;
  pending_ = std::move(out);
  pending_fds_.clear();
  loop_unsent_ = 0;  // what is carried over are publishes
  sending_.clear();
  sending_fds_.clear();
  sending_off_ = 0;
}

void ClientCore::discard_unsent_locked() {
  std::uint64_t publishes = 0;
  for_each_unsent_frame_locked([&](const wire::Header& h, std::span<const std::byte>) {
    publishes += h.type() == wire::PUBLISH ? 1 : 0;
  });
  counters_.publishes_discarded.fetch_add(publishes, std::memory_order_relaxed);
  pending_.clear();
  pending_fds_.clear();
  loop_unsent_ = 0;
  sending_.clear();
  sending_fds_.clear();
  sending_off_ = 0;
}

void ClientCore::forget_subscription(std::uint64_t id) {
  LockGuard lk(state_mu_);
  if (auto it = subs_.find(id); it != subs_.end()) {
    it->second->active.store(false);
    erase_sub_locked(id);
  }
}

}  // namespace ubroker::detail
