// What the bridge counts: every message either crosses or is counted where it stopped, with a
// reason. Read as Prometheus text (the bridge's metrics service) and in its status line.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace ubroker::bridge {

struct Counters {
  // Local -> NATS.
  std::atomic<std::uint64_t> exported{0};               // handed to the NATS client for sending
  std::atomic<std::uint64_t> export_buffered{0};        // of those, accepted while no server was reachable
  std::atomic<std::uint64_t> export_dropped_buffer_full{0};  // NATS unreachable and its buffer full
  std::atomic<std::uint64_t> export_refused_too_large{0};    // above the server's max_payload
  std::atomic<std::uint64_t> export_failed{0};          // refused by the NATS client for another reason
  std::atomic<std::uint64_t> export_dropped_local{0};   // the local broker dropped them for the bridge (reported by DROP)
  std::atomic<std::uint64_t> export_dropped_stopping{0};  // still buffered for an unreachable NATS when the bridge stopped
  // NATS -> local.
  std::atomic<std::uint64_t> imported{0};               // published to the local broker
  std::atomic<std::uint64_t> import_lost{0};            // gaps in an exporting bridge's sequence: lost between the bridges
                                                        // (also what the NATS client dropped, counted in import_dropped_slow)
  std::atomic<std::uint64_t> import_skipped_own{0};     // carried this bridge's own name: its export come back, or a forgery
  std::atomic<std::uint64_t> import_failed{0};          // the local broker refused them (policy, limits, disconnected)
  std::atomic<std::uint64_t> import_dropped_slow{0};    // the NATS client dropped them: the bridge fell behind
  std::atomic<std::uint64_t> import_headers_dropped{0}; // header fields ubroker cannot carry (left out, message kept)
  // Requests.
  std::atomic<std::uint64_t> requests_to_nats{0};       // local requests forwarded to NATS
  std::atomic<std::uint64_t> requests_to_nats_failed{0};  // of those, no responder, timeout or NATS down
  std::atomic<std::uint64_t> requests_to_nats_busy{0};  // refused: max_requests_in_flight reached
  std::atomic<std::uint64_t> requests_from_nats{0};     // NATS requests answered by local responders
  std::atomic<std::uint64_t> requests_from_nats_failed{0};  // of those, answered with an error
  // The NATS connection.
  std::atomic<std::uint64_t> nats_disconnects{0};
  std::atomic<std::uint64_t> nats_reconnects{0};
  std::atomic<bool> nats_connected{false};
};

// Prometheus text exposition, each series labelled with the bridge's name.
std::string to_prometheus(const Counters& c, const std::string& bridge_name);

}  // namespace ubroker::bridge
