// What the C API's opaque handles (ubroker/ubroker.h) are on the inside, and the one place
// where C++ results become C status codes. Only the c_api_*.cpp files include this.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ubroker/client.hpp"
#include "ubroker/ubroker.h"

struct ubroker_options {
  ubroker::ConnectOptions cpp;
};

struct ubroker_client {
  ubroker::Client cpp;
};

// A message as C sees it: a view during a callback, or a Message the caller owns.
struct ubroker_message {
  const char* topic = "";  // NUL-terminated
  std::span<const std::byte> payload;
  ubroker::Sender sender;
  std::uint64_t subscription = 0;
  std::uint64_t dropped_before = 0;
  bool retained = false;
  bool shared_memory = false;
  ubroker::Headers headers;
  std::optional<ubroker::Message> owned;  // holds topic and payload of a message handed out
};

struct ubroker_call {
  ubroker::Request cpp;
  std::string topic;  // NUL-terminated copy
};

struct ubroker_loan {
  ubroker::Loan cpp;
};

namespace ubroker::capi {

// The C callback of a subscription or service. Shared with the C++ handler, which may still
// hold it for a moment after ubroker_unsubscribe returns (e.g. when that was called from a
// callback, where it does not wait): `ended` keeps the C function from running then.
struct CallbackTarget {
  ubroker_message_fn on_message = nullptr;
  ubroker_call_fn on_request = nullptr;
  void* user = nullptr;
  std::atomic<bool> ended{false};
  std::string topic;  // the NUL-terminated topic of the delivery being handed to on_message
};

}  // namespace ubroker::capi

struct ubroker_subscription {
  ubroker::Subscription cpp;
  std::shared_ptr<ubroker::capi::CallbackTarget> target;
};

namespace ubroker::capi {

constexpr int kOk = UBROKER_OK;  // an int, where lambdas return statuses

// The C status of an error: the code, negated (ubroker.h).
inline int status_of(const Error& e) noexcept {
  return -static_cast<int>(e.code);
}

// Records `why` as this thread's last error and returns its status code.
int fail(const Error& why) noexcept;
int fail(int status, const char* why) noexcept;

// Runs `body` (returning a status), turning exceptions into UBROKER_E_NO_MEMORY/INTERNAL:
// nothing may unwind into C.
template <class Body>
int guarded(Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(UBROKER_E_NO_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(UBROKER_E_INTERNAL, e.what());
  } catch (...) {
    return fail(UBROKER_E_INTERNAL, "an unknown exception inside the library");
  }
}

// Fills `out` from a Message the caller is to own (moved into out->owned).
void adopt_message(ubroker_message& out, Message&& m);

// C headers as HeaderFields, in `out` (NULL keys or values: false).
[[nodiscard]] bool header_fields(const ubroker_header* headers, std::size_t count, std::vector<HeaderField>& out);

// The accessors of ubroker_message's and ubroker_call's headers.
int header_at(const Headers& h, std::size_t i, const char** key, std::size_t* key_len, const char** value,
              std::size_t* value_len);
const char* header_value(const Headers& h, const char* key, std::size_t* value_len);

}  // namespace ubroker::capi
