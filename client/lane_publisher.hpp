// The publishing end of a client's direct lanes (docs/architecture.md, "Direct lanes").
//
// The broker offers a lane (LANE_OFFER), this end makes the data segment, and once the
// subscriber's segment and wake socket come back (LANE_OPEN) it may write. Which topics go to
// which lanes is the broker's word (LANE_ROUTE): a route names, per topic, the lanes that
// carry it and whether the broker must get the message too (receivers without a lane).
//
// Order: a publish looks up its route, writes the lanes and hands the broker its copy under
// one lock, and a route change is applied, fenced and acknowledged under the same lock. So
// the broker reads, in this client's stream, exactly which publishes were made under which
// route, and each subscriber meets the fence in its lane with the broker's word for it.
//
// Bulk payloads travel as references (LaneBulkRef) into the client's producer ring: each lane
// that needs the ring's segment gets a fence naming it first, with which the broker passes the
// segment to the subscriber. The subscriber's releases come back through its ack segment; the
// ring reuses a record once the broker and every lane let it go (collect, wait_for).
//
// Threads: publish() on any thread; everything else on the client's loop (the strand).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "annotated_mutex.hpp"
#include "ubroker.pb.h"
#include "ubroker/error.hpp"
#include "ubroker/shm/lane.hpp"
#include "ubroker/shm/producer_ring.hpp"
#include "ubroker/proto/lane_message.hpp"
#include "ubroker/proto/string_hash.hpp"

namespace ubroker::detail {

class LanePublisher final : public shm::RecordHolds {
 public:
  // `report` sends LANE_ERROR: this end gives a lane up (`broken`: the subscriber broke its
  // rules; else the lane is read to its end first). Called with the lock held; it must not
  // call back into this object.
  using Report = std::function<void(std::uint64_t lane, const char* why, bool broken)>;
  explicit LanePublisher(Report report) : report_(std::move(report)) {}

  // Loop: the lane's data segment, made for a LANE_OFFER; the fd to send back (a duplicate).
  Result<UniqueFd> offer(std::uint64_t id, std::uint64_t capacity);
  // Loop: LANE_OPEN (the subscriber's ack segment and wake socket, checked). Returns why it was
  // refused, or nullptr.
  const char* open(std::uint64_t id, UniqueFd ack, UniqueFd wake);
  // Loop: the lane is gone (LANE_CLOSE): a publisher waiting for room in it gives up, and
  // routes stop naming it.
  void close(std::uint64_t id);
  // The producer ring of this connection (bulk publishes name no other), or none.
  void set_ring(std::shared_ptr<shm::ProducerRing> ring) {
    LockGuard lk(mu_);
    ring_ = std::move(ring);
  }
  // Loop: the lane's subscriber holds none of its bulk payloads any more, or is gone.
  void holds_released(std::uint64_t id);
  // Loop: the connection is gone, and every lane with it (the ring goes with it too).
  void close_all();
  [[nodiscard]] bool has(std::uint64_t id) const { return lanes_.contains(id); }

  // Loop: a LANE_ROUTE. Writes a fence into each lane whose share of the topic changes and
  // calls `send_ack` with the LANE_ROUTE_ACK naming them, under the lock publish() takes.
  template <class SendAck>
  void route(const wire::Header& h, wire::Header& ack, SendAck&& send_ack) {
    LockGuard lk(mu_);
    apply_route_locked(h, ack);
    send_ack(ack);
  }

  // Any thread: a plain publish. Writes it into the lanes its topic's route names and calls
  // `to_broker(laned)` when the broker needs it too (no route, or receivers without a lane);
  // `laned`: some lane has it already.
  // `blocked_for`: the most a full lane of lossless subscriptions holds this call back.
  // `may_wait` false (a publish from the client's loop, which is what reads the lanes' close
  // and must not stall): a full lane of lossless subscriptions is given up instead, read to
  // its end by its subscriber, and the broker carries the message and what follows.
  template <class ToBroker>
  Result<void> publish(std::string_view topic, std::span<const std::byte> headers, std::span<const std::byte> payload,
                       std::chrono::milliseconds blocked_for, bool may_wait, ToBroker&& to_broker) {
    return send(topic, headers, payload, nullptr, blocked_for, may_wait, to_broker, [](const wire::Header&) {});
  }

