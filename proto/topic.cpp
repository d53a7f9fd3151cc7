// Topic syntax checks and the reference wildcard matcher (the broker's index must agree with it).
#include "ubroker/proto/topic.hpp"

namespace ubroker::proto {
namespace {

// Splits off the next token; returns false when no token is left.
bool next_token(std::string_view& rest, std::string_view& token) noexcept {
  if (rest.data() == nullptr) return false;
  const auto dot = rest.find('.');
  if (dot == std::string_view::npos) {
    token = rest;
    rest = std::string_view{};
  } else {
    token = rest.substr(0, dot);
    rest = rest.substr(dot + 1);
  }
  return true;
}

const char* check_tokens(std::string_view s, bool allow_wildcards) noexcept {
  if (s.empty()) return "topic is empty";
  if (s.size() > kMaxTopicBytes) return "topic longer than 1024 bytes";
  std::string_view rest = s, token;
  while (next_token(rest, token)) {
    if (token.empty()) return "topic has an empty token (leading, trailing or double '.')";
    if (token == "*" || token == ">") {
      if (!allow_wildcards) return "wildcards '*' and '>' are allowed only in subscription patterns";
      if (token == ">" && rest.data() != nullptr) return "'>' must be the last token";
      continue;
    }
    for (const char c : token) {
      const auto u = static_cast<unsigned char>(c);
      if (u <= 0x20 || u >= 0x7f) return "topic has a space, control or non-ASCII character";
      if (c == '*' || c == '>') return "'*' and '>' must stand alone as a whole token";
    }
  }
  return nullptr;
}

}  // namespace

const char* check_topic(std::string_view topic) noexcept {
  return check_tokens(topic, false);
}
const char* check_pattern(std::string_view pattern) noexcept {
  return check_tokens(pattern, true);
}

bool is_wildcard(std::string_view pattern) noexcept {
  std::string_view rest = pattern, token;
  while (next_token(rest, token)) {
    if (token == "*" || token == ">") return true;
  }
  return false;
}

bool pattern_matches(std::string_view pattern, std::string_view topic) noexcept {
  std::string_view prest = pattern, trest = topic, ptok, ttok;
  for (;;) {
    const bool have_p = next_token(prest, ptok);
    const bool have_t = next_token(trest, ttok);
    if (!have_p) return !have_t;
    if (ptok == ">") return have_t;
    if (!have_t) return false;
    if (ptok != "*" && ptok != ttok) return false;
  }
}

bool pattern_covers(std::string_view outer, std::string_view inner) noexcept {
  std::string_view orest = outer, irest = inner, otok, itok;
  for (;;) {
    const bool have_o = next_token(orest, otok);
    const bool have_i = next_token(irest, itok);
    if (!have_o) return !have_i;
    if (otok == ">") return have_i;  // '>' takes one or more tokens, whatever `inner` has there
    if (!have_i) return false;
    if (itok == ">") return false;  // `inner` matches topics of any length from here; `outer` does not
    if (otok == "*") continue;      // covers a literal or a '*'
    if (itok == "*" || otok != itok) return false;
  }
}

}  // namespace ubroker::proto
