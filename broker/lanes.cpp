#include "lanes.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>

#include "broker.hpp"
#include "log_text.hpp"
#include "session.hpp"
#include "shm_registry.hpp"
#include "ubroker/shm/lane.hpp"
#include "ubroker/shm/lane_layout.hpp"

namespace ubroker::broker {
namespace {

constexpr std::size_t kMaxReason = 200;

shm::UniqueFd dup_fd(const shm::UniqueFd& fd) { return shm::UniqueFd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0)); }

const shm::LaneHeader& data_header(const shm::Mapping& m) { return *reinterpret_cast<const shm::LaneHeader*>(m.data()); }
const shm::LaneAck& ack_of(const shm::Mapping& m) { return *reinterpret_cast<const shm::LaneAck*>(m.data()); }

}  // namespace

Lanes::~Lanes() = default;

// ---- routes ------------------------------------------------------------------------------

const LaneFilter* Lanes::filter(std::uint64_t publisher, std::string_view topic) const {
  if (publishers_.empty()) return nullptr;
  auto p = publishers_.find(publisher);
  if (p == publishers_.end()) return nullptr;
  auto t = p->second.topics.find(topic);
  if (t == p->second.topics.end()) return nullptr;
  return &t->second.filter;
}

void Lanes::published(Session& from, std::string_view topic) {
  Publisher& pub = publishers_[from.id()];
  if (pub.topics.find(topic) != pub.topics.end()) return;  // kept up to date by every change
  if (pub.topics.size() >= kMaxRoutedTopics) return;       // beyond: the broker carries it
  auto [it, fresh] = pub.topics.try_emplace(std::string(topic));
  (void)update(from, it->first, it->second, 0);
}

Lanes::RouteState Lanes::desired(const Session& publisher, std::string_view topic) {
  RouteState r;
  bool grouped = false;
  if (!publisher.may_publish(topic) || !router_.direct_subscriptions(topic, matches_, grouped)) return r;
  r.via_broker = grouped;
  for (const Subscription* sub : matches_) r.receivers.push_back({sub->owner->id(), sub->id});
  std::sort(r.receivers.begin(), r.receivers.end());
  // Fan-out wider than lanes.max_fanout connections is the broker's (matches_ come grouped
  // by owner, as the loop below needs).
  std::size_t owners = 0;  // other than the publisher itself
  for (std::size_t i = 0; i < matches_.size(); ++i) {
    const bool next_owner = i == 0 || matches_[i]->owner != matches_[i - 1]->owner;
    owners += next_owner && matches_[i]->owner->id() != publisher.id();
  }
  const bool barred = barred_.contains(publisher.id()) || owners > config_.lanes.max_fanout;
  for (std::size_t i = 0; i < matches_.size();) {
    const std::uint64_t owner = matches_[i]->owner->id();
    std::size_t end = i;
    while (end < matches_.size() && matches_[end]->owner->id() == owner) ++end;
    const Session* sub = broker_.find(owner);
    Lane* lane = nullptr;
    if (sub != nullptr && owner != publisher.id() && sub->lanes_capable() && !barred &&
        !broken_pairs_.contains({publisher.id(), owner})) {
      lane = lane_between(publisher.id(), owner);
      if (lane == nullptr) lane = offer(publisher, *sub);
    }
    if (lane == nullptr || lane->state != State::kOpen) {
      r.via_broker = true;
    } else {
      Target t{.lane = lane->id, .subscriber = owner};
      for (std::size_t k = i; k < end; ++k) {
        t.sub_ids.push_back(matches_[k]->id);
        t.lossless |= matches_[k]->overflow == wire::BLOCK;
      }
      r.targets.push_back(std::move(t));
    }
    i = end;
  }
  std::sort(r.targets.begin(), r.targets.end(), [](const Target& a, const Target& b) { return a.lane < b.lane; });
  return r;
}

