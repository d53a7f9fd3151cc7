#include "lane_publisher.hpp"

#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace ubroker::detail {
Result<UniqueFd> LanePublisher::offer(std::uint64_t id, std::uint64_t capacity) {
  if (lanes_.contains(id)) return std::unexpected(Error{Errc::kProtocolError, "the broker offered a lane twice"});
  auto w = shm::LaneWriter::create(capacity);
  if (!w) return std::unexpected(Error{Errc::kShmRefused, fmt::format("cannot make a lane: {}", w.error().message())});
  UniqueFd copy(::fcntl(w->data_fd(), F_DUPFD_CLOEXEC, 0));
  if (!copy) return std::unexpected(Error{Errc::kShmRefused, "cannot make a lane: out of file descriptors"});
  lanes_.emplace(id, std::make_shared<Lane>(std::move(*w)));
  return copy;
}

const char* LanePublisher::open(std::uint64_t id, UniqueFd ack, UniqueFd wake) {
  auto it = lanes_.find(id);
  if (it == lanes_.end() || it->second->open) return "LANE_OPEN for a lane this client was not setting up";
  if (const char* why = shm::check_lane_fd(ack.get(), shm::kLaneAckBytes)) return why;
  if (const char* why = shm::check_wake_fd(wake.get())) return why;
  LockGuard lk(mu_);  // a publisher may be writing another lane; this one is not in any route yet
  if (!it->second->writer.attach(ack.get(), std::move(wake))) return "the subscriber's segment cannot be mapped";
  it->second->open = true;
  return nullptr;
}

void LanePublisher::close(std::uint64_t id) {
  auto it = lanes_.find(id);
  if (it == lanes_.end()) return;
  it->second->closed.store(true, std::memory_order_release);  // a writer waiting for room sees it
  {
    LockGuard lk(mu_);
    for (auto r = routes_.begin(); r != routes_.end();) {
      // Its subscriptions need the broker now, until the broker's next route says otherwise.
      if (std::erase_if(r->second.targets, [&](const Target& t) { return t.id == id; }) != 0) r->second.via_broker = true;
      if (r->second.targets.empty()) {
        if (last_ == &*r) last_ = nullptr;
        r = routes_.erase(r);  // nothing on lanes: the broker carries it all again
      } else {
        ++r;
      }
    }
  }
  lanes_.erase(it);
}

void LanePublisher::holds_released(std::uint64_t id) {
  LockGuard lk(mu_);
  auto it = holding_.find(id);
  if (it == holding_.end()) return;
  collect_locked(*it->second, true);
  it->second->writer.wake_own_waiters();  // a thread waiting for one of those holds looks again
  holding_.erase(it);
}

void LanePublisher::close_all() {
  for (auto& [id, lane] : lanes_) lane->closed.store(true, std::memory_order_release);
  {
    LockGuard lk(mu_);
    holding_.clear();  // their ring goes with the connection: nothing is written there again
    ring_.reset();
    routes_.clear();
    last_ = nullptr;
    cut_.store(false, std::memory_order_release);  // the next connection's lanes are new ones
  }
  lanes_.clear();
}

const LanePublisher::Route* LanePublisher::find_locked(std::string_view topic) {
  if (routes_.empty()) return nullptr;
  if (last_ != nullptr && last_->first == topic) return &last_->second;
  auto it = routes_.find(topic);
  if (it == routes_.end()) return nullptr;
  last_ = &*it;
  return &it->second;
}

bool LanePublisher::fence_locked(Lane& lane, std::uint64_t& number, std::chrono::milliseconds wait) {
  number = lane.next_fence;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    auto pushed = lane.writer.try_push_fence(number);
    if (!pushed) return false;
    if (*pushed == shm::LaneWriter::Push::kWritten) break;
    if (lane.closed.load(std::memory_order_acquire) || std::chrono::steady_clock::now() >= deadline) return false;
    (void)lane.writer.wait_for_room(kRoomSlice);
  }
  ++lane.next_fence;
  return true;
}

