// brokerctl monitor: a live tap of matching traffic, with requests, replies and errors (the
// broker's $sys.trace copies, correlated by request id) and the broker's own events in words;
// text for people (coloured on a terminal) or one JSON object per line.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
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

// What one tapped message is: traffic, a trace of request/reply ($sys.trace.<kind>.<topic>),
// or one of the broker's events.
struct Tapped {
  std::string_view kind;   // "message", "request", "reply", "error", "event"
  std::string_view topic;  // for a trace, the request's topic
  std::string event;       // for an event, in words
};

Tapped classify(const ubroker::Message& m) {
  constexpr std::string_view kTrace = "$sys.trace.";
  const std::string_view topic = m.topic();
  if (topic.starts_with(kTrace)) {
    const std::string_view rest = topic.substr(kTrace.size());
    const std::size_t dot = rest.find('.');
    if (dot != std::string_view::npos) {
      const std::string_view kind = rest.substr(0, dot);
      if (kind == "request" || kind == "reply" || kind == "error") return {kind, rest.substr(dot + 1), {}};
    }
  }
  if (std::string event = describe_event(topic, m.payload()); !event.empty()) return {"event", topic, std::move(event)};
  return {"message", topic, {}};
}

// Terminal colours, only when standard output is a terminal and NO_COLOR is not set.
struct Palette {
  bool on = false;
  [[nodiscard]] std::string paint(std::string_view text, const char* code) const {
    return on ? fmt::format("\033[{}m{}\033[0m", code, text) : std::string(text);
  }
};

std::string header_text(const ubroker::Headers& headers, bool skip_broker_own) {
  std::string out;
  for (const ubroker::HeaderField& h : headers) {
    if (skip_broker_own && h.key.starts_with("ubroker-")) continue;
    out += fmt::format("{}{}={}", out.empty() ? " {" : ", ", h.key, h.value);
  }
  return out.empty() ? out : out + "}";
}

void print_line(const ubroker::Message& m, const Tapped& t, const Palette& colour, long long ms) {
  const std::string when = fmt::format("{}.{:03}", clock_time(static_cast<std::uint64_t>(ms)).substr(11), ms % 1000);
  const ubroker::Headers h = m.headers();
  const auto from = fmt::format("client {} uid {} pid {}", m.sender().client_id, m.sender().uid, m.sender().pid);
  const std::string id(h.get("ubroker-request").value_or("?"));
  if (t.kind == "event") {
    std::printf("%s %s %s %s\n", when.c_str(), std::string(t.topic).c_str(), colour.paint("[broker]", "33").c_str(),
                t.event.c_str());
  } else if (t.kind == "request") {
    std::printf("%s %s #%s %s [%s] -> client %s: %zu B%s: %s\n", when.c_str(), colour.paint("REQ  ", "36").c_str(),
                id.c_str(), std::string(t.topic).c_str(), from.c_str(),
                std::string(h.get("ubroker-responder").value_or("?")).c_str(), m.payload().size(),
                header_text(h, true).c_str(), preview(m.payload()).c_str());
  } else if (t.kind == "reply") {
    std::printf("%s %s #%s %s [%s] %s us: %zu B%s: %s\n", when.c_str(), colour.paint("REPLY", "32").c_str(),
                id.c_str(), std::string(t.topic).c_str(), from.c_str(),
                std::string(h.get("ubroker-latency-us").value_or("?")).c_str(), m.payload().size(),
                header_text(h, true).c_str(), preview(m.payload()).c_str());
  } else if (t.kind == "error") {
    const std::string code(h.get("ubroker-error").value_or("ERROR"));
    const std::string service = code == "SERVICE_ERROR" ? fmt::format(" {}", h.get("ubroker-service-code").value_or("0")) : "";
    std::printf("%s %s #%s %s [%s] %s%s: %s\n", when.c_str(), colour.paint("ERROR", "31").c_str(), id.c_str(),
                std::string(t.topic).c_str(), m.sender().client_id == 0 ? "broker" : from.c_str(), code.c_str(),
                service.c_str(), preview(m.payload(), 200).c_str());
  } else {
    std::printf("%s %s [%s] %zu B%s%s: %s\n", when.c_str(), std::string(t.topic).c_str(), from.c_str(),
                m.payload().size(), m.dropped_before() ? " (after drops)" : "", header_text(h, false).c_str(),
                preview(m.payload()).c_str());
  }
}

// One JSON object per line (see the man page for the members).
void print_json_line(const ubroker::Message& m, const Tapped& t, long long ms) {
  const ubroker::Headers h = m.headers();
  std::string extra;
  auto number = [&](std::string_view member, std::string_view header) {
    const auto v = h.get(header);
    if (!v || v->empty() || v->size() > 20 || v->find_first_not_of("0123456789") != std::string_view::npos) return;
    extra += fmt::format(",\"{}\":{}", member, *v);
  };
  if (t.kind != "message" && t.kind != "event") {
    number("request_id", "ubroker-request");
    number("responder", "ubroker-responder");
    number("caller", "ubroker-caller");
    number("latency_us", "ubroker-latency-us");
    if (auto v = h.get("ubroker-error")) extra += fmt::format(",\"error\":{}", json_string(*v));
    number("service_code", "ubroker-service-code");
  }
  if (t.kind == "event") extra += fmt::format(",\"event\":{}", json_string(t.event));
  if (!h.empty()) extra += ",\"headers\":" + json_headers(h);
  if (m.dropped_before() != 0) extra += fmt::format(",\"dropped_before\":{}", m.dropped_before());
  std::printf("{\"time_ms\":%lld,\"kind\":\"%.*s\",\"topic\":%s,\"sender\":{\"client_id\":%llu,\"uid\":%u,"
              "\"pid\":%u},%s%s}\n",
              ms, static_cast<int>(t.kind.size()), t.kind.data(), json_string(t.topic).c_str(),
              static_cast<unsigned long long>(m.sender().client_id), m.sender().uid, m.sender().pid,
              json_payload(m.payload()).c_str(), extra.c_str());
}

int cmd_monitor(Context& ctx, const std::string& pattern, bool json) {
  if (auto e = ctx.connect("brokerctl-monitor", true)) return *e;
  // DROP: the tap never holds publishers back, so normal subscribers see no change.
  auto sub = ctx.client->subscribe(pattern, {.overflow = ubroker::Overflow::kDrop});
  if (!sub) return fail(sub.error());
  // Requests and replies on matching topics come as the broker's trace copies; '>' has them already.
  std::optional<ubroker::Subscription> traced;
  if (pattern != ">" && !pattern.starts_with("$sys.")) {
    auto t = ctx.client->subscribe("$sys.trace.*." + pattern, {.overflow = ubroker::Overflow::kDrop});
    if (t) {
      traced.emplace(std::move(*t));
    } else {
      std::fprintf(stderr, "brokerctl: requests and replies are not shown: %s\n", t.error().message.c_str());
    }
  }
  std::fprintf(stderr, "monitoring %s (Ctrl-C to stop)\n", pattern.c_str());
  const Palette colour{.on = !json && ::isatty(STDOUT_FILENO) && std::getenv("NO_COLOR") == nullptr};
  for (;;) {
    int exit = kOk;
    auto m = ctx.next_message(exit);
    if (!m) return exit;
    if (m->retained()) continue;  // published before the tap started
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
    const Tapped t = classify(*m);
    if (json) {
      print_json_line(*m, t, static_cast<long long>(ms));
    } else {
      print_line(*m, t, colour, static_cast<long long>(ms));
    }
    std::fflush(stdout);
  }
}

}  // namespace ubroker::ctl