bool Lanes::update(Session& publisher, const std::string& topic, TopicRoute& route, std::uint64_t wait) {
  RouteState want = desired(publisher, topic);
  // A topic the publisher has no route for yet goes through the broker to everyone there now.
  if (route.version == 0) route.taken.receivers = want.receivers;
  if (want.same_path(route.sent)) {
    // Nothing changes for the publisher: new receivers are known from the route it takes
    // next (now, when it has taken the last one sent).
    if (route.unacked.empty()) {
      route.taken.receivers = want.receivers;
    } else {
      route.unacked.back().second.receivers = want.receivers;
      if (wait != 0) {  // so the subscription's ACK waits for that route too
        route.waiting.push_back(wait);
        ++waits_[wait].routes;
      }
    }
    route.sent.receivers = std::move(want.receivers);
    return false;
  }
  if (route.unacked.size() >= kMaxUnackedRoutes) {
    // Sent once the publisher has taken some (route_taken); the subscription waits for it.
    route.dirty = true;
    if (wait != 0) {
      route.waiting.push_back(wait);
      ++waits_[wait].routes;
    }
    return false;
  }
  route.sent = want;
  route.unacked.emplace_back(++route.version, std::move(want));
  route.sent_at = Clock::now();
  frame_.Clear();
  frame_.set_type(wire::LANE_ROUTE);
  frame_.set_topic(topic);
  auto* l = frame_.mutable_lane();
  l->set_version(route.version);
  l->set_via_broker(route.sent.via_broker);
  for (const Target& t : route.sent.targets) {
    auto* target = l->add_targets();
    target->set_lane(t.lane);
    for (const std::uint64_t id : t.sub_ids) target->add_sub_ids(id);
    target->set_overflow(t.lossless ? wire::BLOCK : wire::DROP);
  }
  send(publisher.id(), frame_);
  if (wait != 0) {
    route.waiting.push_back(wait);
    ++waits_[wait].routes;
  }
  return true;
}

void Lanes::update_publisher(std::uint64_t publisher) {
  Session* p = broker_.find(publisher);
  auto it = publishers_.find(publisher);
  if (p == nullptr || it == publishers_.end()) return;
  for (auto& [topic, route] : it->second.topics) (void)update(*p, topic, route, 0);
}

bool Lanes::subscriptions_changed(Session* subscriber, std::uint64_t seq) {
  if (publishers_.empty()) return false;
  const std::uint64_t wait = subscriber != nullptr ? next_wait_++ : 0;
  if (wait != 0) waits_[wait] = Wait{.session = subscriber->id(), .seq = seq};
  for (auto& [id, pub] : publishers_) {
    Session* p = broker_.find(id);
    if (p == nullptr) continue;
    for (auto& [topic, route] : pub.topics) (void)update(*p, topic, route, wait);
  }
  if (wait == 0) return false;
  if (waits_[wait].routes != 0) return true;
  waits_.erase(wait);
  return false;
}

bool Lanes::carries_lossless(std::uint64_t publisher, std::uint64_t lane) const {
  auto p = publishers_.find(publisher);
  if (p == publishers_.end()) return false;
  auto lossless_in = [&](const RouteState& r) {
    return std::any_of(r.targets.begin(), r.targets.end(), [&](const Target& t) { return t.lane == lane && t.lossless; });
  };
  for (const auto& [topic, route] : p->second.topics) {
    if (lossless_in(route.taken) || lossless_in(route.sent)) return true;
    for (const auto& [version, r] : route.unacked) {
      if (lossless_in(r)) return true;
    }
  }
  return false;
}

void Lanes::release_waits(TopicRoute& route) {
  for (const std::uint64_t w : route.waiting) {
    auto it = waits_.find(w);
    if (it == waits_.end() || --it->second.routes != 0) continue;
    if (Session* s = broker_.find(it->second.session)) s->subscribed(it->second.seq);
    waits_.erase(it);
  }
  route.waiting.clear();
}

