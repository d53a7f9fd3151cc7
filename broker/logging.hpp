// brokerd's log: lines on stderr. On a terminal or a file each line has a timestamp and a
// level; when stderr is the journal, each line starts with its syslog priority ("<4>") and
// carries no timestamp (the journal keeps its own), so journalctl -p filters by level.
#pragma once

#include <string>

namespace ubroker::broker {

void setup_logging(const std::string& level);

}  // namespace ubroker::broker