  // Any thread: a bulk payload in the producer ring `ring` (segment `segment`), published as
  // publish() does, by reference on lanes. A lane that does not have the segment yet gets a
  // fence naming it first (`send_marks`: a LANE_ROUTE_ACK of version 0). A payload only lanes
  // carry is released here for the broker's part; the lanes' holds keep it until let go.
  struct Bulk {
    const std::shared_ptr<shm::ProducerRing>& ring;
    std::uint64_t segment;
    shm::PayloadRef ref;
  };
  template <class ToBroker, class SendMarks>
  Result<void> publish_bulk(std::string_view topic, std::span<const std::byte> headers, const Bulk& bulk,
                            std::chrono::milliseconds blocked_for, bool may_wait, ToBroker&& to_broker,
                            SendMarks&& send_marks) {
    return send(topic, headers, {}, &bulk, blocked_for, may_wait, to_broker, send_marks);
  }

  // shm::RecordHolds, for the producer ring (any thread): takes back the holds subscribers
  // let go, and waits for the one that holds a record.
  void collect() override;
  bool wait_for(std::uint64_t offset, std::chrono::steady_clock::time_point deadline) override;

  // The connection is gone (any thread, any lock held): publishes stop using lanes at once,
  // before the loop drops them (close_all).
  void cut() noexcept { cut_.store(true, std::memory_order_release); }

  struct Counts {
    std::uint64_t written = 0;  // messages put into lanes
    std::uint64_t dropped = 0;  // at a full lane of DROP subscriptions, or a lane that closed while full
  };
  [[nodiscard]] Counts counts() const noexcept {
    return {written_.load(std::memory_order_relaxed), dropped_.load(std::memory_order_relaxed)};
  }

 private:
  struct Lane {
    explicit Lane(shm::LaneWriter w) : writer(std::move(w)) {}
    shm::LaneWriter writer;
    bool open = false;
    std::atomic<bool> closed{false};  // set by the loop without mu_
    std::uint64_t next_fence = 1;
    std::vector<std::uint64_t> segments;  // the producer segments the subscriber was passed (mu_)
  };
  struct Target {
    std::shared_ptr<Lane> lane;
    std::uint64_t id = 0;
    std::vector<std::uint64_t> sub_ids;
    bool lossless = false;
  };
  struct Route {
    std::vector<Target> targets;
    bool via_broker = true;
  };

  void apply_route_locked(const wire::Header& h, wire::Header& ack) UBROKER_REQUIRES(mu_);
  [[nodiscard]] const Route* find_locked(std::string_view topic) UBROKER_REQUIRES(mu_);
  // Writes the message into each lane of the route not in `written` (and adds it there).
  // Stops at a lane full for lossless subscriptions with time left before `deadline` (to wait
  // for, then call again), or at one to give up (a message larger than it, a violation, full
  // when the caller may not wait).
  struct Written {
    std::shared_ptr<Lane> full;
    bool holds_out = false;  // `full` has all its holds out (what frees one is a release, not room)
    std::uint64_t give_up = 0;
    const char* why = nullptr;
    bool broken = false;
  };
  Written write_locked(const Route& r, std::string_view topic, std::span<const std::byte> headers,
                       std::span<const std::byte> payload, const Bulk* bulk,
                       std::chrono::steady_clock::time_point deadline, bool may_wait,
                       std::vector<std::uint64_t>& written) UBROKER_REQUIRES(mu_);
  // Room for one record in the lane, and for a bulk one a hold (nullopt: full now).
  struct Reserved {
    std::span<std::byte> out;
    shm::LaneWriter::Hold hold{};
  };
  shm::Result<std::optional<Reserved>> reserve_locked(Lane& lane, std::size_t size, const Bulk* bulk,
                                                      bool& holds_out) UBROKER_REQUIRES(mu_);
  // Fences each lane of the route that lacks the bulk payload's segment into `marks`; the
  // lanes that stay full are added to `give_up`.
  bool attach_locked(const Route& r, const Bulk& bulk, std::string_view topic, wire::Header& marks,
                     std::vector<std::uint64_t>& give_up, std::chrono::milliseconds wait) UBROKER_REQUIRES(mu_);
  // Takes back the holds `lane` lets go (all of them with `all`).
  void collect_locked(Lane& lane, bool all) UBROKER_REQUIRES(mu_);