void LanePublisher::apply_route_locked(const wire::Header& h, wire::Header& ack) {
  ack.Clear();
  ack.set_type(wire::LANE_ROUTE_ACK);
  ack.set_topic(h.topic());
  ack.mutable_lane()->set_version(h.lane().version());
  Route next;
  next.via_broker = h.lane().via_broker();
  for (const auto& t : h.lane().targets()) {
    auto it = lanes_.find(t.lane());
    // A lane this end closed meanwhile (the broker's LANE_CLOSE is on its way) carries nothing.
    if (it == lanes_.end() || !it->second->open || it->second->closed.load(std::memory_order_relaxed)) continue;
    Target target{.lane = it->second, .id = t.lane(), .sub_ids = {t.sub_ids().begin(), t.sub_ids().end()},
                  .lossless = t.overflow() == wire::BLOCK};
    next.targets.push_back(std::move(target));
  }
  auto cur = routes_.find(h.topic());
  const Route none;
  const Route& before = cur == routes_.end() ? none : cur->second;
  // Every lane whose share of the topic changes gets a fence: its subscriber reads on past it
  // only after the broker's word, which follows everything this client sent before the ack.
  auto share = [](const Route& r, std::uint64_t id) -> const Target* {
    for (const Target& t : r.targets) {
      if (t.id == id) return &t;
    }
    return nullptr;
  };
  std::vector<std::uint64_t> given_up;
  std::vector<std::uint64_t> touched;
  for (const Target& t : before.targets) touched.push_back(t.id);
  for (const Target& t : next.targets) touched.push_back(t.id);
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  for (const std::uint64_t id : touched) {
    const Target* was = share(before, id);
    const Target* now = share(next, id);
    if (was != nullptr && now != nullptr && was->sub_ids == now->sub_ids && was->lossless == now->lossless) continue;
    Lane& lane = *(now != nullptr ? now : was)->lane;
    std::uint64_t number = 0;
    if (!fence_locked(lane, number, kFenceWait)) {
      // Full for too long (or broken): this end stops using the lane (after the route is in
      // place) and the broker closes it; its subscriptions get their topics through the broker.
      if (std::erase_if(next.targets, [&](const Target& t) { return t.id == id; }) != 0) next.via_broker = true;
      given_up.push_back(id);
      continue;
    }
    auto* f = ack.mutable_lane()->add_targets();
    f->set_lane(id);
    f->set_fence(number);
  }
  if (next.targets.empty()) {
    if (cur != routes_.end()) {
      if (last_ == &*cur) last_ = nullptr;
      routes_.erase(cur);
    }
  } else if (cur == routes_.end()) {
    routes_.emplace(h.topic(), std::move(next));
    last_ = nullptr;  // rehashing may have moved entries
  } else {
    cur->second = std::move(next);
  }
  for (const std::uint64_t id : given_up) give_up_locked(id, "full at a route change", false);
}

void LanePublisher::give_up_locked(std::uint64_t id, const char* why, bool broken) {
  for (auto r = routes_.begin(); r != routes_.end();) {
    auto gone = std::find_if(r->second.targets.begin(), r->second.targets.end(), [&](const Target& t) { return t.id == id; });
    if (gone != r->second.targets.end()) {
      gone->lane->closed.store(true, std::memory_order_release);
      r->second.targets.erase(gone);
      r->second.via_broker = true;
    }
    if (r->second.targets.empty()) {
      if (last_ == &*r) last_ = nullptr;
      r = routes_.erase(r);
    } else {
      ++r;
    }
  }
  report_(id, why, broken);  // before the publish that needs the broker now: it closes the lane first
}

void LanePublisher::collect_locked(Lane& lane, bool all) {
  if (!ring_) return;
  shm::ProducerRing& ring = *ring_;
  bool any = false;
  lane.writer.collect(
      [&](std::uint64_t offset) {
        ring.unhold(offset);
        any = true;
      },
      all);
  if (any) ring.wake_waiters();
}

void LanePublisher::collect() {
  LockGuard lk(mu_);
  for (auto it = holding_.begin(); it != holding_.end();) {
    collect_locked(*it->second, false);
    // A closed lane that holds nothing is done with (its broker's word would change nothing).
    if (it->second->closed.load(std::memory_order_acquire) && !it->second->writer.holds_out()) {
      it = holding_.erase(it);
    } else {
      ++it;
    }
  }
}

bool LanePublisher::wait_for(std::uint64_t offset, std::chrono::steady_clock::time_point deadline) {
  UniqueLock lk(mu_);
  for (auto& [id, lane] : holding_) {
    if (!lane->writer.holds(offset)) continue;
    // The words the wait compares are read before the releases are: a release in between
    // ends the wait at once. Its subscriber wakes a publisher that waits (writer_waiting).
    const shm::LaneWriter::RoomWait room = lane->writer.release_wait();
    collect_locked(*lane, false);
    if (!lane->writer.holds(offset)) return true;
    const std::shared_ptr<Lane> keep = lane;  // its mappings outlive the wait (the loop may drop it)
    lk.unlock();
    const auto now = std::chrono::steady_clock::now();
    if (now < deadline) shm::LaneWriter::wait(room, std::min<std::chrono::nanoseconds>(deadline - now, kHoldSlice));
    return true;
  }
  return false;
}

