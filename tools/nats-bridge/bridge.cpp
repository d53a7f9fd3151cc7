#include "bridge.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include "ubroker/proto/headers.hpp"
#include "ubroker/proto/topic.hpp"

namespace ubroker::bridge {
namespace {

constexpr const char* kOrigin = "Bridge-Origin";  // the exporting host
constexpr const char* kSender = "Bridge-Sender";  // "UID/PID/CLIENT": the local sender, as its broker stamped it
constexpr const char* kSeq = "Bridge-Seq";        // "EPOCH:N" (sequence_tracker.hpp)
constexpr const char* kHop = "Bridge-Hop";        // the bridge that brought it in
constexpr const char* kError = "Bridge-Error";  // a service reply's error: NO_RESPONDERS, TIMEOUT, SERVICE_ERROR
// The NATS micro-services convention, so plain NATS requesters understand an error reply too.
constexpr const char* kServiceError = "Nats-Service-Error";
constexpr const char* kServiceErrorCode = "Nats-Service-Error-Code";
constexpr const char* kServiceQueue = "ubroker-bridge";  // one bridge answers each NATS request

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != std::tolower(static_cast<unsigned char>(prefix[i]))) return false;
  }
  return true;
}

bool is_bridge_header(std::string_view key) { return iequals_prefix(key, "bridge-"); }

// True when an earlier pattern of `patterns` also matches: its subscription carries the message.
bool earlier_pattern_matches(const std::vector<std::string>& patterns, std::size_t index, std::string_view topic) {
  for (std::size_t j = 0; j < index && j < patterns.size(); ++j) {
    if (proto::pattern_matches(patterns[j], topic)) return true;
  }
  return false;
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}
std::optional<std::uint64_t> parse_u64(const char* s) {
  if (s == nullptr) return std::nullopt;
  return parse_u64(std::string_view(s));
}

// Formats into `buf` with a terminating NUL (what nats.c takes), without allocating.
template <std::size_t N, class... Args>
const char* format_z(char (&buf)[N], fmt::format_string<Args...> f, Args&&... args) {
  *fmt::format_to_n(buf, N - 1, f, std::forward<Args>(args)...).out = '\0';
  return buf;
}

const char* header(natsMsg* msg, const char* key) {
  const char* value = nullptr;
  return natsMsgHeader_Get(msg, key, &value) == NATS_OK ? value : nullptr;
}

// A NATS message's headers as ubroker header fields (views into `msg`), leaving out what ubroker
// cannot carry. `fields` is per-thread scratch (no allocation per message once warm).
struct NatsHeaders {
  std::vector<HeaderField>& fields;
  std::uint64_t dropped = 0;
};
NatsHeaders headers_of(natsMsg* msg, bool keep_bridge_headers) {
  thread_local std::vector<HeaderField> scratch;
  scratch.clear();
  NatsHeaders out{scratch};
  const char** keys = nullptr;
  int key_count = 0;
  if (natsMsgHeader_Keys(msg, &keys, &key_count) != NATS_OK) return out;
  for (int i = 0; i < key_count; ++i) {
    const std::string_view key = keys[i];
    if (!keep_bridge_headers && is_bridge_header(key)) continue;
    const char** values = nullptr;
    int value_count = 0;
    if (natsMsgHeader_Values(msg, keys[i], &values, &value_count) != NATS_OK) continue;
    for (int v = 0; v < value_count; ++v) {
      if (iequals_prefix(key, "ubroker-") || proto::check_header_field(key, values[v]) != nullptr) {
        ++out.dropped;
        continue;
      }
      out.fields.push_back({key, values[v]});
    }
    std::free(static_cast<void*>(values));
  }
  std::free(static_cast<void*>(keys));
  return out;
}

// Adds ubroker header fields to a NATS message (NUL-terminated copies, which nats.c needs).
void add_headers(natsMsg* msg, const Headers& headers, bool keep_bridge_headers) {
  std::string key, value;
  for (const HeaderField f : headers) {
    if (!keep_bridge_headers && is_bridge_header(f.key)) continue;
    key.assign(f.key);
    value.assign(f.value);
    (void)natsMsgHeader_Add(msg, key.c_str(), value.c_str());
  }
}

