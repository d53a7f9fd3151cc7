// Direct lanes, the broker's side (docs/architecture.md, "Direct lanes"). The broker stays out
// of a lane's data path but decides everything else:
//
//   which (publisher, subscriber) connections get a lane: after a publish the policy allowed
//     reached a direct subscription of a client that speaks lanes (both said so in HELLO);
//   the lane's setup: each end makes its own segment (LANE_OFFER -> LANE_SEGMENT), the broker
//     checks both (memfd, size, seals; the subscriber's wake socket) and passes each to the other
//     end (LANE_OPEN), stamping the publisher's identity for the subscriber;
//   the routes: per publisher and topic, which lanes carry the topic and for which of the
//     receiver's subscriptions (LANE_ROUTE), recomputed whenever subscriptions, rights, or
//     lanes change; the publisher takes a route in order with its publishes (LANE_ROUTE_ACK),
//     so the broker knows exactly which of its publishes still need it and for whom;
//   the order at every switch: the publisher writes a fence into each lane a route change
//     touches and names it in its ack; the broker relays it behind everything it already
//     queued for that subscriber (LANE_FENCE), and the subscriber meets the two halves;
//   a subscription waits for the publishers it changes: its SUBACK goes once they took their
//     new routes, so a publish made after subscribe() returned reaches it, lane or not;
//   the books: the segments' counters (read-only mappings) in status; a lane whose reader
//     makes no progress for timeouts.slow_consumer_ms is closed (its subscriber stays);
//   the end: a disconnect, a lost right, a violation either side reports (LANE_ERROR), or
//     setup that does not finish, closes the lane (LANE_CLOSE) and its traffic goes back to
//     the broker. The lane's books are final once each end still connected has answered
//     with its own LANE_CLOSE (it no longer writes, or has read what it was going to read) or
//     gone: until then a publisher may still write and a subscriber still read, the books
//     count what is in the lane as queued, not yet as lost, and its segments stay charged.
//
// Memory: a lane's two segments are charged to both uids (lanes.max_bytes_per_uid), and a
// client has at most lanes.max_per_client. Event loop thread only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config.hpp"
#include "router.hpp"
#include "stats.hpp"
#include "ubroker.pb.h"
#include "ubroker/proto/string_hash.hpp"
#include "ubroker/shm/mapping.hpp"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::broker {

class Broker;
class Session;

class Lanes {
 public:
  using Clock = std::chrono::steady_clock;
  Lanes(Broker& broker, Router& router, const Config& config) : broker_(broker), router_(router), config_(config) {}
  Lanes(const Lanes&) = delete;
  Lanes& operator=(const Lanes&) = delete;
  ~Lanes();

  // What a publisher's lanes change about where its PUBLISH on `topic` goes (the route it
  // took last): nullptr when nothing.
  [[nodiscard]] const LaneFilter* filter(std::uint64_t publisher, std::string_view topic) const;
  // `from` published on `topic` (allowed, routed, not retained): a topic it has no route for
  // yet gets one, and lanes are offered where it could use them.
  void published(Session& from, std::string_view topic);
  // Subscriptions or rights changed: every route is brought up to date. `subscriber` (with
  // the SUBSCRIBE's seq) is a subscription waiting for the publishers it changes; returns
  // true when its SUBACK will be sent later, once they took their new routes.
  bool subscriptions_changed(Session* subscriber = nullptr, std::uint64_t seq = 0);
  // A connection ended (its subscriptions are out of the router already): its lanes close,
  // its routes and waits are forgotten, and the routes that reached it are brought up to date.
  void session_gone(std::uint64_t id);

  // Frames from clients. Each returns false for a protocol error of that client (it has been
  // sent the fatal error already).
  bool segment(Session& from, const wire::Header& h, shm::UniqueFd fd, shm::UniqueFd wake);
  // LANE_ROUTE_ACK. kHeldBack: a subscriber its fences go to has no room for them; the frame
  // waits (the publisher is held back, as a publish to that subscriber would be).
  enum class Taken { kTaken, kHeldBack, kRefused };
  Taken route_taken(Session& from, const wire::Header& h);
  void error_reported(Session& from, const wire::Header& h);
  // LANE_CLOSE back from an end: it no longer writes (or reads) the lane.
  void close_done(Session& from, const wire::Header& h);