Lanes::Taken Lanes::route_taken(Session& from, const wire::Header& h) {
  auto pub = publishers_.find(from.id());
  TopicRoute* route = nullptr;
  if (pub != publishers_.end()) {
    auto t = pub->second.topics.find(h.topic());
    if (t != pub->second.topics.end()) route = &t->second;
  }
  const std::uint64_t version = h.lane().version();
  if (route == nullptr || version > route->version) {
    from.cut_off(wire::PROTOCOL_ERROR, fmt::format("LANE_ROUTE_ACK for a route never sent (topic '{}', version {})",
                                                   printable(h.topic(), kMaxReason), version));
    return Taken::kRefused;
  }
  // Each fence is relayed into its subscriber's queue, so a publisher writing fences must
  // not grow that queue past its limits: one fence per lane and ACK (an honest publisher
  // names each lane once), and a queue without room holds the publisher back like a lossless
  // publish, or, for a lane that carries only DROP subscriptions, ends the lane (the broker
  // carries the pair from then on, dropping as its rules say).
  if (static_cast<std::size_t>(h.lane().targets_size()) > config_.lanes.max_per_client) {
    from.cut_off(wire::PROTOCOL_ERROR, fmt::format("LANE_ROUTE_ACK names {} lanes, more than a client writes (lanes.max_per_client)",
                                                   h.lane().targets_size()));
    return Taken::kRefused;
  }
  named_.clear();
  for (const auto& f : h.lane().targets()) named_.push_back(f.lane());
  std::sort(named_.begin(), named_.end());
  if (auto twice = std::adjacent_find(named_.begin(), named_.end()); twice != named_.end()) {
    from.cut_off(wire::PROTOCOL_ERROR, fmt::format("LANE_ROUTE_ACK names lane {} twice", *twice));
    return Taken::kRefused;
  }
  std::vector<std::uint64_t> lossy_full;
  for (const auto& f : h.lane().targets()) {
    auto it = lanes_.find(f.lane());
    if (it == lanes_.end() || it->second.publisher != from.id()) continue;
    Session* sub = broker_.find(it->second.subscriber);
    if (sub == nullptr || sub->outbox().has_room()) continue;
    if (carries_lossless(from.id(), f.lane())) {
      sub->outbox().hold_back(from.id());
      return Taken::kHeldBack;
    }
    lossy_full.push_back(f.lane());
  }
  for (const std::uint64_t lane : lossy_full) {
    close(lane, "its subscriber's queue had no room for a fence (DROP subscriptions: the broker carries them)", false);
  }
  // Version 0 changes no route: fences only (a segment a lane needs for bulk records).
  // Versions are taken in order; one the broker dropped meanwhile (its lanes closed) is stale.
  const bool marks_only = version == 0;
  if (!marks_only && (route->unacked.empty() || route->unacked.front().first != version)) return Taken::kTaken;
  const RouteState before = marks_only ? route->taken : std::move(route->taken);
  if (!marks_only) {
    route->taken = std::move(route->unacked.front().second);
    route->unacked.pop_front();
  }
  // A lane that closed after this version was sent carries nothing.
  std::erase_if(route->taken.targets, [&](const Target& t) { return !lanes_.contains(t.lane); });
  auto target_in = [](const RouteState& r, std::uint64_t lane_id) -> const Target* {
    for (const Target& t : r.targets) {
      if (t.lane == lane_id) return &t;
    }
    return nullptr;
  };
  // Each fence the publisher wrote is relayed to its lane's subscriber, behind everything the
  // broker already queued for it, with what the lane carries of the topic from then on.
  std::vector<std::uint64_t> fenced;
  struct Ending {
    std::uint64_t lane;
    const char* why;
    bool broken;
  };
  std::vector<Ending> ending;
  for (const auto& f : h.lane().targets()) {
    auto it = lanes_.find(f.lane());
    if (it == lanes_.end()) continue;  // closed meanwhile
    Lane& lane = it->second;
    if (lane.publisher != from.id() || lane.state != State::kOpen) {
      from.cut_off(wire::PROTOCOL_ERROR, fmt::format("LANE_ROUTE_ACK names lane {}, which this client does not write", f.lane()));
      return Taken::kRefused;
    }
    if (f.fence() <= lane.last_fence) {
      ending.push_back({f.lane(), "the publisher's fence numbers went back", true});
      continue;
    }
    lane.last_fence = f.fence();
    fenced.push_back(f.lane());
    const Target* now = target_in(route->taken, f.lane());
    frame_.Clear();
    if (f.segment() != 0) {
      // The publisher's bulk records on this lane name the segment from this fence on: the
      // subscriber gets it (its fd, the first time) with the fence, as a delivery would.
      ShmSegment* seg = broker_.shm().find(from.id(), f.segment());
      Session* sub = broker_.find(lane.subscriber);
      if (seg == nullptr) {
        ending.push_back({f.lane(), "the publisher named a segment it did not register", true});
        continue;
      }
      if (sub == nullptr) continue;
      auto passed = sub->outbox().pass_segment(*seg);
      if (!passed) {
        ending.push_back({f.lane(), "the subscriber's uid has shm_max_fds_in_flight_per_uid segments already", false});
        continue;
      }
      frame_.mutable_lane()->set_segment(f.segment());
      frame_.mutable_shm()->set_segment(seg->id);
      frame_.set_fd_count(*passed ? 1 : 0);
    }
    frame_.set_type(wire::LANE_FENCE);
    frame_.set_topic(h.topic());
    frame_.mutable_lane()->set_id(f.lane());
    frame_.mutable_lane()->set_fence(f.fence());
    if (now != nullptr) {
      for (const std::uint64_t id : now->sub_ids) frame_.add_sub_ids(id);
      frame_.set_overflow(now->lossless ? wire::BLOCK : wire::DROP);
    }
    send(lane.subscriber, frame_);
  }
  // A lane the change touches without a fence would let its subscriber reorder the switch.
  // (Fences only, version 0, change no lane's share.)
  auto check = [&](const Target& t) {
    const Target* was = target_in(before, t.lane);
    const Target* now = target_in(route->taken, t.lane);
    const bool changed = was == nullptr || now == nullptr || !(*was == *now);
    if (changed && lanes_.contains(t.lane) && std::find(fenced.begin(), fenced.end(), t.lane) == fenced.end()) {
      // The publisher stopped using it (full too long): what it holds is still read, first.
      ending.push_back({t.lane, "the publisher gave it up (full at a route change)", false});
    }
  };
  for (const Target& t : before.targets) check(t);
  for (const Target& t : route->taken.targets) check(t);
  route->skip.clear();
  for (const Target& t : route->taken.targets) {
    for (const std::uint64_t id : t.sub_ids) route->skip.push_back({t.subscriber, id});
  }
  std::sort(route->skip.begin(), route->skip.end());
  if (route->dirty && route->unacked.size() < kMaxUnackedRoutes) {
    route->dirty = false;
    (void)update(from, h.topic(), *route, 0);
  }
  if (!marks_only && route->unacked.empty()) release_waits(*route);
  for (const Ending& e : ending) close(e.lane, e.why, e.broken);
  return Taken::kTaken;
}

