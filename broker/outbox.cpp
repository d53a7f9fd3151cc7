// Outbox: the bounded outbound queue, its flow control and its writes (see outbox.hpp).
#include "outbox.hpp"

#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "shm_registry.hpp"
#include "slots.hpp"
#include "ubroker/proto/fd_socket.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/shm/syscall.hpp"

namespace ubroker::broker {
namespace {

// Payloads up to this size are copied into the queue (cheaper than a reference for small
// messages); larger ones are referenced in the publisher's chunk.
constexpr std::size_t kInlinePayloadMax = 1024;

}  // namespace

Outbox::Outbox(OutboxContext& ctx, int fd, std::uint64_t owner_id, ConnectionAccount& account)
    : ctx_(ctx), fd_(fd), id_(owner_id), account_(account), out_(ctx.pool) {}

Outbox::~Outbox() {
  ctx_.dirty.erase(std::remove(ctx_.dirty.begin(), ctx_.dirty.end(), this), ctx_.dirty.end());
  ctx_.stats.dropped_disconnect += out_.deliveries();
  notify_waiters();
  account_.set(Resource::kQueuedBytes, 0);
  if (!account_.uid().waiters.empty()) ctx_.wake_uid(account_.uid());
}

bool Outbox::own_room() const noexcept {
  return out_.messages() < ctx_.limits.queue_max_messages && out_.bytes() < ctx_.limits.queue_max_bytes;
}

bool Outbox::has_room() const noexcept {
  return own_room() && !account_.uid().at_limit(Resource::kQueuedBytes);
}

bool Outbox::has_room_for(std::size_t messages, std::size_t bytes, std::size_t uid_bytes) const noexcept {
  return out_.messages() + messages <= ctx_.limits.queue_max_messages &&
         out_.bytes() + bytes <= ctx_.limits.queue_max_bytes && account_.uid().fits(Resource::kQueuedBytes, uid_bytes);
}

bool Outbox::below_low_watermark() const noexcept {
  return out_.messages() <= ctx_.limits.queue_max_messages / 2 && out_.bytes() <= ctx_.limits.queue_max_bytes / 2;
}

void Outbox::account_queue() {
  const bool shrank = account_.set(Resource::kQueuedBytes, out_.bytes());
  UidAccount& uid = account_.uid();
  if (shrank && !uid.waiters.empty() && uid.used(Resource::kQueuedBytes) <= uid.limit(Resource::kQueuedBytes) / 2) {
    ctx_.wake_uid(uid);
  }
}

void Outbox::hold_back(std::uint64_t publisher_id) {
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

void Outbox::notify_waiters() {
  if (waiters_.empty()) return;
  waking_.swap(waiters_);
  for (std::uint64_t id : waking_) ctx_.wake(id);
  waking_.clear();
}

void Outbox::mark_dirty() {
  // A queue that just became non-empty starts its slow-consumer clock now.
  if (out_.messages() == 1) last_progress_ = Clock::now();
  if (!dirty_) {
    dirty_ = true;
    ctx_.dirty.push_back(this);
  }
}

bool Outbox::queue_frame(const wire::Header& h, std::span<const std::byte> payload, const ChunkRef* chunk) {
  const std::size_t head = proto::frame_head_size(h);
  const std::size_t size = payload.size();
  const bool copy = size <= kInlinePayloadMax || chunk == nullptr;
  std::byte* p = out_.append_inline(head + (copy ? size : 0));
  proto::write_frame_head(p, h, size);
  return finish_frame(p + head, payload, chunk, copy, h.type() == wire::DELIVER);
}

bool Outbox::queue_delivery(std::span<const std::byte> head, std::span<const std::byte> payload,
                            const ChunkRef* chunk) {
  const bool copy = payload.size() <= kInlinePayloadMax || chunk == nullptr;
  std::byte* p = out_.append_inline(head.size() + (copy ? payload.size() : 0));
  std::memcpy(p, head.data(), head.size());
  return finish_frame(p + head.size(), payload, chunk, copy, true);
}

void Outbox::queue_delivery_run(std::span<const std::byte> head,
                                std::span<const std::span<const std::byte>> payloads) {
  const std::uint32_t header_len = static_cast<std::uint32_t>(head.size() - proto::kPrefixSize);
  // A queue that was empty starts its slow-consumer clock now (mark_dirty sees only the last frame).
  if (out_.messages() == 0) last_progress_ = Clock::now();
  for (const std::span<const std::byte> payload : payloads) {
    std::byte* p = out_.append_inline(head.size() + payload.size());  // extends the same piece
    std::memcpy(p, head.data(), head.size());
    proto::write_prefix(p, static_cast<std::uint32_t>(header_len + payload.size()), header_len);
    if (!payload.empty()) std::memcpy(p + head.size(), payload.data(), payload.size());
    out_.end_message(true);
  }
  account_queue();
  mark_dirty();
}

bool Outbox::finish_frame(std::byte* payload_at, std::span<const std::byte> payload, const ChunkRef* chunk,
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

Outbox::Write Outbox::send_some() {
  std::array<iovec, 256> iov;
  Write result = Write::kDrained;
  while (!out_.empty()) {
    OutQueue::Fds fds;
    const std::size_t n = out_.gather(iov, fds);
    std::size_t offered = 0;
    for (std::size_t i = 0; i < n; ++i) offered += iov[i].iov_len;
    auto sent = proto::send(fd_, std::span(iov.data(), n), fds.view());
    if (!sent) {
      result = proto::would_block(sent.error()) ? Write::kBlocked : Write::kFailed;
      break;
    }
    const auto done = out_.consume(*sent);
    ctx_.stats.deliveries_written += done.deliveries;
    written_messages_ += done.messages;
    written_bytes_ += *sent;
    account_queue();
    last_progress_ = Clock::now();
    if (*sent < offered) {  // the socket buffer is full: the next try would say EAGAIN
      result = Write::kBlocked;
      break;
    }
  }
  if (!waiters_.empty() && below_low_watermark()) notify_waiters();
  return result;
}

std::optional<std::string> Outbox::slow(Clock::time_point now, std::chrono::milliseconds slow_consumer) {
  // A queue is stuck when it is full itself, or when it holds bytes its uid's budget needs
  // (without this, clients that each stay under their own limit could hold their uid at its
  // budget, and the publishers behind it, forever).
  const bool uid_full = account_.uid().at_limit(Resource::kQueuedBytes);
  const auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  std::optional<std::string> why;
  if ((!own_room() || (uid_full && !out_.empty())) && now - last_progress_ > slow_consumer) {
    why = !own_room() ? fmt::format("outbound queue full (limits.queue_max_messages/queue_max_bytes) with no "
                                    "progress for {} ms",
                                    ms(slow_consumer))
                      : fmt::format("uid {}'s queues at limits.queue_max_bytes_per_uid with no progress for {} ms",
                                    account_.uid().uid(), ms(slow_consumer));
  }
  // And a consumer that reads, but so slowly that it holds publishers back while taking less
  // than half its queue per slow_consumer_ms (in messages and in bytes), is cut off too:
  // progress alone does not entitle it to stall its publishers for ever. A hold lasts while
  // publishers wait on this queue at every check; it ends at a check that finds none waiting.
  if (!waiters_.empty()) holding_.seen = true;
  if (!holding_.seen) {
    holding_.since = Clock::time_point::max();
  } else if (!why && holding_.since != Clock::time_point::max() && now - holding_.since > slow_consumer) {
    const double periods = std::chrono::duration<double>(now - holding_.since) / slow_consumer;
    const std::uint64_t messages = written_messages_ - holding_.messages_at;
    const std::uint64_t bytes = written_bytes_ - holding_.bytes_at;
    if (static_cast<double>(messages) < periods * static_cast<double>(ctx_.limits.queue_max_messages / 2) &&
        static_cast<double>(bytes) < periods * static_cast<double>(ctx_.limits.queue_max_bytes / 2)) {
      why = fmt::format("publishers held back for {} ms while it took {} messages ({} bytes), less than half its "
                        "queue per slow_consumer_ms",
                        ms(now - holding_.since), messages, bytes);
    }
  }
  holding_.seen = false;
  return why;
}

std::size_t Outbox::cut_off() {
  const std::size_t dropped = out_.discard_unsent().deliveries;
  account_queue();
  ctx_.stats.dropped_disconnect += dropped;
  notify_waiters();
  return dropped;
}

std::expected<proto::ShmPart, BulkDrop> Outbox::hold_bulk(const BulkRef& bulk) {
  // Each held delivery pins a record and the publisher's space in its segment until this
  // client releases it: bounded per client and per uid, beyond which deliveries are dropped
  // for this receiver (and counted by the caller), never held for ever.
  UidAccount& uid = account_.uid();
  if (account_.used(Resource::kBulkHolds) >= ctx_.limits.shm_max_holds_per_client ||
      !uid.fits(Resource::kBulkHolds, 1)) {
    ++uid.limited;
    return std::unexpected(BulkDrop::kHoldLimit);
  }
  ShmRegistry& registry = *ctx_.shm;
  ShmSegment& seg = registry.segment_of(bulk.record);
  auto passed = pass_segment(seg);
  if (!passed) {
    ++uid.limited;
    return std::unexpected(passed.error());
  }
  const bool first = *passed;
  const std::uint32_t index = take_slot(holds_, free_holds_);
  Hold& hold = holds_[index];
  hold.record = bulk.record;
  ++hold.generation;
  hold.live = true;
  registry.hold(bulk.record);
  account_.charge(Resource::kBulkHolds, 1);
  const auto& ref = registry.ref_of(bulk.record);
  return proto::ShmPart{.segment = seg.id,
                        .offset = ref.offset,
                        .length = ref.length,
                        .token = (std::uint64_t{hold.generation} << 32) | index,
                        .carries_fd = first};
}

std::expected<bool, BulkDrop> Outbox::pass_segment(ShmSegment& seg) {
  if (std::find(shm_attached_.begin(), shm_attached_.end(), seg.id) != shm_attached_.end()) return false;
  ShmRegistry& registry = *ctx_.shm;
  const std::uint32_t uid = account_.uid().uid();
  if (!registry.attach_fd(uid)) return std::unexpected(BulkDrop::kNoFd);
  // The queue owns a duplicate until it is sent, so the fd it sends is this segment's even if
  // the segment goes away meanwhile.
  shm::UniqueFd dup(::fcntl(seg.fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!dup) {
    registry.detach_fd(uid);
    return std::unexpected(BulkDrop::kNoFd);
  }
  out_.attach_fd(std::move(dup));
  shm_attached_.push_back(seg.id);
  seg.attached.push_back(id_);
  return true;
}

std::size_t Outbox::release(std::span<const std::uint64_t> tokens, std::uint64_t& first_refused) {
  std::size_t refused = 0;
  for (const std::uint64_t token : tokens) {
    const auto index = static_cast<std::uint32_t>(token);
    const auto generation = static_cast<std::uint32_t>(token >> 32);
    if (index >= holds_.size() || !holds_[index].live || holds_[index].generation != generation) {
      if (refused++ == 0) first_refused = token;
      continue;
    }
    holds_[index].live = false;
    free_holds_.push_back(index);
    account_.credit(Resource::kBulkHolds, 1);
    ctx_.shm->release(holds_[index].record);
  }
  return refused;
}

void Outbox::release_all() {
  if (ctx_.shm == nullptr) return;
  for (Hold& hold : holds_) {
    if (!hold.live) continue;
    hold.live = false;
    ctx_.shm->release(hold.record);
  }
  account_.set(Resource::kBulkHolds, 0);
  for (std::size_t i = 0; i < shm_attached_.size(); ++i) ctx_.shm->detach_fd(account_.uid().uid());
  shm_attached_.clear();
}

bool Outbox::segment_gone(std::uint64_t segment) {
  auto it = std::find(shm_attached_.begin(), shm_attached_.end(), segment);
  if (it == shm_attached_.end()) return false;
  shm_attached_.erase(it);
  ctx_.shm->detach_fd(account_.uid().uid());
  return true;
}

}  // namespace ubroker::broker
