// Text a client chose (topics it was refused on, names, its process name) on its way into the
// broker's log and into admin answers. A log line must stay one line that says what happened:
// a newline in a topic would forge the next line, an escape sequence would reach the
// operator's terminal, and bytes that are not UTF-8 break JSON.
// Pure functions; any thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace ubroker::broker {

// `text` with every byte outside printable ASCII, and the backslash, written as \xNN (so the
// line says exactly which bytes were sent), cut at `max` bytes of input with "..." after.
[[nodiscard]] std::string escape_for_log(std::string_view text, std::size_t max = 1024);

// `text` cut at `max` bytes with every byte outside printable ASCII replaced by '?': for
// names shown in tables (client names, process names), where a stable width matters more
// than the exact bytes.
[[nodiscard]] std::string printable(std::string_view text, std::size_t max);

}  // namespace ubroker::broker
