// Router implementation. The hot path is publish(): one cache lookup, a scan of the cached
// targets, and for each target a header serialised straight into its outbound queue.
#include "router.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <cstring>

#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/topic.hpp"

namespace ubroker::broker {
namespace {

constexpr std::size_t kMaxCachedTopics = 65536;
constexpr std::size_t kMaxGroupName = 255;

std::string group_key(std::string_view pattern, std::string_view name) {
  std::string key;
  key.reserve(pattern.size() + 1 + name.size());
  key.append(pattern).push_back('\x1f');  // never inside a valid pattern or group name
  key.append(name);
  return key;
}

// A group name has a topic's syntax (the policy's `join` patterns match it like a topic).
const char* check_group_name(std::string_view name) {
  if (name.empty()) return nullptr;
  if (name.size() > kMaxGroupName) return "queue group name longer than 255 bytes";
  if (proto::check_topic(name) != nullptr) {
    return "queue group name is not dot-separated tokens of printable ASCII without spaces or wildcards";
  }
  return nullptr;
}

}  // namespace

const Router::Subscriptions& Router::subscriptions_of(const Outbox& owner) const {
  static const Subscriptions kNone;
  auto it = by_owner_.find(owner.id());
  return it == by_owner_.end() ? kNone : it->second;
}

const Subscription* Router::find(const Outbox& owner, std::uint64_t id) const {
  const auto& subs = subscriptions_of(owner);
  auto it = subs.find(id);
  return it == subs.end() ? nullptr : it->second.get();
}

bool Router::may_match_system(std::string_view pattern) noexcept {
  const std::string_view first = pattern.substr(0, pattern.find('.'));
  return first == "$sys" || first == "*" || first == ">";
}

ServiceCounts* Router::service_counts(const Outbox& owner, std::uint64_t id) {
  const auto& subs = subscriptions_of(owner);
  auto it = subs.find(id);
  return it == subs.end() || !it->second->service ? nullptr : &it->second->served;
}

std::expected<void, RouteError> Router::admissible(Outbox& owner, std::uint64_t id, std::string_view pattern,
                                                   std::string_view group, std::size_t max_subscriptions) {
  if (const char* why = check_group_name(group)) return std::unexpected(RouteError{wire::INVALID_PATTERN, why});
  const auto& subs = subscriptions_of(owner);
  if (subs.contains(id)) {
    return std::unexpected(RouteError{wire::DUPLICATE_SUBSCRIPTION, fmt::format("subscription id {} is in use", id)});
  }
  if (subs.size() >= max_subscriptions) {
    return std::unexpected(
        RouteError{wire::LIMIT_EXCEEDED,
                   fmt::format("subscription refused: this client has {} subscriptions and services "
                               "(limits.max_subscriptions = {})",
                               subs.size(), max_subscriptions)});
  }
  if (const char* why = proto::check_pattern(pattern)) {
    return std::unexpected(RouteError{wire::INVALID_PATTERN, fmt::format("invalid pattern '{}': {}", pattern, why)});
  }
  const std::uint64_t cost = subscription_cost(pattern);
  UidAccount& uid = owner.account().uid();
  if (!uid.fits(Resource::kSubscriptionBytes, cost)) {
    ++uid.limited;
    return std::unexpected(RouteError{
        wire::LIMIT_EXCEEDED,
        fmt::format("subscription refused: uid {}'s subscriptions and services take {} bytes of the broker's memory, "
                    "and this one would take {} more (limits.subscription_max_bytes_per_uid = {})",
                    uid.uid(), uid.used(Resource::kSubscriptionBytes), cost, uid.limit(Resource::kSubscriptionBytes))});
  }
  return {};
}

std::expected<Subscription*, RouteError> Router::add(Outbox& owner, std::uint64_t id, std::string_view pattern,
                                                     std::string_view group, std::size_t max_subscriptions) {
  if (auto ok = admissible(owner, id, pattern, group, max_subscriptions); !ok) return std::unexpected(ok.error());
  const std::uint64_t cost = subscription_cost(pattern);
  owner.account().charge(Resource::kSubscriptionBytes, cost);
  auto sub = std::make_unique<Subscription>();
  sub->owner = &owner;
  sub->id = id;
  sub->pattern = pattern;
  sub->cost = cost;
  Subscription* raw = sub.get();
  by_owner_[owner.id()].emplace(id, std::move(sub));
  ++subscription_count_;
  invalidate();
  return raw;
}

std::expected<void, RouteError> Router::subscribe(Outbox& owner, std::uint64_t id, std::string_view pattern,
                                                  std::string_view group, wire::Overflow overflow,
                                                  std::size_t max_subscriptions) {
  auto added = add(owner, id, pattern, group, max_subscriptions);
  if (!added) return std::unexpected(added.error());
  Subscription* sub = *added;
  sub->overflow = overflow;
  if (may_match_system(pattern)) ++system_listeners_;
  if (group.empty()) {
    direct_index_.insert(pattern, sub);
    return {};
  }
  auto [it, fresh] = groups_.try_emplace(group_key(pattern, group));
  if (fresh) {
    it->second = std::make_unique<Group>();
    it->second->pattern = pattern;
    it->second->name = group;
    group_index_.insert(pattern, it->second.get());
  }
  sub->group = it->second.get();
  sub->group->members.push_back(sub);
  return {};
}

std::expected<void, RouteError> Router::serve(Outbox& owner, std::uint64_t id, std::string_view pattern,
                                              std::size_t max_subscriptions) {
  auto added = add(owner, id, pattern, {}, max_subscriptions);
  if (!added) return std::unexpected(added.error());
  (*added)->service = true;
  service_index_.insert(pattern, *added);
  return {};
}

std::expected<std::uint64_t, RouteError> Router::unsubscribe(Outbox& owner, std::uint64_t id) {
  auto subs = by_owner_.find(owner.id());
  auto it = subs == by_owner_.end() ? decltype(subs->second.begin()){} : subs->second.find(id);
  if (subs == by_owner_.end() || it == subs->second.end()) {
    return std::unexpected(RouteError{wire::UNKNOWN_SUBSCRIPTION, fmt::format("no subscription with id {}", id)});
  }
  const std::uint64_t dropped = it->second->dropped;
  remove(*it->second);
  subs->second.erase(it);
  if (subs->second.empty()) by_owner_.erase(subs);
  return dropped;
}

void Router::remove_owner(Outbox& owner) {
  auto subs = by_owner_.find(owner.id());
  if (subs == by_owner_.end()) return;
  for (auto& [id, sub] : subs->second) remove(*sub);
  by_owner_.erase(subs);
}

void Router::remove(Subscription& sub) {
  if (sub.service) {
    service_index_.erase(sub.pattern, &sub);
  } else if (Group* g = sub.group) {
    auto& m = g->members;
    m.erase(std::find(m.begin(), m.end(), &sub));
    if (g->next >= m.size()) g->next = 0;
    if (m.empty()) {
      group_index_.erase(g->pattern, g);
      groups_.erase(group_key(g->pattern, g->name));
    }
  } else {
    direct_index_.erase(sub.pattern, &sub);
  }
  if (!sub.service && may_match_system(sub.pattern)) --system_listeners_;
  sub.owner->account().credit(Resource::kSubscriptionBytes, sub.cost);
  --subscription_count_;
  invalidate();
}

Router::Route* Router::resolve(std::string_view topic) {
  // A stream on one topic (the common case) costs a compare, not a hash and a lookup.
  if (last_ != nullptr && last_->first == topic) return &last_->second;
  if (auto it = cache_.find(topic); it != cache_.end()) {
    last_ = &*it;
    return &it->second;
  }
  if (proto::check_topic(topic) != nullptr) return nullptr;
  if (cache_.size() >= kMaxCachedTopics || cache_bytes_ >= kMaxCachedTopicBytes) invalidate();
  Route route;
  direct_index_.match(topic, [&](Subscription* s) { route.direct.push_back(s); });
  std::sort(route.direct.begin(), route.direct.end(), [](const Subscription* a, const Subscription* b) {
    return a->owner != b->owner ? a->owner->id() < b->owner->id() : a->id < b->id;
  });
  group_index_.match(topic, [&](Group* g) { route.groups.push_back(g); });
  service_index_.match(topic, [&](Subscription* s) { route.services.push_back(s); });
  if (auto st = topic_stats_.find(topic); st != topic_stats_.end()) {
    route.stats = &st->second;
  } else if (topic_stats_.size() < kMaxTrackedTopics && topic_stats_bytes_ < kMaxTrackedTopicBytes) {
    route.stats = &topic_stats_.emplace(std::string(topic), TopicStats{.active_tick = tick_}).first->second;
    topic_stats_bytes_ += topic.size() + kEntryOverhead;
  }
  cache_bytes_ += topic.size() + kEntryOverhead +
                  sizeof(void*) * (route.direct.size() + route.groups.size() + route.services.size());
  last_ = &*cache_.emplace(std::string(topic), std::move(route)).first;
  return &last_->second;
}

void Router::add_target(Outbox* o, Subscription* sub) {
  const bool lossless = sub->overflow == wire::BLOCK;
  if (!targets_.empty() && targets_.back().outbox == o) {
    targets_.back().count++;
    targets_.back().lossless |= lossless;
  } else {
    targets_.push_back({o, static_cast<std::uint32_t>(target_subs_.size()), 1, lossless});
  }
  target_subs_.push_back(sub);
}

std::size_t Router::pick_member(const Group& g) const {
  const std::size_t n = g.members.size();
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t at = (g.next + i) % n;
    if (g.members[at]->owner->has_room()) return at;
  }
  return g.next % n;  // all full: the policy of the one whose turn it is decides
}

