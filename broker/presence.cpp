// The broker's own messages: presence events on $sys.client.* and $sys.service.*.
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

}  // namespace ubroker::broker