void set_header(natsMsg* msg, const char* key, const char* value) { (void)natsMsgHeader_Set(msg, key, value); }

// The identity headers of what the bridge sends out (a message or a request).
void set_identity(natsMsg* msg, const std::string& origin, const Sender& sender) {
  char text[64];
  set_header(msg, kOrigin, origin.c_str());
  set_header(msg, kSender, format_z(text, "{}/{}/{}", sender.uid, sender.pid, sender.client_id));
}

std::span<const std::byte> data_of(natsMsg* msg) {
  return {reinterpret_cast<const std::byte*>(natsMsg_GetData(msg)), static_cast<std::size_t>(natsMsg_GetDataLength(msg))};
}

// Logs the first few of a kind of failure, then one in a thousand: a flood stays readable.
bool worth_logging(std::uint64_t count) { return count <= 5 || count % 1000 == 0; }

}  // namespace

Bridge::Bridge(Config config) : config_(std::move(config)) {}

Bridge::~Bridge() { stop(); }

std::expected<void, std::string> Bridge::start(Client local) {
  local_.emplace(std::move(local));
  const BridgeConfig& b = config_.bridge;
  pool_.emplace(b.max_requests_in_flight, b.max_requests_in_flight);
  if (auto r = connect_nats(); !r) return r;
  for (std::size_t i = 0; i < b.imports.size(); ++i) {
    if (auto r = subscribe_nats(subject_of(b.imports[i]), i, false); !r) return r;
  }
  for (std::size_t i = 0; i < b.export_services.size(); ++i) {
    if (auto r = subscribe_nats(subject_of(b.export_services[i]), i, true); !r) return r;
  }
  for (std::size_t i = 0; i < b.exports.size(); ++i) {
    auto s = local_->subscribe(b.exports[i], [this, i](const MessageView& m) { export_message(i, m); });
    if (!s) return std::unexpected(fmt::format("subscribing to '{}' locally: {}", b.exports[i], s.error().message));
    local_subs_.push_back(std::move(*s));
  }
  for (const std::string& pattern : b.import_services) {
    auto s = local_->serve(pattern, [this](Request r) { forward_request_to_nats(std::move(r)); });
    if (!s) return std::unexpected(fmt::format("serving '{}' locally: {}", pattern, s.error().message));
    local_subs_.push_back(std::move(*s));
  }
  auto metrics = local_->serve(b.metrics_topic, [this](Request r) { (void)r.reply(to_prometheus(counters_, config_.bridge.name)); });
  if (!metrics) return std::unexpected(fmt::format("serving '{}' locally: {}", b.metrics_topic, metrics.error().message));
  local_subs_.push_back(std::move(*metrics));
  spdlog::info("bridge '{}' carrying: export {}, import {}, export_services {}, import_services {}; metrics on '{}'", b.name,
               fmt::join(b.exports, " "), fmt::join(b.imports, " "), fmt::join(b.export_services, " "),
               fmt::join(b.import_services, " "), b.metrics_topic);
  return {};
}

