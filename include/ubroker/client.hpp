// ubroker::Client: a connection to a ubroker broker. C++20 or later; link ubroker::client
// (CMake) or `pkg-config --libs ubroker`. The C API is ubroker/ubroker.h.
//
//   auto client = ubroker::Client::connect({.name = "thermostat"});
//   if (!client) { /* client.error().message says why */ }
//   auto sub = client->subscribe("sensors.*.temp", [](const ubroker::MessageView& m) { ... });
//   client->publish("sensors.kitchen.temp", "21.5");
//
// Threads: every method may be called from any thread. By default the client runs its own
// I/O thread, and callbacks (subscriptions, services, request_async, on_connection, on_error)
// run on it, one at a time, in delivery order, or, while an application thread waits in a call
// that waits for the broker (receive(), request(), flush()...), on that thread: a waiting
// thread reads the socket itself rather than be woken by the I/O thread. So do not hold a lock
// a callback takes while calling one of those; with
// ConnectOptions::io they run on the application's io_context instead (which may be run by
// several threads: each client's handlers run in a strand, one at a time). A callback may
// publish and subscribe, but calls that wait for the broker do not wait on the I/O thread:
// subscribe and unsubscribe return without the broker's answer there, flush, receive,
// request and wait_for_responder fail at once with kInvalidArgument. With ConnectOptions::io
// the same holds for any thread inside that context's run(); a call that waits from any other
// thread runs the context itself meanwhile (its handlers and the application's), so the
// application need not run it for the client's sake. The threads the library starts (named
// ubroker-io and ubroker-reconn) block every signal, so a signal sent to the process (Ctrl-C)
// reaches one of the application's threads and interrupts what that thread is blocked in.
//
// Reconnecting: when the broker goes away, restarts or cuts this client off as a slow
// consumer, the client dials again with exponential backoff and jitter (ReconnectOptions),
// then restores its subscriptions and services under the same ids. Requests in flight fail
// with kBrokerGone at once; publishes made while disconnected fail with kNotConnected, or
// wait in a bounded buffer (ConnectOptions::offline_buffer_bytes). Publishes the library had
// not fully written when the connection broke are sent again on the new one; a publish the
// broker had received but not yet routed when it died is lost (flush() confirms). A
// shared-memory loan made before the loss cannot be published after it.
//
// Flow control is lossless by default: when the broker holds this client back, publish()
// blocks once ConnectOptions::max_pending_bytes are waiting to be sent.
//
// Bulk payloads travel through shared memory: loan() a slot in this client's ring, write the
// payload in place, publish(std::move(loan)); or publish() a payload of at least
// ConnectOptions::shm_threshold bytes and the library copies it into a loan. Receivers read
// it in place; the space comes back when the last of them lets go.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ubroker/error.hpp"
#include "ubroker/export.h"
#include "ubroker/message.hpp"
#include "ubroker/unique_fd.hpp"

namespace asio {
class io_context;
}

