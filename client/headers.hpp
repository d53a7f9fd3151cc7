// Message headers between the public API (HeaderField, Headers) and the wire
// (proto/headers.hpp): checked and encoded on the way out, checked on the way in.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ubroker.pb.h"
#include "ubroker/error.hpp"
#include "ubroker/message.hpp"

namespace ubroker::detail {

// Encodes `fields` into `out` (replacing it); kInvalidHeaders names the first rule broken.
Result<void> encode_headers(std::span<const HeaderField> fields, std::vector<std::byte>& out);

// The headers of a frame parsed with protobuf, encoded into `out` (empty when it has none);
// false when they break the rules.
[[nodiscard]] bool take_headers(const wire::Header& h, std::vector<std::byte>& out);

// `text` as valid UTF-8 (what a protobuf string must hold): each byte that is not part of a
// valid sequence becomes '?'.
[[nodiscard]] std::string utf8_or_replaced(std::string_view text);

}  // namespace ubroker::detail
