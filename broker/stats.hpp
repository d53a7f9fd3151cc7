// Broker-wide counters. Plain integers: only the event loop thread touches them.
#pragma once

#include <array>
#include <cstdint>

namespace ubroker::broker {

struct Stats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_refused = 0;  // over max_connections or failed at accept
  std::uint64_t accepts_failed = 0;       // accept(2) out of fds or memory (retried)
  std::uint64_t messages_in = 0;          // PUBLISH frames accepted
  std::uint64_t bytes_in = 0;             // their payload bytes
  std::uint64_t system_messages = 0;      // the broker's own ($sys. presence events)
  std::uint64_t deliveries = 0;           // DELIVER frames the router queued to subscribers
  std::uint64_t delivered_bytes = 0;      // their payload bytes
  // Accounting: every delivery accepted (a message matched a client's subscriptions, or a
  // retained value replayed) is written, dropped with a reason, or still queued:
  //   deliveries_accepted = deliveries_written + dropped_overflow + bulk_dropped_fds
  //                         + bulk_dropped_holds + dropped_disconnect + (deliveries in outbound queues)
  std::uint64_t deliveries_accepted = 0;
  std::uint64_t deliveries_written = 0;   // whole DELIVER frames written to a client's socket
  std::uint64_t dropped_overflow = 0;     // DROP subscriptions whose queue was full
  std::uint64_t dropped_disconnect = 0;   // queued deliveries discarded with their client (or cut off as slow)
  std::uint64_t no_subscriber = 0;        // published with nobody matching
  std::uint64_t publisher_blocks = 0;     // times a publisher was held back by a full subscriber
  std::uint64_t slow_consumer_disconnects = 0;
  std::uint64_t lanes_opened = 0;
  std::uint64_t lanes_refused = 0;  // a pair the limits kept on the broker's path
  std::uint64_t protocol_errors = 0;
  std::uint64_t payload_copies = 0;  // deliveries whose payload was copied (small, inline)
  std::uint64_t requests = 0;        // REQUESTs routed to a responder
  std::uint64_t no_responders = 0;
  std::uint64_t responder_gone = 0;
  std::uint64_t request_timeouts = 0;
  std::uint64_t replies_refused = 0;  // REPLYs to unknown, finished or someone else's requests
  std::uint64_t replies_discarded = 0;  // REPLYs to requests whose caller had left
  std::uint64_t error_replies = 0;      // REPLYs that were errors (SERVICE_ERROR)
  std::uint64_t payload_bytes_copied = 0;  // delivery payload bytes copied into outbound queues
  std::uint64_t bulk_messages = 0;         // PUBLISHes of shared-memory payloads
  std::uint64_t bulk_bytes = 0;            // their payload bytes (referenced in place, never copied)
  std::uint64_t bulk_deliveries = 0;
  std::uint64_t shm_refused = 0;           // segments and references refused
  std::uint64_t bulk_dropped_fds = 0;      // bulk deliveries dropped: the receiver's uid is at its
                                           // fds-in-flight limit, or the broker is out of fds
  std::uint64_t bulk_dropped_holds = 0;    // bulk deliveries dropped: the receiver or its uid holds
                                           // as many unreleased ones as it may
  std::array<std::uint64_t, 64> errors_sent{};  // Error frames (and refused connections) by ErrorCode
};

}  // namespace ubroker::broker
