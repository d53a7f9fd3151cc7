#include "config.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <functional>
#include <map>

#include "ubroker/proto/topic.hpp"

namespace ubroker::bridge {
namespace {

using Error = std::unexpected<std::string>;
using Result = std::expected<void, std::string>;

std::string where(const toml::node& node) { return fmt::format("line {}", node.source().begin.line); }

Result get_string(const toml::node& node, std::string_view key, std::string& out) {
  if (!node.is_string()) return Error(fmt::format("{}: '{}' must be a string", where(node), key));
  out = *node.value<std::string>();
  return {};
}

Result get_bool(const toml::node& node, std::string_view key, bool& out) {
  if (!node.is_boolean()) return Error(fmt::format("{}: '{}' must be true or false", where(node), key));
  out = *node.value<bool>();
  return {};
}

Result get_int(const toml::node& node, std::string_view key, std::int64_t min, std::int64_t max, std::int64_t& out) {
  const auto v = node.value<std::int64_t>();
  if (!node.is_integer() || !v) return Error(fmt::format("{}: '{}' must be an integer", where(node), key));
  if (*v < min || *v > max) return Error(fmt::format("{}: '{}' = {} is out of range [{}, {}]", where(node), key, *v, min, max));
  out = *v;
  return {};
}

Result get_ms(const toml::node& node, std::string_view key, std::int64_t min, std::int64_t max,
              std::chrono::milliseconds& out) {
  std::int64_t v = 0;
  if (auto r = get_int(node, key, min, max, v); !r) return r;
  out = std::chrono::milliseconds(v);
  return {};
}

// A list of strings; `check` says what is wrong with one (nullptr: fine).
Result get_list(const toml::node& node, std::string_view key, std::vector<std::string>& out,
                const std::function<const char*(std::string_view)>& check) {
  const toml::array* a = node.as_array();
  if (a == nullptr) return Error(fmt::format("{}: '{}' must be a list of strings", where(node), key));
  out.clear();
  for (const toml::node& item : *a) {
    if (!item.is_string()) return Error(fmt::format("{}: '{}' must be a list of strings", where(item), key));
    std::string s = *item.value<std::string>();
    if (const char* why = check(s)) return Error(fmt::format("{}: '{}' has '{}': {}", where(item), key, s, why));
    out.push_back(std::move(s));
  }
  return {};
}

const char* check_local_pattern(std::string_view p) {
  if (const char* why = proto::check_pattern(p)) return why;
  if (proto::is_reserved(p)) return "topics starting with '$' are the broker's own and are not bridged";
  if (p.starts_with("*") || p.starts_with(">")) {
    return "a pattern starting with a wildcard would also take the broker's '$' topics (and NATS's own "
           "'$' and '_INBOX' subjects): name its first token";
  }
  return nullptr;
}

// True when some topic matches both patterns.
bool patterns_overlap(std::string_view a, std::string_view b) {
  for (;;) {
    const std::size_t ea = a.find('.'), eb = b.find('.');
    const std::string_view ta = a.substr(0, ea), tb = b.substr(0, eb);
    if (ta == ">" || tb == ">") return true;
    if (ta != tb && ta != "*" && tb != "*") return false;
    const bool last_a = ea == std::string_view::npos, last_b = eb == std::string_view::npos;
    if (last_a || last_b) return last_a && last_b;
    a.remove_prefix(ea + 1);
    b.remove_prefix(eb + 1);
  }
}

// The first pair of patterns from `a` and `b` that overlap, as an error; empty when none.
std::string overlap_between(const std::vector<std::string>& a, std::string_view a_name,
                            const std::vector<std::string>& b, std::string_view b_name, std::string_view why) {
  for (const auto& x : a) {
    for (const auto& y : b) {
      if (patterns_overlap(x, y)) return fmt::format("[bridge] {} '{}' overlaps {} '{}': {}", a_name, x, b_name, y, why);
    }
  }
  return {};
}

const char* check_server(std::string_view url) {
  if (!url.starts_with("nats://") && !url.starts_with("tls://")) return "a server URL starts with nats:// or tls://";
  return nullptr;
}

// A host name as NATS subjects and header values carry it.
const char* check_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return "1 to 64 characters";
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return "letters, digits, '-' and '_' only";
  }
  return nullptr;
}

const char* check_prefix(std::string_view prefix) {
  if (prefix.empty()) return nullptr;
  if (prefix.back() != '.') return "a prefix ends with '.'";
  if (const char* why = proto::check_topic(prefix.substr(0, prefix.size() - 1))) return why;
  return nullptr;
}

using KeyLoader = std::function<Result(const toml::node&, std::string_view)>;

Result load_table(const toml::table& t, std::string_view section, const std::map<std::string_view, KeyLoader>& keys) {
  for (const auto& [k, v] : t) {
    auto it = keys.find(k.str());
    if (it == keys.end()) return Error(fmt::format("{}: unknown key '{}.{}'", where(v), section, k.str()));
    if (auto r = it->second(v, k.str()); !r) return r;
  }
  return {};
}