RouteResult Router::publish(const SenderStamp& stamp, const Published& msg) {
  return route(stamp, msg, true);
}

void Router::publish_system(const Published& msg, const SenderStamp& stamp) {
  (void)route(stamp, msg, false);
}

RouteResult Router::route(const SenderStamp& stamp, const Published& msg, bool held_back) {
  const Route* found = resolve(msg.topic);
  if (found == nullptr) return RouteResult::kInvalidTopic;
  const Route& route = *found;
  targets_.clear();
  target_subs_.clear();
  if (msg.lanes == nullptr) {
    for (Subscription* s : route.direct) add_target(s->owner, s);
  } else {
    for (Subscription* s : route.direct) {
      if (msg.lanes->passes({s->owner->id(), s->id})) add_target(s->owner, s);
    }
  }
  group_picks_.clear();
  for (Group* g : route.groups) {
    const std::size_t at = pick_member(*g);
    group_picks_.push_back(at);
    add_target(g->members[at]->owner, g->members[at]);
  }

  bool blocked = false;
  for (const Target& t : targets_) {
    if (held_back && t.lossless && !t.outbox->has_room()) {
      t.outbox->hold_back(stamp.id);
      blocked = true;
    }
  }
  if (blocked) {
    // A full group member may free up before the others: wait on every lossless member.
    for (Group* g : route.groups) {
      for (Subscription* m : g->members) {
        if (m->overflow == wire::BLOCK && !m->owner->has_room()) m->owner->hold_back(stamp.id);
      }
    }
    ++stats_.publisher_blocks;
    return RouteResult::kBlocked;
  }

  if (held_back) {
    ++stats_.messages_in;
    stats_.bytes_in += msg.size();
    if (msg.bulk != nullptr) {
      ++stats_.bulk_messages;
      stats_.bulk_bytes += msg.size();
    }
  } else {
    ++stats_.system_messages;
  }
  count_topic(route, stamp, 1, msg.size());
  if (targets_.empty()) {
    ++stats_.no_subscriber;
    return RouteResult::kRouted;
  }
  for (std::size_t i = 0; i < route.groups.size(); ++i) {
    Group* g = route.groups[i];
    g->next = (group_picks_[i] + 1) % g->members.size();
  }
  deliver_.begin(msg.topic, stamp.id, stamp.uid, stamp.pid, msg.headers);
  for (const Target& t : targets_) {
    ++stats_.deliveries_accepted;  // from here on: written, queued, or dropped with a reason
    if (t.outbox->has_room()) {
      deliver(t, msg);
      continue;
    }
    for (std::uint32_t i = 0; i < t.count; ++i) {
      Subscription* s = target_subs_[t.first + i];
      ++s->dropped;
      ++s->dropped_unreported;
    }
    ++stats_.dropped_overflow;
  }
  return RouteResult::kRouted;
}