std::expected<void, std::string> Bridge::connect_nats() {
  const NatsConfig& n = config_.nats;
  natsOptions* raw = nullptr;
  if (natsStatus s = natsOptions_Create(&raw); s != NATS_OK) return std::unexpected(nats_error("NATS options", s));
  nats_options_.reset(raw);
  natsOptions* o = nats_options_.get();
  std::vector<const char*> servers;
  for (const auto& url : n.servers) servers.push_back(url.c_str());
  const std::string name = "ubroker-nats-bridge:" + config_.bridge.name;
  natsStatus s = natsOptions_SetServers(o, servers.data(), static_cast<int>(servers.size()));
  if (s == NATS_OK) s = natsOptions_SetName(o, name.c_str());
  if (s == NATS_OK) s = natsOptions_SetNoEcho(o, true);  // never receive our own messages back
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, n.reconnect_wait.count());
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, n.connect_timeout.count());
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(o, static_cast<int>(n.buffer_bytes));
  if (s == NATS_OK) s = natsOptions_SetPingInterval(o, 2000);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(o, 2);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, on_nats_disconnected, this);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_nats_reconnected, this);
  if (s == NATS_OK) s = natsOptions_SetClosedCB(o, on_nats_closed, this);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(o, on_nats_error, this);
  // No server up yet is not fatal: the client keeps dialling and buffers meanwhile.
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(o, true, on_nats_connected, this);
  if (s == NATS_OK && !n.user.empty()) s = natsOptions_SetUserInfo(o, n.user.c_str(), n.password.c_str());
  if (s == NATS_OK && !n.token.empty()) s = natsOptions_SetToken(o, n.token.c_str());
  if (s == NATS_OK && !n.credentials.empty()) s = natsOptions_SetUserCredentialsFromFiles(o, n.credentials.c_str(), nullptr);
  if (s == NATS_OK && n.tls) s = natsOptions_SetSecure(o, true);
  if (s == NATS_OK && !n.tls_ca.empty()) s = natsOptions_LoadCATrustedCertificates(o, n.tls_ca.c_str());
  if (s == NATS_OK && !n.tls_cert.empty()) s = natsOptions_LoadCertificatesChain(o, n.tls_cert.c_str(), n.tls_key.c_str());
  if (s != NATS_OK) return std::unexpected(nats_error("NATS options", s));
  natsConnection* nc = nullptr;
  s = natsConnection_Connect(&nc, o);
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) return std::unexpected(nats_error("connecting to NATS", s));
  nats_.reset(nc);
  if (s == NATS_OK) {
    counters_.nats_connected = natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED;
    char url[256] = {};
    (void)natsConnection_GetConnectedUrl(nc, url, sizeof url);
    spdlog::info("NATS: connected to {}", url);
  } else {
    spdlog::warn("NATS: no server answered yet ({}); dialling on, exports wait in a {}-byte buffer",
                 fmt::join(n.servers, ", "), n.buffer_bytes);
  }
  return {};
}

std::expected<void, std::string> Bridge::subscribe_nats(const std::string& subject, std::size_t index, bool service) {
  auto sub = std::make_unique<NatsSub>(NatsSub{.bridge = this, .index = index, .service = service, .handle = nullptr});
  natsSubscription* raw = nullptr;
  const natsStatus s = service ? natsConnection_QueueSubscribe(&raw, nats_.get(), subject.c_str(), kServiceQueue,
                                                               on_nats_message, sub.get())
                               : natsConnection_Subscribe(&raw, nats_.get(), subject.c_str(), on_nats_message, sub.get());
  if (s != NATS_OK) return std::unexpected(nats_error(fmt::format("subscribing to NATS '{}'", subject).c_str(), s));
  sub->handle.reset(raw);
  // The bridge's own pace sets the limit: a burst waits here rather than being dropped early.
  (void)natsSubscription_SetPendingLimits(raw, 1 << 20, 256 << 20);
  nats_subs_.push_back(std::move(sub));
  return {};
}

void Bridge::stop() {
  if (stopping_.exchange(true)) return;
  // Local side first: once the broker acknowledged the unsubscribes, nothing more is exported.
  local_subs_.clear();
  // NATS subscriptions drain: messages already received are still imported, and a callback
  // under way has returned when the wait does.
  for (auto& sub : nats_subs_) {
    if (sub->handle && natsSubscription_Drain(sub->handle.get()) == NATS_OK) {
      (void)natsSubscription_WaitForDrainCompletion(sub->handle.get(), 2000);
    }
  }
  if (nats_) {
    (void)natsConnection_FlushTimeout(nats_.get(), 1000);
    // What is still buffered for an unreachable server is lost with the connection: counted.
    const std::uint64_t held = held_while_down_.exchange(0);
    if (!counters_.nats_connected && held != 0) {
      counters_.export_dropped_stopping += held;
      spdlog::warn("stopping with NATS unreachable: {} exported message(s) still buffered are dropped", held);
    }
    natsConnection_Close(nats_.get());  // also ends requests the pool's threads wait for
  }
  pool_.reset();
  // Closing the local client answers the NATS requests it still awaited (their callbacks use the
  // closed NATS connection, which refuses them harmlessly) and stops its I/O thread.
  if (local_) local_->close();
  if (nats_) {
    std::unique_lock lk(closed_mu_);
    (void)closed_cv_.wait_for(lk, std::chrono::seconds(5), [&] { return nats_closed_; });
  }
  nats_subs_.clear();
  nats_.reset();
}