Result load_nats(const toml::table& t, NatsConfig& n) {
  const std::map<std::string_view, KeyLoader> keys = {
      {"servers", [&](const toml::node& v, std::string_view k) { return get_list(v, k, n.servers, check_server); }},
      {"user", [&](const toml::node& v, std::string_view k) { return get_string(v, k, n.user); }},
      {"password", [&](const toml::node& v, std::string_view k) { return get_string(v, k, n.password); }},
      {"token", [&](const toml::node& v, std::string_view k) { return get_string(v, k, n.token); }},
      {"credentials", [&](const toml::node& v, std::string_view k) { return get_string(v, k, n.credentials); }},
      {"tls", [&](const toml::node& v, std::string_view k) { return get_bool(v, k, n.tls); }},
      {"tls_ca", [&](const toml::node& v, std::string_view k) { return get_string(v, k, n.tls_ca); }},
      {"tls_cert", [&](const toml::node& v, std::string_view k) { return get_string(v, k, n.tls_cert); }},
      {"tls_key", [&](const toml::node& v, std::string_view k) { return get_string(v, k, n.tls_key); }},
      {"reconnect_wait_ms", [&](const toml::node& v, std::string_view k) { return get_ms(v, k, 1, 60000, n.reconnect_wait); }},
      {"connect_timeout_ms", [&](const toml::node& v, std::string_view k) { return get_ms(v, k, 1, 60000, n.connect_timeout); }},
      {"buffer_bytes", [&](const toml::node& v, std::string_view k) { return get_int(v, k, 1, INT32_MAX, n.buffer_bytes); }},
  };
  return load_table(t, "nats", keys);
}

Result load_bridge(const toml::table& t, BridgeConfig& b) {
  std::int64_t in_flight = b.max_requests_in_flight;
  const std::map<std::string_view, KeyLoader> keys = {
      {"name", [&](const toml::node& v, std::string_view k) -> Result {
         if (auto r = get_string(v, k, b.name); !r) return r;
         if (const char* why = check_name(b.name)) return Error(fmt::format("{}: 'name': {}", where(v), why));
         return {};
       }},
      {"prefix", [&](const toml::node& v, std::string_view k) -> Result {
         if (auto r = get_string(v, k, b.prefix); !r) return r;
         if (const char* why = check_prefix(b.prefix)) return Error(fmt::format("{}: 'prefix': {}", where(v), why));
         return {};
       }},
      {"export", [&](const toml::node& v, std::string_view k) { return get_list(v, k, b.exports, check_local_pattern); }},
      {"import", [&](const toml::node& v, std::string_view k) { return get_list(v, k, b.imports, check_local_pattern); }},
      {"export_services", [&](const toml::node& v, std::string_view k) { return get_list(v, k, b.export_services, check_local_pattern); }},
      {"import_services", [&](const toml::node& v, std::string_view k) { return get_list(v, k, b.import_services, check_local_pattern); }},
      {"request_timeout_ms", [&](const toml::node& v, std::string_view k) { return get_ms(v, k, 1, 3600000, b.request_timeout); }},
      {"max_requests_in_flight", [&](const toml::node& v, std::string_view k) { return get_int(v, k, 1, 1024, in_flight); }},
      {"metrics_topic", [&](const toml::node& v, std::string_view k) -> Result {
         if (auto r = get_string(v, k, b.metrics_topic); !r) return r;
         if (const char* why = proto::check_topic(b.metrics_topic)) return Error(fmt::format("{}: 'metrics_topic': {}", where(v), why));
         return {};
       }},
  };
  if (auto r = load_table(t, "bridge", keys); !r) return r;
  b.max_requests_in_flight = static_cast<unsigned>(in_flight);
  return {};
}

}  // namespace

std::expected<Config, std::string> load_config(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return Error(fmt::format("{}: line {}: {}", path, e.source().begin.line, e.description()));
  }
  Config c;
  for (const auto& [k, v] : root) {
    const toml::table* t = v.as_table();
    Result r;
    if (k.str() == "nats" && t != nullptr) {
      r = load_nats(*t, c.nats);
    } else if (k.str() == "bridge" && t != nullptr) {
      r = load_bridge(*t, c.bridge);
    } else {
      r = Error(fmt::format("{}: unknown section '{}' (there are [nats] and [bridge])", where(v), k.str()));
    }
    if (!r) return Error(fmt::format("{}: {}", path, r.error()));
  }
  if (c.nats.servers.empty()) return Error(fmt::format("{}: [nats] servers: at least one server is needed", path));
  if (c.bridge.name.empty()) return Error(fmt::format("{}: [bridge] name: this host's name is needed", path));
  if (c.bridge.exports.empty() && c.bridge.imports.empty() && c.bridge.export_services.empty() &&
      c.bridge.import_services.empty()) {
    return Error(fmt::format("{}: [bridge]: nothing to bridge (export, import, export_services, import_services are empty)", path));
  }
  if (c.bridge.metrics_topic.empty()) c.bridge.metrics_topic = fmt::format("bridge.{}.metrics", c.bridge.name);
  NatsConfig& n = c.nats;
  if (!n.password.empty() && n.user.empty()) return Error(fmt::format("{}: [nats] password needs a user", path));
  if (n.tls_cert.empty() != n.tls_key.empty()) {
    return Error(fmt::format("{}: [nats] tls_cert and tls_key go together (a client certificate and its key)", path));
  }
  if (!n.tls_ca.empty() || !n.tls_cert.empty()) n.tls = true;  // never fall back to plain text silently
  const BridgeConfig& b = c.bridge;
  for (const std::string& e : {
           overlap_between(b.export_services, "export_services", b.import_services, "import_services",
                           "a request could go round between the hosts; serve a service on one side only"),
           overlap_between(b.imports, "import", b.export_services, "export_services",
                           "a NATS request would also be imported as a message"),
           overlap_between(b.import_services, "import_services", {b.metrics_topic}, "metrics_topic",
                           "its requests would go to NATS"),
       }) {
    if (!e.empty()) return Error(fmt::format("{}: {}", path, e));
  }
  return c;
}

}  // namespace ubroker::bridge
