// The broker's own messages: presence events on $sys.client.* / $sys.service.*, and the
// admin requests it answers itself ($sys.admin.*; brokerctl builds on these).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "broker.hpp"
#include "session.hpp"

namespace ubroker::broker {
namespace {

void fill(wire::ClientEvent& e, const Session& s) {
  e.set_client_id(s.id());
  e.set_name(s.name());
  e.set_uid(s.peer().uid);
  e.set_gid(s.peer().gid);
  e.set_pid(static_cast<std::uint32_t>(s.peer().pid));
}

}  // namespace

void Broker::publish_event(std::string_view topic, const google::protobuf::MessageLite& event) {
  event_buf_.resize(event.ByteSizeLong());
  event.SerializeWithCachedSizesToArray(reinterpret_cast<std::uint8_t*>(event_buf_.data()));
  const SenderStamp broker_stamp{0, static_cast<std::uint32_t>(::getuid()), static_cast<std::uint32_t>(::getpid())};
  router_.publish_system({.topic = topic, .payload = event_buf_, .chunk = nullptr}, broker_stamp);
}

void Broker::client_event(const Session& s, bool connected) {
  wire::ClientEvent e;
  fill(e, s);
  publish_event(connected ? "$sys.client.connected" : "$sys.client.disconnected", e);
}

void Broker::service_event(const Session& s, std::string_view pattern, bool up) {
  wire::ServiceEvent e;
  fill(*e.mutable_client(), s);
  e.set_topic(pattern.data(), pattern.size());
  publish_event(up ? "$sys.service.up" : "$sys.service.down", e);
}

void Broker::answer_admin(Session& caller, const wire::Header& request, std::span<const std::byte>) {
  if (request.topic() != "$sys.admin.status") {
    caller.send_error(wire::NO_RESPONDERS, fmt::format("the broker has no admin service '{}'", request.topic()), false,
                      request.seq());
    return;
  }
  wire::BrokerStatus st;
  st.set_version(UBROKER_VERSION);
  st.set_pid(static_cast<std::uint32_t>(::getpid()));
  st.set_uptime_ms(static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_).count()));
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
  st.set_retained_topics(retained_.size());
  st.set_retained_bytes(retained_.bytes());
  st.set_retained_evicted(retained_.evicted());
  st.set_slow_consumer_disconnects(stats_.slow_consumer_disconnects);
  st.set_protocol_errors(stats_.protocol_errors);
  const std::string body = st.SerializeAsString();
  wire::Header h;
  h.set_type(wire::REPLY);
  h.set_seq(request.seq());
  h.set_sender_uid(static_cast<std::uint32_t>(::getuid()));
  h.set_sender_pid(static_cast<std::uint32_t>(::getpid()));
  caller.queue_frame(h, std::as_bytes(std::span(body.data(), body.size())), nullptr);
}

}  // namespace ubroker::broker