// ---- setup -------------------------------------------------------------------------------

Lanes::Lane* Lanes::lane_between(std::uint64_t publisher, std::uint64_t subscriber) {
  auto it = by_pair_.find({publisher, subscriber});
  return it == by_pair_.end() ? nullptr : &lanes_.at(it->second);
}

bool Lanes::fds_to_spare() {
  // Setting a lane up takes up to six descriptors for a moment (three received, three passed
  // on); a broker near its RLIMIT_NOFILE keeps them for connections instead.
  std::array<shm::UniqueFd, 8> probe;
  for (auto& fd : probe) {
    fd = shm::UniqueFd(::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0));
    if (!fd) return false;
  }
  return true;
}

Lanes::Lane* Lanes::offer(const Session& publisher, const Session& subscriber) {
  const auto& cfg = config_.lanes;
  const std::uint64_t bytes = shm::kLaneHeaderBytes + cfg.capacity_bytes + shm::kLaneAckBytes;
  const uid_t pub_uid = publisher.peer().uid;
  const uid_t sub_uid = subscriber.peer().uid;
  auto count = [&](std::uint64_t id) {
    auto it = by_session_.find(id);
    return it == by_session_.end() ? std::size_t{0} : it->second.size();
  };
  const std::uint64_t charge_pub = pub_uid == sub_uid ? 2 * bytes : bytes;
  if (count(publisher.id()) >= cfg.max_per_client || count(subscriber.id()) >= cfg.max_per_client ||
      uid_bytes_[pub_uid] + charge_pub > cfg.max_bytes_per_uid || uid_bytes_[sub_uid] + bytes > cfg.max_bytes_per_uid ||
      !fds_to_spare()) {
    ++broker_.stats().lanes_refused;  // the broker keeps carrying the pair's messages
    return nullptr;
  }
  const std::uint64_t id = next_lane_++;
  Lane& lane = lanes_[id];
  lane.id = id;
  lane.publisher = publisher.id();
  lane.subscriber = subscriber.id();
  lane.publisher_uid = pub_uid;
  lane.subscriber_uid = sub_uid;
  lane.capacity = cfg.capacity_bytes;
  lane.charge = bytes;
  lane.offered_at = Clock::now();
  uid_bytes_[pub_uid] += bytes;
  uid_bytes_[sub_uid] += bytes;
  by_pair_[{lane.publisher, lane.subscriber}] = id;
  by_session_[lane.publisher].push_back(id);
  by_session_[lane.subscriber].push_back(id);
  for (const bool pub : {true, false}) {
    frame_.Clear();
    frame_.set_type(wire::LANE_OFFER);
    auto* l = frame_.mutable_lane();
    l->set_id(id);
    l->set_capacity(lane.capacity);
    l->set_publisher(pub);
    send(pub ? lane.publisher : lane.subscriber, frame_);
  }
  return &lane;
}