  // Called periodically: books, slow readers, setups and route changes that did not finish.
  void sweep(Clock::time_point now);

  struct Books {
    std::uint64_t open = 0;
    std::uint64_t opened = 0;
    std::uint64_t closed_broken = 0;  // violations, bad segments, unfinished setups
    std::uint64_t accepted = 0;       // messages publishers put into lanes
    std::uint64_t delivered = 0;      // taken out by subscribers
    std::uint64_t dropped = 0;        // dropped by publishers at a full DROP lane
    std::uint64_t lost = 0;           // left in lanes that closed broken or with a reader gone
    std::uint64_t fds = 0;            // held for lanes being set up
    [[nodiscard]] std::uint64_t queued() const noexcept { return accepted - delivered - dropped - lost; }
  };
  // Totals over the open lanes (read now) and the closed ones.
  [[nodiscard]] Books books() const;
  [[nodiscard]] std::uint64_t bytes_of_uid(uid_t uid) const;
  // One client's open lanes, and what it put into all its lanes and took out of them (closed
  // ones included, so the counts only grow).
  struct ClientLanes {
    std::uint32_t out = 0;  // as publisher
    std::uint32_t in = 0;   // as subscriber
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
  };
  [[nodiscard]] ClientLanes client_lanes(std::uint64_t client) const;
  // The lanes that carry `topic` now (the publishers' routes taken).
  [[nodiscard]] std::uint32_t carrying(std::string_view topic) const;
  // Every lane, set up, open or closing, by id (brokerctl lanes).
  struct View {
    std::uint64_t id = 0;
    std::uint64_t publisher = 0;
    std::uint64_t subscriber = 0;
    const char* state = "";
    std::uint64_t capacity = 0;
    Books books;  // accepted, delivered, dropped and queued(), of this lane
    Clock::duration age{};
    std::vector<std::string> topics;
  };
  [[nodiscard]] std::vector<View> views() const;

 private:
  enum class State { kOffered, kOpen };
  struct Lane {
    std::uint64_t id = 0;
    std::uint64_t publisher = 0;   // session ids
    std::uint64_t subscriber = 0;
    uid_t publisher_uid = 0;
    uid_t subscriber_uid = 0;
    State state = State::kOffered;
    std::uint64_t capacity = 0;
    std::uint64_t charge = 0;       // bytes charged to each of the two uids
    shm::UniqueFd data;             // the publisher's segment (until the lane opens)
    shm::UniqueFd ack;              // the subscriber's segment (ditto)
    shm::UniqueFd wake;             // the subscriber's wake socket (ditto)
    shm::Mapping data_map;          // read-only, for the books
    shm::Mapping ack_map;
    Clock::time_point offered_at;
    std::uint64_t last_fence = 0;   // the publisher's fence numbers only grow
    std::uint64_t last_read_pos = 0;
    Clock::time_point stalled_since = Clock::time_point::max();
  };
  struct Target {
    std::uint64_t lane = 0;
    std::uint64_t subscriber = 0;
    std::vector<std::uint64_t> sub_ids;  // sorted
    bool lossless = false;
    friend bool operator==(const Target&, const Target&) = default;
  };
  struct RouteState {
    std::vector<Target> targets;  // by lane id
    bool via_broker = true;
    // Every direct subscription to the topic when it was worked out, sorted: one newer than
    // the route the publisher took gets its messages only once it takes a newer one, so a
    // subscription's stream from a publisher starts at one point, without a gap.
    std::vector<SubKey> receivers;
    [[nodiscard]] bool same_path(const RouteState& o) const { return targets == o.targets && via_broker == o.via_broker; }
  };
  struct TopicRoute {
    std::uint64_t version = 0;  // the last one sent
    RouteState sent;
    std::deque<std::pair<std::uint64_t, RouteState>> unacked;  // versions sent, not taken yet
    RouteState taken;
    std::vector<SubKey> skip;   // what `taken` covers, sorted
    LaneFilter filter{&skip, &taken.receivers};
    std::vector<std::uint64_t> waiting;  // subscriptions (wait ids) waiting for this version to be taken
    Clock::time_point sent_at;
    bool dirty = false;  // a change not sent yet (kMaxUnackedRoutes versions in flight)
    TopicRoute() = default;
    TopicRoute(const TopicRoute&) = delete;  // `filter` points into it
    TopicRoute& operator=(const TopicRoute&) = delete;
  };
  struct Publisher {
    std::unordered_map<std::string, TopicRoute, proto::StringHash, std::equal_to<>> topics;
  };
  struct Wait {  // a SUBSCRIBE whose ACK waits for publishers to take their routes
    std::uint64_t session = 0;
    std::uint64_t seq = 0;
    std::size_t routes = 0;
  };

