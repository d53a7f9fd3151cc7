// The admin services the broker answers itself, on $sys.admin.* request topics; brokerctl
// is an ordinary client of them. Who may call which is the access policy's `admin` right,
// checked by the Session before it gets here. Each answer is a protobuf message from
// ubroker.proto in a REPLY; a refusal is an Error with its code.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>

#include "broker.hpp"
#include "process_usage.hpp"
#include "log_text.hpp"
#include "session.hpp"

namespace ubroker::broker {
namespace {

std::uint64_t ms_since(Clock::time_point t) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
}

}  // namespace

wire::BrokerStatus Broker::status() const {
  wire::BrokerStatus st;
  st.set_version(UBROKER_VERSION);
  st.set_pid(static_cast<std::uint32_t>(::getpid()));
  st.set_uptime_ms(ms_since(started_));
  st.set_socket(config_.socket_path);
  st.set_connections(sessions_.size());
  st.set_subscriptions(router_.subscription_count());
  st.set_messages_in(stats_.messages_in);
  st.set_bytes_in(stats_.bytes_in);
  st.set_deliveries(stats_.deliveries);
  st.set_delivered_bytes(stats_.delivered_bytes);
  st.set_dropped_overflow(stats_.dropped_overflow);
  st.set_dropped_disconnect(stats_.dropped_disconnect);
  st.set_requests(stats_.requests);
  st.set_requests_pending(requests_.size());
  st.set_no_responders(stats_.no_responders);
  st.set_responder_gone(stats_.responder_gone);
  st.set_request_timeouts(stats_.request_timeouts);
  st.set_replies_refused(stats_.replies_refused);
  st.set_replies_discarded(stats_.replies_discarded);
  st.set_error_replies(stats_.error_replies);
  const Lanes::Books lanes = lanes_.books();
  st.set_lanes_open(lanes.open);
  st.set_lanes_opened(lanes.opened);
  st.set_lanes_broken(lanes.closed_broken);
  st.set_lanes_refused(stats_.lanes_refused);
  st.set_lane_accepted(lanes.accepted);
  st.set_lane_delivered(lanes.delivered);
  st.set_lane_dropped(lanes.dropped);
  st.set_lane_lost(lanes.lost);
  st.set_lane_queued(lanes.queued());
  st.set_lane_fds(lanes.fds);
  st.set_retained_topics(retained_.size());
  st.set_retained_bytes(retained_.bytes());
  st.set_retained_evicted(retained_.evicted());
  st.set_slow_consumer_disconnects(stats_.slow_consumer_disconnects);
  st.set_protocol_errors(stats_.protocol_errors);
  st.set_shm_segments(shm_.segments());
  st.set_shm_bytes(shm_.bytes());
  st.set_bulk_messages(stats_.bulk_messages);
  st.set_bulk_bytes(stats_.bulk_bytes);
  st.set_bulk_deliveries(stats_.bulk_deliveries);
  st.set_payload_bytes_copied(stats_.payload_bytes_copied);
  st.set_shm_refused(stats_.shm_refused);
  st.set_bulk_dropped_fds(stats_.bulk_dropped_fds);
  st.set_bulk_dropped_holds(stats_.bulk_dropped_holds);
  st.set_connections_refused(stats_.connections_refused);
  st.set_accepts_failed(stats_.accepts_failed);
  for (int code = 1; code < static_cast<int>(stats_.errors_sent.size()); ++code) {
    if (stats_.errors_sent[code] == 0 || !wire::ErrorCode_IsValid(code)) continue;
    (*st.mutable_errors_sent())[wire::ErrorCode_Name(static_cast<wire::ErrorCode>(code))] = stats_.errors_sent[code];
  }
  st.set_policy(policy_->open ? "open" : fmt::format("{} rule(s)", policy_->rules.size()));
  std::uint64_t held = 0, queued = 0, fds_queued = 0;
  for (const auto& [id, s] : sessions_) {
    held += s->outbox().bulk_held();
    queued += s->outbox().queue().deliveries();
    fds_queued += s->outbox().queue().fds();
  }
  st.set_bulk_held(held);
  st.set_open_fds(open_fd_count());
  st.set_fd_limit(fd_limit().value_or(0));
  st.set_fds_queued(fds_queued);
  std::vector<const UidAccount*> by_memory;
  accounts_.for_each([&](const UidAccount& a) { by_memory.push_back(&a); });
  std::sort(by_memory.begin(), by_memory.end(),
            [](const UidAccount* a, const UidAccount* b) { return a->memory_bytes() > b->memory_bytes(); });
  for (const UidAccount* a : by_memory) {
    auto* u = st.add_uids();
    u->set_uid(a->uid());
    u->set_memory_bytes(a->memory_bytes());
    u->set_connections(a->used(Resource::kConnections));
    u->set_queued_bytes(a->used(Resource::kQueuedBytes));
    u->set_input_bytes(a->used(Resource::kInputBytes));
    u->set_subscription_bytes(a->used(Resource::kSubscriptionBytes));
    u->set_retained_bytes(a->used(Resource::kRetainedBytes));
    u->set_pending_requests(a->used(Resource::kPendingRequests));
    u->set_bulk_holds(a->used(Resource::kBulkHolds));
    u->set_shm_bytes(shm_.bytes_of(a->uid()));
    u->set_lane_bytes(lanes_.bytes_of_uid(a->uid()));
    u->set_limited(a->limited);
  }
  st.set_memory_bytes(accounts_.memory_bytes());
  st.set_rss_bytes(resident_bytes());
  st.set_memory_limit_bytes_per_uid(memory_limit_per_uid(config_.limits));
  st.set_deliveries_accepted(stats_.deliveries_accepted);
  st.set_deliveries_written(stats_.deliveries_written);
  st.set_deliveries_queued(queued);
  return st;
}