bool Lanes::segment(Session& from, const wire::Header& h, shm::UniqueFd fd, shm::UniqueFd wake) {
  const std::uint64_t id = h.lane().id();
  auto it = lanes_.find(id);
  if (it == lanes_.end()) {
    if (id != 0 && id < next_lane_) return true;  // closed before the answer came
    from.cut_off(wire::PROTOCOL_ERROR, fmt::format("LANE_SEGMENT for lane {}, which was never offered", id));
    return false;
  }
  Lane& lane = it->second;
  const bool is_pub = lane.publisher == from.id();
  if ((!is_pub && lane.subscriber != from.id()) || lane.state != State::kOffered || (is_pub ? lane.data : lane.ack)) {
    from.cut_off(wire::PROTOCOL_ERROR, fmt::format("LANE_SEGMENT for lane {}, which is not waiting for it from this client", id));
    return false;
  }
  const char* why = nullptr;
  if (is_pub) {
    why = wake ? "the publisher's segment comes alone" : shm::check_lane_fd(fd.get(), shm::kLaneHeaderBytes + lane.capacity);
    lane.data = std::move(fd);
  } else {
    why = !wake ? "the subscriber's segment comes with a wake socket" : shm::check_lane_fd(fd.get(), shm::kLaneAckBytes);
    if (why == nullptr) why = shm::check_wake_fd(wake.get());
    lane.ack = std::move(fd);
    lane.wake = std::move(wake);
  }
  if (why != nullptr) {
    close(id, fmt::format("the {}'s segment was refused: {}", is_pub ? "publisher" : "subscriber", why), true);
    return true;
  }
  if (lane.data && lane.ack) open(lane);
  return true;
}

void Lanes::open(Lane& lane) {
  auto data_map = shm::Mapping::map(lane.data.get(), shm::kLaneHeaderBytes + lane.capacity, shm::Access::kReadOnly);
  auto ack_map = shm::Mapping::map(lane.ack.get(), shm::kLaneAckBytes, shm::Access::kReadOnly);
  std::vector<shm::UniqueFd> to_pub;
  to_pub.push_back(dup_fd(lane.ack));
  to_pub.push_back(dup_fd(lane.wake));
  std::vector<shm::UniqueFd> to_sub;
  to_sub.push_back(dup_fd(lane.data));
  if (!data_map || !ack_map || !to_pub[0] || !to_pub[1] || !to_sub[0]) {
    close(lane.id, "the broker could not map or pass the segments (out of memory or file descriptors)", true);
    return;
  }
  lane.data_map = std::move(*data_map);
  lane.ack_map = std::move(*ack_map);
  lane.state = State::kOpen;
  // The mappings are all the broker keeps: an open lane holds none of its file descriptors.
  lane.data.reset();
  lane.ack.reset();
  lane.wake.reset();
  ++broker_.stats().lanes_opened;
  frame_.Clear();
  frame_.set_type(wire::LANE_OPEN);
  frame_.mutable_lane()->set_id(lane.id);
  frame_.mutable_lane()->set_capacity(lane.capacity);
  frame_.set_fd_count(2);
  send(lane.publisher, frame_, std::move(to_pub));
  // The subscriber learns who writes the lane from the broker, never from the lane.
  const Session* pub = broker_.find(lane.publisher);
  frame_.set_fd_count(1);
  frame_.set_sender_id(lane.publisher);
  frame_.set_sender_uid(pub != nullptr ? pub->peer().uid : 0);
  frame_.set_sender_pid(pub != nullptr ? static_cast<std::uint32_t>(pub->peer().pid) : 0);
  send(lane.subscriber, frame_, std::move(to_sub));
  spdlog::debug("lane {}: open from client {} to client {} ({} bytes)", lane.id, lane.publisher, lane.subscriber,
                lane.capacity);
  update_publisher(lane.publisher);
}

// ---- the end -----------------------------------------------------------------------------

void Lanes::count_open(const Lane& lane, Books& b) {
  // Read from segments the clients write: kept consistent, never trusted beyond that.
  const auto& h = data_header(lane.data_map);
  const std::uint64_t accepted = h.accepted.load(std::memory_order_relaxed);
  const std::uint64_t dropped = std::min(h.dropped.load(std::memory_order_relaxed), accepted);
  b.accepted += accepted;
  b.dropped += dropped;
  b.delivered += std::min(ack_of(lane.ack_map).delivered.load(std::memory_order_relaxed), accepted - dropped);
}