namespace ubroker {

class Client;
namespace detail {
class ClientCore;
struct SubState;
struct Welcomed;
UBROKER_API void request_async_expected(Client& client, std::string_view topic, std::span<const std::byte> payload,
                                        std::chrono::milliseconds timeout, std::span<const HeaderField> headers,
                                        std::function<void(Expected<Message, Error>)> done);
}  // namespace detail
namespace shm {
class ProducerRing;
}  // namespace shm

inline constexpr std::chrono::milliseconds kForever = std::chrono::milliseconds::max();

// What ConnectOptions::on_connection reports.
enum class ConnectionEvent {
  kConnected,     // the first connection is up (once, after connect())
  kDisconnected,  // the connection was lost and the client is reconnecting; `reason` says why
  kReconnected,   // a new connection is up and subscriptions and services are sent again
  kClosed,        // no more connections: the reason is final, reconnecting is off, or it gave up
};

struct ConnectionChange {
  ConnectionEvent event;
  std::optional<Error> reason;  // kDisconnected, kClosed
  unsigned attempts = 0;        // kReconnected: dials it took; kClosed: dials made before giving up
};

struct ReconnectOptions {
  // Off: a lost connection closes the client (connected() false, calls fail kNotConnected).
  bool enabled = true;
  // The wait before dial n is a random duration in [d/2, d], d = min(max_delay,
  // initial_delay * 2^(n-1)): clients of a restarted broker do not all come back at once.
  std::chrono::milliseconds initial_delay{50};
  std::chrono::milliseconds max_delay{2000};
  unsigned max_attempts = 0;  // dials before giving up (kClosed); 0: until close()
};

// What happened to this client's traffic across connections (all counts since connect()).
struct ClientStats {
  std::uint64_t reconnects = 0;
  std::uint64_t publishes_buffered = 0;   // accepted while disconnected (offline buffer)
  std::uint64_t publishes_resent = 0;     // not fully written when a connection broke; sent on the next
  std::uint64_t publishes_discarded = 0;  // never sent: shared-memory publishes cut off by a
                                          // reconnect, and whatever was unsent when the client closed
};

struct ConnectOptions {
  // A socket path or "@name" (abstract). Empty: an inherited connected fd named by
  // $UBROKER_FD if set, else $UBROKER_SOCKET, $XDG_RUNTIME_DIR/ubroker.sock or
  // /run/ubroker/ubroker.sock.
  std::string address;
  std::string name;                          // shown in the broker's logs and in brokerctl
  std::chrono::milliseconds timeout{5000};   // connect and handshake
  // For services started together with the broker: while no broker listens at the address
  // yet (no socket file, or nobody accepting), connect() dials again until `timeout` instead
  // of failing at once with kConnectFailed. Reconnects always retry (ReconnectOptions).
  bool wait_for_broker = false;
  // Run I/O on this context instead of an own thread (see Threads above). It must come from
  // the standalone Asio the library was built with (Debian's libasio-dev, with ASIO_STANDALONE).
  asio::io_context* io = nullptr;
  std::size_t max_pending_bytes = 8u << 20;  // unsent bytes before publish() blocks
  std::size_t receive_queue = 4096;          // messages held for receive() before reading pauses
  // Shared memory: a plain publish of at least this many bytes goes through this client's
  // ring (created on first use, `shm_segment_bytes` of memfd; the largest payload is that
  // less 4160 bytes). A publish that waits for ring space waits at most `timeout`.
  std::size_t shm_threshold = 64 * 1024;
  std::size_t shm_segment_bytes = 32u << 20;
  // The uids this client accepts as its broker, checked with SO_PEERCRED before anything is
  // sent, so a process squatting on the socket path cannot pose as the broker. Empty: the
  // uids in $UBROKER_BROKER_UID (comma-separated) if set, else this process's uid and root.
  std::vector<std::uint32_t> trusted_broker_uids;  // uid_t values
  ReconnectOptions reconnect;
  // Publishes made while reconnecting wait here, up to this many bytes, and go out once the
  // connection is back (after the subscriptions are restored). Past the bound publish()
  // fails with kBufferFull. 0: publishes fail at once with kNotConnected.
  std::size_t offline_buffer_bytes = 0;
  // Connection changes (see ConnectionEvent). Runs where callbacks run (see Threads above).
  std::function<void(const ConnectionChange&)> on_connection;
  // Errors the broker reports about earlier calls that had no one waiting (e.g. a publish it
  // refused). Runs where callbacks run (see Threads above). When empty, such errors are written to stderr.
  std::function<void(const Error&)> on_error;
  // Busy polling: whichever thread runs the client's loop (its own I/O thread, or a thread
  // waiting in receive(), request() or another call that waits for the broker and reads for
  // itself) keeps checking for up to this long before it sleeps. What arrives meanwhile skips a wake-up (tens of microseconds on a virtual
  // machine); the price is a core busy for the window after each message. 0: sleep at once.
  std::chrono::microseconds busy_poll{0};
  // Writes go out from the client's loop (its I/O thread, or whoever drives it) instead of
  // inline on the calling thread: a burst of publishes from one thread leaves in a few large
  // writes rather than one system call each (as NATS clients buffer), for a hand-off of latency.
  // For a forwarder or a bulk producer; off by default, when the first idle caller writes at once.
  bool coalesce_writes = false;
  // No I/O thread at all: the application drives the client from its own loop, calling poll()
  // whenever fd() is readable, or waiting in a call that waits for the broker. Callbacks,
  // connection events and errors then run on the thread that drives. Ignored with io.
  bool manual_io = false;
};

struct PublishOptions {
  // Keep this message as the topic's last value: each later subscription to a matching
  // pattern receives it first (marked retained, with its headers). An empty retained publish
  // clears the topic.
  bool retain = false;
  // Metadata carried with the message to every receiver (see HeaderField).
  std::span<const HeaderField> headers;
};

struct RequestOptions {
  std::chrono::milliseconds timeout{5000};
  std::span<const HeaderField> headers;  // carried to the responder (see HeaderField)
};

// A request a responder received (from serve()). It owns its bytes and may be moved to
// another thread and answered later; reply() at most once.
class UBROKER_API Request {
 public:
  Request(Request&&) noexcept = default;
  Request& operator=(Request&&) noexcept = default;
  ~Request() = default;

  [[nodiscard]] std::string_view topic() const noexcept { return topic_; }
  [[nodiscard]] std::span<const std::byte> payload() const noexcept { return payload_; }
  [[nodiscard]] std::string_view text() const noexcept {
    return {reinterpret_cast<const char*>(payload_.data()), payload_.size()};
  }
  [[nodiscard]] const Sender& sender() const noexcept { return sender_; }  // the caller, stamped by the broker
  [[nodiscard]] Headers headers() const noexcept { return Headers(headers_); }  // the caller's metadata

