// `brokerctl metrics`: the broker's status in the Prometheus text exposition format (version
// 0.0.4), for node_exporter's textfile collector or any scraper. Every number of
// BrokerStatus becomes a metric named ubroker_<field>: running totals are counters (suffix
// _total), levels are gauges; errors by code and memory by uid carry labels. Written through
// reflection, so a counter added to BrokerStatus appears here without a change.
// Pure function; any thread.
#pragma once

#include <string>

#include "ubroker.pb.h"

namespace ubroker::ctl {

[[nodiscard]] std::string prometheus_text(const wire::BrokerStatus& status);

}  // namespace ubroker::ctl