  static constexpr std::size_t kMaxRoutedTopics = 256;  // per publisher
  static constexpr std::size_t kMaxUnackedRoutes = 16;  // per publisher and topic
  static constexpr std::chrono::seconds kSetupDeadline{5};
  // How long a publisher may take to take a route, beyond timeouts.slow_consumer_ms (its ack
  // can wait behind a publish the broker holds back for that long).
  static constexpr std::chrono::seconds kRouteDeadline{2};

  [[nodiscard]] RouteState desired(const Session& publisher, std::string_view topic);
  // Sends the route if it changed; registers `wait` (a Wait id, 0: none) on it. True if sent.
  bool update(Session& publisher, const std::string& topic, TopicRoute& route, std::uint64_t wait);
  void update_publisher(std::uint64_t publisher);
  Lane* lane_between(std::uint64_t publisher, std::uint64_t subscriber);
  Lane* offer(const Session& publisher, const Session& subscriber);
  [[nodiscard]] static bool fds_to_spare();
  void open(Lane& lane);
  // Closes the lane; `broken`: what is left in it is not to be read. Routes that used it are
  // brought up to date unless the publisher is the session going away (`gone`).
  void close(std::uint64_t lane_id, std::string_view reason, bool broken, std::uint64_t gone = 0);
  void retire_books(const Lane& lane);
  // A closed lane whose ends have not all said they are done with it (LANE_CLOSE back, or
  // gone). No deadline: a subscriber may read what its lane held long after (its reading
  // paused); the lane's segments stay charged to both uids meanwhile, so a client that never
  // answers holds no more than lanes.max_bytes_per_uid allows.
  struct Closing {
    Lane lane;
    bool publisher_done = false;
    bool subscriber_done = false;
  };
  void release(const Lane& lane);  // its segments' charge to both uids
  void end_done(std::uint64_t lane_id, std::uint64_t session);
  // Kept in the books while its ends finish with it.
  static void count_open(const Lane& lane, Books& b);
  void release_waits(TopicRoute& route);
  // Whether any route of the publisher (taken, sent or on its way) has lossless subscriptions
  // on the lane.
  [[nodiscard]] bool carries_lossless(std::uint64_t publisher, std::uint64_t lane) const;
  void send(std::uint64_t session, wire::Header& h, std::vector<shm::UniqueFd> fds = {});

  Broker& broker_;
  Router& router_;
  const Config& config_;
  std::uint64_t next_lane_ = 1;
  std::uint64_t next_wait_ = 1;
  std::unordered_map<std::uint64_t, Lane> lanes_;                 // by id
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::uint64_t> by_pair_;  // (publisher, subscriber) -> lane id
  std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> by_session_;  // session -> its lanes
  std::unordered_map<std::uint64_t, Publisher> publishers_;       // by session id
  std::unordered_map<std::uint64_t, Wait> waits_;
  std::unordered_map<uid_t, std::uint64_t> uid_bytes_;
  // No lanes again for a pair whose lane was closed while both stayed connected, nor for a
  // publisher that did not take its routes: a hostile or stuck end cannot make the broker set
  // lanes up for ever.
  std::set<std::pair<std::uint64_t, std::uint64_t>> broken_pairs_;
  std::set<std::uint64_t> barred_;
  std::unordered_map<std::uint64_t, Closing> closing_;  // by lane id
  Books retired_;  // of closed lanes
  // What each connected client put into and took out of its lanes that are closed and done.
  std::unordered_map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> retired_by_session_;
  wire::Header frame_;  // reused for every frame sent
  std::vector<const Subscription*> matches_;  // scratch
  std::vector<std::uint64_t> named_;          // scratch: the lanes a LANE_ROUTE_ACK names
};

}  // namespace ubroker::broker