shm::Result<std::optional<LanePublisher::Reserved>> LanePublisher::reserve_locked(Lane& lane, std::size_t size,
                                                                             const Bulk* bulk, bool& holds_out) {
  Reserved r;
  holds_out = false;
  if (bulk != nullptr) {
    auto hold = lane.writer.take_hold(bulk->ref.offset);
    if (!hold) {  // all out: what the subscriber let go comes back first
      collect_locked(lane, false);
      hold = lane.writer.take_hold(bulk->ref.offset);
      if (!hold) {
        holds_out = true;
        return std::optional<Reserved>();
      }
    }
    r.hold = *hold;
    size += sizeof(shm::LaneBulkRef);
  }
  auto room = lane.writer.try_reserve(size);
  if (!room || !*room) {
    if (bulk != nullptr) lane.writer.return_hold(r.hold);
    if (!room) return std::unexpected(room.error());
    return std::optional<Reserved>();
  }
  r.out = **room;
  return std::optional(r);
}

bool LanePublisher::attach_locked(const Route& r, const Bulk& bulk, std::string_view topic, wire::Header& marks,
                                  std::vector<std::uint64_t>& give_up, std::chrono::milliseconds wait) {
  bool any = false;
  for (const Target& t : r.targets) {
    Lane& lane = *t.lane;
    if (std::find(lane.segments.begin(), lane.segments.end(), bulk.segment) != lane.segments.end()) continue;
    if (!any) {
      marks.Clear();
      marks.set_type(wire::LANE_ROUTE_ACK);
      marks.set_topic(std::string(topic));
      marks.mutable_lane()->set_version(0);  // no route change: fences only
      any = true;
    }
    // The subscriber reads on past this fence only once the broker passed it the segment.
    std::uint64_t number = 0;
    if (!fence_locked(lane, number, wait)) {
      give_up.push_back(t.id);
      continue;
    }
    lane.segments.push_back(bulk.segment);
    auto* f = marks.mutable_lane()->add_targets();
    f->set_lane(t.id);
    f->set_fence(number);
    f->set_segment(bulk.segment);
  }
  return any && marks.lane().targets_size() != 0;
}

LanePublisher::Written LanePublisher::write_locked(const Route& r, std::string_view topic,
                                                  std::span<const std::byte> headers, std::span<const std::byte> payload,
                                                  const Bulk* bulk, std::chrono::steady_clock::time_point deadline,
                                                  bool may_wait, std::vector<std::uint64_t>& written) {
  const std::size_t size = proto::lane_message_size(topic, headers, payload.size());
  for (const Target& t : r.targets) {
    if (std::find(written.begin(), written.end(), t.id) != written.end()) continue;
    Lane& lane = *t.lane;
    bool holds_out = false;
    auto room = reserve_locked(lane, size, bulk, holds_out);
    if (!room) {
      // Larger than the lane can ever hold, or the subscriber broke its rules: the lane goes,
      // and this message (and what follows) reaches its subscriptions through the broker.
      const bool broken = room.error() != std::errc::message_size;
      return {.give_up = t.id, .why = !broken ? "a message larger than the lane" : lane.writer.violation() != nullptr ? lane.writer.violation() : "the lane broke", .broken = broken};
    }
    if (*room) {
      if (bulk == nullptr) {
        proto::encode_lane_message((*room)->out, topic, headers, payload);
        lane.writer.commit();
      } else {
        const shm::LaneBulkRef ref{.segment = bulk->segment, .offset = bulk->ref.offset, .length = bulk->ref.length,
                                   .slot = (*room)->hold.slot, .generation = (*room)->hold.generation};
        std::memcpy((*room)->out.data(), &ref, sizeof ref);
        proto::encode_lane_message((*room)->out.subspan(sizeof ref), topic, headers, {});
        // Counted before the record can be released (here or by the broker).
        bulk->ring->hold(bulk->ref);
        holding_.try_emplace(t.id, t.lane);
        lane.writer.commit_bulk();
      }
      written_.store(written_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // under mu_
    } else if (t.lossless && !lane.closed.load(std::memory_order_acquire) && !may_wait) {
      return {.give_up = t.id, .why = "full when its publisher could not wait (a publish from the client's loop)"};
    } else if (t.lossless && !lane.closed.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < deadline) {
      return {.full = t.lane, .holds_out = holds_out};  // lossless subscriptions hold the publisher back until there is room
    } else {
      // DROP subscriptions lose it at a full lane (counted in the lane, for the broker's books).
      lane.writer.count_dropped();
      dropped_.fetch_add(1, std::memory_order_relaxed);
    }
    written.push_back(t.id);
  }
  return {};
}

}  // namespace ubroker::detail