void Bridge::tick() {
  if (stopping_) return;
  poll_nats_drops();
  const Counters& c = counters_;
  const std::uint64_t dropped = c.export_dropped_buffer_full + c.export_refused_too_large + c.export_failed +
                                c.export_dropped_local + c.import_failed + c.import_dropped_slow;
  const std::string values[] = {
      c.nats_connected ? "connected" : "down",  std::to_string(c.exported.load()),
      std::to_string(c.imported.load()),        std::to_string(dropped),
      std::to_string(c.import_lost.load()),     std::to_string(c.export_buffered.load()),
      std::to_string(c.requests_to_nats.load()), std::to_string(c.requests_from_nats.load()),
      std::to_string(c.nats_reconnects.load())};
  const HeaderField fields[] = {{"nats", values[0]},     {"exported", values[1]}, {"imported", values[2]},
                                {"dropped", values[3]},  {"lost", values[4]},     {"buffered", values[5]},
                                {"req_out", values[6]},  {"req_in", values[7]},   {"reconnects", values[8]}};
  if (std::equal(std::begin(values), std::end(values), last_status_.begin(), last_status_.end())) return;
  if (local_->set_status(fields)) last_status_.assign(std::begin(values), std::end(values));
}

void Bridge::poll_nats_drops() {
  for (auto& sub : nats_subs_) {
    std::int64_t dropped = 0;
    if (!sub->handle || natsSubscription_GetDropped(sub->handle.get(), &dropped) != NATS_OK) continue;
    if (dropped > sub->dropped_seen) {
      counters_.import_dropped_slow += static_cast<std::uint64_t>(dropped - sub->dropped_seen);
      spdlog::warn("NATS: the client dropped {} message(s) for a subscription the bridge did not keep up with",
                   dropped - sub->dropped_seen);
      sub->dropped_seen = dropped;
    }
  }
}

// ---- local -> NATS ------------------------------------------------------------------------