  // The result may be ignored: a reply that cannot be sent fails the request on the caller's
  // side. `headers` go with the reply to the caller.
  Result<void> reply(std::span<const std::byte> payload, std::span<const HeaderField> headers = {});
  Result<void> reply(std::string_view text, std::span<const HeaderField> headers = {});
  // Answers with an error instead: the caller's request() fails with kServiceError, `message`
  // and `code` (Error::service_code; the meaning of codes is the service's own).
  Result<void> reply_error(std::string_view message, std::uint32_t code = 0);
  // For a gateway (a bridge that serves a topic by asking another system): nobody answered
  // there (kNoResponders) or not in time (kTimeout). The caller's request() fails with that
  // code, as if the broker had said it; any other code is kInvalidArgument.
  Result<void> reply_gateway_error(Errc code, std::string_view message);

 private:
  friend class detail::ClientCore;
  Request() = default;
  std::weak_ptr<detail::ClientCore> core_;
  std::uint64_t request_id_ = 0;
  std::string topic_;
  std::vector<std::byte> payload_;
  std::vector<std::byte> headers_;  // encoded, as received
  Sender sender_;
  bool replied_ = false;
};

// A slot in this client's shared-memory ring, reserved by Client::loan(). Write the payload
// into data(), then hand it to Client::publish(std::move(loan)); a Loan destroyed unpublished
// gives its space back. Move-only; may be filled and published on any thread.
class UBROKER_API Loan {
 public:
  Loan(Loan&& o) noexcept;
  Loan& operator=(Loan&& o) noexcept;
  Loan(const Loan&) = delete;
  Loan& operator=(const Loan&) = delete;
  ~Loan();

  [[nodiscard]] std::span<std::byte> data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return data_.size(); }
  [[nodiscard]] std::string_view topic() const noexcept { return topic_; }

 private:
  friend class detail::ClientCore;
  Loan() = default;
  std::shared_ptr<shm::ProducerRing> ring_;
  std::uint64_t segment_ = 0;
  std::uint64_t offset_ = 0;
  std::string topic_;
  std::span<std::byte> data_;
};

enum class Overflow {
  kBlock,  // lossless: the broker holds publishers back while this subscriber is full
  kDrop,   // the broker drops messages for this subscription while it is full, and counts them
};

struct SubscribeOptions {
  std::string group;  // queue group: each message goes to one member of the group
  Overflow overflow = Overflow::kBlock;
};

// A live subscription; unsubscribes when destroyed.
class UBROKER_API Subscription {
 public:
  Subscription() = default;
  Subscription(Subscription&&) noexcept;
  Subscription& operator=(Subscription&&) noexcept;
  ~Subscription();

  [[nodiscard]] std::uint64_t id() const noexcept;
  [[nodiscard]] bool active() const noexcept;
  // Messages the broker dropped for this subscription (DROP policy) as reported so far.
  [[nodiscard]] std::uint64_t dropped() const noexcept;
  // Ends the subscription; waits for the broker's acknowledgement and returns the exact total
  // of messages dropped for it. Once it returns, no callback of the subscription runs, also
  // when it fails (the connection lost, the timeout passed): a callback under way is waited
  // for, unless unsubscribe() is called from that callback, and later deliveries are dropped.
  [[nodiscard]] Result<std::uint64_t> unsubscribe(std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  friend class detail::ClientCore;
  Subscription(std::shared_ptr<detail::ClientCore> core, std::shared_ptr<detail::SubState> state);
  std::shared_ptr<detail::ClientCore> core_;
  std::shared_ptr<detail::SubState> state_;
};

class UBROKER_API Client {
 public:
  using Handler = std::function<void(const MessageView&)>;
  using RequestHandler = std::function<void(Request)>;
  using ReplyHandler = std::function<void(Result<Message>)>;

