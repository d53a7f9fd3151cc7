// The C API's errors and the accessors of its messages, requests and loans (ubroker.h).
#include <cstring>
#include <string>

#include "c_api.hpp"

namespace ubroker::capi {
namespace {

thread_local std::string last_error_message;
thread_local std::uint32_t last_service_code = 0;

void remember(const char* why) noexcept {
  try {
    last_error_message.assign(why);
  } catch (...) {
    last_error_message.clear();  // no memory for the sentence: the code still says what failed
  }
}

}  // namespace

int fail(const Error& why) noexcept {
  remember(why.message.c_str());
  last_service_code = why.service_code;
  return status_of(why);
}

int fail(int status, const char* why) noexcept {
  remember(why);
  last_service_code = 0;
  return status;
}

bool header_fields(const ubroker_header* headers, std::size_t count, std::vector<HeaderField>& out) {
  out.clear();
  if (count == 0) return true;
  if (headers == nullptr) return false;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (headers[i].key == nullptr || headers[i].value == nullptr) return false;
    out.push_back({headers[i].key, headers[i].value});
  }
  return true;
}

int header_at(const Headers& h, std::size_t i, const char** key, std::size_t* key_len, const char** value,
              std::size_t* value_len) {
  if (!key || !key_len || !value || !value_len) return fail(UBROKER_E_INVALID_ARGUMENT, "header_at: NULL argument");
  std::size_t n = 0;
  for (const HeaderField& f : h) {
    if (n++ != i) continue;
    *key = f.key.data();
    *key_len = f.key.size();
    *value = f.value.data();
    *value_len = f.value.size();
    return kOk;
  }
  return fail(UBROKER_E_INVALID_ARGUMENT, "header_at: no header at that index");
}

const char* header_value(const Headers& h, const char* key, std::size_t* value_len) {
  if (value_len) *value_len = 0;
  if (key == nullptr) return nullptr;
  auto v = h.get(key);
  if (!v) return nullptr;
  if (value_len) *value_len = v->size();
  return v->empty() ? "" : v->data();
}

void adopt_message(ubroker_message& out, Message&& m) {
  const Message& kept = out.owned.emplace(std::move(m));
  out.topic = kept.topic().data();  // Message keeps its topic in a std::string: it ends at a NUL
  out.payload = kept.payload();
  out.sender = kept.sender();
  out.subscription = kept.subscription();
  out.dropped_before = kept.dropped_before();
  out.retained = kept.retained();
  out.shared_memory = kept.shared_memory();
  out.headers = kept.headers();
}

}  // namespace ubroker::capi

using ubroker::capi::fail;
using ubroker::capi::kOk;
using ubroker::capi::guarded;