void Bridge::export_message(std::size_t index, const MessageView& m) {
  if (m.dropped_before != 0) counters_.export_dropped_local += m.dropped_before;
  if (m.retained) return;  // a replay of an old value to this subscription, not traffic
  if (earlier_pattern_matches(config_.bridge.exports, index, m.topic)) return;
  if (proto::is_reserved(m.topic)) return;  // the broker's own topics stay local
  // What came in through a bridge (this one, or another on this host or on another cluster)
  // is never exported again: that is what keeps bridges from looping between them.
  if (m.sender.client_id == local_->id() || m.headers.get(kHop)) return;
  thread_local std::string subject;  // scratch: no allocation per message once warm
  subject.assign(config_.bridge.prefix).append(m.topic);
  const std::int64_t max_payload = natsConnection_GetMaxPayload(nats_.get());
  if (max_payload > 0 && static_cast<std::int64_t>(m.payload.size()) > max_payload) {
    if (worth_logging(++counters_.export_refused_too_large)) {
      spdlog::warn("export refused: '{}' is {} bytes, above the NATS server's max_payload of {}", m.topic,
                   m.payload.size(), max_payload);
    }
    return;
  }
  natsMsg* raw = nullptr;
  if (natsStatus s = natsMsg_Create(&raw, subject.c_str(), nullptr, reinterpret_cast<const char*>(m.payload.data()),
                                    static_cast<int>(m.payload.size()));
      s != NATS_OK) {
    if (worth_logging(++counters_.export_failed)) spdlog::warn("export of '{}' failed: {}", m.topic, nats_error("message", s));
    return;
  }
  NatsMsg msg(raw);
  add_headers(raw, m.headers, false);  // a local publisher's Bridge-* headers are not passed on
  const SequenceNumbers::Stamp stamp = numbers_.next(subject);
  set_identity(raw, config_.bridge.name, m.sender);
  char seq[48];
  set_header(raw, kSeq, format_z(seq, "{}:{}", stamp.epoch, stamp.seq));
  const natsStatus s = natsConnection_PublishMsg(nats_.get(), raw);
  if (s == NATS_OK) {
    numbers_.commit(subject, stamp);
    ++counters_.exported;
    if (!counters_.nats_connected) {
      ++counters_.export_buffered;
      ++held_while_down_;
    }
  } else if (s == NATS_INSUFFICIENT_BUFFER) {
    if (worth_logging(++counters_.export_dropped_buffer_full)) {
      spdlog::warn("export dropped: NATS unreachable and its {}-byte buffer is full ('{}')", config_.nats.buffer_bytes, m.topic);
    }
  } else if (s == NATS_MAX_PAYLOAD) {
    ++counters_.export_refused_too_large;
  } else if (worth_logging(++counters_.export_failed)) {
    spdlog::warn("export of '{}' failed: {}", m.topic, nats_error("publish", s));
  }
}

// ---- NATS -> local ------------------------------------------------------------------------

void Bridge::on_nats_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  NatsMsg owned(msg);
  const auto* sub = static_cast<NatsSub*>(closure);
  if (sub->service) {
    sub->bridge->serve_request_from_nats(owned.get());
  } else {
    sub->bridge->import_message(sub->index, owned.get());
  }
}

void Bridge::import_message(std::size_t index, natsMsg* msg) {
  const std::string_view subject = natsMsg_GetSubject(msg);
  const std::string_view topic = subject.substr(std::min(subject.size(), config_.bridge.prefix.size()));
  if (earlier_pattern_matches(config_.bridge.imports, index, topic)) return;
  const char* origin = header(msg, kOrigin);
  if (origin != nullptr && config_.bridge.name == origin) {
    ++counters_.import_skipped_own;  // our own export come back another way (or a NATS client's forgery)
    return;
  }
  if (const char* stamp = origin != nullptr ? header(msg, kSeq) : nullptr) {
    const std::string_view text = stamp;
    const std::size_t colon = text.find(':');
    const auto epoch = colon == std::string_view::npos ? std::nullopt : parse_u64(text.substr(0, colon));
    const auto seq = colon == std::string_view::npos ? std::nullopt : parse_u64(text.substr(colon + 1));
    if (epoch && seq) {
      if (const std::uint64_t lost = gaps_.saw(origin, subject, *epoch, *seq); lost != 0) {
        counters_.import_lost += lost;
        spdlog::warn("import: {} message(s) on '{}' from '{}' missing (lost between the bridges, or dropped by the "
                     "NATS client for falling behind)",
                     lost, topic, origin);
      }
    }
  }
  NatsHeaders h = headers_of(msg, true);
  if (h.dropped != 0) counters_.import_headers_dropped += h.dropped;
  h.fields.push_back({kHop, config_.bridge.name});
  auto sent = local_->publish(topic, data_of(msg), PublishOptions{.retain = false, .headers = h.fields});
  if (sent) {
    ++counters_.imported;
  } else if (worth_logging(++counters_.import_failed)) {
    spdlog::warn("import of '{}' refused by the local broker: {}", topic, sent.error().message);
  }
}

// ---- requests -----------------------------------------------------------------------------

