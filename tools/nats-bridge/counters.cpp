#include "counters.hpp"

#include <fmt/format.h>

namespace ubroker::bridge {

std::string to_prometheus(const Counters& c, const std::string& name) {
  struct Series {
    const char* metric;
    const char* help;
    const std::atomic<std::uint64_t>& value;
  };
  const Series series[] = {
      {"exported", "messages handed to NATS", c.exported},
      {"export_buffered", "exported while no NATS server was reachable (held in the buffer)", c.export_buffered},
      {"export_dropped_buffer_full", "not exported: NATS unreachable and the buffer full", c.export_dropped_buffer_full},
      {"export_refused_too_large", "not exported: above the NATS max_payload", c.export_refused_too_large},
      {"export_failed", "not exported: refused by the NATS client", c.export_failed},
      {"export_dropped_local", "dropped by the local broker before the bridge got them", c.export_dropped_local},
      {"export_dropped_stopping", "still buffered for an unreachable NATS when the bridge stopped", c.export_dropped_stopping},
      {"imported", "messages published locally from NATS", c.imported},
      {"import_lost", "messages an exporting bridge sent that never arrived (sequence gaps; includes import_dropped_slow)", c.import_lost},
      {"import_skipped_own", "not imported: they carried this bridge's own name as their origin", c.import_skipped_own},
      {"import_failed", "not imported: the local broker refused them", c.import_failed},
      {"import_dropped_slow", "not imported: the NATS client dropped them (the bridge fell behind)", c.import_dropped_slow},
      {"import_headers_dropped", "header fields left out on import (not valid in ubroker)", c.import_headers_dropped},
      {"requests_to_nats", "local requests forwarded to NATS", c.requests_to_nats},
      {"requests_to_nats_failed", "forwarded requests with no responder, a timeout or NATS down", c.requests_to_nats_failed},
      {"requests_to_nats_busy", "local requests refused: max_requests_in_flight reached", c.requests_to_nats_busy},
      {"requests_from_nats", "NATS requests answered by local responders", c.requests_from_nats},
      {"requests_from_nats_failed", "NATS requests answered with an error", c.requests_from_nats_failed},
      {"nats_disconnects", "NATS connections lost", c.nats_disconnects},
      {"nats_reconnects", "NATS reconnections", c.nats_reconnects},
  };
  std::string out;
  for (const Series& s : series) {
    out += fmt::format("# HELP ubroker_bridge_{}_total {}\n# TYPE ubroker_bridge_{}_total counter\n", s.metric, s.help, s.metric);
    out += fmt::format("ubroker_bridge_{}_total{{bridge=\"{}\"}} {}\n", s.metric, name, s.value.load());
  }
  out += "# HELP ubroker_bridge_nats_connected 1 while connected to a NATS server\n# TYPE ubroker_bridge_nats_connected gauge\n";
  out += fmt::format("ubroker_bridge_nats_connected{{bridge=\"{}\"}} {}\n", name, c.nats_connected.load() ? 1 : 0);
  return out;
}

}  // namespace ubroker::bridge
