// What each frame a client sends means: the handshake, publish, subscribe, unsubscribe, ping.
// Every refusal is an Error frame with a code and a sentence; protocol violations are fatal.
#include <spdlog/spdlog.h>

#include "broker.hpp"
#include "session.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/topic.hpp"

#ifndef UBROKER_VERSION
#define UBROKER_VERSION "0.0.0"
#endif

namespace ubroker::broker {
namespace {

constexpr std::size_t kMaxClientName = 128;

// Client names end up in logs and tables: printable ASCII only, bounded.
std::string sanitize_name(const std::string& raw) {
  std::string name = raw.substr(0, kMaxClientName);
  for (char& c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) c = '?';
  }
  return name;
}

}  // namespace

Session::Step Session::handle_frame(const wire::Header& h, std::span<const std::byte> payload) {
  if (!welcomed_) {
    if (h.type() != wire::HELLO) {
      send_error(wire::PROTOCOL_ERROR,
                 fmt::format("expected HELLO as the first frame, got {}", wire::FrameType_Name(h.type())), true);
      return Step::kClose;
    }
    return handle_hello(h);
  }
  if (h.fd_count() != 0 || !in_fds_.empty()) {
    // No frame of this protocol version carries file descriptors.
    send_error(wire::FD_ERROR,
               fmt::format("unexpected file descriptors with a {} frame", wire::FrameType_Name(h.type())), true);
    return Step::kClose;
  }
  // Every frame but PUBLISH may queue an answer to this client: hold back while its own
  // queue is full, so a client that never reads cannot grow it without bound.
  if (h.type() != wire::PUBLISH && !has_room()) {
    add_waiter(id_);
    return Step::kBlocked;
  }
  switch (h.type()) {
    case wire::PUBLISH: return handle_publish(h, payload);
    case wire::SUBSCRIBE: return handle_subscribe(h);
    case wire::UNSUBSCRIBE: return handle_unsubscribe(h);
    case wire::PING:
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
  name_ = sanitize_name(hello.client_name());
  welcomed_ = true;
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
  l->set_max_fds_per_frame(0);
  l->set_max_subscriptions(cfg.limits.max_subscriptions);
  l->set_queue_max_messages(cfg.limits.queue_max_messages);
  l->set_queue_max_bytes(cfg.limits.queue_max_bytes);
  queue_control(control_);
  spdlog::debug("{}: connected (gid {}, pidfd {})", describe(), peer_.gid, peer_.pidfd ? "yes" : "no");
  return Step::kContinue;
}

Session::Step Session::handle_publish(const wire::Header& h, std::span<const std::byte> payload) {
  const std::string& topic = h.topic();
  const char* why = proto::check_topic(topic);
  if (why != nullptr || proto::is_reserved(topic)) {
    if (!has_room()) {
      add_waiter(id_);
      return Step::kBlocked;
    }
    if (why != nullptr) {
      send_error(wire::INVALID_TOPIC, fmt::format("publish refused: invalid topic: {}", why), false);
    } else {
      send_error(wire::RESERVED_TOPIC, fmt::format("publish refused: '{}' is reserved for the broker", topic), false);
    }
    return Step::kContinue;
  }
  const Published msg{.topic = topic, .payload = payload, .chunk = &in_};
  if (broker_.router().publish(*this, msg) == RouteResult::kBlocked) return Step::kBlocked;
  ++published_;
  return Step::kContinue;
}

Session::Step Session::handle_subscribe(const wire::Header& h) {
  if (h.sub_ids_size() != 1 || !wire::Overflow_IsValid(h.overflow())) {
    send_error(wire::PROTOCOL_ERROR, "SUBSCRIBE needs exactly one subscription id and a known overflow policy", true);
    return Step::kClose;
  }
  auto r = broker_.router().subscribe(*this, h.sub_ids(0), h.topic(), h.group(), h.overflow(),
                                      broker_.config().limits.max_subscriptions);
  if (!r) {
    send_error(r.error().code, r.error().message, false, h.seq());
    return Step::kContinue;
  }
  control_.Clear();
  control_.set_type(wire::ACK);
  control_.set_seq(h.seq());
  queue_control(control_);
  return Step::kContinue;
}

Session::Step Session::handle_unsubscribe(const wire::Header& h) {
  if (h.sub_ids_size() != 1) {
    send_error(wire::PROTOCOL_ERROR, "UNSUBSCRIBE needs exactly one subscription id", true);
    return Step::kClose;
  }
  auto r = broker_.router().unsubscribe(*this, h.sub_ids(0));
  if (!r) {
    send_error(r.error().code, r.error().message, false, h.seq());
    return Step::kContinue;
  }
  control_.Clear();
  control_.set_type(wire::ACK);
  control_.set_seq(h.seq());
  control_.add_dropped(*r);
  queue_control(control_);
  return Step::kContinue;
}

}  // namespace ubroker::broker