namespace {

// The cursor of a numeric key: zero-padded, so cursors sort as the keys do.
std::string cursor(std::uint64_t id) { return fmt::format("{:020}", id); }

// One page of a listing: the entries for `keys` (sorted so that their cursors sort too) that
// come after `after`, as many as fit in `budget` bytes of the answer. `add(key)` adds one
// entry and returns its encoded size; `undo()` takes the last one out again (it did not fit;
// a page's first entry always stays, so every page makes progress). Returns the next page's
// `after` ("": the last page).
template <class Key, class CursorFn, class AddFn, class UndoFn>
std::string fill_page(const std::vector<Key>& keys, const std::string& after, std::size_t budget, CursorFn cursor_of,
                      AddFn add, UndoFn undo) {
  auto it = after.empty() ? keys.begin()
                          : std::upper_bound(keys.begin(), keys.end(), after,
                                             [&](const std::string& a, const Key& k) { return a < cursor_of(k); });
  std::size_t used = 0;
  for (; it != keys.end(); ++it) {
    const std::size_t size = add(*it) + 8;  // and the field's tag and length
    if (used != 0 && used + size > budget) {
      undo();
      return cursor_of(*std::prev(it));
    }
    used += size;
  }
  return {};
}

}  // namespace

wire::SegmentList Broker::segments(const std::string& after) const {
  wire::SegmentList list;
  std::vector<const ShmSegment*> segs;
  shm_.for_each([&](const ShmSegment& seg) { segs.push_back(&seg); });
  std::sort(segs.begin(), segs.end(), [](const auto* a, const auto* b) { return a->id < b->id; });
  list.set_next(fill_page(segs, after, page_budget(), [](const ShmSegment* s) { return cursor(s->id); },
                          [&](const ShmSegment* seg) {
                            auto* s = list.add_segments();
                            s->set_id(seg->id);
                            s->set_owner_client_id(seg->owner);
                            if (const Session* owner = seg->owner != 0 ? find(seg->owner) : nullptr) {
                              s->set_owner_name(owner->name());
                            }
                            s->set_uid(seg->uid);
                            s->set_bytes(seg->map.size());
                            s->set_open_records(seg->open_records);
                            s->set_receivers(static_cast<std::uint32_t>(seg->attached.size()));
                            return s->ByteSizeLong();
                          },
                          [&] { list.mutable_segments()->RemoveLast(); }));
  return list;
}

namespace {

// The request counts of a service or a topic into its listing entry (the fields are named alike).
template <class Info>
void fill_service_counts(Info& i, const ServiceCounts& c) {
  i.set_requests(c.requests);
  i.set_replies(c.replies);
  i.set_errors(c.errors);
  i.set_timeouts(c.timeouts);
  i.set_latency_mean_us(c.latency_mean_us());
  i.set_latency_max_us(c.latency_max_us);
}

}  // namespace