  template <class ToBroker, class SendMarks>
  Result<void> send(std::string_view topic, std::span<const std::byte> headers, std::span<const std::byte> payload,
                    const Bulk* bulk, std::chrono::milliseconds blocked_for, bool may_wait, ToBroker&& to_broker,
                    SendMarks&& send_marks) {
    UniqueLock lk(mu_);  // also without routes: one may be taking effect this moment
    thread_local std::vector<std::uint64_t> written;  // lanes that have this message
    thread_local std::vector<std::uint64_t> give_up;
    thread_local wire::Header marks;
    written.clear();
    // Counted from when a lane is first found full: no clock read for a publish that is not.
    auto deadline = std::chrono::steady_clock::time_point::max();
    for (;;) {
      const Route* r = cut_.load(std::memory_order_acquire) ? nullptr : find_locked(topic);
      if (bulk != nullptr && bulk->ring != ring_) {
        // A loan from a connection lost since (its check passed before the reconnect): the
        // broker and the lanes of this one know another ring.
        return std::unexpected(Error{Errc::kInvalidArgument, "the loan is from a connection lost since; loan again"});
      }
      if (r == nullptr) return to_broker(!written.empty());
      if (bulk != nullptr) {
        give_up.clear();
        if (attach_locked(*r, *bulk, topic, marks, give_up, may_wait ? kFenceWait : std::chrono::milliseconds(0))) {
          send_marks(marks);
        }
        if (!give_up.empty()) {
          for (const std::uint64_t id : give_up) give_up_locked(id, "full when a segment was to be passed", false);
          continue;
        }
      }
      const Written w = write_locked(*r, topic, headers, payload, bulk, deadline, may_wait, written);
      if (w.give_up != 0) {  // that lane's subscriptions get it through the broker: go round
        give_up_locked(w.give_up, w.why, w.broken);
        continue;
      }
      if (w.full == nullptr) {
        if (r->via_broker) return to_broker(!written.empty());
        if (bulk != nullptr) bulk->ring->abandon(bulk->ref);  // the broker's part: nobody there
        return {};
      }
      // A lossless subscriber is behind: wait for it without the lock, so the loop can change
      // routes meanwhile, then go on under whatever route holds by then (a lane that left the
      // route is the broker's to carry; one already written is not written again).
      if (deadline == std::chrono::steady_clock::time_point::max()) {
        deadline = std::chrono::steady_clock::now() + blocked_for;
      }
      const shm::LaneWriter::RoomWait room = w.holds_out ? w.full->writer.release_wait() : w.full->writer.room_wait();
      lk.unlock();
      if (!w.full->closed.load(std::memory_order_acquire)) shm::LaneWriter::wait(room, kRoomSlice);
      lk.lock();
    }
  }
  // This end stops using the lane: out of every route (whose subscriptions then need the
  // broker), and the broker told why.
  void give_up_locked(std::uint64_t id, const char* why, bool broken) UBROKER_REQUIRES(mu_);
  static constexpr auto kRoomSlice = std::chrono::milliseconds(2);
  static constexpr auto kFenceWait = std::chrono::milliseconds(20);
  // The longest one wait for a hold's release sleeps before looking again (several threads
  // waiting on one lane share its waiting word, and the last to arm it is the one woken).
  static constexpr auto kHoldSlice = std::chrono::milliseconds(20);
  // Writes a fence into `lane`, waiting up to `wait` for room; false if the lane stays full.
  bool fence_locked(Lane& lane, std::uint64_t& number, std::chrono::milliseconds wait) UBROKER_REQUIRES(mu_);

  // The loop's own index (no lock: only the loop adds and removes lanes).
  std::unordered_map<std::uint64_t, std::shared_ptr<Lane>> lanes_;

  Mutex mu_;
  std::unordered_map<std::string, Route, proto::StringHash, std::equal_to<>> routes_ UBROKER_GUARDED_BY(mu_);
  const std::pair<const std::string, Route>* last_ UBROKER_GUARDED_BY(mu_) = nullptr;  // the topic looked up last
  // Lanes whose subscriber may hold bulk payloads, open or closed (until holds_released).
  std::unordered_map<std::uint64_t, std::shared_ptr<Lane>> holding_ UBROKER_GUARDED_BY(mu_);
  // The connection's ring: every hold in `holding_` is on a record of it (bulk publishes name
  // no other, and both are dropped together with the connection).
  std::shared_ptr<shm::ProducerRing> ring_ UBROKER_GUARDED_BY(mu_);
  std::atomic<bool> cut_{false};
  Report report_;
  std::atomic<std::uint64_t> written_{0};
  std::atomic<std::uint64_t> dropped_{0};
};

}  // namespace ubroker::detail