void Router::count_topic(const Route& route, const SenderStamp& stamp, std::uint64_t messages, std::uint64_t bytes) {
  TopicStats* ts = route.stats;
  if (ts == nullptr) {
    untracked_messages_ += messages;
    return;
  }
  ts->messages += messages;
  ts->bytes += bytes;
  auto& pubs = ts->publishers;
  if ((pubs.empty() || pubs.back() != stamp.id) && pubs.size() < kMaxPublishersTracked &&
      std::find(pubs.begin(), pubs.end(), stamp.id) == pubs.end()) {
    pubs.push_back(stamp.id);
  }
}

bool Router::publish_run(const SenderStamp& stamp, std::string_view topic,
                         std::span<const std::span<const std::byte>> payloads, std::uint64_t bytes,
                         const LaneFilter* lanes) {
  const Route* found = resolve(topic);
  // A queue group picks a member per message, and a subscription with drops to report has
  // them carried by its next DELIVER alone: both go one message at a time.
  if (found == nullptr || !found->groups.empty()) return false;
  const Route& route = *found;
  targets_.clear();
  target_subs_.clear();
  for (Subscription* s : route.direct) {
    if (lanes != nullptr && !lanes->passes({s->owner->id(), s->id})) continue;
    if (s->dropped_unreported != 0) return false;
    add_target(s->owner, s);
  }
  // Every receiver takes the whole run, or the run goes one message at a time: that path holds
  // the publisher back at a full lossless receiver and drops at a full DROP one, message by
  // message, so no queue passes its limits by more than it would. The uid check is for the
  // worst case, every receiver of the same uid.
  // A DELIVER head's bytes beyond its prefix and topic, at most: type, sender id, uid and
  // pid, up to kIdsPerDelivery subscription ids (drops are never in a run's heads).
  constexpr std::size_t kMaxHeadExtra = 2 + 3 * 11 + 3 + kIdsPerDelivery * 10;
  const std::size_t frame_bytes = bytes + payloads.size() * (proto::kPrefixSize + topic.size() + kMaxHeadExtra);
  for (const Target& t : targets_) {
    // More ids than one frame lists would take several frames per message, interleaved
    // message by message on the single path: that receiver goes one at a time.
    if (t.count > kIdsPerDelivery) return false;
    if (!t.outbox->has_room_for(payloads.size(), frame_bytes, frame_bytes * targets_.size())) return false;
  }
  std::uint64_t copied = 0;  // payloads with bytes to copy (an empty one is no copy)
  for (const auto& p : payloads) copied += p.empty() ? 0 : 1;
  const std::uint64_t n = payloads.size();
  stats_.messages_in += n;
  stats_.bytes_in += bytes;
  count_topic(route, stamp, n, bytes);
  if (targets_.empty()) {
    stats_.no_subscriber += n;
    return true;
  }
  deliver_.begin(topic, stamp.id, stamp.uid, stamp.pid);
  for (const Target& t : targets_) {
    stats_.deliveries_accepted += n;  // from here on: written or queued
    ids_.clear();
    drops_.clear();
    for (Subscription* s : std::span(target_subs_).subspan(t.first, t.count)) {
      ids_.push_back(s->id);
      drops_.push_back(0);
      s->delivered += n;
    }
    t.outbox->queue_delivery_run(deliver_.head(ids_, drops_, 0), payloads);
    t.outbox->count_delivery(bytes, n);
    stats_.deliveries += n;
    stats_.delivered_bytes += bytes;
    stats_.payload_copies += copied;
    stats_.payload_bytes_copied += bytes;
  }
  return true;
}