wire::ClientList Broker::clients(const std::string& after) const {
  wire::ClientList list;
  std::vector<const Session*> welcomed;
  for (const auto& [id, s] : sessions_) {
    if (s->welcomed()) welcomed.push_back(s);
  }
  std::sort(welcomed.begin(), welcomed.end(), [](const auto* a, const auto* b) { return a->id() < b->id(); });
  list.set_next(fill_page(welcomed, after, page_budget(), [](const Session* s) { return cursor(s->id()); },
                          [&](const Session* s) {
                            auto* c = list.add_clients();
                            c->set_client_id(s->id());
                            c->set_name(s->name());
                            c->set_pid(static_cast<std::uint32_t>(s->peer().pid));
                            c->set_uid(s->peer().uid);
                            c->set_gid(s->peer().gid);
                            c->set_command(s->command());
                            c->set_connected_unix_ms(s->connected_unix_ms());
                            c->set_shm_segments(static_cast<std::uint32_t>(shm_.owned_by(s->id())));
                            c->set_bulk_held(s->outbox().bulk_held());
                            c->set_memory_bytes(s->account().memory_bytes());
                            c->set_messages_in(s->published());
                            c->set_bytes_in(s->published_bytes());
                            c->set_messages_out(s->outbox().deliveries());
                            c->set_bytes_out(s->outbox().delivered_bytes());
                            c->set_queued_messages(s->outbox().queue().messages());
                            c->set_queued_bytes(s->outbox().queue().bytes());
                            c->set_requests(s->requests_made());
                            c->set_replies(s->replies());
                            c->set_error_replies(s->error_replies());
                            if (!s->status().empty()) (void)c->mutable_status()->ParseFromString(s->status());
                            std::uint64_t dropped = 0;
                            std::uint32_t subs = 0, services = 0;
                            for (const auto& [sid, sub] : router_.subscriptions_of(s->outbox())) {
                              dropped += sub->dropped;
                              ++(sub->service ? services : subs);
                            }
                            c->set_dropped(dropped);
                            c->set_subscriptions(subs);
                            c->set_services(services);
                            const Lanes::ClientLanes ln = lanes_.client_lanes(s->id());
                            c->set_lanes_out(ln.out);
                            c->set_lanes_in(ln.in);
                            c->set_lane_messages_out(ln.sent);
                            c->set_lane_messages_in(ln.received);
                            return c->ByteSizeLong();
                          },
                          [&] { list.mutable_clients()->RemoveLast(); }));
  return list;
}

wire::LaneList Broker::lane_list(const std::string& after) const {
  wire::LaneList list;
  const std::vector<Lanes::View> all = lanes_.views();
  auto name_of = [&](std::uint64_t id) {
    const Session* s = find(id);
    return s != nullptr ? s->name() : std::string();
  };
  list.set_next(fill_page(all, after, page_budget(), [](const Lanes::View& v) { return cursor(v.id); },
                          [&](const Lanes::View& v) {
                            auto* l = list.add_lanes();
                            l->set_id(v.id);
                            l->set_publisher_id(v.publisher);
                            l->set_publisher_name(name_of(v.publisher));
                            l->set_subscriber_id(v.subscriber);
                            l->set_subscriber_name(name_of(v.subscriber));
                            l->set_state(v.state);
                            l->set_capacity(v.capacity);
                            l->set_accepted(v.books.accepted);
                            l->set_delivered(v.books.delivered);
                            l->set_dropped(v.books.dropped);
                            l->set_queued(v.books.queued());
                            constexpr std::size_t kTopicsListed = 32;  // keeps an entry small
                            for (std::size_t i = 0; i < v.topics.size() && i < kTopicsListed; ++i) l->add_topics(v.topics[i]);
                            l->set_topics_total(static_cast<std::uint32_t>(v.topics.size()));
                            l->set_age_ms(static_cast<std::uint64_t>(
                                std::chrono::duration_cast<std::chrono::milliseconds>(v.age).count()));
                            return l->ByteSizeLong();
                          },
                          [&] { list.mutable_lanes()->RemoveLast(); }));
  return list;
}

wire::SubscriptionList Broker::subscriptions(const std::string& after) const {
  wire::SubscriptionList list;
  std::vector<std::pair<const Session*, const Subscription*>> all;
  for (const auto& [id, s] : sessions_) {
    for (const auto& [sid, sub] : router_.subscriptions_of(s->outbox())) all.emplace_back(s, sub.get());
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return a.first->id() != b.first->id() ? a.first->id() < b.first->id() : a.second->id < b.second->id;
  });
  auto cursor_of = [](const std::pair<const Session*, const Subscription*>& e) {
    return cursor(e.first->id()) + "." + cursor(e.second->id);
  };
  list.set_next(fill_page(all, after, page_budget(), cursor_of, [&](const auto& e) {
    const auto& [s, sub] = e;
    auto* i = list.add_subscriptions();
    i->set_client_id(s->id());
    i->set_client_name(s->name());
    i->set_id(sub->id);
    i->set_pattern(sub->pattern);
    if (sub->group != nullptr) i->set_group(sub->group->name);
    i->set_policy(sub->service ? "serve" : sub->overflow == wire::DROP ? "drop" : "block");
    i->set_delivered(sub->delivered);
    i->set_dropped(sub->dropped);
    fill_service_counts(*i, sub->served);
    return i->ByteSizeLong();
  }, [&] { list.mutable_subscriptions()->RemoveLast(); }));
  return list;
}

