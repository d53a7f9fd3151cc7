// JSON for brokerctl's --json: any protobuf message, written through reflection, with every
// number as a JSON number (64-bit counters included: jq and monitoring systems compare and
// add them), enums by name, maps as objects, bytes as base64, and strings escaped so the
// output is valid UTF-8 JSON whatever a client put in them. Field names are the proto's.
// Pure functions; any thread.
#pragma once

#include <string>

#include <google/protobuf/message.h>

#include "ubroker/message.hpp"

namespace ubroker::ctl {

// One JSON document; `pretty`: indented over several lines, else one line.
[[nodiscard]] std::string to_json(const google::protobuf::Message& message, bool pretty);

// `text` as a JSON string literal (quotes included); bytes that are not valid UTF-8 become
// U+FFFD.
[[nodiscard]] std::string json_string(std::string_view text);

// Whether `bytes` are valid UTF-8 (then a JSON string carries them exactly).
[[nodiscard]] bool valid_utf8(std::string_view bytes);
// `bytes` in base64 (RFC 4648, with padding).
[[nodiscard]] std::string base64(std::string_view bytes);

// A message's payload as a JSON member: "payload":"text" when it is valid UTF-8, else
// "payload_base64":"...".
[[nodiscard]] std::string json_payload(std::span<const std::byte> payload);
// Headers as a JSON object: each key once, its values in a list, in the order sent.
[[nodiscard]] std::string json_headers(const ubroker::Headers& headers);

}  // namespace ubroker::ctl