void Router::deliver(const Target& t, const Published& msg) {
  // One DELIVER lists all of a receiver's matching subscriptions, up to kIdsPerDelivery: a
  // head listing more could outgrow the frame size the client accepts (the broker's
  // max_frame_bytes + 1024), so a receiver with more gets one frame per kIdsPerDelivery.
  for (std::uint32_t first = 0; first < t.count; first += kIdsPerDelivery) {
    if (first != 0) ++stats_.deliveries_accepted;  // each frame is a delivery of its own
    deliver_part(*t.outbox, std::span(target_subs_).subspan(t.first + first, std::min(kIdsPerDelivery, t.count - first)),
                 msg);
  }
}

void Router::deliver_part(Outbox& to, std::span<Subscription* const> subs, const Published& msg) {
  std::optional<proto::ShmPart> shm;
  if (msg.bulk != nullptr) {
    auto held = to.hold_bulk(*msg.bulk);  // attaches the segment's fd on first use
    if (held) {
      shm = *held;
    } else {
      ++(held.error() == BulkDrop::kNoFd ? stats_.bulk_dropped_fds : stats_.bulk_dropped_holds);
      for (Subscription* s : subs) {
        ++s->dropped;
        ++s->dropped_unreported;
      }
      return;
    }
  }
  ids_.clear();
  drops_.clear();
  for (Subscription* s : subs) {
    ids_.push_back(s->id);
    drops_.push_back(s->dropped_unreported);
    s->dropped_unreported = 0;
    ++s->delivered;
  }
  const auto head = deliver_.head(ids_, drops_, msg.payload.size(), shm ? &*shm : nullptr);
  if (to.queue_delivery(head, msg.payload, msg.chunk)) {
    ++stats_.payload_copies;
    stats_.payload_bytes_copied += msg.payload.size();
  }
  to.count_delivery(msg.size());
  ++stats_.deliveries;
  stats_.delivered_bytes += msg.size();
  if (shm) ++stats_.bulk_deliveries;
}

