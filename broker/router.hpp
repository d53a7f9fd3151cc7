// The Router decides where a published message goes: it owns every subscription and service,
// indexes them by pattern, caches the resolved targets per topic, picks one member per queue
// group, and applies each target's overflow policy (hold the publisher back, or drop and
// count). All routing decisions live here, so a later direct lane can ask the same place.
// It knows clients only as Outboxes (room, hold back, deliver: outbox.hpp), never as
// Sessions, and is unit-tested without a broker. Event loop thread only; a client's outbox
// is removed (remove_owner) before it goes away.
#pragma once

#include <algorithm>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "chunk_pool.hpp"
#include "outbox.hpp"
#include "stats.hpp"
#include "subscription.hpp"
#include "topic_stats.hpp"
#include "topic_index.hpp"
#include "ubroker.pb.h"
#include "ubroker/proto/deliver_encoder.hpp"

namespace ubroker::broker {

struct RouteError {
  wire::ErrorCode code;
  std::string message;
};

// A subscription by its owner's client id and its id there (what a lane route covers).
struct SubKey {
  std::uint64_t owner = 0;
  std::uint64_t id = 0;
  friend auto operator<=>(const SubKey&, const SubKey&) = default;
};

// What a publisher's lanes change about where its message goes (broker/lanes.hpp): the
// subscriptions its lanes took it to (skipped), and the ones its current route knows of
// (others, newer than that route, get its messages only once it takes one that knows them).
struct LaneFilter {
  const std::vector<SubKey>* skip = nullptr;   // sorted
  const std::vector<SubKey>* known = nullptr;  // sorted
  [[nodiscard]] bool passes(const SubKey& k) const noexcept {
    return std::binary_search(known->begin(), known->end(), k) && !std::binary_search(skip->begin(), skip->end(), k);
  }
};

struct Published {
  std::string_view topic;
  std::span<const std::byte> payload;
  const ChunkRef* chunk;           // holds `payload`, for deliveries that reference instead of copy
  const BulkRef* bulk = nullptr;   // set: the payload is in shared memory (`payload` is empty)
  std::span<const std::byte> headers = {};  // checked (proto/headers.hpp); carried as they are
  const LaneFilter* lanes = nullptr;  // set: the sender has lanes (LaneFilter)
  [[nodiscard]] std::uint64_t size() const noexcept { return bulk ? bulk->length : payload.size(); }
};

// Who a delivery says sent it (the broker's own events: id 0).
struct SenderStamp {
  std::uint64_t id = 0;
  std::uint32_t uid = 0;
  std::uint32_t pid = 0;
};

enum class RouteResult { kRouted, kBlocked, kNoResponders, kInvalidTopic };

class Router {
 public:
  explicit Router(Stats& stats) : stats_(stats) {}
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  using Subscriptions = std::unordered_map<std::uint64_t, std::unique_ptr<Subscription>>;

  [[nodiscard]] std::expected<void, RouteError> subscribe(Outbox& owner, std::uint64_t id, std::string_view pattern,
                                                          std::string_view group, wire::Overflow overflow,
                                                          std::size_t max_subscriptions);
  // Whether subscribe() would accept this now (the id, the count, the pattern, the group name,
  // the uid's subscription budget); nothing changes.
  [[nodiscard]] std::expected<void, RouteError> admissible(Outbox& owner, std::uint64_t id, std::string_view pattern,
                                                           std::string_view group, std::size_t max_subscriptions);
  // Returns the subscription's total drop count.
  [[nodiscard]] std::expected<std::uint64_t, RouteError> unsubscribe(Outbox& owner, std::uint64_t id);
  // Registers a responder for requests on topics matching `pattern`.
  [[nodiscard]] std::expected<void, RouteError> serve(Outbox& owner, std::uint64_t id, std::string_view pattern,
                                                      std::size_t max_subscriptions);
  // Forgets every subscription and service of a client that is going away.
  void remove_owner(Outbox& owner);
  // A client's subscriptions and services, by id (empty when it has none).
  [[nodiscard]] const Subscriptions& subscriptions_of(const Outbox& owner) const;
  [[nodiscard]] const Subscription* find(const Outbox& owner, std::uint64_t id) const;
  // The counts of a client's service `id` (nullptr when it has no such service).
  [[nodiscard]] ServiceCounts* service_counts(const Outbox& owner, std::uint64_t id);

  // Routes one message from the client `stamp.id`. kBlocked: a lossless target is full;
  // nothing was delivered, the sender is held back by the full targets and must retry later.
  // kInvalidTopic: the topic's syntax is wrong (reserved topics are the caller's to refuse).
  [[nodiscard]] RouteResult publish(const SenderStamp& stamp, const Published& msg);
  // A run of plain publishes from client `stamp.id` on one topic, each payload small (it is
  // copied), none retained and none with headers (Session::process_frames gathers them): routed
  // as one, each receiver's frames queued and accounted in one step. False when the run must
  // go one message at a time (a queue group, drops to report, a receiver without room for all
  // of it, an invalid topic); then nothing was done. `bytes`: the payloads' sizes together.
  [[nodiscard]] bool publish_run(const SenderStamp& stamp, std::string_view topic,
                                 std::span<const std::span<const std::byte>> payloads, std::uint64_t bytes,
                                 const LaneFilter* lanes = nullptr);
  // The broker's own messages ($sys. events): never held back (the broker cannot wait), so a
  // subscriber whose queue is full misses them, counted as overflow drops like a DROP
  // subscription's: a uid churning connections cannot grow anyone's queue past its limits.
  void publish_system(const Published& msg, const SenderStamp& stamp);