void Bridge::forward_request_to_nats(Request r) {
  if (r.headers().get(kHop)) {
    // It came in through a bridge: sending it out again could loop between the hosts.
    (void)r.reply_gateway_error(Errc::kNoResponders,
                                fmt::format("'{}' came through a bridge and is not forwarded to NATS again", r.topic()));
    ++counters_.requests_to_nats;
    ++counters_.requests_to_nats_failed;
    return;
  }
  auto shared = std::make_shared<Request>(std::move(r));
  const bool accepted = pool_->try_submit([this, shared] {
    Request& req = *shared;
    ++counters_.requests_to_nats;
    const std::string subject = subject_of(req.topic());
    natsMsg* raw = nullptr;
    natsStatus s = natsMsg_Create(&raw, subject.c_str(), nullptr, reinterpret_cast<const char*>(req.payload().data()),
                                  static_cast<int>(req.payload().size()));
    if (s != NATS_OK) {
      ++counters_.requests_to_nats_failed;
      (void)req.reply_error(nats_error("bridge: building the NATS request", s), 500);
      return;
    }
    NatsMsg msg(raw);
    add_headers(raw, req.headers(), false);
    set_identity(raw, config_.bridge.name, req.sender());
    natsMsg* reply_raw = nullptr;
    s = natsConnection_RequestMsg(&reply_raw, nats_.get(), raw, config_.bridge.request_timeout.count());
    NatsMsg reply(reply_raw);
    if (s == NATS_NO_RESPONDERS) {
      ++counters_.requests_to_nats_failed;
      (void)req.reply_gateway_error(Errc::kNoResponders, fmt::format("nobody serves '{}' behind NATS", req.topic()));
      return;
    }
    if (s == NATS_TIMEOUT) {
      ++counters_.requests_to_nats_failed;
      (void)req.reply_gateway_error(Errc::kTimeout, fmt::format("no answer for '{}' from NATS in time", req.topic()));
      return;
    }
    if (s != NATS_OK) {
      ++counters_.requests_to_nats_failed;
      (void)req.reply_error(nats_error("bridge: NATS request", s), 503);
      return;
    }
    const char* error = header(reply_raw, kError);
    const char* service_error = header(reply_raw, kServiceError);
    if (error != nullptr || service_error != nullptr) ++counters_.requests_to_nats_failed;
    if (error != nullptr && std::string_view(error) == "NO_RESPONDERS") {
      (void)req.reply_gateway_error(Errc::kNoResponders, service_error != nullptr ? service_error : "no responders");
      return;
    }
    if (error != nullptr && std::string_view(error) == "TIMEOUT") {
      (void)req.reply_gateway_error(Errc::kTimeout, service_error != nullptr ? service_error : "timeout");
      return;
    }
    if (service_error != nullptr) {
      const auto code = parse_u64(header(reply_raw, kServiceErrorCode)).value_or(0);
      (void)req.reply_error(service_error, static_cast<std::uint32_t>(std::min<std::uint64_t>(code, UINT32_MAX)));
      return;
    }
    NatsHeaders h = headers_of(reply_raw, false);
    (void)req.reply(data_of(reply_raw), h.fields);
  });
  if (!accepted) {
    ++counters_.requests_to_nats_busy;
    (void)shared->reply_error(
        fmt::format("bridge busy: {} requests already forwarded to NATS", config_.bridge.max_requests_in_flight), 503);
  }
}