RouteResult Router::pick_responder(std::uint64_t from, std::string_view topic, Subscription*& responder,
                                   TopicStats*& topic_stats) {
  Route* found = resolve(topic);
  if (found == nullptr) return RouteResult::kNoResponders;
  Route& route = *found;
  topic_stats = route.stats;
  const std::size_t n = route.services.size();
  if (n == 0) return RouteResult::kNoResponders;
  for (std::size_t i = 0; i < n; ++i) {
    Subscription* s = route.services[(route.next_service + i) % n];
    if (s->owner->has_room()) {
      route.next_service = (route.next_service + i + 1) % n;
      responder = s;
      return RouteResult::kRouted;
    }
  }
  for (Subscription* s : route.services) s->owner->hold_back(from);
  ++stats_.publisher_blocks;
  return RouteResult::kBlocked;
}

std::size_t Router::count_responders(std::string_view topic) {
  const Route* r = resolve(topic);
  return r == nullptr ? 0 : r->services.size();
}

bool Router::direct_subscriptions(std::string_view topic, std::vector<const Subscription*>& out, bool& grouped) {
  const Route* r = resolve(topic);
  if (r == nullptr) return false;
  out.assign(r->direct.begin(), r->direct.end());
  grouped = !r->groups.empty();
  return true;
}

std::size_t Router::count_subscribers(std::string_view topic) {
  const Route* r = resolve(topic);
  return r == nullptr ? 0 : r->direct.size() + r->groups.size();
}

void Router::tick_rates(double seconds) {
  if (seconds <= 0) return;
  ++tick_;
  for (auto& [topic, ts] : topic_stats_) {
    const double now = static_cast<double>(ts.messages - ts.messages_at_last_tick) / seconds;
    ts.rate = ts.rate == 0 ? now : 0.5 * ts.rate + 0.5 * now;
    if (ts.messages != ts.messages_at_last_tick || ts.served.requests != ts.requests_at_last_tick ||
        ts.requests_pending != 0) {
      ts.active_tick = tick_;
    }
    ts.messages_at_last_tick = ts.messages;
    ts.requests_at_last_tick = ts.served.requests;
  }
  if (topic_stats_.size() >= kMaxTrackedTopics || topic_stats_bytes_ >= kMaxTrackedTopicBytes) forget_idle_topics();
}

void Router::forget_idle_topics() {
  using Entry = decltype(topic_stats_)::iterator;
  std::vector<Entry> by_age;
  by_age.reserve(topic_stats_.size());
  for (auto it = topic_stats_.begin(); it != topic_stats_.end(); ++it) by_age.push_back(it);
  std::sort(by_age.begin(), by_age.end(),
            [](const Entry& a, const Entry& b) { return a->second.active_tick < b->second.active_tick; });
  invalidate();  // routes point into the table
  for (const Entry& it : by_age) {
    if (topic_stats_.size() <= kMaxTrackedTopics * 3 / 4 && topic_stats_bytes_ <= kMaxTrackedTopicBytes * 3 / 4) break;
    if (it->second.requests_pending != 0) continue;  // a PendingRequest points to it
    topic_stats_bytes_ -= it->first.size() + kEntryOverhead;
    topic_stats_.erase(it);
    ++topics_forgotten_;
  }
}

}  // namespace ubroker::broker
