// TOML config loading with toml++. Keys are checked against a fixed schema so a typo is an
// error naming the key and line rather than a silently ignored setting.
#include "config.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <grp.h>
#include <unistd.h>
#include <pwd.h>
#include <toml++/toml.h>

#include <limits>
#include <variant>
#include <vector>

#include "ubroker/proto/topic.hpp"

namespace ubroker::broker {
namespace {

using Error = std::unexpected<std::string>;

std::string where(const toml::node& node) {
  const auto& src = node.source();
  return fmt::format("line {}", src.begin.line);
}

template <class Int>
std::expected<Int, std::string> get_int(const toml::node& node, std::string_view key, std::int64_t min,
                                        std::int64_t max) {
  const auto v = node.value<std::int64_t>();
  if (!node.is_integer() || !v) return Error(fmt::format("{}: '{}' must be an integer", where(node), key));
  if (*v < min || *v > max) {
    return Error(fmt::format("{}: '{}' = {} is out of range [{}, {}]", where(node), key, *v, min, max));
  }
  return static_cast<Int>(*v);
}

std::expected<std::string, std::string> get_string(const toml::node& node, std::string_view key) {
  if (!node.is_string()) return Error(fmt::format("{}: '{}' must be a string", where(node), key));
  return *node.value<std::string>();
}

// One [limits] key: where it goes and its range.
struct LimitKey {
  std::string_view name;
  std::variant<std::uint32_t Limits::*, std::uint64_t Limits::*, std::chrono::milliseconds Limits::*> field;
  std::int64_t min;
  std::int64_t max;
};

constexpr std::int64_t kU32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::int64_t kTiB = std::int64_t{1} << 40;
constexpr LimitKey kLimitKeys[] = {
    {"max_frame_bytes", &Limits::max_frame_bytes, 1024, 256ll << 20},
    {"max_subscriptions", &Limits::max_subscriptions, 1, kU32},
    {"subscription_max_bytes_per_uid", &Limits::subscription_max_bytes_per_uid, 4096, 16 * kTiB},
    {"queue_max_messages", &Limits::queue_max_messages, 1, kU32},
    {"queue_max_bytes", &Limits::queue_max_bytes, 4096, kTiB},
    {"queue_max_bytes_per_uid", &Limits::queue_max_bytes_per_uid, 4096, 16 * kTiB},
    {"input_max_bytes_per_uid", &Limits::input_max_bytes_per_uid, 65536, 16 * kTiB},
    {"max_pending_requests", &Limits::max_pending_requests, 1, kU32},
    {"max_pending_requests_per_uid", &Limits::max_pending_requests_per_uid, 1, kU32},
    {"request_timeout_max_ms", &Limits::request_timeout_max, 1, 24ll * 3600 * 1000},
    {"retained_max_bytes", &Limits::retained_max_bytes, 0, kTiB},
    {"retained_max_bytes_per_uid", &Limits::retained_max_bytes_per_uid, 0, kTiB},
    {"max_connections", &Limits::max_connections, 1, 1 << 20},
    {"max_connections_per_uid", &Limits::max_connections_per_uid, 1, 1 << 20},
    {"shm_max_segment_bytes", &Limits::shm_max_segment_bytes, 0, kTiB},
    {"shm_max_bytes_per_uid", &Limits::shm_max_bytes_per_uid, 0, 16 * kTiB},
    {"shm_max_segments_per_uid", &Limits::shm_max_segments_per_uid, 0, kU32},
    {"shm_max_segments_per_client", &Limits::shm_max_segments_per_client, 0, 1024},
    {"shm_max_fds_in_flight_per_uid", &Limits::shm_max_fds_in_flight_per_uid, 1, kU32},
    {"shm_max_holds_per_client", &Limits::shm_max_holds_per_client, 1, kU32},
    {"shm_max_holds_per_uid", &Limits::shm_max_holds_per_uid, 1, kU32},
};

std::expected<void, std::string> load_limits(const toml::table& t, Limits& l) {
  for (const auto& [k, v] : t) {
    const std::string_view key = k.str();
    const auto* spec = std::find_if(std::begin(kLimitKeys), std::end(kLimitKeys),
                                    [&](const LimitKey& lk) { return lk.name == key; });
    if (spec == std::end(kLimitKeys)) return Error(fmt::format("{}: unknown key 'limits.{}'", where(v), key));
    auto r = get_int<std::int64_t>(v, key, spec->min, spec->max);
    if (!r) return Error(r.error());
    std::visit(
        [&](auto field) {
          using Field = std::remove_reference_t<decltype(l.*field)>;
          if constexpr (std::is_same_v<Field, std::chrono::milliseconds>) {
            l.*field = std::chrono::milliseconds(*r);
          } else {
            l.*field = static_cast<Field>(*r);
          }
        },
        spec->field);
  }
  return {};
}

std::expected<void, std::string> load_timeouts(const toml::table& t, Timeouts& to) {
  for (const auto& [k, v] : t) {
    const std::string_view key = k.str();
    auto r = get_int<std::int64_t>(v, key, 1, 24ll * 3600 * 1000);
    std::chrono::milliseconds* target = nullptr;
    if (key == "handshake_ms")
      target = &to.handshake;
    else if (key == "slow_consumer_ms")
      target = &to.slow_consumer;
    else if (key == "shutdown_ms")
      target = &to.shutdown;
    else if (key == "linger_ms")
      target = &to.linger;
    else if (key == "frame_ms")
      target = &to.frame;
    else
      return Error(fmt::format("{}: unknown key 'timeouts.{}'", where(v), key));
    if (!r) return Error(r.error());
    *target = std::chrono::milliseconds(*r);
  }
  return {};
}

std::expected<void, std::string> load_lanes(const toml::table& t, LaneSettings& lanes) {
  for (const auto& [k, v] : t) {
    const std::string_view key = k.str();
    if (key == "enabled") {
      if (!v.is_boolean()) return Error(fmt::format("{}: 'lanes.enabled' must be true or false", where(v)));
      lanes.enabled = v.as_boolean()->get();
    } else if (key == "capacity_bytes") {
      auto r = get_int<std::int64_t>(v, key, 4096, std::int64_t{1} << 30);
      if (!r) return Error(r.error());
      if ((*r & (*r - 1)) != 0) return Error(fmt::format("{}: 'lanes.capacity_bytes' must be a power of two", where(v)));
      lanes.capacity_bytes = static_cast<std::uint64_t>(*r);
    } else if (key == "max_per_client") {
      auto r = get_int<std::int64_t>(v, key, 0, 4096);
      if (!r) return Error(r.error());
      lanes.max_per_client = static_cast<std::uint32_t>(*r);
    } else if (key == "max_bytes_per_uid") {
      auto r = get_int<std::int64_t>(v, key, 0, kTiB);
      if (!r) return Error(r.error());
      lanes.max_bytes_per_uid = static_cast<std::uint64_t>(*r);
    } else if (key == "max_fanout") {
      auto r = get_int<std::int64_t>(v, key, 0, 4096);
      if (!r) return Error(r.error());
      lanes.max_fanout = static_cast<std::uint32_t>(*r);
    } else {
      return Error(fmt::format("{}: unknown key 'lanes.{}'", where(v), key));
    }
  }
  return {};
}

// Names are resolved when the policy is loaded, so a check never waits on NSS, and a name
// that does not exist is an error now rather than a rule that silently matches nobody.
std::expected<std::uint32_t, std::string> resolve(const toml::node& node, std::string_view key, bool user) {
  if (!node.is_string()) return Error(fmt::format("{}: '{}' entries must be names (strings)", where(node), key));
  const std::string name = *node.value<std::string>();
  std::vector<char> buf(16384);
  if (user) {
    passwd pw{}, *found = nullptr;
    const int rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
    if (rc == 0 && found != nullptr) return found->pw_uid;
    return Error(fmt::format("{}: no user named '{}'{}{}", where(node), name, rc == 0 ? "" : ": ",
                             rc == 0 ? "" : std::strerror(rc)));
  }
  group gr{}, *found = nullptr;
  const int rc = ::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found);
  if (rc == 0 && found != nullptr) return found->gr_gid;
  return Error(fmt::format("{}: no group named '{}'{}{}", where(node), name, rc == 0 ? "" : ": ",
                           rc == 0 ? "" : std::strerror(rc)));
}

std::expected<std::vector<std::string>, std::string> get_patterns(const toml::node& node, std::string_view key) {
  const auto* array = node.as_array();
  if (array == nullptr) return Error(fmt::format("{}: '{}' must be an array of topic patterns", where(node), key));
  std::vector<std::string> patterns;
  for (const auto& item : *array) {
    auto p = get_string(item, key);
    if (!p) return Error(p.error());
    if (const char* why = proto::check_pattern(*p)) {
      return Error(fmt::format("{}: '{}' has an invalid pattern '{}': {}", where(item), key, *p, why));
    }
    patterns.push_back(std::move(*p));
  }
  return patterns;
}

std::expected<PolicyRule, std::string> load_rule(const toml::table& t) {
  PolicyRule rule;
  rule.line = static_cast<int>(t.source().begin.line);
  for (const auto& [k, v] : t) {
    const std::string_view key = k.str();
    if (key == "everyone") {
      if (!v.is_boolean()) return Error(fmt::format("{}: 'everyone' must be true or false", where(v)));
      rule.everyone = *v.value<bool>();
      continue;
    }
    if (key == "uids" || key == "gids" || key == "users" || key == "groups") {
      const auto* array = v.as_array();
      if (array == nullptr) return Error(fmt::format("{}: '{}' must be an array", where(v), key));
      auto& ids = key == "uids" || key == "users" ? rule.uids : rule.gids;
      for (const auto& item : *array) {
        auto id = key == "uids" || key == "gids" ? get_int<std::uint32_t>(item, key, 0, 0xfffffffe)
                                                 : resolve(item, key, key == "users");
        if (!id) return Error(id.error());
        ids.push_back(*id);
      }
      continue;
    }
    const auto right = std::find(kRightNames.begin(), kRightNames.end(), key);
    if (right == kRightNames.end()) return Error(fmt::format("{}: unknown key '{}' in a policy rule", where(v), key));
    auto patterns = get_patterns(v, key);
    if (!patterns) return Error(patterns.error());
    rule.patterns[right - kRightNames.begin()] = std::move(*patterns);
  }
  if (!rule.everyone && rule.uids.empty() && rule.gids.empty()) {
    return Error(fmt::format("line {}: a policy rule names nobody (give uids, users, gids, groups or everyone = true)",
                             rule.line));
  }
  if (std::all_of(rule.patterns.begin(), rule.patterns.end(), [](const auto& p) { return p.empty(); })) {
    return Error(fmt::format("line {}: a policy rule grants nothing (give publish, subscribe, request, serve, admin or "
                             "join)",
                             rule.line));
  }
  return rule;
}

std::expected<void, std::string> load_policy(const toml::table& t, Policy& policy) {
  Policy loaded;
  for (const auto& [k, v] : t) {
    const std::string_view key = k.str();
    if (key == "open") {
      if (!v.is_boolean()) return Error(fmt::format("{}: 'policy.open' must be true or false", where(v)));
      loaded.open = *v.value<bool>();
    } else if (key == "allow" && v.is_array_of_tables()) {
      for (const auto& item : *v.as_array()) {
        auto rule = load_rule(*item.as_table());
        if (!rule) return Error(rule.error());
        loaded.rules.push_back(std::move(*rule));
      }
    } else {
      return Error(fmt::format("{}: unknown key 'policy.{}' (expected open or [[policy.allow]] rules)", where(v), key));
    }
  }
  policy = std::move(loaded);
  return {};
}

}  // namespace

