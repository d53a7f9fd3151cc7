// The C API's clients, options, publishing, subscriptions and requests (ubroker.h): each
// function checks its C arguments, calls the C++ API and turns its Result into a status.
// Handles are allocated with make_unique and released to C; the matching free function
// takes them back into a unique_ptr.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "c_api.hpp"

namespace {

using ubroker::capi::CallbackTarget;
using ubroker::capi::fail;
using ubroker::capi::kOk;
using ubroker::capi::status_of;
using ubroker::capi::guarded;

int invalid(const char* why) {
  return fail(UBROKER_E_INVALID_ARGUMENT, why);
}

std::span<const std::byte> bytes(const void* data, size_t len) {
  return {static_cast<const std::byte*>(data), len};
}

// A timeout in milliseconds; negative is refused, except where it means "wait forever".
std::optional<std::chrono::milliseconds> timeout_of(int timeout_ms, bool forever_if_negative = false) {
  if (timeout_ms >= 0) return std::chrono::milliseconds(timeout_ms);
  if (forever_if_negative) return ubroker::kForever;
  return std::nullopt;
}

int finish_connect(ubroker::Result<ubroker::Client> connected, ubroker_client** out) {
  if (!connected) return fail(connected.error());
  *out = std::make_unique<ubroker_client>(ubroker_client{std::move(*connected)}).release();
  return kOk;
}

// The C++ handler of a C subscription: hands each delivery to the C function as a view,
// its topic copied into the subscription's buffer for the terminating NUL (deliveries of
// one subscription never overlap, and the buffer stops allocating once it is long enough).
ubroker::Client::Handler message_handler(std::shared_ptr<CallbackTarget> target) {
  return [target = std::move(target)](const ubroker::MessageView& v) {
    if (target->ended.load(std::memory_order_acquire)) return;
    target->topic.assign(v.topic);
    ubroker_message m;
    m.topic = target->topic.c_str();
    m.payload = v.payload;
    m.sender = v.sender;
    m.subscription = v.subscription;
    m.dropped_before = v.dropped_before;
    m.retained = v.retained;
    m.shared_memory = v.shared_memory;
    m.headers = v.headers;
    target->on_message(&m, target->user);
  };
}

ubroker::Client::RequestHandler request_handler(std::shared_ptr<CallbackTarget> target) {
  return [target = std::move(target)](ubroker::Request r) {
    if (target->ended.load(std::memory_order_acquire)) return;
    std::string topic(r.topic());
    auto request = std::make_unique<ubroker_call>(ubroker_call{std::move(r), std::move(topic)});
    target->on_request(request.release(), target->user);  // the handler owns it now
  };
}

int finish_subscribe(ubroker::Result<ubroker::Subscription> made, std::shared_ptr<CallbackTarget> target,
                     ubroker_subscription** out) {
  if (!made) return fail(made.error());
  *out = std::make_unique<ubroker_subscription>(ubroker_subscription{std::move(*made), std::move(target)}).release();
  return kOk;
}

}  // namespace

