// brokerctl monitor: a live tap of matching traffic, with the broker's own events in words.
#include <chrono>
#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "commands.hpp"
#include "text.hpp"

namespace ubroker::ctl {

using namespace std::chrono_literals;

// The broker's own events ($sys.client.*, $sys.service.*) in words; "" for other topics (or an
// event that does not parse), whose payload is previewed instead.
std::string describe_event(std::string_view topic, std::span<const std::byte> payload) {
  const auto* data = payload.data();
  const int size = static_cast<int>(payload.size());
  auto who = [](const ubroker::wire::ClientEvent& c) {
    return fmt::format("client {} ({}, uid {}, gid {}, pid {})", c.client_id(), c.name().empty() ? "-" : c.name(),
                       c.uid(), c.gid(), c.pid());
  };
  if (topic.starts_with("$sys.client.")) {
    ubroker::wire::ClientEvent e;
    if (!e.ParseFromArray(data, size)) return {};
    return fmt::format("{} {}", who(e), topic.substr(std::string_view("$sys.client.").size()));
  }
  if (topic.starts_with("$sys.service.")) {
    ubroker::wire::ServiceEvent e;
    if (!e.ParseFromArray(data, size)) return {};
    return fmt::format("service '{}' of {} {}", e.topic(), who(e.client()),
                       topic.substr(std::string_view("$sys.service.").size()));
  }
  return {};
}

int cmd_monitor(Context& ctx, const std::string& pattern) {
  if (auto e = ctx.connect("brokerctl-monitor", true)) return *e;
  // DROP: the tap never holds publishers back, so normal subscribers see no change.
  auto sub = ctx.client->subscribe(pattern, {.overflow = ubroker::Overflow::kDrop});
  if (!sub) return fail(sub.error());
  std::fprintf(stderr, "monitoring %s (Ctrl-C to stop)\n", pattern.c_str());
  while (!g_interrupted && !std::ferror(stdout)) {
    auto m = ctx.client->receive(200ms);
    if (!m) {
      if (m.error().code == Errc::kTimeout) {
        if (stdout_gone()) return kOk;
        continue;
      }
      if (m.error().code == Errc::kNotConnected && !ctx.closed) continue;  // reconnecting
      return fail(ctx.client->disconnect_reason().value_or(m.error()));
    }
    if (m->retained()) continue;  // published before the tap started
    const auto now = std::chrono::system_clock::now();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    const std::string when = clock_time(static_cast<std::uint64_t>(ms)).substr(11);
    const std::string event = describe_event(m->topic(), m->payload());
    if (!event.empty()) {  // the broker's own: decoded, not shown as bytes
      std::printf("%s.%03lld %s [broker] %s\n", when.c_str(), static_cast<long long>(ms % 1000),
                  std::string(m->topic()).c_str(), event.c_str());
    } else {
      std::printf("%s.%03lld %s [client %llu uid %u pid %u] %zu B%s: %s\n", when.c_str(),
                  static_cast<long long>(ms % 1000), std::string(m->topic()).c_str(),
                  static_cast<unsigned long long>(m->sender().client_id), m->sender().uid, m->sender().pid,
                  m->payload().size(), m->dropped_before() ? " (after drops)" : "", preview(m->payload()).c_str());
    }
    std::fflush(stdout);
  }
  return kOk;
}

}  // namespace ubroker::ctl
