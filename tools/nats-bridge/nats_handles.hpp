// One owner for each object of the NATS C client (nats.c): unique_ptrs whose deleters are the
// library's own destroy functions, and a status check that turns a natsStatus into a sentence.
#pragma once

#include <nats/nats.h>

#include <memory>
#include <string>

namespace ubroker::bridge {

struct NatsOptionsDeleter {
  void operator()(natsOptions* p) const noexcept { natsOptions_Destroy(p); }
};
struct NatsConnectionDeleter {
  void operator()(natsConnection* p) const noexcept { natsConnection_Destroy(p); }
};
struct NatsSubscriptionDeleter {
  void operator()(natsSubscription* p) const noexcept { natsSubscription_Destroy(p); }
};
struct NatsMsgDeleter {
  void operator()(natsMsg* p) const noexcept { natsMsg_Destroy(p); }
};
using NatsOptions = std::unique_ptr<natsOptions, NatsOptionsDeleter>;
using NatsConnection = std::unique_ptr<natsConnection, NatsConnectionDeleter>;
using NatsSubscription = std::unique_ptr<natsSubscription, NatsSubscriptionDeleter>;
using NatsMsg = std::unique_ptr<natsMsg, NatsMsgDeleter>;

// "what: the library's text for `s` (and its last error, when it has more to say)".
inline std::string nats_error(const char* what, natsStatus s) {
  std::string text = std::string(what) + ": " + natsStatus_GetText(s);
  const char* detail = nats_GetLastError(nullptr);
  if (detail != nullptr && *detail != '\0' && text.find(detail) == std::string::npos) text += std::string(" (") + detail + ")";
  return text;
}

}  // namespace ubroker::bridge