void Lanes::retire_books(const Lane& lane) {
  if (lane.state != State::kOpen) return;
  // Both ends are done with it (or gone): what nobody read is lost.
  Books last;
  count_open(lane, last);
  if (broker_.find(lane.publisher) != nullptr) retired_by_session_[lane.publisher].first += last.accepted;
  if (broker_.find(lane.subscriber) != nullptr) retired_by_session_[lane.subscriber].second += last.delivered;
  retired_.accepted += last.accepted;
  retired_.dropped += last.dropped;
  retired_.delivered += last.delivered;
  retired_.lost += last.accepted - last.dropped - last.delivered;
}

void Lanes::release(const Lane& lane) {
  for (const uid_t uid : {lane.publisher_uid, lane.subscriber_uid}) {
    if ((uid_bytes_[uid] -= lane.charge) == 0) uid_bytes_.erase(uid);
  }
}

void Lanes::end_done(std::uint64_t lane_id, std::uint64_t session) {
  auto it = closing_.find(lane_id);
  if (it == closing_.end()) return;
  Closing& c = it->second;
  if (session == c.lane.publisher) c.publisher_done = true;
  if (session == c.lane.subscriber) c.subscriber_done = true;
  if (!c.publisher_done || !c.subscriber_done) return;
  retire_books(c.lane);
  release(c.lane);
  // The subscriber answered once it held none of the lane's bulk payloads (or is gone): the
  // publisher may reuse what it still counted as held there.
  if (broker_.find(c.lane.publisher) != nullptr) {
    frame_.Clear();
    frame_.set_type(wire::LANE_CLOSE);
    frame_.mutable_lane()->set_id(lane_id);
    frame_.mutable_lane()->set_holds_released(true);
    send(c.lane.publisher, frame_);
  }
  closing_.erase(it);
}

void Lanes::close_done(Session& from, const wire::Header& h) { end_done(h.lane().id(), from.id()); }

void Lanes::close(std::uint64_t lane_id, std::string_view reason, bool broken, std::uint64_t gone) {
  auto it = lanes_.find(lane_id);
  if (it == lanes_.end()) return;
  Lane lane = std::move(it->second);
  lanes_.erase(it);
  by_pair_.erase({lane.publisher, lane.subscriber});
  for (const std::uint64_t end : {lane.publisher, lane.subscriber}) {
    auto s = by_session_.find(end);
    if (s == by_session_.end()) continue;
    std::erase(s->second, lane_id);
    if (s->second.empty()) by_session_.erase(s);
  }
  if (lane.state != State::kOpen) release(lane);  // an open one's segments stay charged until both ends are done
  if (gone == 0) broken_pairs_.insert({lane.publisher, lane.subscriber});  // the broker carries the pair from now on
  if (broken) {
    ++retired_.closed_broken;
    spdlog::warn("lane {} from client {} to client {} closed: {}", lane_id, lane.publisher, lane.subscriber, reason);
  } else if (gone == 0) {  // given up, stalled, a right revoked: the pair goes through the broker from now on
    spdlog::info("lane {} from client {} to client {} closed: {}", lane_id, lane.publisher, lane.subscriber, reason);
  } else {
    spdlog::debug("lane {} from client {} to client {} closed: {}", lane_id, lane.publisher, lane.subscriber, reason);
  }
  for (const std::uint64_t end : {lane.publisher, lane.subscriber}) {
    if (end == gone) continue;
    frame_.Clear();
    frame_.set_type(wire::LANE_CLOSE);
    frame_.mutable_lane()->set_id(lane_id);
    frame_.mutable_lane()->set_reason(std::string(reason));
    frame_.mutable_lane()->set_broken(broken);
    send(end, frame_);
  }
  const std::uint64_t publisher = lane.publisher, subscriber = lane.subscriber;
  if (lane.state == State::kOpen) {
    // Its books stay open until the ends still here answer (a publisher may still be writing,
    // a subscriber still reading what its publisher left).
    const bool pub_gone = gone == publisher, sub_gone = gone == subscriber;
    closing_.insert_or_assign(lane_id, Closing{.lane = std::move(lane), .publisher_done = pub_gone, .subscriber_done = sub_gone});
  }
  // The publisher's routes stop covering the lane now, so the broker carries its topics to the
  // subscriber again from the next publish on (what was written into a broken lane is lost).
  auto pub = publishers_.find(publisher);
  if (pub == publishers_.end() || gone == publisher) return;
  for (auto& [topic, route] : pub->second.topics) {
    std::erase_if(route.taken.targets, [&](const Target& t) { return t.lane == lane_id; });
    std::erase_if(route.skip, [&](const SubKey& k) { return k.owner == subscriber; });
  }
  update_publisher(publisher);
}

