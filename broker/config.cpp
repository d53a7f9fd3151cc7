// TOML config loading with toml++. Keys are checked against a fixed schema so a typo is an
// error naming the key and line rather than a silently ignored setting.
#include "config.hpp"

#include <fmt/format.h>

#include <toml++/toml.h>
#include <limits>

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

std::expected<void, std::string> load_limits(const toml::table& t, Limits& l) {
  for (const auto& [k, v] : t) {
    const std::string_view key = k.str();
    constexpr std::int64_t kU32 = std::numeric_limits<std::uint32_t>::max();
    if (key == "max_frame_bytes") {
      auto r = get_int<std::uint32_t>(v, key, 1024, 256ll << 20);
      if (!r) return Error(r.error());
      l.max_frame_bytes = *r;
    } else if (key == "max_subscriptions") {
      auto r = get_int<std::uint32_t>(v, key, 1, kU32);
      if (!r) return Error(r.error());
      l.max_subscriptions = *r;
    } else if (key == "queue_max_messages") {
      auto r = get_int<std::uint32_t>(v, key, 1, kU32);
      if (!r) return Error(r.error());
      l.queue_max_messages = *r;
    } else if (key == "queue_max_bytes") {
      auto r = get_int<std::uint64_t>(v, key, 4096, std::int64_t{1} << 40);
      if (!r) return Error(r.error());
      l.queue_max_bytes = *r;
    } else if (key == "max_pending_requests") {
      auto r = get_int<std::uint32_t>(v, key, 1, kU32);
      if (!r) return Error(r.error());
      l.max_pending_requests = *r;
    } else if (key == "request_timeout_max_ms") {
      auto r = get_int<std::int64_t>(v, key, 1, 24ll * 3600 * 1000);
      if (!r) return Error(r.error());
      l.request_timeout_max = std::chrono::milliseconds(*r);
    } else if (key == "retained_max_bytes") {
      auto r = get_int<std::uint64_t>(v, key, 0, std::int64_t{1} << 40);
      if (!r) return Error(r.error());
      l.retained_max_bytes = *r;
    } else if (key == "max_connections") {
      auto r = get_int<std::uint32_t>(v, key, 1, 1 << 20);
      if (!r) return Error(r.error());
      l.max_connections = *r;
    } else if (key == "shm_max_segment_bytes") {
      auto r = get_int<std::uint64_t>(v, key, 0, std::int64_t{1} << 40);
      if (!r) return Error(r.error());
      l.shm_max_segment_bytes = *r;
    } else if (key == "shm_max_bytes_per_uid") {
      auto r = get_int<std::uint64_t>(v, key, 0, std::int64_t{1} << 44);
      if (!r) return Error(r.error());
      l.shm_max_bytes_per_uid = *r;
    } else if (key == "shm_max_segments_per_uid") {
      auto r = get_int<std::uint32_t>(v, key, 0, kU32);
      if (!r) return Error(r.error());
      l.shm_max_segments_per_uid = *r;
    } else if (key == "shm_max_fds_in_flight_per_uid") {
      auto r = get_int<std::uint32_t>(v, key, 1, kU32);
      if (!r) return Error(r.error());
      l.shm_max_fds_in_flight_per_uid = *r;
    } else if (key == "shm_max_segments_per_client") {
      auto r = get_int<std::uint32_t>(v, key, 0, 1024);
      if (!r) return Error(r.error());
      l.shm_max_segments_per_client = *r;
    } else {
      return Error(fmt::format("{}: unknown key 'limits.{}'", where(v), key));
    }
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
    else
      return Error(fmt::format("{}: unknown key 'timeouts.{}'", where(v), key));
    if (!r) return Error(r.error());
    *target = std::chrono::milliseconds(*r);
  }
  return {};
}

}  // namespace

std::expected<void, std::string> load_config_file(const std::string& path, Config& config) {
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
    } else if (key == "log_level") {
      auto r = get_string(v, key);
      if (!r) return fail(r.error());
      config.log_level = *r;
    } else if (key == "limits" && v.is_table()) {
      if (auto r = load_limits(*v.as_table(), config.limits); !r) return fail(r.error());
    } else if (key == "timeouts" && v.is_table()) {
      if (auto r = load_timeouts(*v.as_table(), config.timeouts); !r) return fail(r.error());
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
  static constexpr std::string_view kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  bool known = false;
  for (auto lv : kLevels) known = known || lv == config.log_level;
  if (!known)
    return Error(
        fmt::format("unknown log level '{}' (trace, debug, info, warn, error, critical, off)", config.log_level));
  return {};
}

}  // namespace ubroker::broker