extern "C" {

// ---- Options ----

int ubroker_options_new(ubroker_options** out) {
  if (!out) return invalid("ubroker_options_new: NULL out");
  return guarded([&] {
    *out = std::make_unique<ubroker_options>().release();
    return kOk;
  });
}

void ubroker_options_free(ubroker_options* options) {
  std::unique_ptr<ubroker_options> owned(options);
}

int ubroker_options_set_address(ubroker_options* options, const char* address) {
  if (!options) return invalid("ubroker_options_set_address: NULL options");
  return guarded([&] {
    options->cpp.address = address ? address : "";
    return kOk;
  });
}

int ubroker_options_set_name(ubroker_options* options, const char* name) {
  if (!options) return invalid("ubroker_options_set_name: NULL options");
  return guarded([&] {
    options->cpp.name = name ? name : "";
    return kOk;
  });
}

int ubroker_options_set_timeout(ubroker_options* options, int timeout_ms) {
  if (!options || timeout_ms < 0) return invalid("ubroker_options_set_timeout: NULL options or a negative timeout");
  options->cpp.timeout = std::chrono::milliseconds(timeout_ms);
  return kOk;
}

int ubroker_options_set_wait_for_broker(ubroker_options* options, int wait) {
  if (!options) return invalid("ubroker_options_set_wait_for_broker: NULL options");
  options->cpp.wait_for_broker = wait != 0;
  return kOk;
}

int ubroker_options_set_reconnect(ubroker_options* options, int enabled) {
  if (!options) return invalid("ubroker_options_set_reconnect: NULL options");
  options->cpp.reconnect.enabled = enabled != 0;
  return kOk;
}

int ubroker_options_set_max_pending_bytes(ubroker_options* options, size_t bytes) {
  if (!options || bytes == 0) return invalid("ubroker_options_set_max_pending_bytes: NULL options or 0 bytes");
  options->cpp.max_pending_bytes = bytes;
  return kOk;
}

int ubroker_options_set_receive_queue(ubroker_options* options, size_t messages) {
  if (!options || messages == 0) return invalid("ubroker_options_set_receive_queue: NULL options or 0 messages");
  options->cpp.receive_queue = messages;
  return kOk;
}

int ubroker_options_set_shm(ubroker_options* options, size_t threshold, size_t segment_bytes) {
  if (!options) return invalid("ubroker_options_set_shm: NULL options");
  options->cpp.shm_threshold = threshold;
  options->cpp.shm_segment_bytes = segment_bytes;
  return kOk;
}

int ubroker_options_set_offline_buffer(ubroker_options* options, size_t bytes) {
  if (!options) return invalid("ubroker_options_set_offline_buffer: NULL options");
  options->cpp.offline_buffer_bytes = bytes;
  return kOk;
}

int ubroker_options_set_manual_io(ubroker_options* options, int manual) {
  if (!options) return invalid("ubroker_options_set_manual_io: NULL options");
  options->cpp.manual_io = manual != 0;
  return kOk;
}

int ubroker_options_set_coalesce_writes(ubroker_options* options, int coalesce) {
  if (!options) return invalid("ubroker_options_set_coalesce_writes: NULL options");
  options->cpp.coalesce_writes = coalesce != 0;
  return kOk;
}

int ubroker_options_set_busy_poll(ubroker_options* options, unsigned microseconds) {
  if (!options) return invalid("ubroker_options_set_busy_poll: NULL options");
  if (microseconds > 1000000) return invalid("ubroker_options_set_busy_poll: more than a second");
  options->cpp.busy_poll = std::chrono::microseconds(microseconds);
  return kOk;
}

int ubroker_options_set_trusted_broker_uids(ubroker_options* options, const uint32_t* uids, size_t count) {
  if (!options || (!uids && count > 0)) return invalid("ubroker_options_set_trusted_broker_uids: NULL argument");
  return guarded([&] {
    options->cpp.trusted_broker_uids.assign(uids, uids + count);
    return kOk;
  });
}

int ubroker_options_set_connection_handler(ubroker_options* options, ubroker_connection_fn fn, void* user) {
  if (!options) return invalid("ubroker_options_set_connection_handler: NULL options");
  return guarded([&] {
    if (!fn) {
      options->cpp.on_connection = nullptr;
      return kOk;
    }
    options->cpp.on_connection = [fn, user](const ubroker::ConnectionChange& change) {
      const int status = change.reason ? status_of(*change.reason) : UBROKER_OK;
      const char* reason = change.reason ? change.reason->message.c_str() : "";
      fn(static_cast<int>(change.event), status, reason, user);
    };
    return kOk;
  });
}

int ubroker_options_set_error_handler(ubroker_options* options, ubroker_error_fn fn, void* user) {
  if (!options) return invalid("ubroker_options_set_error_handler: NULL options");
  return guarded([&] {
    if (!fn) {
      options->cpp.on_error = nullptr;
      return kOk;
    }
    options->cpp.on_error = [fn, user](const ubroker::Error& e) { fn(status_of(e), e.message.c_str(), user); };
    return kOk;
  });
}

// ---- Clients ----

int ubroker_connect(const char* address, const char* name, ubroker_client** out) {
  if (!out) return invalid("ubroker_connect: NULL out");
  return guarded([&] {
    ubroker::ConnectOptions options;
    options.address = address ? address : "";
    options.name = name ? name : "";
    return finish_connect(ubroker::Client::connect(std::move(options)), out);
  });
}

int ubroker_connect_with(const ubroker_options* options, ubroker_client** out) {
  if (!options || !out) return invalid("ubroker_connect_with: NULL argument");
  return guarded([&] { return finish_connect(ubroker::Client::connect(options->cpp), out); });
}

int ubroker_adopt(int fd, const ubroker_options* options, ubroker_client** out) {
  ubroker::UniqueFd owned(fd);  // ours from here on, also when refused
  if (!out || fd < 0) return invalid("ubroker_adopt: NULL out or a negative fd");
  return guarded([&] {
    return finish_connect(ubroker::Client::adopt(std::move(owned), options ? options->cpp : ubroker::ConnectOptions{}),
                          out);
  });
}

void ubroker_close(ubroker_client* client) {
  std::unique_ptr<ubroker_client> owned(client);
  if (owned) owned->cpp.close();
}

uint64_t ubroker_client_id(const ubroker_client* client) {
  return client ? client->cpp.id() : 0;
}

int ubroker_connected(const ubroker_client* client) {
  return client && client->cpp.connected() ? 1 : 0;
}

int ubroker_client_stats(const ubroker_client* client, ubroker_stats* out) {
  if (!client || !out) return invalid("ubroker_client_stats: NULL argument");
  const ubroker::ClientStats s = client->cpp.stats();
  *out = {s.reconnects, s.publishes_buffered, s.publishes_resent, s.publishes_discarded};
  return kOk;
}

// ---- Publishing ----

int ubroker_publish_ex(ubroker_client* client, const char* topic, const void* data, size_t len,
                       const ubroker_header* headers, size_t header_count, unsigned flags) {
  if (!client || !topic || (!data && len > 0)) return invalid("ubroker_publish: NULL argument");
  if ((flags & ~UBROKER_PUBLISH_RETAIN) != 0) return invalid("ubroker_publish_ex: unknown flags");
  return guarded([&] {
    std::vector<ubroker::HeaderField> fields;
    if (!ubroker::capi::header_fields(headers, header_count, fields)) {
      return invalid("ubroker_publish_ex: NULL headers or a NULL key or value");
    }
    auto r = client->cpp.publish(topic, bytes(data, len),
                                 {.retain = (flags & UBROKER_PUBLISH_RETAIN) != 0, .headers = fields});
    return r ? kOk : fail(r.error());
  });
}

int ubroker_set_status(ubroker_client* client, const ubroker_header* fields, size_t count) {
  if (!client) return invalid("ubroker_set_status: NULL client");
  return guarded([&] {
    std::vector<ubroker::HeaderField> converted;
    if (!ubroker::capi::header_fields(fields, count, converted)) {
      return invalid("ubroker_set_status: NULL fields or a NULL key or value");
    }
    auto r = client->cpp.set_status(converted);
    return r ? kOk : fail(r.error());
  });
}

int ubroker_publish(ubroker_client* client, const char* topic, const void* data, size_t len) {
  return ubroker_publish_ex(client, topic, data, len, nullptr, 0, 0);
}

int ubroker_publish_retained(ubroker_client* client, const char* topic, const void* data, size_t len) {
  return ubroker_publish_ex(client, topic, data, len, nullptr, 0, UBROKER_PUBLISH_RETAIN);
}

int ubroker_poll(ubroker_client* client, int timeout_ms) {
  const auto timeout = timeout_of(timeout_ms);
  if (!client || !timeout) return invalid("ubroker_poll: NULL client or a negative timeout");
  return guarded([&] {
    auto r = client->cpp.poll(*timeout);
    if (!r) return fail(r.error());
    return static_cast<int>(std::min<std::size_t>(*r, 1u << 30));
  });
}

int ubroker_fd(const ubroker_client* client) {
  return client ? client->cpp.fd() : -1;
}

int ubroker_flush(ubroker_client* client, int timeout_ms) {
  const auto timeout = timeout_of(timeout_ms);
  if (!client || !timeout) return invalid("ubroker_flush: NULL client or a negative timeout");
  return guarded([&] {
    auto r = client->cpp.flush(*timeout);
    return r ? kOk : fail(r.error());
  });
}

int ubroker_loan_new(ubroker_client* client, const char* topic, size_t size, int timeout_ms, ubroker_loan** out) {
  const auto timeout = timeout_of(timeout_ms);
  if (!client || !topic || !out || !timeout) return invalid("ubroker_loan_new: NULL argument or a negative timeout");
  return guarded([&] {
    auto loan = client->cpp.loan(topic, size, *timeout);
    if (!loan) return fail(loan.error());
    *out = std::make_unique<ubroker_loan>(ubroker_loan{std::move(*loan)}).release();
    return kOk;
  });
}

int ubroker_publish_loan(ubroker_client* client, ubroker_loan* loan) {
  std::unique_ptr<ubroker_loan> owned(loan);  // freed whatever happens
  if (!client || !owned) return invalid("ubroker_publish_loan: NULL argument");
  return guarded([&] {
    auto r = client->cpp.publish(std::move(owned->cpp));
    return r ? kOk : fail(r.error());
  });
}

// ---- Subscribing ----

int ubroker_subscribe(ubroker_client* client, const char* pattern, ubroker_message_fn fn, void* user,
                      ubroker_subscription** out) {
  if (!fn) return invalid("ubroker_subscribe: NULL fn (use ubroker_subscribe_ex to receive())");
  return ubroker_subscribe_ex(client, pattern, nullptr, 0, fn, user, out);
}

int ubroker_subscribe_ex(ubroker_client* client, const char* pattern, const char* group, unsigned flags,
                         ubroker_message_fn fn, void* user, ubroker_subscription** out) {
  if (!client || !pattern || !out) return invalid("ubroker_subscribe: NULL argument");
  if ((flags & ~UBROKER_SUBSCRIBE_DROP) != 0) return invalid("ubroker_subscribe_ex: unknown flags");
  return guarded([&] {
    ubroker::SubscribeOptions options;
    options.group = group ? group : "";
    options.overflow = (flags & UBROKER_SUBSCRIBE_DROP) != 0 ? ubroker::Overflow::kDrop : ubroker::Overflow::kBlock;
    if (!fn) return finish_subscribe(client->cpp.subscribe(pattern, options), nullptr, out);
    auto target = std::make_shared<CallbackTarget>();
    target->on_message = fn;
    target->user = user;
    return finish_subscribe(client->cpp.subscribe(pattern, message_handler(target), options), target, out);
  });
}

int ubroker_unsubscribe(ubroker_subscription* sub) {
  std::unique_ptr<ubroker_subscription> owned(sub);  // freed whatever happens
  if (!owned) return invalid("ubroker_unsubscribe: NULL subscription");
  if (owned->target) owned->target->ended.store(true, std::memory_order_release);
  if (!owned->cpp.active()) return kOk;  // its client closed, or it already ended
  return guarded([&] {
    auto r = owned->cpp.unsubscribe();
    return r ? kOk : fail(r.error());
  });
}

uint64_t ubroker_subscription_id(const ubroker_subscription* sub) {
  return sub ? sub->cpp.id() : 0;
}

uint64_t ubroker_subscription_dropped(const ubroker_subscription* sub) {
  return sub ? sub->cpp.dropped() : 0;
}

int ubroker_receive(ubroker_client* client, int timeout_ms, ubroker_message** out) {
  if (!client || !out) return invalid("ubroker_receive: NULL argument");
  return guarded([&] {
    auto m = client->cpp.receive(*timeout_of(timeout_ms, true));
    if (!m) return fail(m.error());
    auto msg = std::make_unique<ubroker_message>();
    ubroker::capi::adopt_message(*msg, std::move(*m));
    *out = msg.release();
    return kOk;
  });
}

// ---- Request and reply ----

int ubroker_request(ubroker_client* client, const char* topic, const void* data, size_t len, int timeout_ms,
                    ubroker_message** reply) {
  return ubroker_request_ex(client, topic, data, len, nullptr, 0, timeout_ms, reply);
}

int ubroker_request_ex(ubroker_client* client, const char* topic, const void* data, size_t len,
                       const ubroker_header* headers, size_t header_count, int timeout_ms, ubroker_message** reply) {
  const auto timeout = timeout_of(timeout_ms);
  if (!client || !topic || !reply || (!data && len > 0) || !timeout) {
    return invalid("ubroker_request: NULL argument or a negative timeout");
  }
  return guarded([&] {
    std::vector<ubroker::HeaderField> fields;
    if (!ubroker::capi::header_fields(headers, header_count, fields)) {
      return invalid("ubroker_request_ex: NULL headers or a NULL key or value");
    }
    auto answer = client->cpp.request(topic, bytes(data, len), ubroker::RequestOptions{.timeout = *timeout, .headers = fields});
    if (!answer) return fail(answer.error());
    auto msg = std::make_unique<ubroker_message>();
    ubroker::capi::adopt_message(*msg, std::move(*answer));
    *reply = msg.release();
    return kOk;
  });
}

int ubroker_request_async(ubroker_client* client, const char* topic, const void* data, size_t len, int timeout_ms,
                          ubroker_reply_fn fn, void* user) {
  const auto timeout = timeout_of(timeout_ms);
  if (!client || !topic || !fn || (!data && len > 0) || !timeout) {
    return invalid("ubroker_request_async: NULL argument or a negative timeout");
  }
  return guarded([&] {
    client->cpp.request_async(topic, bytes(data, len), *timeout, [fn, user](ubroker::Result<ubroker::Message> answer) {
      if (!answer) {
        fn(status_of(answer.error()), nullptr, user);
        return;
      }
      std::unique_ptr<ubroker_message> msg;
      try {
        msg = std::make_unique<ubroker_message>();
        ubroker::capi::adopt_message(*msg, std::move(*answer));
      } catch (...) {
        fn(UBROKER_E_NO_MEMORY, nullptr, user);
        return;
      }
      fn(UBROKER_OK, msg.release(), user);
    });
    return kOk;
  });
}

int ubroker_serve(ubroker_client* client, const char* pattern, ubroker_call_fn fn, void* user,
                  ubroker_subscription** out) {
  if (!client || !pattern || !fn || !out) return invalid("ubroker_serve: NULL argument");
  return guarded([&] {
    auto target = std::make_shared<CallbackTarget>();
    target->on_request = fn;
    target->user = user;
    return finish_subscribe(client->cpp.serve(pattern, request_handler(target)), target, out);
  });
}

int ubroker_wait_for_responder(ubroker_client* client, const char* topic, int timeout_ms) {
  const auto timeout = timeout_of(timeout_ms);
  if (!client || !topic || !timeout) return invalid("ubroker_wait_for_responder: NULL argument or a negative timeout");
  return guarded([&] {
    auto r = client->cpp.wait_for_responder(topic, *timeout);
    return r ? kOk : fail(r.error());
  });
}

}  // extern "C"
