// Grants: which rules apply to an identity, and the pattern tests behind every check.
#include "policy.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "ubroker/proto/topic.hpp"

namespace ubroker::broker {
namespace {

bool in(const auto& list, auto value) { return std::find(list.begin(), list.end(), value) != list.end(); }

bool rule_applies(const PolicyRule& rule, const PeerIdentity& who) {
  if (rule.everyone || in(rule.uids, who.uid) || in(rule.gids, who.gid)) return true;
  return std::any_of(who.groups.begin(), who.groups.end(), [&](gid_t g) { return in(rule.gids, g); });
}

// Whether some topic a pattern matches may be one of the broker's: its first token is
// "$sys" or a wildcard.
bool may_match_reserved(std::string_view pattern) {
  const std::string_view first = pattern.substr(0, pattern.find('.'));
  return first == "$sys" || first == "*" || first == ">";
}

}  // namespace

Grants::Grants(std::shared_ptr<const Policy> policy, const PeerIdentity& who, uid_t broker_uid)
    : policy_(std::move(policy)) {
  all_ = policy_->open || who.uid == 0 || who.uid == broker_uid;
  if (all_) return;
  for (const PolicyRule& rule : policy_->rules) {
    if (!rule_applies(rule, who)) continue;
    for (std::size_t r = 0; r < kRightCount; ++r) {
      for (const std::string& p : rule.patterns[r]) grants_.emplace_back(static_cast<Right>(r), &p);
    }
  }
}

bool Grants::any(Right r) const noexcept {
  return all_ || std::any_of(grants_.begin(), grants_.end(), [r](const auto& g) { return g.first == r; });
}

bool Grants::allows_topic(Right r, std::string_view topic) const noexcept {
  if (all_) return true;
  const bool reserved = r != Right::kAdmin && proto::is_reserved(topic);
  for (const auto& [right, grant] : grants_) {
    if (right != r || (reserved && !proto::is_reserved(*grant))) continue;
    if (proto::pattern_matches(*grant, topic)) return true;
  }
  return false;
}

bool Grants::allows_pattern(Right r, std::string_view pattern) const noexcept {
  if (all_) return true;
  const bool reserved = may_match_reserved(pattern);
  for (const auto& [right, grant] : grants_) {
    if (right != r || (reserved && !proto::is_reserved(*grant))) continue;
    if (proto::pattern_covers(*grant, pattern)) return true;
  }
  return false;
}

std::string denial(Right r, std::string_view what, bool pattern, const PeerIdentity& who) {
  std::string groups;
  for (gid_t g : who.groups) groups += fmt::format("{}{}", groups.empty() ? "" : ",", g);
  const std::string identity =
      fmt::format("uid {} (gid {}{}{})", who.uid, who.gid, groups.empty() ? "" : ", groups ", groups);
  if (pattern && may_match_reserved(what)) {
    return fmt::format(
        "{} '{}' denied to {}: no policy rule grants it (a pattern that can match the broker's $sys. topics "
        "needs a grant that starts with $sys.)",
        to_string(r), what, identity);
  }
  return fmt::format("{} {}'{}' denied to {}: no policy rule grants it", to_string(r),
                     r == Right::kAdmin  ? "service "
                     : r == Right::kJoin ? "queue group "
                                         : "",
                     what, identity);
}

}  // namespace ubroker::broker