  // Connects and completes the handshake before returning.
  [[nodiscard]] static Result<Client> connect(ConnectOptions options = {});
  // Uses an already connected socket (e.g. inherited from a parent process). It reconnects
  // to options.address if one is given; without one, a lost connection closes the client.
  [[nodiscard]] static Result<Client> adopt(UniqueFd connected, ConnectOptions options = {});

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  Result<void> publish(std::string_view topic, std::span<const std::byte> payload, PublishOptions options = {});
  Result<void> publish(std::string_view topic, std::string_view text, PublishOptions options = {});
  // Reserves `size` bytes of shared memory for a message on `topic`, waiting up to `timeout`
  // for ring space (kTimeout). kInvalidArgument when `size` can never fit the ring.
  [[nodiscard]] Result<Loan> loan(std::string_view topic, std::size_t size,
                    std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Publishes a loan's payload in place: nothing is copied on the way to the receivers.
  Result<void> publish(Loan&& loan);

  // Sends a request to one responder of `topic` and waits for its reply (with the responder's
  // headers, if any). Errors: kNoResponders at once when nobody serves the topic,
  // kResponderGone at once when the responder disconnects, kTimeout at the deadline (the
  // broker enforces it), kServiceError when the responder answered with reply_error().
  [[nodiscard]] Result<Message> request(std::string_view topic, std::span<const std::byte> payload,
                          std::chrono::milliseconds timeout = std::chrono::seconds(5));
  [[nodiscard]] Result<Message> request(std::string_view topic, std::string_view text,
                          std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // The same with headers.
  [[nodiscard]] Result<Message> request(std::string_view topic, std::span<const std::byte> payload,
                                        const RequestOptions& options);
  [[nodiscard]] Result<Message> request(std::string_view topic, std::string_view text, const RequestOptions& options);
  // The same without waiting: `done` runs once, on the I/O thread (or, if the connection
  // fails, on the thread that notices).
  void request_async(std::string_view topic, std::span<const std::byte> payload, std::chrono::milliseconds timeout,
                     ReplyHandler done) {
    RequestOptions options;
    options.timeout = timeout;
    request_async(topic, payload, options, std::move(done));
  }
  void request_async(std::string_view topic, std::span<const std::byte> payload, const RequestOptions& options,
                     ReplyHandler done)
#if UBROKER_RESULT_IS_STD_EXPECTED
      ;
#else
  // A C++20 program's ReplyHandler takes detail::Expected: the library's entry point for it.
  {
    detail::request_async_expected(*this, topic, payload, options.timeout, options.headers, std::move(done));
  }
#endif
  // Answers requests on topics matching `pattern`; responders of the same topics share the
  // requests, each request going to one of them. `handler` runs on the I/O thread.
  [[nodiscard]] Result<Subscription> serve(std::string_view pattern, RequestHandler handler);
  // Returns once some client serves `topic`, or kTimeout.
  [[nodiscard]] Result<void> wait_for_responder(std::string_view topic, std::chrono::milliseconds timeout);

  // Messages go to `handler` on the I/O thread.
  [[nodiscard]] Result<Subscription> subscribe(std::string_view pattern, Handler handler, SubscribeOptions options = {});
  // Messages wait for receive().
  [[nodiscard]] Result<Subscription> subscribe(std::string_view pattern, SubscribeOptions options = {});
  // The next message of a subscription made without a handler.
  [[nodiscard]] Result<Message> receive(std::chrono::milliseconds timeout = kForever);

  // Returns once the broker has processed everything this client sent before the call.
  [[nodiscard]] Result<void> flush(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Reports what operators should see about this client (key/value pairs with the rules of
  // headers, e.g. a bridge's counters), replacing what it reported before; `brokerctl clients`
  // shows it. At most 4 KiB encoded (else kInvalidArgument); sent again after a reconnect, and
  // kept for the next connection while disconnected. Empty: clears it.
  Result<void> set_status(std::span<const HeaderField> fields);

  // Drives a client without an I/O thread (ConnectOptions::manual_io or ::io) on the calling
  // thread: waits up to `timeout` for work, then runs what is ready (reads, callbacks,
  // answers, writes) and returns how many handlers ran (0: the timeout passed). With its own
  // I/O thread a client needs no driving: kInvalidArgument.
  [[nodiscard]] Result<std::size_t> poll(std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  // For the application's poll/epoll: readable when poll() has work to do. With manual_io an
  // fd that stays the same for the client's life (across reconnects: it also wakes for a
  // reconnect, and for a write that met a full socket); else the connection's socket while
  // connected (-1 otherwise). Watch it for POLLIN, level-triggered.
  [[nodiscard]] int fd() const noexcept;

  // Closes the connection (and stops reconnecting); pending calls fail with kNotConnected.
  // Publishes not yet written are discarded (and counted): flush() first to be sure. Idempotent.
  void close();

  [[nodiscard]] std::uint64_t id() const noexcept;  // the client id the broker assigned (new on reconnect)
  [[nodiscard]] bool connected() const noexcept;    // false while reconnecting and once closed
  // Why the last connection ended (an error from the broker, EOF, ...), once one has.
  [[nodiscard]] std::optional<Error> disconnect_reason() const;
  [[nodiscard]] ClientStats stats() const noexcept;

 private:
  explicit Client(std::shared_ptr<detail::ClientCore> core);
  static Client start(UniqueFd fd, detail::Welcomed welcomed, ConnectOptions options);
  std::shared_ptr<detail::ClientCore> core_;
};

}  // namespace ubroker