  // The responder a request on `topic` goes to (round-robin, preferring one with room).
  // kBlocked: all are full and `from` is registered with them. kNoResponders: nobody serves it.
  // `topic_stats` is the topic's entry in the topic table (nullptr when untracked).
  [[nodiscard]] RouteResult pick_responder(std::uint64_t from, std::string_view topic, Subscription*& responder,
                                           TopicStats*& topic_stats);
  [[nodiscard]] std::size_t count_responders(std::string_view topic);
  // The direct (not grouped) subscriptions a message on `topic` reaches, by owner then id, in
  // `out`; `grouped`: queue groups take it too. False for an invalid topic.
  [[nodiscard]] bool direct_subscriptions(std::string_view topic, std::vector<const Subscription*>& out, bool& grouped);

  [[nodiscard]] std::size_t subscription_count() const noexcept { return subscription_count_; }
  // Subscriptions whose pattern may match one of the broker's own topics ($sys.*): while there
  // are none, the broker need not even build its trace messages.
  [[nodiscard]] std::size_t system_listeners() const noexcept { return system_listeners_; }
  [[nodiscard]] static bool may_match_system(std::string_view pattern) noexcept;

  // The topic table is bounded in entries and bytes; when it fills, the topics idle longest
  // are forgotten (counted) at the next rate tick, so new topics stay visible to operators.
  static constexpr std::size_t kMaxTrackedTopics = 65536;
  static constexpr std::size_t kMaxTrackedTopicBytes = 32u << 20;
  // The route cache is bounded the same way (cleared when full: it is only a cache).
  static constexpr std::size_t kMaxCachedTopicBytes = 32u << 20;
  static constexpr std::size_t kMaxPublishersTracked = 64;
  [[nodiscard]] const auto& topic_stats() const noexcept { return topic_stats_; }
  [[nodiscard]] std::uint64_t untracked_messages() const noexcept { return untracked_messages_; }
  [[nodiscard]] std::uint64_t topics_forgotten() const noexcept { return topics_forgotten_; }
  // Subscriptions (group members counted one per group) a message on `topic` would reach.
  [[nodiscard]] std::size_t count_subscribers(std::string_view topic);
  // Folds the messages since the previous tick into each topic's rate.
  void tick_rates(double seconds);

 private:
  struct Route {
    std::vector<Subscription*> direct;  // sorted by owner, so one frame per owner
    std::vector<Group*> groups;
    std::vector<Subscription*> services;
    std::size_t next_service = 0;  // round-robin cursor (restarts when the cache is cleared)
    TopicStats* stats = nullptr;   // nullptr beyond kMaxTrackedTopics
  };
  struct Target {
    Outbox* outbox;
    std::uint32_t first;  // into target_subs_
    std::uint32_t count;
    bool lossless;
  };

  // Counts `messages` of `bytes` on the route's topic (and its publisher).
  void count_topic(const Route& route, const SenderStamp& stamp, std::uint64_t messages, std::uint64_t bytes);
  // The cached route of a topic; a topic not cached yet is validated first (nullptr: invalid),
  // so a known topic costs one lookup and no validation.
  Route* resolve(std::string_view topic);
  void invalidate() noexcept {
    cache_.clear();
    cache_bytes_ = 0;
    last_ = nullptr;
  }
  // What one table entry costs beside its topic (node, hash bucket, the entry itself).
  static constexpr std::size_t kEntryOverhead = 256;
  // Forgets the topics idle longest until the table is at three quarters of its bounds.
  void forget_idle_topics();
  void add_target(Outbox* o, Subscription* sub);
  // Index of the member to get the next message: the first with room from the cursor on.
  std::size_t pick_member(const Group& g) const;
  // `held_back`: the sender can wait (a client); the broker's own messages cannot.
  RouteResult route(const SenderStamp& stamp, const Published& msg, bool held_back);
  void deliver(const Target& t, const Published& msg);
  void deliver_part(Outbox& to, std::span<Subscription* const> subs, const Published& msg);
  static constexpr std::uint32_t kIdsPerDelivery = 32;
  [[nodiscard]] std::expected<Subscription*, RouteError> add(Outbox& owner, std::uint64_t id, std::string_view pattern,
                                                             std::string_view group, std::size_t max_subscriptions);
  void remove(Subscription& sub);

  Stats& stats_;
  std::unordered_map<std::uint64_t, Subscriptions> by_owner_;  // by outbox (client) id
  TopicIndex<Subscription*> direct_index_;
  TopicIndex<Group*> group_index_;
  TopicIndex<Subscription*> service_index_;
  std::unordered_map<std::string, std::unique_ptr<Group>, StringHash, std::equal_to<>> groups_;
  std::unordered_map<std::string, Route, StringHash, std::equal_to<>> cache_;
  std::pair<const std::string, Route>* last_ = nullptr;  // the entry resolved last (cleared with cache_)
  std::size_t subscription_count_ = 0;
  std::unordered_map<std::string, TopicStats, StringHash, std::equal_to<>> topic_stats_;
  std::uint64_t untracked_messages_ = 0;
  std::uint64_t topics_forgotten_ = 0;
  std::size_t topic_stats_bytes_ = 0;
  std::size_t system_listeners_ = 0;
  std::size_t cache_bytes_ = 0;
  std::uint64_t tick_ = 0;

  // Scratch reused by every publish (no allocation per message once warm).
  std::vector<Target> targets_;
  std::vector<Subscription*> target_subs_;
  std::vector<std::size_t> group_picks_;  // per route.groups entry
  proto::DeliverEncoder deliver_;
  std::vector<std::uint64_t> ids_;    // scratch: one receiver's subscription ids
  std::vector<std::uint64_t> drops_;  // scratch: and their drops since the previous delivery
};

}  // namespace ubroker::broker
