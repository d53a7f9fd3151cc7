// A transparent hash for maps keyed by std::string, so lookups take a string_view without
// building a string (no allocation per lookup on hot paths).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace ubroker::proto {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

}  // namespace ubroker::proto
