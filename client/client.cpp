// The public Client and Subscription: thin handles over ClientCore.
#include "ubroker/client.hpp"

#include <fmt/format.h>
#include <cstdlib>

#include "client_core.hpp"
#include "handshake.hpp"
#include "ubroker/proto/socket_address.hpp"

namespace ubroker {
namespace {

std::span<const std::byte> as_bytes(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

std::unexpected<Error> closed() {
  return std::unexpected(Error{Errc::kNotConnected, "the client is closed"});
}

}  // namespace

std::string_view to_string(Errc code) noexcept {
  switch (code) {
    case Errc::kProtocolError: return "PROTOCOL_ERROR";
    case Errc::kUnsupportedVersion: return "UNSUPPORTED_VERSION";
    case Errc::kHandshakeTimeout: return "HANDSHAKE_TIMEOUT";
    case Errc::kFrameTooLarge: return "FRAME_TOO_LARGE";
    case Errc::kInvalidTopic: return "INVALID_TOPIC";
    case Errc::kInvalidPattern: return "INVALID_PATTERN";
    case Errc::kReservedTopic: return "RESERVED_TOPIC";
    case Errc::kDuplicateSubscription: return "DUPLICATE_SUBSCRIPTION";
    case Errc::kUnknownSubscription: return "UNKNOWN_SUBSCRIPTION";
    case Errc::kLimitExceeded: return "LIMIT_EXCEEDED";
    case Errc::kSlowConsumer: return "SLOW_CONSUMER";
    case Errc::kShuttingDown: return "SHUTTING_DOWN";
    case Errc::kPermissionDenied: return "PERMISSION_DENIED";
    case Errc::kFdError: return "FD_ERROR";
    case Errc::kNoResponders: return "NO_RESPONDERS";
    case Errc::kResponderGone: return "RESPONDER_GONE";
    case Errc::kUnknownRequest: return "UNKNOWN_REQUEST";
    case Errc::kKicked: return "KICKED";
    case Errc::kNotFound: return "NOT_FOUND";
    case Errc::kShmRefused: return "SHM_REFUSED";
    case Errc::kFrameTimeout: return "FRAME_TIMEOUT";
    case Errc::kInvalidConfig: return "INVALID_CONFIG";
    case Errc::kServiceError: return "SERVICE_ERROR";
    case Errc::kInvalidHeaders: return "INVALID_HEADERS";
    case Errc::kUntrustedBroker: return "UNTRUSTED_BROKER";
    case Errc::kBrokerGone: return "BROKER_GONE";
    case Errc::kBufferFull: return "BUFFER_FULL";
    case Errc::kConnectFailed: return "CONNECT_FAILED";
    case Errc::kNotConnected: return "NOT_CONNECTED";
    case Errc::kTimeout: return "TIMEOUT";
    case Errc::kInvalidArgument: return "INVALID_ARGUMENT";
  }
  return "UNKNOWN";
}

Result<Client> Client::connect(ConnectOptions options) {
  if (options.address.empty()) {
    if (const char* fd = std::getenv("UBROKER_FD"); fd != nullptr && *fd != '\0') {
      char* end = nullptr;
      const long n = std::strtol(fd, &end, 10);
      if (*end != '\0' || n < 0 || n > 1 << 24) {
        return std::unexpected(Error{Errc::kInvalidArgument, fmt::format("UBROKER_FD='{}' is not an fd number", fd)});
      }
      return adopt(UniqueFd(static_cast<int>(n)), std::move(options));
    }
    options.address = proto::default_socket_path();
  }
  auto dialed = detail::dial(options, options.wait_for_broker);
  if (!dialed) return std::unexpected(dialed.error());
  return start(std::move(dialed->fd), std::move(dialed->welcomed), std::move(options));
}

Result<Client> Client::adopt(UniqueFd connected, ConnectOptions options) {
  if (auto ok = detail::check_adopted(connected); !ok) return std::unexpected(ok.error());
  auto welcomed = detail::greet(connected, options);
  if (!welcomed) return std::unexpected(welcomed.error());
  return start(std::move(connected), std::move(*welcomed), std::move(options));
}

Client Client::start(UniqueFd fd, detail::Welcomed welcomed, ConnectOptions options) {
  auto core = std::make_shared<detail::ClientCore>(std::move(options), std::move(fd), std::move(welcomed));
  core->start();
  return Client(std::move(core));
}

Client::Client(std::shared_ptr<detail::ClientCore> core) : core_(std::move(core)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&& other) noexcept {
  if (this != &other) {
    close();
    core_ = std::move(other.core_);
  }
  return *this;
}
Client::~Client() {
  close();
}

void Client::close() {
  if (core_) core_->close();
}

Result<void> Client::publish(std::string_view topic, std::span<const std::byte> payload, PublishOptions options) {
  if (!core_) return closed();
  return core_->publish(topic, payload, options);
}

Result<void> Client::publish(std::string_view topic, std::string_view text, PublishOptions options) {
  return publish(topic, as_bytes(text), options);
}

Result<Loan> Client::loan(std::string_view topic, std::size_t size, std::chrono::milliseconds timeout) {
  if (!core_) return closed();
  return core_->loan(topic, size, timeout);
}

Result<void> Client::publish(Loan&& loan) {
  if (!core_) return closed();
  return core_->publish(std::move(loan));
}

Result<Message> Client::request(std::string_view topic, std::span<const std::byte> payload,
                                std::chrono::milliseconds timeout) {
  return request(topic, payload, RequestOptions{.timeout = timeout});
}

Result<Message> Client::request(std::string_view topic, std::string_view text, std::chrono::milliseconds timeout) {
  return request(topic, as_bytes(text), RequestOptions{.timeout = timeout});
}

Result<Message> Client::request(std::string_view topic, std::span<const std::byte> payload,
                                const RequestOptions& options) {
  if (!core_) return closed();
  return core_->request(topic, payload, options);
}

Result<Message> Client::request(std::string_view topic, std::string_view text, const RequestOptions& options) {
  return request(topic, as_bytes(text), options);
}

void Client::request_async(std::string_view topic, std::span<const std::byte> payload, const RequestOptions& options,
                           ReplyHandler done) {
  if (!core_) {
    done(closed());
    return;
  }
  core_->request_async(topic, payload, options, std::move(done));
}

Result<Subscription> Client::serve(std::string_view pattern, RequestHandler handler) {
  if (!core_) return closed();
  if (!handler) return std::unexpected(Error{Errc::kInvalidArgument, "serve: empty handler"});
  return core_->serve(pattern, std::move(handler));
}

Result<void> Client::wait_for_responder(std::string_view topic, std::chrono::milliseconds timeout) {
  if (!core_) return closed();
  return core_->wait_for_responder(topic, timeout);
}

// ---- Request -----------------------------------------------------------------------------

Result<void> Request::reply(std::span<const std::byte> payload, std::span<const HeaderField> headers) {
  if (replied_) return std::unexpected(Error{Errc::kInvalidArgument, "this request was already answered"});
  auto core = core_.lock();
  if (!core) return std::unexpected(Error{Errc::kNotConnected, "the client that received this request is gone"});
  auto sent = core->reply(request_id_, payload, headers);
  // Headers that break the rules are the caller's to fix: the request stays unanswered.
  if (sent || sent.error().code != Errc::kInvalidHeaders) replied_ = true;
  return sent;
}

Result<void> Request::reply(std::string_view text, std::span<const HeaderField> headers) {
  return reply(as_bytes(text), headers);
}

Result<void> Request::reply_error(std::string_view message, std::uint32_t code) {
  if (replied_) return std::unexpected(Error{Errc::kInvalidArgument, "this request was already answered"});
  auto core = core_.lock();
  if (!core) return std::unexpected(Error{Errc::kNotConnected, "the client that received this request is gone"});
  replied_ = true;
  return core->reply_error(request_id_, message, code);
}

Result<void> Request::reply_gateway_error(Errc code, std::string_view message) {
  if (code != Errc::kNoResponders && code != Errc::kTimeout) {
    return std::unexpected(Error{Errc::kInvalidArgument, "a gateway error is kNoResponders or kTimeout"});
  }
  if (replied_) return std::unexpected(Error{Errc::kInvalidArgument, "this request was already answered"});
  auto core = core_.lock();
  if (!core) return std::unexpected(Error{Errc::kNotConnected, "the client that received this request is gone"});
  replied_ = true;
  return core->reply_error(request_id_, message, 0, code);
}

Result<Subscription> Client::subscribe(std::string_view pattern, Handler handler, SubscribeOptions options) {
  if (!core_) return closed();
  if (!handler) return std::unexpected(Error{Errc::kInvalidArgument, "subscribe: empty handler"});
  return core_->subscribe(pattern, std::move(handler), options);
}

Result<Subscription> Client::subscribe(std::string_view pattern, SubscribeOptions options) {
  if (!core_) return closed();
  return core_->subscribe(pattern, nullptr, options);
}

Result<Message> Client::receive(std::chrono::milliseconds timeout) {
  if (!core_) return closed();
  return core_->receive(timeout);
}

Result<void> Client::flush(std::chrono::milliseconds timeout) {
  if (!core_) return closed();
  return core_->flush(timeout);
}

Result<void> Client::set_status(std::span<const HeaderField> fields) {
  if (!core_) return closed();
  return core_->set_status(fields);
}

Result<std::size_t> Client::poll(std::chrono::milliseconds timeout) {
  if (!core_) return closed();
  return core_->poll(timeout);
}

int Client::fd() const noexcept {
  return core_ ? core_->socket_fd() : -1;
}

std::uint64_t Client::id() const noexcept {
  return core_ ? core_->id() : 0;
}
bool Client::connected() const noexcept {
  return core_ && core_->connected();
}
ClientStats Client::stats() const noexcept {
  return core_ ? core_->stats() : ClientStats{};
}
std::optional<Error> Client::disconnect_reason() const {
  if (!core_) return Error{Errc::kNotConnected, "the client is closed"};
  return core_->disconnect_reason();
}

// ---- Subscription ------------------------------------------------------------------------

Subscription::Subscription(std::shared_ptr<detail::ClientCore> core, std::shared_ptr<detail::SubState> state)
    : core_(std::move(core)), state_(std::move(state)) {}
Subscription::Subscription(Subscription&&) noexcept = default;
Subscription& Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    if (active()) (void)unsubscribe();
    core_ = std::move(other.core_);
    state_ = std::move(other.state_);
  }
  return *this;
}
Subscription::~Subscription() {
  if (active()) (void)unsubscribe();
}

std::uint64_t Subscription::id() const noexcept {
  return state_ ? state_->id : 0;
}
bool Subscription::active() const noexcept {
  return state_ && state_->active.load();
}
std::uint64_t Subscription::dropped() const noexcept {
  return state_ ? state_->dropped.load() : 0;
}

Result<std::uint64_t> Subscription::unsubscribe(std::chrono::milliseconds timeout) {
  if (!state_ || !core_) return std::unexpected(Error{Errc::kUnknownSubscription, "not subscribed"});
  return core_->unsubscribe(*state_, timeout);
}

}  // namespace ubroker
