// Topic and subscription-pattern syntax, shared by client and broker so both reject the same
// strings with the same words. A topic is 1..kMaxTopicBytes bytes of dot-separated, non-empty
// tokens of printable ASCII without spaces, '*' or '>'. A pattern may also use '*' as a whole
// token (exactly one token) and '>' as the whole last token (one or more remaining tokens).
// Topics starting with "$sys." are the broker's. Stateless; callable from any thread.
#pragma once

#include <cstddef>
#include <string_view>

namespace ubroker::proto {

inline constexpr std::size_t kMaxTopicBytes = 1024;
inline constexpr std::string_view kReservedPrefix = "$sys.";

// nullptr when valid, else a static human-readable reason.
[[nodiscard]] const char* check_topic(std::string_view topic) noexcept;
[[nodiscard]] const char* check_pattern(std::string_view pattern) noexcept;

[[nodiscard]] inline bool is_reserved(std::string_view topic) noexcept {
  return topic.starts_with(kReservedPrefix);
}
[[nodiscard]] bool is_wildcard(std::string_view pattern) noexcept;

// Whether a valid pattern matches a valid topic.
[[nodiscard]] bool pattern_matches(std::string_view pattern, std::string_view topic) noexcept;

// Whether every topic the valid pattern `inner` matches is also matched by the valid pattern
// `outer` (the access policy's test for a subscription or service pattern).
[[nodiscard]] bool pattern_covers(std::string_view outer, std::string_view inner) noexcept;

}  // namespace ubroker::proto
