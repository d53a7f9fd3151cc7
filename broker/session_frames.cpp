// What each frame a client sends means: the handshake, publish, subscribe, unsubscribe, ping.
// Every refusal is an Error frame with a code and a sentence; protocol violations are fatal.
#include <fcntl.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "broker.hpp"
#include "log_text.hpp"
#include "retained_store.hpp"
#include "session.hpp"
#include "slots.hpp"
#include "ubroker/shm/lane_layout.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/headers.hpp"
#include "ubroker/proto/topic.hpp"

#ifndef UBROKER_VERSION
#define UBROKER_VERSION "0.0.0"
#endif

namespace ubroker::broker {
namespace {

constexpr std::size_t kMaxClientName = 128;
constexpr std::string_view kAdminPrefix = "$sys.admin.";

}  // namespace

Session::Step Session::handle_frame(const wire::Header& h, std::span<const std::byte> payload) {
  if (phase_ == Phase::kHandshake) {
    if (h.type() != wire::HELLO) {
      send_error(wire::PROTOCOL_ERROR,
                 fmt::format("expected HELLO as the first frame, got {}", wire::FrameType_Name(h.type())), true);
      return Step::kClose;
    }
    return handle_hello(h);
  }
  // Every frame but PUBLISH, REPLY and SHM_RELEASE may queue an answer to this client: hold
  // back while its own queue is full, so a client that never reads cannot grow it without bound.
  if (h.type() != wire::PUBLISH && h.type() != wire::REPLY && h.type() != wire::SHM_RELEASE && !outbox_.has_room()) {
    return wait_for_room();
  }
  if (claim_fds(h) == Step::kClose) return Step::kClose;
  switch (h.type()) {
    case wire::PUBLISH: {
      std::span<const std::byte> headers;
      if (auto refused = take_headers(h, "publish", headers)) return *refused;
      return h.has_shm() ? handle_bulk_publish(h, headers, payload)
                         : handle_publish({.topic = h.topic(), .payload = payload, .chunk = inbox_.chunk(),
                                           .headers = headers},
                                          h.retain());
    }
    case wire::SHM_REGISTER: return handle_shm_register(h);
    case wire::SHM_RELEASE: return handle_shm_release(h);
    case wire::SUBSCRIBE: return handle_subscribe(h);
    case wire::UNSUBSCRIBE: return handle_unsubscribe(h);
    case wire::SERVE: return handle_serve(h);
    case wire::REQUEST: return handle_request(h, payload);
    case wire::REPLY: return handle_reply(h, payload);
    case wire::PROBE: return handle_probe(h);
    case wire::STATUS: return handle_status(h);
    case wire::LANE_SEGMENT:
      if (!lanes_capable_) break;
      if (!broker_.lanes().segment(*this, h, std::move(claimed_fd_), std::move(claimed_wake_fd_))) return Step::kClose;
      return Step::kContinue;
    case wire::LANE_ROUTE_ACK:
      if (!lanes_capable_) break;
      switch (broker_.lanes().route_taken(*this, h)) {
        case Lanes::Taken::kTaken: return Step::kContinue;
        case Lanes::Taken::kHeldBack: return Step::kBlocked;
        case Lanes::Taken::kRefused: return Step::kClose;
      }
      return Step::kClose;
    case wire::LANE_ERROR:
      if (!lanes_capable_) break;
      broker_.lanes().error_reported(*this, h);
      return Step::kContinue;
    case wire::LANE_CLOSE:
      if (!lanes_capable_) break;
      broker_.lanes().close_done(*this, h);
      return Step::kContinue;
    case wire::PING:
      if (!held_answers_.empty()) {  // behind the SUBACKs still to come
        if (held_answers_.size() >= broker_.config().limits.queue_max_messages) return Step::kBlocked;
        held_answers_.push_back({.seq = h.seq(), .pong = true, .done = false});
        return Step::kContinue;
      }
      control_.Clear();
      control_.set_type(wire::PONG);
      control_.set_seq(h.seq());
      queue_control(control_);
      return Step::kContinue;
    case wire::HELLO: send_error(wire::PROTOCOL_ERROR, "HELLO sent twice", true); return Step::kClose;
    default:
      send_error(wire::PROTOCOL_ERROR,
                 fmt::format("{} frames are sent by the broker, not by clients", wire::FrameType_Name(h.type())), true);
      return Step::kClose;
  }
  send_error(wire::PROTOCOL_ERROR,
             fmt::format("a {} frame from a client without lanes (its HELLO did not offer them, or lanes.enabled is off)",
                         wire::FrameType_Name(h.type())),
             true);
  return Step::kClose;
}

Session::Step Session::handle_hello(const wire::Header& h) {
  if (!h.has_hello()) {
    send_error(wire::PROTOCOL_ERROR, "HELLO frame without a hello message", true);
    return Step::kClose;
  }
  const auto& hello = h.hello();
  if (hello.protocol_version() != proto::kProtocolVersion) {
    send_error(wire::UNSUPPORTED_VERSION,
               fmt::format("protocol version {} is not supported (this broker speaks {})", hello.protocol_version(),
                           proto::kProtocolVersion),
               true);
    return Step::kClose;
  }
  name_ = printable(hello.client_name(), kMaxClientName);  // shown in logs and tables
  // Only the lane layout this broker knows (a client built against another one gets none).
  lanes_capable_ = broker_.config().lanes.enabled && std::find(hello.features().begin(), hello.features().end(),
                                                               std::string_view(shm::kLaneFeature)) != hello.features().end();
  welcomed_ = true;
  enter(Phase::kOpen);
  const auto& cfg = broker_.config();
  control_.Clear();
  control_.set_type(wire::WELCOME);
  auto* w = control_.mutable_welcome();
  w->set_client_id(id_);
  w->set_protocol_version(proto::kProtocolVersion);
  w->set_broker_version(UBROKER_VERSION);
  w->set_broker_pid(static_cast<std::uint32_t>(::getpid()));
  auto* l = w->mutable_limits();
  l->set_max_frame_bytes(cfg.limits.max_frame_bytes);
  l->set_max_fds_per_frame(1);
  l->set_shm_max_segment_bytes(cfg.limits.shm_max_segment_bytes);
  l->set_max_subscriptions(cfg.limits.max_subscriptions);
  l->set_queue_max_messages(cfg.limits.queue_max_messages);
  l->set_queue_max_bytes(cfg.limits.queue_max_bytes);
  l->set_max_pending_requests(cfg.limits.max_pending_requests);
  queue_control(control_);
  spdlog::debug("{}: connected (gid {})", describe(), peer_.gid);
  broker_.client_event(*this, true);
  return Step::kContinue;
}

Session::Step Session::refuse(wire::ErrorCode code, std::string_view message, std::uint64_t seq) {
  if (!outbox_.has_room()) {  // the refusal is an answer: bounded like every other
    return wait_for_room();
  }
  send_error(code, message, false, seq);
  return Step::kContinue;
}

std::optional<Session::Step> Session::deny_unless(Right r, std::string_view what, bool pattern, std::uint64_t seq) {
  if (pattern ? grants_.allows_pattern(r, what) : grants_.allows_topic(r, what)) return std::nullopt;
  return refuse(wire::PERMISSION_DENIED, denial(r, what, pattern, identity()), seq);
}

std::size_t Session::apply_grants(Grants grants) {
  grants_ = std::move(grants);
  last_published_.clear();
  std::vector<std::uint64_t> revoked;
  const auto& subs = broker_.router().subscriptions_of(outbox_);
  for (const auto& [id, sub] : subs) {
    if (!grants_.allows_pattern(sub->service ? Right::kServe : Right::kSubscribe, sub->pattern)) revoked.push_back(id);
  }
  for (const std::uint64_t id : revoked) {
    const Subscription& sub = *subs.at(id);
    const Right right = sub.service ? Right::kServe : Right::kSubscribe;
    const std::string pattern = sub.pattern;
    (void)broker_.router().unsubscribe(outbox_, id);
    // Told even past its queue limit: at most one frame per subscription it had.
    send_error(wire::PERMISSION_DENIED,
               fmt::format("{} {} removed by a policy reload: {}", right == Right::kServe ? "service" : "subscription",
                           id, denial(right, pattern, true, identity())),
               false, 0, id);
    if (right == Right::kServe) broker_.service_event(*this, pattern, false);
  }
  return revoked.size();
}

std::optional<Session::Step> Session::take_headers(const wire::Header& h, std::string_view what,
                                                  std::span<const std::byte>& encoded) {
  encoded = {};
  if (!h.has_headers()) return std::nullopt;
  // Written in the canonical form whatever form they came in, then checked field by field.
  const auto size = h.headers().ByteSizeLong();
  const char* why = size > proto::kMaxHeaderBytes ? "headers are larger than 16 KiB" : nullptr;
  if (why == nullptr) {
    headers_buf_.resize(size);
    (void)h.headers().SerializeWithCachedSizesToArray(reinterpret_cast<std::uint8_t*>(headers_buf_.data()));
    encoded = headers_buf_;
    why = proto::check_headers(encoded);
  }
  if (why == nullptr && proto::has_broker_header(encoded)) why = "header keys that start with 'ubroker-' are the broker's";
  if (why == nullptr) return std::nullopt;
  return refuse(wire::INVALID_HEADERS, fmt::format("{} refused: {}", what, why), h.seq());
}

Session::Step Session::handle_publish(const Published& msg, bool retain) {
  const std::string_view topic = msg.topic;
  // (Headers from the fast decoder are checked already; the broker's own keys are not theirs.)
  if (!msg.headers.empty() && proto::has_broker_header(msg.headers)) {
    return refuse(wire::INVALID_HEADERS, "publish refused: header keys that start with 'ubroker-' are the broker's", 0);
  }
  // One string compare for a client publishing on the topic it used last.
  if (!grants_.all() && topic != last_published_) {
    if (auto denied = deny_unless(Right::kPublish, topic, false, 0)) return *denied;
    last_published_ = topic;
  }
  RouteResult routed = RouteResult::kInvalidTopic;
  if (!proto::is_reserved(topic)) {
    // The router validates a topic it has not seen before: a known topic costs one lookup.
    // What this client's lanes carry (a retained value never goes by lane) is skipped.
    Published routed_msg = msg;
    if (lanes_capable_ && !retain) routed_msg.lanes = broker_.lanes().filter(id_, topic);
    routed = broker_.router().publish(stamp(), routed_msg);
    if (routed == RouteResult::kBlocked) return Step::kBlocked;
  }
  if (routed != RouteResult::kRouted) {
    if (!outbox_.has_room()) {  // the refusal is an answer: bounded like every other
      return wait_for_room();
    }
    if (routed == RouteResult::kInvalidTopic && !proto::is_reserved(topic)) {
      send_error(wire::INVALID_TOPIC, fmt::format("publish refused: invalid topic: {}", proto::check_topic(topic)),
                 false);
    } else {
      send_error(wire::RESERVED_TOPIC, fmt::format("publish refused: '{}' is reserved for the broker", topic), false);
    }
    return Step::kContinue;
  }
  if (retain) {
    broker_.retained().put(topic, msg.payload, id_, peer_.uid, static_cast<std::uint32_t>(peer_.pid), msg.headers);
  } else if (lanes_capable_) {
    broker_.lanes().published(*this, topic);
  }
  ++published_;
  published_bytes_ += msg.payload.size();
  return Step::kContinue;
}

Session::Step Session::claim_fds(const wire::Header& h) {
  const std::uint32_t want = h.fd_count();
  const bool lane_segment = h.type() == wire::LANE_SEGMENT && (want == 1 || want == 2);
  const std::uint32_t allowed = h.type() == wire::SHM_REGISTER ? 1 : lane_segment ? want : 0;
  if (want != allowed) {
    send_error(wire::FD_ERROR,
               allowed == 0 ? fmt::format("a {} frame carries no file descriptors (it announced {})",
                                          wire::FrameType_Name(h.type()), want)
                            : fmt::format("SHM_REGISTER carries exactly one file descriptor (it announced {})", want),
               true);
    return Step::kClose;
  }
  auto& fds = inbox_.fds();
  if (want > fds.size()) {
    send_error(wire::FD_ERROR,
               fmt::format("the frame announced {} file descriptor(s) but {} arrived with it", want, fds.size()),
               true);
    return Step::kClose;
  }
  if (want >= 1) {
    claimed_fd_ = std::move(fds.front());
    fds.erase(fds.begin());
  }
  if (want == 2) {
    claimed_wake_fd_ = std::move(fds.front());
    fds.erase(fds.begin());
  }
  return Step::kContinue;
}

Session::Step Session::handle_bulk_publish(const wire::Header& h, std::span<const std::byte> headers,
                                           std::span<const std::byte> payload) {
  if (!payload.empty()) {
    send_error(wire::PROTOCOL_ERROR, "a PUBLISH with a shared-memory reference carries no payload of its own", true);
    return Step::kClose;
  }
  if (auto denied = deny_unless(Right::kPublish, h.topic(), false, 0)) return *denied;
  if (h.retain() || proto::is_reserved(h.topic())) {
    if (!outbox_.has_room()) {
      return wait_for_room();
    }
    send_error(wire::SHM_REFUSED,
               h.retain() ? "publish refused: shared-memory payloads cannot be retained"
                          : fmt::format("publish refused: '{}' is reserved for the broker", h.topic()),
               false);
    return Step::kContinue;
  }
  auto& registry = broker_.shm();
  auto record = registry.open(id_, h.shm().segment(), {.offset = h.shm().offset(), .length = h.shm().length()});
  if (!record) {
    if (!outbox_.has_room()) {
      return wait_for_room();
    }
    send_error(record.error().code, fmt::format("publish refused: {}", record.error().message), false);
    return Step::kContinue;
  }
  const BulkRef bulk{.record = *record, .length = h.shm().length()};
  // What this client's lanes carry by reference is skipped, as for any publish.
  const LaneFilter* lanes = lanes_capable_ ? broker_.lanes().filter(id_, h.topic()) : nullptr;
  const RouteResult routed = broker_.router().publish(
      stamp(), {.topic = h.topic(), .payload = {}, .chunk = nullptr, .bulk = &bulk, .headers = headers, .lanes = lanes});
  // Nobody took it (no subscriber, all dropping, invalid topic): the space goes back now.
  registry.close_open(*record, routed == RouteResult::kBlocked);
  if (routed == RouteResult::kBlocked) return Step::kBlocked;
  if (routed == RouteResult::kInvalidTopic) {
    if (!outbox_.has_room()) {  // the record is released; the refusal waits for room like any answer
      return wait_for_room();
    }
    send_error(wire::INVALID_TOPIC, fmt::format("publish refused: invalid topic: {}", proto::check_topic(h.topic())),
               false);
    return Step::kContinue;
  }
  if (lanes_capable_) broker_.lanes().published(*this, h.topic());
  ++published_;
  published_bytes_ += bulk.length;
  return Step::kContinue;
}

Session::Step Session::handle_shm_register(const wire::Header& h) {
  if (!grants_.any(Right::kPublish)) {
    return refuse(wire::PERMISSION_DENIED,
                  fmt::format("segment refused: uid {} may not publish anything, so it has no use for shared memory",
                              peer_.uid),
                  h.seq());
  }
  auto added = broker_.shm().add(id_, peer_.uid, h.shm().segment(), std::move(claimed_fd_));
  if (!added) {
    send_error(added.error().code, fmt::format("segment refused: {}", added.error().message), false, h.seq());
    return Step::kContinue;
  }
  ack(h.seq());
  return Step::kContinue;
}

Session::Step Session::handle_shm_release(const wire::Header& h) {
  std::uint64_t first_refused = 0;
  const std::size_t refused =
      outbox_.release(std::span(h.releases().data(), static_cast<std::size_t>(h.releases_size())), first_refused);
  if (refused == 0) return Step::kContinue;
  // One answer per frame, however many tokens were bad; and none while the client's queue is
  // full (a release frees resources, so it is processed even then): the count is what tells.
  broker_.stats().shm_refused += refused;
  if (outbox_.has_room()) {
    send_error(wire::SHM_REFUSED,
               fmt::format("release of {} token(s) this client does not hold (the first: {:#x})", refused,
                           first_refused),
               false);
  }
  return Step::kContinue;
}

void Session::shm_detached(std::uint64_t segment) {
  if (!outbox_.segment_gone(segment) || closing()) return;
  control_.Clear();
  control_.set_type(wire::SHM_DETACH);
  control_.mutable_shm()->set_segment(segment);
  queue_control(control_);
}

Session::Step Session::handle_subscribe(const wire::Header& h) {
  if (h.sub_ids_size() != 1 || !wire::Overflow_IsValid(h.overflow())) {
    send_error(wire::PROTOCOL_ERROR, "SUBSCRIBE needs exactly one subscription id and a known overflow policy", true);
    return Step::kClose;
  }
  const std::uint64_t id = h.sub_ids(0);
  const auto max_subscriptions = broker_.config().limits.max_subscriptions;
  if (!replay_) {  // a new SUBSCRIBE, not the retry of one whose replay was paused
    if (proto::check_pattern(h.topic()) == nullptr) {
      if (auto denied = deny_unless(Right::kSubscribe, h.topic(), true, h.seq())) return *denied;
      // Joining a queue group takes a share of its members' messages: the policy says who may.
      if (!h.group().empty() && proto::check_topic(h.group()) == nullptr) {
        if (auto denied = deny_unless(Right::kJoin, h.group(), false, h.seq())) return *denied;
      }
    }
    if (auto ok = broker_.router().admissible(outbox_, id, h.topic(), h.group(), max_subscriptions); !ok) {
      send_error(ok.error().code, ok.error().message, false, h.seq());
      return Step::kContinue;
    }
    if (h.group().empty()) replay_.emplace().sub_id = id;
  }
  // Retained values first, then the ACK, then live traffic. The replay goes through this
  // client's queue like any delivery: when the queue fills (or after a turn's worth), the
  // SUBSCRIBE stays buffered and the replay resumes where it stopped once there is room.
  if (replay_ && !replay_retained(h.topic())) return Step::kBlocked;
  replay_.reset();
  auto r = broker_.router().subscribe(outbox_, id, h.topic(), h.group(), h.overflow(), max_subscriptions);
  if (!r) {
    send_error(r.error().code, r.error().message, false, h.seq());
    return Step::kContinue;
  }
  // Publishers whose lanes now carry the topic to this subscription, or who must now send it
  // to the broker too, take their new routes first: the ACK follows (Lanes::subscriptions_changed).
  if (broker_.lanes().subscriptions_changed(this, h.seq())) {
    held_answers_.push_back({.seq = h.seq(), .pong = false, .done = false});
  } else {
    ack(h.seq());
  }
  return Step::kContinue;
}

bool Session::replay_retained(std::string_view pattern) {
  constexpr std::size_t kValuesPerTurn = 256;
  constexpr std::size_t kBytesPerTurn = 256 * 1024;
  std::size_t values = 0;
  std::size_t bytes = 0;
  wire::Header& d = control_;
  const bool done = broker_.retained().replay(pattern, replay_->progress, [&](const RetainedMessage& m) {
    if (values == kValuesPerTurn || bytes >= kBytesPerTurn || !outbox_.has_room()) return false;
    ++values;
    bytes += m.payload.size();
    d.Clear();
    d.set_type(wire::DELIVER);
    d.set_topic(m.topic);
    d.add_sub_ids(replay_->sub_id);
    d.set_retain(true);
    d.set_sender_id(m.sender_id);
    d.set_sender_uid(m.sender_uid);
    d.set_sender_pid(m.sender_pid);
    if (!m.headers.empty()) (void)d.mutable_headers()->ParseFromArray(m.headers.data(), static_cast<int>(m.headers.size()));
    ++broker_.stats().deliveries_accepted;
    outbox_.queue_frame(d, m.payload, nullptr);
    return true;
  });
  if (done) return true;
  if (outbox_.has_room()) {
    woken_ = true;  // a turn's worth was sent: go on after the others had theirs
  } else {
    outbox_.hold_back(id_);
  }
  return false;
}

void Session::ack(std::uint64_t seq, std::uint64_t value) {
  control_.Clear();
  control_.set_type(wire::ACK);
  control_.set_seq(seq);
  control_.set_value(value);
  queue_control(control_);
}

Session::Step Session::handle_unsubscribe(const wire::Header& h) {
  if (h.sub_ids_size() != 1) {
    send_error(wire::PROTOCOL_ERROR, "UNSUBSCRIBE needs exactly one subscription id", true);
    return Step::kClose;
  }
  const Subscription* existing = broker_.router().find(outbox_, h.sub_ids(0));
  const bool service = existing != nullptr && existing->service;
  const std::string pattern = service ? existing->pattern : std::string();
  auto r = broker_.router().unsubscribe(outbox_, h.sub_ids(0));
  if (!r) {
    send_error(r.error().code, r.error().message, false, h.seq());
    return Step::kContinue;
  }
  ack(h.seq(), *r);
  if (!service) (void)broker_.lanes().subscriptions_changed();
  if (service) broker_.service_event(*this, pattern, false);
  return Step::kContinue;
}

Session::Step Session::handle_serve(const wire::Header& h) {
  if (h.sub_ids_size() != 1) {
    send_error(wire::PROTOCOL_ERROR, "SERVE needs exactly one id", true);
    return Step::kClose;
  }
  if (proto::is_reserved(h.topic())) {
    send_error(wire::RESERVED_TOPIC, fmt::format("'{}' is reserved for the broker", h.topic()), false, h.seq());
    return Step::kContinue;
  }
  if (proto::check_pattern(h.topic()) == nullptr) {
    if (auto denied = deny_unless(Right::kServe, h.topic(), true, h.seq())) return *denied;
  }
  auto r = broker_.router().serve(outbox_, h.sub_ids(0), h.topic(), broker_.config().limits.max_subscriptions);
  if (!r) {
    send_error(r.error().code, r.error().message, false, h.seq());
    return Step::kContinue;
  }
  ack(h.seq());
  broker_.service_event(*this, h.topic(), true);
  return Step::kContinue;
}

Session::Step Session::handle_request(const wire::Header& h, std::span<const std::byte> payload) {
  const std::string& topic = h.topic();
  if (const char* why = proto::check_topic(topic)) {
    send_error(wire::INVALID_TOPIC, fmt::format("request refused: invalid topic: {}", why), false, h.seq());
    return Step::kContinue;
  }
  if (topic.starts_with(kAdminPrefix)) {
    if (auto denied = deny_unless(Right::kAdmin, topic.substr(kAdminPrefix.size()), false, h.seq())) return *denied;
    ++requests_made_;
    broker_.answer_admin(*this, h, payload);
    return Step::kContinue;
  }
  if (proto::is_reserved(topic)) {
    send_error(wire::RESERVED_TOPIC, fmt::format("request refused: '{}' is reserved for the broker", topic), false,
               h.seq());
    return Step::kContinue;
  }
  if (auto denied = deny_unless(Right::kRequest, topic, false, h.seq())) return *denied;
  const auto& limits = broker_.config().limits;
  const std::uint64_t pending = account_.used(Resource::kPendingRequests);
  UidAccount& uid = account_.uid();
  if (pending >= limits.max_pending_requests || !uid.fits(Resource::kPendingRequests, 1)) {
    ++uid.limited;
    send_error(wire::LIMIT_EXCEEDED,
               pending >= limits.max_pending_requests
                   ? fmt::format("request refused: {} requests of this client are waiting for replies "
                                 "(limits.max_pending_requests = {})",
                                 pending, limits.max_pending_requests)
                   : fmt::format("request refused: {} requests of uid {}'s clients are waiting for replies "
                                 "(limits.max_pending_requests_per_uid = {})",
                                 uid.used(Resource::kPendingRequests), uid.uid(),
                                 uid.limit(Resource::kPendingRequests)),
               false, h.seq());
    return Step::kContinue;
  }
  std::span<const std::byte> headers;
  if (auto refused = take_headers(h, "request", headers)) return *refused;
  Subscription* responder = nullptr;
  TopicStats* topic_stats = nullptr;
  switch (broker_.router().pick_responder(id_, topic, responder, topic_stats)) {
    case RouteResult::kBlocked: return Step::kBlocked;
    case RouteResult::kInvalidTopic:  // not returned here: the topic was checked above
    case RouteResult::kNoResponders:
      ++broker_.stats().no_responders;
      send_error(wire::NO_RESPONDERS, fmt::format("no responder serves '{}'", topic), false, h.seq());
      broker_.tracer().failure(topic, 0, id_, "NO_RESPONDERS", "no responder serves the topic");
      return Step::kContinue;
    case RouteResult::kRouted: break;
  }
  const bool traced = broker_.tracer().active();
  const auto timeout = h.timeout_ms() == 0 ? limits.request_timeout_max
                                           : std::min<std::chrono::milliseconds>(
                                                 std::chrono::milliseconds(h.timeout_ms()), limits.request_timeout_max);
  const auto now = Clock::now();
  const std::uint64_t request_id = broker_.requests().add({.caller = id_,
                                                           .caller_seq = h.seq(),
                                                           .responder = responder->owner->id(),
                                                           .service = responder->id,
                                                           .topic = topic_stats,
                                                           .sent = now,
                                                           .deadline = now + timeout,
                                                           .traced_topic = traced ? topic : std::string()});
  account_.charge(Resource::kPendingRequests, 1);
  ++broker_.stats().requests;
  ++requests_made_;
  ++responder->served.requests;
  if (topic_stats != nullptr) ++topic_stats->served.requests;
  broker_.request_added(now + timeout);
  wire::Header& out = control_;
  out.Clear();
  out.set_type(wire::REQUEST);
  out.set_topic(topic);
  out.set_request_id(request_id);
  out.add_sub_ids(responder->id);
  out.set_sender_id(id_);
  out.set_sender_uid(peer_.uid);
  out.set_sender_pid(static_cast<std::uint32_t>(peer_.pid));
  if (!headers.empty()) *out.mutable_headers() = h.headers();
  responder->owner->queue_frame(out, payload, inbox_.chunk());
  if (traced) broker_.tracer().request(stamp(), topic, request_id, responder->owner->id(), headers, payload);
  return Step::kContinue;
}

Session::Step Session::handle_reply(const wire::Header& h, std::span<const std::byte> payload) {
  // A reply goes through the caller's queue like any message: a caller that does not read
  // holds its responder back (and is cut off as a slow consumer), it cannot make the broker
  // queue replies without bound.
  if (const PendingRequest* waiting = broker_.requests().find(h.request_id(), id_)) {
    if (Session* caller = broker_.find(waiting->caller); caller != nullptr && !caller->outbox().has_room()) {
      caller->outbox().hold_back(id_);
      ++broker_.stats().publisher_blocks;
      return Step::kBlocked;
    }
  }
  std::span<const std::byte> headers;
  if (auto refused = take_headers(h, "reply", headers)) return *refused;
  // An error reply: the responder's code and sentence for the caller, in place of a payload.
  const bool error = h.has_error();
  auto pending = broker_.requests().take_reply(h.request_id(), id_);
  if (!pending && broker_.requests().take_abandoned(h.request_id(), id_)) {
    ++broker_.stats().replies_discarded;  // its caller left: nobody to blame, nobody to tell
    return Step::kContinue;
  }
  if (!pending) {
    ++broker_.stats().replies_refused;
    if (!outbox_.has_room()) {
      return wait_for_room();
    }
    send_error(
        wire::UNKNOWN_REQUEST,
        fmt::format("reply refused: request {} is unknown, finished, or was not sent to this client", h.request_id()),
        false);
    return Step::kContinue;
  }
  const auto took = Clock::now() - pending->sent;
  ++(error ? error_replies_ : replies_);
  if (error) ++broker_.stats().error_replies;
  if (ServiceCounts* counts = broker_.router().service_counts(outbox_, pending->service)) counts->answered(error, took);
  if (pending->topic != nullptr) pending->topic->served.answered(error, took);
  Session* caller = broker_.find(pending->caller);
  if (caller == nullptr) return Step::kContinue;  // the caller left; its state is already gone
  caller->request_finished();
  wire::Header& out = control_;
  out.Clear();
  out.set_type(wire::REPLY);
  out.set_seq(pending->caller_seq);
  out.set_sender_id(id_);
  out.set_sender_uid(peer_.uid);
  out.set_sender_pid(static_cast<std::uint32_t>(peer_.pid));
  if (!headers.empty()) *out.mutable_headers() = h.headers();
  // A gateway (a bridge to another system) may say that nobody served the request there, or
  // not in time; any other code a responder sends is its service's error.
  const wire::ErrorCode code = h.error().code() == wire::NO_RESPONDERS || h.error().code() == wire::TIMEOUT
                                   ? h.error().code()
                                   : wire::SERVICE_ERROR;
  if (error) {
    auto* e = out.mutable_error();
    e->set_code(code);
    e->set_message(h.error().message());
    e->set_service_code(h.error().service_code());
  }
  caller->outbox().queue_frame(out, error ? std::span<const std::byte>() : payload, inbox_.chunk());
  const std::string& why = h.error().message();
  broker_.tracer().answer(stamp(), *pending, headers, error ? std::as_bytes(std::span(why.data(), why.size())) : payload,
                          took, error ? std::string_view(wire::ErrorCode_Name(code)) : std::string_view(),
                          h.error().service_code());
  return Step::kContinue;
}

Session::Step Session::handle_probe(const wire::Header& h) {
  if (const char* why = proto::check_topic(h.topic())) {
    send_error(wire::INVALID_TOPIC, fmt::format("probe refused: invalid topic: {}", why), false, h.seq());
    return Step::kContinue;
  }
  if (auto denied = deny_unless(Right::kRequest, h.topic(), false, h.seq())) return *denied;
  ack(h.seq(), broker_.router().count_responders(h.topic()));
  return Step::kContinue;
}

Session::Step Session::handle_status(const wire::Header& h) {
  std::span<const std::byte> headers;
  if (auto refused = take_headers(h, "status", headers)) return *refused;
  if (headers.size() > kMaxStatusBytes) {
    return refuse(wire::INVALID_HEADERS, fmt::format("status refused: {} bytes, more than {}", headers.size(), kMaxStatusBytes),
                  h.seq());
  }
  status_.assign(reinterpret_cast<const char*>(headers.data()), headers.size());
  return Step::kContinue;
}

}  // namespace ubroker::broker
