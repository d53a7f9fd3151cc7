// The access policy: who may publish, subscribe, request, serve and administer what.
//
// Identity is the kernel's (SO_PEERCRED and SO_PEERGROUPS, read once at accept), never
// anything a client says. The broker's own uid and root may do everything; anyone else may
// do only what a rule grants. A rule names identities (uids, gids, with user and group names
// resolved when the policy is loaded, or everyone) and, per right, topic patterns. A grant
// never extends to the broker's "$sys." topics unless its own pattern starts with "$sys.".
// `admin` patterns name the admin services without their "$sys.admin." prefix; `join`
// patterns name queue groups.
//
// Grants are computed once per connection (at accept, and again on reload), so a check is a
// pattern match against the few patterns that apply to that connection. Event loop thread.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ubroker::broker {

// kJoin: the queue groups a subscription may join, by name (a subscription with a group
// needs `subscribe` on its pattern and `join` on its group's name).
enum class Right : std::uint8_t { kPublish, kSubscribe, kRequest, kServe, kAdmin, kJoin };
inline constexpr std::size_t kRightCount = 6;
inline constexpr std::array<std::string_view, kRightCount> kRightNames = {"publish", "subscribe", "request", "serve",
                                                                          "admin",   "join"};
[[nodiscard]] constexpr std::string_view to_string(Right r) noexcept { return kRightNames[static_cast<int>(r)]; }

struct PolicyRule {
  int line = 0;  // in the config file, so messages can point at the rule
  bool everyone = false;
  std::vector<uid_t> uids;  // `uids` and `users`, resolved
  std::vector<gid_t> gids;  // `gids` and `groups`, resolved
  std::array<std::vector<std::string>, kRightCount> patterns;
};

struct Policy {
  bool open = false;  // everyone may do everything (single-user development)
  std::vector<PolicyRule> rules;
};

struct PeerIdentity {
  uid_t uid = 0;
  gid_t gid = 0;
  std::span<const gid_t> groups;  // supplementary
};

// What one connection may do. Holds the policy it was computed from, so a reload that
// replaces the policy cannot leave it dangling.
class Grants {
 public:
  Grants() = default;
  Grants(std::shared_ptr<const Policy> policy, const PeerIdentity& who, uid_t broker_uid);

  // Everything is allowed (open policy, root or the broker's own uid): checks are skipped.
  [[nodiscard]] bool all() const noexcept { return all_; }
  // Some right on some topic: a connection with none is refused at the handshake.
  [[nodiscard]] bool any() const noexcept { return all_ || !grants_.empty(); }
  [[nodiscard]] bool any(Right r) const noexcept;

  // A topic used for `r` (publish, request, admin service name).
  [[nodiscard]] bool allows_topic(Right r, std::string_view topic) const noexcept;
  // Every topic a subscription or service pattern matches.
  [[nodiscard]] bool allows_pattern(Right r, std::string_view pattern) const noexcept;

 private:
  std::shared_ptr<const Policy> policy_;
  bool all_ = false;
  // (right, pattern in *policy_): one short list, empty when all_, so a connection that may do
  // everything pays for one empty vector.
  std::vector<std::pair<Right, const std::string*>> grants_;
};

// The sentence sent back with PERMISSION_DENIED: what was refused and why.
[[nodiscard]] std::string denial(Right r, std::string_view what, bool pattern, const PeerIdentity& who);

}  // namespace ubroker::broker