wire::TopicList Broker::topics(const std::string& after) {
  wire::TopicList list;
  std::vector<const std::pair<const std::string, TopicStats>*> all;
  for (const auto& entry : router_.topic_stats()) all.push_back(&entry);
  std::sort(all.begin(), all.end(), [](const auto* a, const auto* b) { return a->first < b->first; });
  list.set_next(fill_page(all, after, page_budget(), [](const auto* e) { return e->first; }, [&](const auto* e) {
    const auto& [topic, ts] = *e;
    auto* t = list.add_topics();
    t->set_topic(topic);
    t->set_messages(ts.messages);
    t->set_bytes(ts.bytes);
    t->set_publishers(static_cast<std::uint32_t>(ts.publishers.size()));
    t->set_subscribers(static_cast<std::uint32_t>(router_.count_subscribers(topic)));
    t->set_rate(ts.rate);
    t->set_retained(retained_.contains(topic));
    t->set_lanes(lanes_.carrying(topic));
    fill_service_counts(*t, ts.served);
    return t->ByteSizeLong();
  }, [&] { list.mutable_topics()->RemoveLast(); }));
  list.set_untracked_messages(router_.untracked_messages());
  list.set_topics_forgotten(router_.topics_forgotten());
  return list;
}

std::size_t Broker::page_budget() const noexcept {
  // An answer is one REPLY frame, which the client accepts up to max_frame_bytes + 1024.
  return config_.limits.max_frame_bytes - 1024;
}

void Broker::answer_admin(Session& caller, const wire::Header& request, std::span<const std::byte> payload) {
  const std::string& topic = request.topic();
  const auto uid = caller.peer().uid;
  std::string body;
  wire::ListPage page;  // for the listings; an empty payload asks for the first page
  if (!page.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) page.Clear();
  if (topic == "$sys.admin.status") {
    body = status().SerializeAsString();
  } else if (topic == "$sys.admin.clients") {
    body = clients(page.after()).SerializeAsString();
  } else if (topic == "$sys.admin.subscriptions") {
    body = subscriptions(page.after()).SerializeAsString();
  } else if (topic == "$sys.admin.topics") {
    body = topics(page.after()).SerializeAsString();
  } else if (topic == "$sys.admin.shm") {
    body = segments(page.after()).SerializeAsString();
  } else if (topic == "$sys.admin.lanes") {
    body = lane_list(page.after()).SerializeAsString();
  } else if (topic == "$sys.admin.reload") {
    if (auto r = reload(); !r) {
      caller.send_error(wire::INVALID_CONFIG, fmt::format("reload refused, the current policy stays: {}", r.error()),
                        false, request.seq());
      return;
    }
  } else if (topic == "$sys.admin.kick") {
    wire::KickRequest kick;
    if (!kick.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
      caller.send_error(wire::PROTOCOL_ERROR, "kick: the payload is not a KickRequest", false, request.seq());
      return;
    }
    Session* target = find(kick.client_id());
    if (target == nullptr) {
      caller.send_error(wire::NOT_FOUND, fmt::format("kick: no client {}", kick.client_id()), false, request.seq());
      return;
    }
    const std::string why = kick.reason().empty() ? std::string("no reason given") : kick.reason();
    spdlog::warn("client {} kicked by uid {} (pid {}): {}", kick.client_id(), uid, caller.peer().pid,
                 escape_for_log(why));
    target->send_error(wire::KICKED, fmt::format("disconnected by an operator: {}", why), true);
    target->flush();
  } else {
    caller.send_error(wire::NO_RESPONDERS, fmt::format("the broker has no admin service '{}'", topic), false,
                      request.seq());
    return;
  }
  wire::Header h;
  h.set_type(wire::REPLY);
  h.set_seq(request.seq());
  h.set_sender_uid(static_cast<std::uint32_t>(::getuid()));
  h.set_sender_pid(static_cast<std::uint32_t>(::getpid()));
  caller.outbox().queue_frame(h, std::as_bytes(std::span(body.data(), body.size())), nullptr);
}

}  // namespace ubroker::broker
