// The bridge: a client of the local broker and of a NATS cluster, carrying messages and
// requests across as the configuration says.
//
// Exactly once, no loops:
//   - a message crosses once: where several configured patterns match one topic, only the
//     first one's subscription carries it;
//   - what the bridge imported is never exported again: the local broker stamps the bridge as
//     its sender, and the export side skips messages whose sender is this bridge's connection;
//   - a bridge never re-imports what it exported: its NATS connection does not receive its own
//     messages (no echo), and anything carrying its own name as Bridge-Origin is skipped;
//   - a request that already crossed a bridge (Bridge-Hop) is never forwarded to NATS again.
// Identity: exported messages carry Bridge-Origin (the host), Bridge-Sender ("UID/PID/CLIENT":
// the local sender, as the broker stamped it) and Bridge-Seq ("EPOCH:N", sequence_tracker.hpp);
// a local publisher's own Bridge-* headers are replaced, never passed on. Imported messages
// carry the same headers locally, plus Bridge-Hop (the importing bridge), while the broker
// stamps the bridge's own identity as the sender: trust Bridge-* headers from that sender only.
#pragma once

#include <nats/nats.h>

#include <atomic>
#include <condition_variable>
#include <expected>
#include <mutex>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config.hpp"
#include "counters.hpp"
#include "nats_handles.hpp"
#include "request_pool.hpp"
#include "sequence_tracker.hpp"
#include "ubroker/client.hpp"

namespace ubroker::bridge {

class Bridge {
 public:
  explicit Bridge(Config config);
  ~Bridge();
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  // Connects to NATS (retrying in the background if no server answers yet) and subscribes on
  // both sides; `local` is a connected client of the local broker.
  std::expected<void, std::string> start(Client local);
  // Stops carrying: unsubscribes, flushes what NATS still buffers (up to a second), closes both.
  void stop();
  // Folds in what the NATS client dropped for slow subscriptions, and reports the counters as
  // this client's status to the local broker (brokerctl clients shows them). Call periodically.
  void tick();

  // The NATS connection closed for good (not stopping): nothing will carry any more.
  [[nodiscard]] bool nats_closed_for_good() {
    std::lock_guard lk(closed_mu_);
    return nats_closed_;
  }
  [[nodiscard]] const Counters& counters() const noexcept { return counters_; }
  [[nodiscard]] const Config& config() const noexcept { return config_; }

 private:
  // What a NATS subscription's callback needs to know about itself.
  struct NatsSub {
    Bridge* bridge;
    std::size_t index;  // in the config's list
    bool service;       // export_services (else import)
    NatsSubscription handle;
    std::int64_t dropped_seen = 0;
  };

  std::expected<void, std::string> connect_nats();
  std::expected<void, std::string> subscribe_nats(const std::string& pattern, std::size_t index, bool service);
  void export_message(std::size_t index, const MessageView& m);
  void import_message(std::size_t index, natsMsg* msg);
  void poll_nats_drops();  // folds in what the NATS client dropped for slow subscriptions
  void forward_request_to_nats(Request r);
  void serve_request_from_nats(natsMsg* msg);
  // Answers a NATS request with an error (Bridge-Error and the NATS micro headers).
  void answer_nats_error(const char* reply_to, const Error& e);
  [[nodiscard]] std::string subject_of(std::string_view topic) const { return config_.bridge.prefix + std::string(topic); }

  static void on_nats_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure);
  static void on_nats_connected(natsConnection* nc, void* closure);
  static void on_nats_disconnected(natsConnection* nc, void* closure);
  static void on_nats_reconnected(natsConnection* nc, void* closure);
  static void on_nats_closed(natsConnection* nc, void* closure);
  static void on_nats_error(natsConnection* nc, natsSubscription* sub, natsStatus s, void* closure);

  Config config_;
  Counters counters_;
  SequenceNumbers numbers_;
  GapCounter gaps_;
  std::atomic<bool> stopping_{false};
  std::optional<Client> local_;
  std::vector<Subscription> local_subs_;  // exports, import_services, the metrics service
  NatsOptions nats_options_;
  NatsConnection nats_;
  std::vector<std::unique_ptr<NatsSub>> nats_subs_;  // stable addresses: the callbacks' closures
  std::optional<RequestPool> pool_;
  std::atomic<std::uint64_t> held_while_down_{0};  // exported into the NATS client's buffer since the last loss
  std::mutex closed_mu_;
  std::condition_variable closed_cv_;
  bool nats_closed_ = false;  // the NATS connection's closed callback ran (guarded by closed_mu_)

  std::vector<std::string> last_status_;  // what tick() reported last
};

}  // namespace ubroker::bridge