void Bridge::serve_request_from_nats(natsMsg* msg) {
  const char* reply_to = natsMsg_GetReply(msg);
  if (reply_to == nullptr || *reply_to == '\0') return;  // a publish, not a request: nothing to answer
  const std::string_view subject = natsMsg_GetSubject(msg);
  const std::string_view topic = subject.substr(std::min(subject.size(), config_.bridge.prefix.size()));
  // No first-pattern rule here: the service subscriptions share one queue group, so NATS gives
  // each request to one of them (whichever matched), never to two.
  ++counters_.requests_from_nats;
  if (proto::is_reserved(topic)) {  // the broker's own services are not offered to NATS
    answer_nats_error(reply_to, Error{Errc::kNoResponders, "not served across the bridge"});
    return;
  }
  NatsHeaders h = headers_of(msg, true);
  h.fields.push_back({kHop, config_.bridge.name});
  auto answer = [this, reply = std::string(reply_to)](Result<Message> result) {
    if (!result) {
      answer_nats_error(reply.c_str(), result.error());
      return;
    }
    natsMsg* raw = nullptr;
    if (natsMsg_Create(&raw, reply.c_str(), nullptr, reinterpret_cast<const char*>(result->payload().data()),
                       static_cast<int>(result->payload().size())) != NATS_OK) {
      ++counters_.requests_from_nats_failed;
      return;
    }
    NatsMsg out(raw);
    add_headers(raw, result->headers(), false);
    if (natsConnection_PublishMsg(nats_.get(), raw) != NATS_OK) ++counters_.requests_from_nats_failed;
  };
  local_->request_async(topic, data_of(msg), RequestOptions{.timeout = config_.bridge.request_timeout, .headers = h.fields},
                        std::move(answer));
}

void Bridge::answer_nats_error(const char* reply_to, const Error& e) {
  ++counters_.requests_from_nats_failed;
  natsMsg* raw = nullptr;
  if (natsMsg_Create(&raw, reply_to, nullptr, nullptr, 0) != NATS_OK) return;
  NatsMsg out(raw);
  const char* kind = e.code == Errc::kNoResponders ? "NO_RESPONDERS" : e.code == Errc::kTimeout ? "TIMEOUT" : "SERVICE_ERROR";
  const std::uint32_t code = e.code == Errc::kServiceError ? e.service_code
                             : e.code == Errc::kNoResponders ? 503
                             : e.code == Errc::kTimeout      ? 504
                                                             : 500;
  char code_text[16];
  set_header(raw, kError, kind);
  set_header(raw, kServiceError, e.message.c_str());
  set_header(raw, kServiceErrorCode, format_z(code_text, "{}", code));
  (void)natsConnection_PublishMsg(nats_.get(), raw);
}

// ---- the NATS connection's events ---------------------------------------------------------

void Bridge::on_nats_connected(natsConnection* nc, void* closure) {
  auto* self = static_cast<Bridge*>(closure);
  self->counters_.nats_connected = true;
  char url[256] = {};
  (void)natsConnection_GetConnectedUrl(nc, url, sizeof url);
  spdlog::info("NATS: connected to {}", url);
}

void Bridge::on_nats_disconnected(natsConnection*, void* closure) {
  auto* self = static_cast<Bridge*>(closure);
  if (!self->counters_.nats_connected.exchange(false)) return;
  ++self->counters_.nats_disconnects;
  if (self->stopping_) return;
  spdlog::warn("NATS: connection lost; dialling the other servers, exports wait in a {}-byte buffer",
               self->config_.nats.buffer_bytes);
}

void Bridge::on_nats_reconnected(natsConnection* nc, void* closure) {
  auto* self = static_cast<Bridge*>(closure);
  self->counters_.nats_connected = true;
  self->held_while_down_ = 0;  // the NATS client sends its buffer first on the new connection
  ++self->counters_.nats_reconnects;
  char url[256] = {};
  (void)natsConnection_GetConnectedUrl(nc, url, sizeof url);
  spdlog::info("NATS: reconnected to {}", url);
}

void Bridge::on_nats_closed(natsConnection*, void* closure) {
  auto* self = static_cast<Bridge*>(closure);
  self->counters_.nats_connected = false;
  if (!self->stopping_) spdlog::error("NATS: connection closed for good");
  {
    std::lock_guard lk(self->closed_mu_);
    self->nats_closed_ = true;
  }
  self->closed_cv_.notify_all();  // stop() waits for this last callback before the bridge goes
}

void Bridge::on_nats_error(natsConnection*, natsSubscription*, natsStatus s, void* closure) {
  auto* self = static_cast<Bridge*>(closure);
  if (s == NATS_SLOW_CONSUMER) return;  // counted by poll_nats_drops
  if (!self->stopping_) spdlog::warn("NATS: {}", natsStatus_GetText(s));
}

}  // namespace ubroker::bridge