void Lanes::session_gone(std::uint64_t id) {
  if (auto s = by_session_.find(id); s != by_session_.end()) {
    const std::vector<std::uint64_t> ids = s->second;
    for (const std::uint64_t lane_id : ids) {
      const Lane& lane = lanes_.at(lane_id);
      close(lane_id, lane.publisher == id ? "the publisher disconnected" : "the subscriber disconnected", false, id);
    }
  }
  if (auto p = publishers_.find(id); p != publishers_.end()) {
    for (auto& [topic, route] : p->second.topics) release_waits(route);
    publishers_.erase(p);
  }
  std::vector<std::uint64_t> closing;
  for (const auto& [lane_id, c] : closing_) {
    if (c.lane.publisher == id || c.lane.subscriber == id) closing.push_back(lane_id);
  }
  for (const std::uint64_t lane_id : closing) end_done(lane_id, id);
  std::erase_if(waits_, [&](const auto& w) { return w.second.session == id; });
  retired_by_session_.erase(id);
  std::erase_if(broken_pairs_, [&](const auto& p) { return p.first == id || p.second == id; });
  barred_.erase(id);
  (void)subscriptions_changed();  // its subscriptions are gone from the routes that had them
}

void Lanes::error_reported(Session& from, const wire::Header& h) {
  auto it = lanes_.find(h.lane().id());
  if (it == lanes_.end() || (it->second.publisher != from.id() && it->second.subscriber != from.id())) return;
  const bool by_pub = it->second.publisher == from.id();
  // A publisher may give its lane up (a message larger than it, a fence it could not write):
  // the subscriber reads what is in it first. Anything the subscriber reports broke it.
  const bool broken = !by_pub || h.lane().broken();
  if (!broken && it->second.state == State::kOffered) {
    // Declined at setup: the publisher's messages can be larger than half the lane
    // (lanes.capacity_bytes too small for its max_frame_bytes or shared-memory threshold).
    ++broker_.stats().lanes_refused;
    spdlog::info("lane {}: client {} declined it: {}", it->first, from.id(), printable(h.lane().reason(), kMaxReason));
  }
  close(it->first,
        fmt::format("the {} {}: {}", by_pub ? "publisher" : "subscriber", broken ? "reported a violation" : "gave it up",
                    printable(h.lane().reason(), kMaxReason)),
        broken);
}

void Lanes::sweep(Clock::time_point now) {
  std::vector<std::pair<std::uint64_t, std::string>> unfinished, stalled;
  for (auto& [id, lane] : lanes_) {
    if (lane.state == State::kOffered) {
      // An end answers its offer behind everything queued for it before: a slow reader is
      // given as long as the slow-consumer rules give it.
      if (now - lane.offered_at > std::max<Clock::duration>(kSetupDeadline, config_.timeouts.slow_consumer)) {
        unfinished.emplace_back(id, "its setup did not finish in time (5 s, or timeouts.slow_consumer_ms if longer)");
      }
      continue;
    }
    // The reader's progress: a position that stays while messages wait is a slow consumer.
    const std::uint64_t w = data_header(lane.data_map).write_pos.load(std::memory_order_acquire);
    const std::uint64_t r = ack_of(lane.ack_map).read_pos.load(std::memory_order_acquire);
    if (w == r || r != lane.last_read_pos) {
      lane.last_read_pos = r;
      lane.stalled_since = Clock::time_point::max();
    } else if (lane.stalled_since == Clock::time_point::max()) {
      lane.stalled_since = now;
    } else if (now - lane.stalled_since > config_.timeouts.slow_consumer) {
      // Not read for that long (a subscriber that stopped reading, or a publisher whose bytes
      // stopped it at a fence nobody announced): the lane goes, and the pair's traffic goes
      // through the broker, whose slow-consumer rules apply from then on. Not as broken: a
      // subscriber that only paused reads what the lane holds when it comes back (what a
      // fence stops it short of is counted lost), so a slow reader loses nothing it would
      // not have lost through the broker.
      stalled.emplace_back(id, "its subscriber did not read it for timeouts.slow_consumer_ms");
    }
  }
  for (auto& [id, why] : unfinished) close(id, why, true);
  for (auto& [id, why] : stalled) close(id, why, false);  // logged there

  // A publisher that does not take its route changes holds back subscriptions: it loses its
  // lanes, and its topics go through the broker.
  std::vector<std::uint64_t> stuck;
  for (auto& [id, pub] : publishers_) {
    for (auto& [topic, route] : pub.topics) {
      if (!route.unacked.empty() && now - route.sent_at > config_.timeouts.slow_consumer + kRouteDeadline) {
        stuck.push_back(id);
        break;
      }
    }
  }
  for (const std::uint64_t id : stuck) {
    barred_.insert(id);
    if (auto s = by_session_.find(id); s != by_session_.end()) {
      const std::vector<std::uint64_t> ids = s->second;
      for (const std::uint64_t lane_id : ids) {
        if (lanes_.at(lane_id).publisher == id) close(lane_id, "its publisher did not take a route change in time", false);
      }
    }
    for (auto& [topic, route] : publishers_[id].topics) {
      route.unacked.clear();
      const std::vector<SubKey> receivers = route.sent.receivers;
      route.taken = route.sent = RouteState{};
      route.taken.receivers = route.sent.receivers = receivers;
      route.skip.clear();
      release_waits(route);
    }
  }
}

