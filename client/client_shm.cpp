// ClientCore's shared memory: the producer ring (created and registered on first use),
// loans, bulk publishes, and the batched releases of bulk messages received.
#include <fmt/format.h>

#include "client_core.hpp"
#include "ubroker/proto/topic.hpp"
#include "ubroker/shm/producer_ring.hpp"

namespace ubroker {

Loan::Loan(Loan&& o) noexcept
    : ring_(std::move(o.ring_)),
      segment_(o.segment_),
      offset_(o.offset_),
      topic_(std::move(o.topic_)),
      data_(std::exchange(o.data_, {})) {}

Loan& Loan::operator=(Loan&& o) noexcept {
  if (this != &o) {
    if (ring_) ring_->abandon({.offset = offset_, .length = data_.size()});
    ring_ = std::move(o.ring_);
    segment_ = o.segment_;
    offset_ = o.offset_;
    topic_ = std::move(o.topic_);
    data_ = std::exchange(o.data_, {});
  }
  return *this;
}

Loan::~Loan() {
  if (ring_) ring_->abandon({.offset = offset_, .length = data_.size()});
}

namespace detail {

Result<std::shared_ptr<shm::ProducerRing>> ClientCore::producer_ring() {
  LockGuard lk(ring_mu_);
  if (ring_) return ring_;
  const std::uint64_t max_segment = shm_max_segment_bytes_.load(std::memory_order_relaxed);
  if (max_segment == 0) {
    return std::unexpected(Error{Errc::kShmRefused, "the broker does not take shared-memory payloads"});
  }
  const std::uint64_t size = std::min<std::uint64_t>(options_.shm_segment_bytes, max_segment);
  auto ring = shm::ProducerRing::create(size);
  if (!ring) {
    return std::unexpected(Error{Errc::kShmRefused, fmt::format("cannot create a shared-memory segment of {} bytes: {}",
                                                                size, ring.error().message())});
  }
  wire::Header h;
  h.set_type(wire::SHM_REGISTER);
  h.set_fd_count(1);
  h.mutable_shm()->set_segment(kRingSegmentId);
  // On the I/O thread the answer cannot be awaited; a refusal then reaches on_error, and
  // publishes into the segment are refused one by one.
  auto answer = control_request(h, options_.timeout, !on_io_thread(), (*ring)->fd());
  if (!answer) return std::unexpected(answer.error());
  ring_ = std::move(*ring);
  lane_pub_.set_ring(ring_);
  return ring_;
}

Result<Loan> ClientCore::loan(std::string_view topic, std::size_t size, std::chrono::milliseconds timeout) {
  if (const char* why = proto::check_topic(topic)) {
    return std::unexpected(Error{Errc::kInvalidTopic, fmt::format("invalid topic '{}': {}", topic, why)});
  }
  if (proto::is_reserved(topic)) {
    return std::unexpected(Error{Errc::kReservedTopic, fmt::format("'{}' is reserved for the broker", topic)});
  }
  if (size == 0) return std::unexpected(Error{Errc::kInvalidArgument, "a loan of 0 bytes"});
  if (!connected()) return std::unexpected(Error{Errc::kNotConnected, "not connected (shared memory needs a live connection)"});
  auto ring = producer_ring();
  if (!ring) return std::unexpected(ring.error());
  if (size > (*ring)->max_payload()) {
    return std::unexpected(Error{Errc::kInvalidArgument,
                                 fmt::format("{} bytes do not fit this client's shared-memory ring (at most {}; see "
                                             "ConnectOptions::shm_segment_bytes)",
                                             size, (*ring)->max_payload())});
  }
  const auto deadline = timeout >= std::chrono::hours(24 * 365) ? std::chrono::steady_clock::time_point::max()
                                                                : std::chrono::steady_clock::now() + timeout;
  auto slot = (*ring)->reserve(size, deadline, &lane_pub_);
  if (!slot) {
    if (slot.error() == std::errc::timed_out) {
      return std::unexpected(Error{Errc::kTimeout, fmt::format("no room for {} bytes in the shared-memory ring within "
                                                               "{} ms: receivers still hold earlier messages",
                                                               size, timeout.count())});
    }
    return std::unexpected(Error{Errc::kShmRefused, fmt::format("shared-memory ring: {}", slot.error().message())});
  }
  Loan l;
  l.ring_ = std::move(*ring);
  l.segment_ = kRingSegmentId;
  l.offset_ = slot->ref.offset;
  l.topic_ = topic;
  l.data_ = slot->data;
  return l;
}

Result<void> ClientCore::publish(Loan&& loan, std::span<const std::byte> headers) {
  if (!loan.ring_) return std::unexpected(Error{Errc::kInvalidArgument, "publish of an empty loan (moved from or already published)"});
  {
    LockGuard lk(ring_mu_);
    if (loan.ring_ != ring_) {
      // A reconnect gives the client a new ring: the broker that knew the old one is gone.
      return std::unexpected(Error{Errc::kInvalidArgument,
                                   "the loan is from another client, or from a connection lost since; loan again"});
    }
  }
  thread_local wire::Header h;
  h.Clear();
  h.set_type(wire::PUBLISH);
  h.set_topic(loan.topic_);
  auto* ref = h.mutable_shm();
  ref->set_segment(loan.segment_);
  ref->set_offset(loan.offset_);
  ref->set_length(loan.data_.size());
  if (!headers.empty()) (void)h.mutable_headers()->ParseFromArray(headers.data(), static_cast<int>(headers.size()));
  // Lanes carry a reference to it (the ring's segment passed to their subscribers with a
  // fence first); the broker carries it to receivers without a lane, as for a plain publish.
  wait_for_send_room();
  auto sent = lane_pub_.publish_bulk(
      h.topic(), headers,
      {.ring = loan.ring_, .segment = loan.segment_, .ref = {.offset = loan.offset_, .length = loan.data_.size()}},
      options_.timeout, !on_io_thread(), [&](bool) { return send_frame(h, {}, -1, false); },
      [this](const wire::Header& m) { (void)send_frame(m, {}, -1, false); });
  if (!sent) return sent;  // the loan's destructor gives the space back
  loan.ring_.reset();      // the broker releases it once every receiver is done
  return {};
}

void ClientCore::flush_releases() {
  release_batch_.clear();
  reader_->take_releases(release_batch_);
  if (release_batch_.empty() || !connected()) return;
  constexpr std::size_t kPerFrame = 8192;  // keeps a frame far below any frame limit
  wire::Header& h = release_header_;        // reused: its repeated field keeps its capacity
  for (std::size_t i = 0; i < release_batch_.size(); i += kPerFrame) {
    h.Clear();
    h.set_type(wire::SHM_RELEASE);
    const std::size_t n = std::min(kPerFrame, release_batch_.size() - i);
    h.mutable_releases()->Add(release_batch_.begin() + static_cast<std::ptrdiff_t>(i),
                              release_batch_.begin() + static_cast<std::ptrdiff_t>(i + n));
    if (!send_frame(h, {})) return;  // disconnected: nothing left to release to
  }
}

}  // namespace detail
}  // namespace ubroker