std::expected<void, std::string> load_config_file(const std::string& path, Config& config) {
  if (::access(path.c_str(), R_OK) != 0) {
    return Error(fmt::format("cannot read config file {}: {}", path, std::strerror(errno)));
  }
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return Error(fmt::format("{}: line {}: {}", path, e.source().begin.line, e.description()));
  }
  auto fail = [&](const std::string& msg) { return Error(fmt::format("{}: {}", path, msg)); };
  for (const auto& [k, v] : root) {
    const std::string_view key = k.str();
    if (key == "socket") {
      auto r = get_string(v, key);
      if (!r) return fail(r.error());
      config.socket_path = *r;
    } else if (key == "socket_mode") {
      auto r = get_string(v, key);
      if (!r) return fail(r.error());
      std::size_t used = 0;
      unsigned long mode = 0;
      try {
        mode = std::stoul(*r, &used, 8);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != r->size() || r->empty() || mode > 0777) {
        return fail(fmt::format("{}: 'socket_mode' must be an octal string like \"0660\"", where(v)));
      }
      config.socket_mode = static_cast<mode_t>(mode);
    } else if (key == "busy_poll_us") {
      auto r = get_int<std::int64_t>(v, key, 0, 10000);
      if (!r) return fail(r.error());
      config.busy_poll = std::chrono::microseconds(*r);
    } else if (key == "log_level") {
      auto r = get_string(v, key);
      if (!r) return fail(r.error());
      config.log_level = *r;
    } else if (key == "limits" && v.is_table()) {
      if (auto r = load_limits(*v.as_table(), config.limits); !r) return fail(r.error());
    } else if (key == "policy" && v.is_table()) {
      if (auto r = load_policy(*v.as_table(), config.policy); !r) return fail(r.error());
    } else if (key == "socket_group") {
      auto r = get_string(v, key);
      if (!r) return fail(r.error());
      auto gid = resolve(v, key, false);
      if (!gid) return fail(gid.error());
      config.socket_group = *r;
      config.socket_gid = *gid;
    } else if (key == "timeouts" && v.is_table()) {
      if (auto r = load_timeouts(*v.as_table(), config.timeouts); !r) return fail(r.error());
    } else if (key == "lanes" && v.is_table()) {
      if (auto r = load_lanes(*v.as_table(), config.lanes); !r) return fail(r.error());
    } else {
      return fail(fmt::format("{}: unknown key '{}'", where(v), key));
    }
  }
  config.config_file = path;
  return {};
}

std::expected<void, std::string> validate(const Config& config) {
  const auto& l = config.limits;
  if (l.queue_max_bytes < l.max_frame_bytes + 1024ull) {
    return Error(fmt::format("limits.queue_max_bytes ({}) must exceed limits.max_frame_bytes ({}) so a frame fits",
                             l.queue_max_bytes, l.max_frame_bytes));
  }
  if (l.queue_max_bytes_per_uid < l.queue_max_bytes) {
    return Error(fmt::format("limits.queue_max_bytes_per_uid ({}) must be at least limits.queue_max_bytes ({})",
                             l.queue_max_bytes_per_uid, l.queue_max_bytes));
  }
  static constexpr std::string_view kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  bool known = false;
  for (auto lv : kLevels) known = known || lv == config.log_level;
  if (!known)
    return Error(
        fmt::format("unknown log level '{}' (trace, debug, info, warn, error, critical, off)", config.log_level));
  return {};
}

}  // namespace ubroker::broker