extern "C" {

const char* ubroker_strerror(int status) {
  switch (status) {
    case UBROKER_OK: return "OK: success";
    case UBROKER_E_PROTOCOL: return "PROTOCOL_ERROR: a malformed or unexpected frame";
    case UBROKER_E_UNSUPPORTED_VERSION: return "UNSUPPORTED_VERSION: the broker speaks another protocol version";
    case UBROKER_E_HANDSHAKE_TIMEOUT: return "HANDSHAKE_TIMEOUT: the handshake did not finish in time";
    case UBROKER_E_FRAME_TOO_LARGE: return "FRAME_TOO_LARGE: larger than the broker's frame limit";
    case UBROKER_E_INVALID_TOPIC: return "INVALID_TOPIC: not a valid topic";
    case UBROKER_E_INVALID_PATTERN: return "INVALID_PATTERN: not a valid pattern";
    case UBROKER_E_RESERVED_TOPIC: return "RESERVED_TOPIC: $sys topics are the broker's";
    case UBROKER_E_DUPLICATE_SUBSCRIPTION: return "DUPLICATE_SUBSCRIPTION: already subscribed";
    case UBROKER_E_UNKNOWN_SUBSCRIPTION: return "UNKNOWN_SUBSCRIPTION: no such subscription";
    case UBROKER_E_LIMIT_EXCEEDED: return "LIMIT_EXCEEDED: a broker limit was reached";
    case UBROKER_E_SLOW_CONSUMER: return "SLOW_CONSUMER: cut off for reading too slowly";
    case UBROKER_E_SHUTTING_DOWN: return "SHUTTING_DOWN: the broker is stopping";
    case UBROKER_E_PERMISSION_DENIED: return "PERMISSION_DENIED: the broker's policy refuses it";
    case UBROKER_E_FD_ERROR: return "FD_ERROR: a passed file descriptor was refused";
    case UBROKER_E_NO_RESPONDERS: return "NO_RESPONDERS: nobody serves the requested topic";
    case UBROKER_E_RESPONDER_GONE: return "RESPONDER_GONE: the responder disconnected before replying";
    case UBROKER_E_TIMEOUT: return "TIMEOUT: nothing arrived before the deadline";
    case UBROKER_E_UNKNOWN_REQUEST: return "UNKNOWN_REQUEST: a reply to an unknown or finished request";
    case UBROKER_E_KICKED: return "KICKED: an operator disconnected this client";
    case UBROKER_E_NOT_FOUND: return "NOT_FOUND: no such thing on the broker";
    case UBROKER_E_SHM_REFUSED: return "SHM_REFUSED: the broker refused the shared memory";
    case UBROKER_E_FRAME_TIMEOUT: return "FRAME_TIMEOUT: a frame did not arrive whole in time";
    case UBROKER_E_INVALID_CONFIG: return "INVALID_CONFIG: the broker's config file is invalid";
    case UBROKER_E_SERVICE_ERROR: return "SERVICE_ERROR: the responder answered with an error";
    case UBROKER_E_INVALID_HEADERS: return "INVALID_HEADERS: headers that break the rules";
    case UBROKER_E_CONNECT_FAILED: return "CONNECT_FAILED: no broker reachable at the address";
    case UBROKER_E_NOT_CONNECTED: return "NOT_CONNECTED: the connection is closed";
    case UBROKER_E_INVALID_ARGUMENT: return "INVALID_ARGUMENT: unusable arguments";
    case UBROKER_E_UNTRUSTED_BROKER: return "UNTRUSTED_BROKER: the socket's owner is not a trusted broker";
    case UBROKER_E_BROKER_GONE: return "BROKER_GONE: the connection was lost before the broker answered";
    case UBROKER_E_BUFFER_FULL: return "BUFFER_FULL: disconnected, and the offline buffer is full";
    case UBROKER_E_NO_MEMORY: return "NO_MEMORY: the library could not allocate";
    case UBROKER_E_INTERNAL: return "INTERNAL: an unexpected failure inside the library";
    default: return "UNKNOWN: not a ubroker status code";
  }
}

const char* ubroker_last_error(void) {
  return ubroker::capi::last_error_message.c_str();
}

uint32_t ubroker_last_service_code(void) {
  return ubroker::capi::last_service_code;
}

// ---- Messages ----

const char* ubroker_message_topic(const ubroker_message* msg) {
  return msg ? msg->topic : "";
}
const void* ubroker_message_data(const ubroker_message* msg, size_t* len) {
  if (len) *len = msg ? msg->payload.size() : 0;
  return msg ? static_cast<const void*>(msg->payload.data()) : nullptr;
}
ubroker_sender ubroker_message_sender(const ubroker_message* msg) {
  if (!msg) return {};
  return {msg->sender.client_id, msg->sender.uid, msg->sender.pid};
}
uint64_t ubroker_message_subscription(const ubroker_message* msg) {
  return msg ? msg->subscription : 0;
}
int ubroker_message_retained(const ubroker_message* msg) {
  return msg && msg->retained ? 1 : 0;
}
uint64_t ubroker_message_dropped_before(const ubroker_message* msg) {
  return msg ? msg->dropped_before : 0;
}
int ubroker_message_shared_memory(const ubroker_message* msg) {
  return msg && msg->shared_memory ? 1 : 0;
}
size_t ubroker_message_header_count(const ubroker_message* msg) {
  return msg ? msg->headers.size() : 0;
}
int ubroker_message_header_at(const ubroker_message* msg, size_t i, const char** key, size_t* key_len,
                              const char** value, size_t* value_len) {
  if (!msg) return fail(UBROKER_E_INVALID_ARGUMENT, "ubroker_message_header_at: NULL message");
  return ubroker::capi::header_at(msg->headers, i, key, key_len, value, value_len);
}
const char* ubroker_message_header(const ubroker_message* msg, const char* key, size_t* value_len) {
  if (!msg) return nullptr;
  return ubroker::capi::header_value(msg->headers, key, value_len);
}

int ubroker_message_copy(const ubroker_message* msg, ubroker_message** out) {
  if (!msg || !out) return fail(UBROKER_E_INVALID_ARGUMENT, "ubroker_message_copy: NULL argument");
  return guarded([&] {
    const ubroker::MessageView view{.topic = msg->topic,
                                    .payload = msg->payload,
                                    .sender = msg->sender,
                                    .subscription = msg->subscription,
                                    .dropped_before = msg->dropped_before,
                                    .retained = msg->retained,
                                    .headers = msg->headers};
    auto copy = std::make_unique<ubroker_message>();
    ubroker::capi::adopt_message(*copy, ubroker::Message(view));
    *out = copy.release();
    return kOk;
  });
}

void ubroker_message_free(ubroker_message* msg) {
  std::unique_ptr<ubroker_message> owned(msg);
}

// ---- Requests ----

const char* ubroker_call_topic(const ubroker_call* request) {
  return request ? request->topic.c_str() : "";
}
const void* ubroker_call_data(const ubroker_call* request, size_t* len) {
  if (len) *len = request ? request->cpp.payload().size() : 0;
  return request ? static_cast<const void*>(request->cpp.payload().data()) : nullptr;
}
ubroker_sender ubroker_call_sender(const ubroker_call* request) {
  if (!request) return {};
  const ubroker::Sender& s = request->cpp.sender();
  return {s.client_id, s.uid, s.pid};
}
int ubroker_call_reply(ubroker_call* request, const void* data, size_t len) {
  if (!request || (!data && len > 0)) return fail(UBROKER_E_INVALID_ARGUMENT, "ubroker_call_reply: NULL argument");
  return guarded([&] {
    auto r = request->cpp.reply(std::span(static_cast<const std::byte*>(data), len));
    return r ? kOk : fail(r.error());
  });
}
int ubroker_call_reply_ex(ubroker_call* request, const void* data, size_t len, const ubroker_header* headers,
                          size_t header_count) {
  if (!request || (!data && len > 0)) return fail(UBROKER_E_INVALID_ARGUMENT, "ubroker_call_reply_ex: NULL argument");
  return guarded([&] {
    std::vector<ubroker::HeaderField> fields;
    if (!ubroker::capi::header_fields(headers, header_count, fields)) {
      return fail(UBROKER_E_INVALID_ARGUMENT, "ubroker_call_reply_ex: NULL headers or a NULL key or value");
    }
    auto r = request->cpp.reply(std::span(static_cast<const std::byte*>(data), len), fields);
    return r ? kOk : fail(r.error());
  });
}
int ubroker_call_reply_error(ubroker_call* request, uint32_t code, const char* message) {
  if (!request || !message) return fail(UBROKER_E_INVALID_ARGUMENT, "ubroker_call_reply_error: NULL argument");
  return guarded([&] {
    auto r = request->cpp.reply_error(message, code);
    return r ? kOk : fail(r.error());
  });
}
int ubroker_call_reply_gateway_error(ubroker_call* request, int error, const char* message) {
  if (!request || !message) return fail(UBROKER_E_INVALID_ARGUMENT, "ubroker_call_reply_gateway_error: NULL argument");
  if (error != UBROKER_E_NO_RESPONDERS && error != UBROKER_E_TIMEOUT) {
    return fail(UBROKER_E_INVALID_ARGUMENT,
                "ubroker_call_reply_gateway_error: the error is UBROKER_E_NO_RESPONDERS or UBROKER_E_TIMEOUT");
  }
  return guarded([&] {
    auto r = request->cpp.reply_gateway_error(static_cast<ubroker::Errc>(-error), message);
    return r ? kOk : fail(r.error());
  });
}
size_t ubroker_call_header_count(const ubroker_call* request) {
  return request ? request->cpp.headers().size() : 0;
}
int ubroker_call_header_at(const ubroker_call* request, size_t i, const char** key, size_t* key_len,
                           const char** value, size_t* value_len) {
  if (!request) return fail(UBROKER_E_INVALID_ARGUMENT, "ubroker_call_header_at: NULL request");
  return ubroker::capi::header_at(request->cpp.headers(), i, key, key_len, value, value_len);
}
const char* ubroker_call_header(const ubroker_call* request, const char* key, size_t* value_len) {
  if (!request) return nullptr;
  return ubroker::capi::header_value(request->cpp.headers(), key, value_len);
}
void ubroker_call_free(ubroker_call* request) {
  std::unique_ptr<ubroker_call> owned(request);
}

// ---- Loans ----

void* ubroker_loan_data(ubroker_loan* loan, size_t* len) {
  if (len) *len = loan ? loan->cpp.size() : 0;
  return loan ? static_cast<void*>(loan->cpp.data().data()) : nullptr;
}
void ubroker_loan_free(ubroker_loan* loan) {
  std::unique_ptr<ubroker_loan> owned(loan);
}

}  // extern "C"