// ---- books -------------------------------------------------------------------------------

Lanes::Books Lanes::books() const {
  Books b = retired_;
  b.opened = broker_.stats().lanes_opened;
  b.fds = 0;
  for (const auto& [id, lane] : lanes_) {
    b.fds += (lane.data ? 1 : 0) + (lane.ack ? 1 : 0) + (lane.wake ? 1 : 0);
    if (lane.state != State::kOpen) continue;
    ++b.open;
    count_open(lane, b);
  }
  for (const auto& [id, c] : closing_) count_open(c.lane, b);  // what is left in them: queued until they are done
  return b;
}

std::uint64_t Lanes::bytes_of_uid(uid_t uid) const {
  auto it = uid_bytes_.find(uid);
  return it == uid_bytes_.end() ? 0 : it->second;
}

Lanes::ClientLanes Lanes::client_lanes(std::uint64_t client) const {
  ClientLanes n;
  if (auto r = retired_by_session_.find(client); r != retired_by_session_.end()) {
    n.sent = r->second.first;
    n.received = r->second.second;
  }
  auto add = [&](const Lane& l, bool open) {
    Books b;
    count_open(l, b);
    if (l.publisher == client) {
      n.out += open ? 1 : 0;
      n.sent += b.accepted;
    } else if (l.subscriber == client) {
      n.in += open ? 1 : 0;
      n.received += b.delivered;
    }
  };
  if (auto it = by_session_.find(client); it != by_session_.end()) {
    for (const std::uint64_t id : it->second) {
      if (const Lane& l = lanes_.at(id); l.state == State::kOpen) add(l, true);
    }
  }
  for (const auto& [id, c] : closing_) add(c.lane, false);  // closed, still read: its counts stay
  return n;
}

std::uint32_t Lanes::carrying(std::string_view topic) const {
  std::uint32_t n = 0;
  for (const auto& [id, pub] : publishers_) {
    if (auto t = pub.topics.find(topic); t != pub.topics.end()) n += static_cast<std::uint32_t>(t->second.taken.targets.size());
  }
  return n;
}

std::vector<Lanes::View> Lanes::views() const {
  std::vector<View> out;
  const auto now = Clock::now();
  auto view_of = [&](const Lane& l, const char* state) {
    View v{.id = l.id, .publisher = l.publisher, .subscriber = l.subscriber, .state = state, .capacity = l.capacity,
           .books = {}, .age = now - l.offered_at, .topics = {}};
    if (l.state == State::kOpen) count_open(l, v.books);
    // (A closed lane is out of every route already: it lists none.)
    if (auto p = publishers_.find(l.publisher); p != publishers_.end()) {
      for (const auto& [topic, route] : p->second.topics) {
        const auto& ts = route.taken.targets;
        if (std::any_of(ts.begin(), ts.end(), [&](const Target& t) { return t.lane == l.id; })) v.topics.push_back(topic);
      }
      std::sort(v.topics.begin(), v.topics.end());
    }
    out.push_back(std::move(v));
  };
  for (const auto& [id, lane] : lanes_) view_of(lane, lane.state == State::kOpen ? "open" : "setting up");
  for (const auto& [id, c] : closing_) view_of(c.lane, "closing");
  std::sort(out.begin(), out.end(), [](const View& a, const View& b) { return a.id < b.id; });
  return out;
}

void Lanes::send(std::uint64_t session, wire::Header& h, std::vector<shm::UniqueFd> fds) {
  if (Session* s = broker_.find(session)) s->send_lane_frame(h, std::move(fds));
}

}  // namespace ubroker::broker
