// brokerctl: see and operate a live ubroker broker. An ordinary client of the broker's
// $sys.admin.* services plus a shell front end for publish, subscribe, request and serve.
// Exit codes: 0 success, 1 an error reported by the broker, 2 usage, 3 no broker reachable,
// 130 interrupted (Ctrl-C) before anything was sent.
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <deque>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "json.hpp"
#include "metrics.hpp"
#include "table.hpp"
#include "ubroker.pb.h"
#include "ubroker/client.hpp"
#include "ubroker/proto/socket_address.hpp"

namespace {

using namespace std::chrono_literals;
using ubroker::Client;
using ubroker::Errc;

enum Exit { kOk = 0, kBrokerError = 1, kUsage = 2, kUnreachable = 3, kInterrupted = 130 };

std::atomic<bool> g_interrupted{false};

// Whoever read our standard output has gone (`sub t | head -n1`): a pipe's write end reports
// POLLERR once its reader closed, before anything is written to it. A syscall: asked while
// idle; after a write, ferror(stdout) tells the same for free.
bool stdout_gone() {
  pollfd p{.fd = STDOUT_FILENO, .events = POLLOUT, .revents = 0};
  return std::ferror(stdout) != 0 || (::poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP)) != 0);
}

int fail(const ubroker::Error& e) {
  std::fprintf(stderr, "brokerctl: %s\n", e.message.c_str());
  return e.code == Errc::kConnectFailed ? kUnreachable : kBrokerError;
}

std::string user_name(std::uint32_t uid) {
  if (const passwd* pw = ::getpwuid(uid)) return pw->pw_name;
  return std::to_string(uid);
}

std::string clock_time(std::uint64_t unix_ms) {
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string human_bytes(std::uint64_t n) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  std::size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, unit == 0 ? "%.0f %s" : "%.1f %s", v, kUnits[unit]);
  return buf;
}

std::string human_duration(std::uint64_t ms) {
  const std::uint64_t s = ms / 1000;
  std::ostringstream o;
  if (s >= 86400) o << s / 86400 << "d ";
  if (s >= 3600) o << (s / 3600) % 24 << "h ";
  if (s >= 60) o << (s / 60) % 60 << "m ";
  o << s % 60 << "s";
  return o.str();
}

// Printable payload preview: text when it is text, else hex.
std::string preview(std::span<const std::byte> p, std::size_t max = 48) {
  bool text = true;
  for (auto b : p) {
    const auto c = std::to_integer<unsigned char>(b);
    if ((c < 0x20 && c != '\t') || c >= 0x7f) text = false;
  }
  std::string out;
  const std::size_t n = std::min(p.size(), max);
  if (text) {
    out.assign(reinterpret_cast<const char*>(p.data()), n);
  } else {
    static const char* hex = "0123456789abcdef";
    for (std::size_t i = 0; i < n; ++i) {
      const auto c = std::to_integer<unsigned char>(p[i]);
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (p.size() > max) out += "...";
  return out;
}

struct Context {
  std::string socket;
  bool json = false;
  std::optional<Client> client;
  std::atomic<bool> closed{false};  // the connection is gone for good (kicked, or not reconnecting)
  std::mutex errors_mu;
  std::vector<ubroker::Error> errors;  // reported by the broker with no caller (on_error)

  // Connects; on failure prints why and returns the exit code.
  // `follow`: a long-running command (sub, monitor, serve) comes back after a broker restart,
  // saying so on standard error; one-shot commands do not reconnect.
  std::optional<int> connect(const std::string& name = "brokerctl", bool follow = false) {
    auto c = Client::connect({.address = socket,
                              .name = name,
                              .reconnect = {.enabled = follow},
                              .on_connection =
                                  [this](const ubroker::ConnectionChange& change) {
                                    if (change.event == ubroker::ConnectionEvent::kClosed) closed = true;
                                    if (change.event == ubroker::ConnectionEvent::kDisconnected) {
                                      std::fprintf(stderr, "brokerctl: connection lost (%s); reconnecting\n",
                                                   change.reason ? change.reason->message.c_str() : "no reason");
                                    } else if (change.event == ubroker::ConnectionEvent::kReconnected) {
                                      std::fprintf(stderr, "brokerctl: reconnected\n");
                                    }
                                  },
                              .on_error = [this](const ubroker::Error& e) {
                                std::lock_guard lk(errors_mu);
                                errors.push_back(e);
                              }});
    if (!c) return fail(c.error());
    client.emplace(std::move(*c));
    return std::nullopt;
  }
  // The first error the broker reported without a caller (a refused publish), if any.
  std::optional<ubroker::Error> first_error() {
    std::lock_guard lk(errors_mu);
    if (errors.empty()) return std::nullopt;
    return errors.front();
  }

  // Runs an admin request and parses its answer into `out`.
  template <class Msg>
  std::optional<int> admin(const std::string& service, Msg& out, std::span<const std::byte> payload = {}) {
    if (auto e = connect()) return e;
    auto r = client->request("$sys.admin." + service, payload, 5s);
    if (!r) return fail(r.error());
    if (!out.ParseFromArray(r->payload().data(), static_cast<int>(r->payload().size()))) {
      std::fprintf(stderr, "brokerctl: the broker's answer to %s is not a valid %s\n", service.c_str(),
                   out.GetTypeName().c_str());
      return kBrokerError;
    }
    return std::nullopt;
  }

  // Runs a listing page by page (each answer fits in one frame) and gathers the pages in `all`.
  template <class List>
  std::optional<int> admin_list(const std::string& service, List& all) {
    ubroker::wire::ListPage page;
    for (;;) {
      const std::string request = page.SerializeAsString();
      List part;
      if (auto e = admin(service, part, std::as_bytes(std::span(request.data(), request.size())))) return e;
      const std::string next = part.next();
      all.MergeFrom(part);
      all.clear_next();
      if (next.empty()) return std::nullopt;
      if (next <= page.after()) {
        std::fprintf(stderr, "brokerctl: the broker's pages of %s do not advance\n", service.c_str());
        return kBrokerError;
      }
      page.set_after(next);
    }
  }

  int print_json(const google::protobuf::Message& m) const {
    std::fputs(ubroker::ctl::to_json(m, true).c_str(), stdout);
    return kOk;
  }
};

int cmd_status(Context& ctx) {
  ubroker::wire::BrokerStatus st;
  if (auto e = ctx.admin("status", st)) return *e;
  if (ctx.json) return ctx.print_json(st);
  std::printf("brokerd %s, pid %u, up %s, socket %s\n", st.version().c_str(), st.pid(),
              human_duration(st.uptime_ms()).c_str(), st.socket().c_str());
  ubroker::ctl::Table t({"COUNTER", "VALUE"});
  auto row = [&](const char* k, std::uint64_t v) { t.add({k, std::to_string(v)}); };
  row("connections", st.connections());
  row("subscriptions", st.subscriptions());
  row("messages in", st.messages_in());
  row("bytes in", st.bytes_in());
  row("deliveries accepted", st.deliveries_accepted());
  row("deliveries written", st.deliveries_written());
  row("deliveries queued", st.deliveries_queued());
  row("bytes out", st.delivered_bytes());
  row("dropped (overflow)", st.dropped_overflow());
  row("dropped (disconnect)", st.dropped_disconnect());
  row("requests", st.requests());
  row("requests pending", st.requests_pending());
  row("no responders", st.no_responders());
  row("responders gone", st.responder_gone());
  row("request timeouts", st.request_timeouts());
  row("replies refused", st.replies_refused());
  row("replies discarded (caller gone)", st.replies_discarded());
  row("retained topics", st.retained_topics());
  row("retained bytes", st.retained_bytes());
  row("slow consumers cut off", st.slow_consumer_disconnects());
  row("protocol errors", st.protocol_errors());
  row("payload bytes copied", st.payload_bytes_copied());
  row("shm segments", st.shm_segments());
  row("shm bytes", st.shm_bytes());
  row("bulk messages in", st.bulk_messages());
  row("bulk bytes in (not copied)", st.bulk_bytes());
  row("bulk deliveries", st.bulk_deliveries());
  row("bulk held by receivers", st.bulk_held());
  row("bulk dropped (fd limits)", st.bulk_dropped_fds());
  row("bulk dropped (hold limits)", st.bulk_dropped_holds());
  row("shm refused", st.shm_refused());
  row("connections refused", st.connections_refused());
  row("accepts failed (out of fds)", st.accepts_failed());
  row("open fds", st.open_fds());
  row("fd limit (RLIMIT_NOFILE)", st.fd_limit());
  row("segment fds queued to pass", st.fds_queued());
  // Errors sent to clients, by code, in code order (the map's own order is unspecified).
  std::vector<std::pair<std::string, std::uint64_t>> errors(st.errors_sent().begin(), st.errors_sent().end());
  std::sort(errors.begin(), errors.end(), [](const auto& a, const auto& b) {
    ubroker::wire::ErrorCode x{}, y{};
    (void)ubroker::wire::ErrorCode_Parse(a.first, &x);
    (void)ubroker::wire::ErrorCode_Parse(b.first, &y);
    return x < y;
  });
  for (const auto& [code, n] : errors) t.add({"errors sent: " + code, std::to_string(n)});
  t.print(stdout);
  // Every delivery accepted is written, dropped with a reason, or still queued.
  const std::uint64_t dropped = st.dropped_overflow() + st.bulk_dropped_fds() + st.bulk_dropped_holds() + st.dropped_disconnect();
  const std::uint64_t accounted = st.deliveries_written() + dropped + st.deliveries_queued();
  std::printf("accounting: %llu accepted = %llu written + %llu dropped + %llu queued: %s\n",
              static_cast<unsigned long long>(st.deliveries_accepted()),
              static_cast<unsigned long long>(st.deliveries_written()), static_cast<unsigned long long>(dropped),
              static_cast<unsigned long long>(st.deliveries_queued()),
              accounted == st.deliveries_accepted() ? "balanced" : "UNBALANCED (a broker bug: please report it)");
  std::printf("access policy: %s\n", st.policy().c_str());
  // What each uid makes the broker hold (limits per uid: docs/security.md).
  std::printf("\nmemory: %s charged to clients' uids, resident set %s; one uid can make the broker hold at most %s\n",
              human_bytes(st.memory_bytes()).c_str(), human_bytes(st.rss_bytes()).c_str(),
              human_bytes(st.memory_limit_bytes_per_uid()).c_str());
  if (st.uids_size() != 0) {
    ubroker::ctl::Table u({"USER", "MEMORY", "CONNS", "QUEUED", "READ BUFS", "SUBS", "RETAINED", "REQUESTS",
                           "BULK HELD", "SHM", "LIMITED"});
    for (const auto& a : st.uids()) {
      u.add({user_name(a.uid()), human_bytes(a.memory_bytes()), std::to_string(a.connections()),
             human_bytes(a.queued_bytes()), human_bytes(a.input_bytes()), human_bytes(a.subscription_bytes()),
             human_bytes(a.retained_bytes()), std::to_string(a.pending_requests()), std::to_string(a.bulk_holds()),
             human_bytes(a.shm_bytes()), std::to_string(a.limited())});
    }
    u.print(stdout);
  }
  return kOk;
}

int cmd_metrics(Context& ctx) {
  ubroker::wire::BrokerStatus st;
  if (auto e = ctx.admin("status", st)) return *e;
  std::fputs(ubroker::ctl::prometheus_text(st).c_str(), stdout);
  return kOk;
}

// Round trips to the broker (a PING answered once everything before it was processed).
int cmd_rtt(Context& ctx, std::uint64_t count) {
  if (auto e = ctx.connect("brokerctl-rtt")) return *e;
  std::vector<double> us;
  for (std::uint64_t i = 0; i < count && !g_interrupted; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    if (auto r = ctx.client->flush(5s); !r) return fail(r.error());
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  if (us.empty()) return kInterrupted;
  std::sort(us.begin(), us.end());
  std::printf("%zu round trips to %s: min %.1f us, median %.1f us, max %.1f us\n", us.size(), ctx.socket.c_str(),
              us.front(), us[us.size() / 2], us.back());
  return kOk;
}

int cmd_clients(Context& ctx) {
  ubroker::wire::ClientList list;
  if (auto e = ctx.admin_list("clients", list)) return *e;
  if (ctx.json) return ctx.print_json(list);
  ubroker::ctl::Table t({"ID", "NAME", "PID", "COMMAND", "USER", "GID", "SINCE", "MSGS IN", "BYTES IN", "MSGS OUT",
                         "BYTES OUT", "QUEUED", "DROPS", "SUBS", "SERVES"});
  for (const auto& c : list.clients()) {
    t.add({std::to_string(c.client_id()), c.name().empty() ? "-" : c.name(), std::to_string(c.pid()),
           c.command().empty() ? "-" : c.command(), user_name(c.uid()), std::to_string(c.gid()),
           clock_time(c.connected_unix_ms()), std::to_string(c.messages_in()), std::to_string(c.bytes_in()),
           std::to_string(c.messages_out()), std::to_string(c.bytes_out()), std::to_string(c.queued_messages()),
           std::to_string(c.dropped()), std::to_string(c.subscriptions()), std::to_string(c.services())});
  }
  t.print(stdout);
  return kOk;
}

int cmd_subs(Context& ctx) {
  ubroker::wire::SubscriptionList list;
  if (auto e = ctx.admin_list("subscriptions", list)) return *e;
  if (ctx.json) return ctx.print_json(list);
  ubroker::ctl::Table t({"CLIENT", "NAME", "ID", "PATTERN", "GROUP", "POLICY", "DELIVERED", "DROPPED"});
  for (const auto& s : list.subscriptions()) {
    t.add({std::to_string(s.client_id()), s.client_name().empty() ? "-" : s.client_name(), std::to_string(s.id()),
           s.pattern(), s.group().empty() ? "-" : s.group(), s.policy(), std::to_string(s.delivered()),
           std::to_string(s.dropped())});
  }
  t.print(stdout);
  return kOk;
}

int cmd_topics(Context& ctx) {
  ubroker::wire::TopicList list;
  if (auto e = ctx.admin_list("topics", list)) return *e;
  if (ctx.json) return ctx.print_json(list);
  ubroker::ctl::Table t({"TOPIC", "PUBLISHERS", "SUBSCRIBERS", "MESSAGES", "BYTES", "RATE/S", "RETAINED"});
  for (const auto& s : list.topics()) {
    char rate[32];
    std::snprintf(rate, sizeof rate, "%.1f", s.rate());
    t.add({s.topic(), std::to_string(s.publishers()), std::to_string(s.subscribers()), std::to_string(s.messages()),
           std::to_string(s.bytes()), rate, s.retained() ? "yes" : "no"});
  }
  t.print(stdout);
  return kOk;
}

int cmd_shm(Context& ctx) {
  ubroker::wire::SegmentList list;
  if (auto e = ctx.admin_list("shm", list)) return *e;
  if (ctx.json) return ctx.print_json(list);
  ubroker::ctl::Table t({"SEGMENT", "OWNER", "UID", "BYTES", "HELD", "RECEIVERS"});
  for (const auto& s : list.segments()) {
    const std::string owner = s.owner_client_id() == 0
                                  ? std::string("(gone)")
                                  : std::to_string(s.owner_client_id()) + " " + s.owner_name();
    t.add({std::to_string(s.id()), owner, std::to_string(s.uid()), std::to_string(s.bytes()),
           std::to_string(s.open_records()), std::to_string(s.receivers())});
  }
  t.print(stdout);
  return kOk;
}

// All of `in`, or what was read until Ctrl-C (g_interrupted; the handlers do not restart reads).
std::string read_all(std::FILE* in) {
  std::string data;
  char buf[65536];
  while (!g_interrupted) {
    const std::size_t n = std::fread(buf, 1, sizeof buf, in);
    data.append(buf, n);
    if (n == 0 && (std::feof(in) || !std::ferror(in) || errno != EINTR)) break;
    std::clearerr(in);
  }
  return data;
}

int cmd_pub(Context& ctx, const std::string& topic, const std::optional<std::string>& data, bool lines, bool retain) {
  if (auto e = ctx.connect("brokerctl-pub")) return *e;
  auto publish = [&](std::string_view text) -> std::optional<int> {
    if (auto r = ctx.client->publish(topic, text, {.retain = retain}); !r) return fail(r.error());
    return std::nullopt;
  };
  if (data) {
    if (auto e = publish(*data)) return *e;
  } else if (lines) {
    for (std::string line; std::getline(std::cin, line) && !g_interrupted;) {
      if (auto e = publish(line)) return *e;
    }
  } else {
    const std::string body = read_all(stdin);
    // Ctrl-C while typing sends nothing; so does Ctrl-D on an empty terminal (an empty
    // retained publish would clear the topic's value: that takes an explicit DATA of "").
    if (g_interrupted) return kInterrupted;
    if (body.empty() && ::isatty(STDIN_FILENO)) {
      std::fprintf(stderr, "brokerctl: nothing to publish (to publish an empty message, give DATA as \"\")\n");
      return kUsage;
    }
    if (auto e = publish(body)) return *e;
  }
  if (g_interrupted) return kInterrupted;
  // A refusal (policy, invalid topic) comes back before the flush's answer: the exit status
  // tells it.
  if (auto r = ctx.client->flush(30s); !r) return fail(r.error());
  if (auto refused = ctx.first_error()) return fail(*refused);
  return kOk;
}

// How `sub` prints a message.
enum class SubOutput { kRaw, kTopic, kJson };

// Prints each message until COUNT messages, an interrupt, or a closed standard output.
int cmd_sub(Context& ctx, const std::string& pattern, std::uint64_t count, SubOutput output,
            const std::string& group) {
  if (auto e = ctx.connect("brokerctl-sub", true)) return *e;
  auto sub = ctx.client->subscribe(pattern, {.group = group});
  if (!sub) return fail(sub.error());
  for (std::uint64_t n = 0; count == 0 || n < count;) {
    if (g_interrupted || std::ferror(stdout)) return kOk;  // Ctrl-C, or `| head` has what it wanted
    auto m = ctx.client->receive(200ms);
    if (!m) {
      // While idle, poll whether the reader went away (after a write, ferror says it).
      if (m.error().code == Errc::kTimeout) {
        if (stdout_gone()) return kOk;
        continue;
      }
      if (m.error().code == Errc::kNotConnected && !ctx.closed) continue;  // reconnecting
      return fail(ctx.client->disconnect_reason().value_or(m.error()));
    }
    const std::string_view payload(reinterpret_cast<const char*>(m->payload().data()), m->payload().size());
    if (output == SubOutput::kJson) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
      // The payload as text when it is valid UTF-8, else exactly, in base64.
      const bool text = ubroker::ctl::valid_utf8(payload);
      std::printf("{\"topic\":%s,\"%s\":%s,\"sender\":{\"client_id\":%llu,\"uid\":%u,\"pid\":%u},"
                  "\"subscription\":%llu,\"retained\":%s,\"time_ms\":%lld}\n",
                  ubroker::ctl::json_string(m->topic()).c_str(), text ? "payload" : "payload_base64",
                  (text ? ubroker::ctl::json_string(payload) : "\"" + ubroker::ctl::base64(payload) + "\"").c_str(),
                  static_cast<unsigned long long>(m->sender().client_id), m->sender().uid, m->sender().pid,
                  static_cast<unsigned long long>(m->subscription()), m->retained() ? "true" : "false",
                  static_cast<long long>(ms));
    } else {
      if (output == SubOutput::kTopic) std::printf("%.*s: ", static_cast<int>(m->topic().size()), m->topic().data());
      std::fwrite(payload.data(), 1, payload.size(), stdout);
      std::fputc('\n', stdout);
    }
    std::fflush(stdout);
    ++n;
  }
  return kOk;
}

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

int cmd_req(Context& ctx, const std::string& topic, const std::optional<std::string>& data, int timeout_ms) {
  if (auto e = ctx.connect("brokerctl-req")) return *e;
  const std::string body = data ? *data : read_all(stdin);
  auto r = ctx.client->request(topic, body, std::chrono::milliseconds(timeout_ms));
  if (!r) return fail(r.error());
  std::fwrite(r->payload().data(), 1, r->payload().size(), stdout);
  if (r->payload().empty() || std::to_integer<char>(r->payload().back()) != '\n') std::fputc('\n', stdout);
  return kOk;
}

// Runs `command` with the request on its standard input and, in its environment, the topic
// and the caller's identity (UBROKER_TOPIC, UBROKER_SENDER_UID, UBROKER_SENDER_PID,
// UBROKER_SENDER_ID); returns its standard output.
std::string run_command(const std::string& command, const ubroker::Request& request) {
  const std::string_view input = request.text();
  // Built before fork(): the child only calls async-signal-safe functions.
  const std::string topic = "UBROKER_TOPIC=" + std::string(request.topic());
  const std::string uid = "UBROKER_SENDER_UID=" + std::to_string(request.sender().uid);
  const std::string pid_var = "UBROKER_SENDER_PID=" + std::to_string(request.sender().pid);
  const std::string id = "UBROKER_SENDER_ID=" + std::to_string(request.sender().client_id);
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  for (const std::string* v : {&topic, &uid, &pid_var, &id}) env.push_back(const_cast<char*>(v->c_str()));
  env.push_back(nullptr);
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return "brokerctl: pipe failed\n";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in[0], STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    const char* argv[] = {"sh", "-c", command.c_str(), nullptr};
    ::execve("/bin/sh", const_cast<char* const*>(argv), env.data());
    _exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  // Feed stdin from a thread so a command that writes before reading cannot deadlock us.
  std::thread feeder([fd = in[1], input] {
    std::size_t off = 0;
    while (off < input.size()) {
      const ssize_t n = ::write(fd, input.data() + off, input.size() - off);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    ::close(fd);
  });
  std::string result;
  char buf[65536];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) result.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  feeder.join();
  int status = 0;
  ::waitpid(pid, &status, 0);
  return result;
}

int cmd_serve(Context& ctx, const std::string& topic, const std::optional<std::string>& exec, unsigned concurrency) {
  if (auto e = ctx.connect("brokerctl-serve", true)) return *e;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<ubroker::Request> work;
  auto service = ctx.client->serve(topic, [&](ubroker::Request r) {
    std::lock_guard lk(mu);
    work.push_back(std::move(r));
    cv.notify_one();
  });
  if (!service) return fail(service.error());
  std::fprintf(stderr, "serving %s%s, %u at a time (Ctrl-C to stop)\n", topic.c_str(),
               exec ? (" with: " + *exec).c_str() : "", concurrency);
  // Requests are answered off the I/O thread, by `concurrency` workers, like inetd.
  auto worker = [&] {
    while (!g_interrupted && !ctx.closed) {
      std::unique_lock lk(mu);
      if (!cv.wait_for(lk, 200ms, [&] { return !work.empty(); })) continue;
      ubroker::Request r = std::move(work.front());
      work.pop_front();
      lk.unlock();
      const std::string answer = exec ? run_command(*exec, r) : std::string(r.text());
      (void)r.reply(answer);
    }
  };
  std::vector<std::jthread> workers;
  for (unsigned i = 1; i < concurrency; ++i) workers.emplace_back(worker);
  worker();
  workers.clear();  // joined
  if (!ctx.closed) return kOk;
  return fail(ctx.client->disconnect_reason().value_or(ubroker::Error{Errc::kNotConnected, "the connection closed"}));
}

int cmd_kick(Context& ctx, std::uint64_t id, const std::string& reason) {
  ubroker::wire::KickRequest kick;
  kick.set_client_id(id);
  kick.set_reason(reason);
  const std::string body = kick.SerializeAsString();
  if (auto e = ctx.connect()) return *e;
  auto r = ctx.client->request("$sys.admin.kick", std::as_bytes(std::span(body.data(), body.size())), 5s);
  if (!r) return fail(r.error());
  std::printf("client %llu disconnected\n", static_cast<unsigned long long>(id));
  return kOk;
}

int cmd_reload(Context& ctx) {
  if (auto e = ctx.connect()) return *e;
  auto r = ctx.client->request("$sys.admin.reload", std::string_view{}, 5s);
  if (!r) return fail(r.error());
  std::printf("reloaded\n");
  return kOk;
}

// For a first word that is no command: the closest command by edit distance, if any is close.
std::optional<std::string> suggest_command(const CLI::App& app, int argc, char** argv) {
  std::string word;
  for (int i = 1; i < argc && word.empty(); ++i) {
    const std::string_view a = argv[i];
    if (a == "-s" || a == "--socket") {
      ++i;  // its value
    } else if (!a.starts_with('-')) {
      word = a;
    }
  }
  if (word.empty()) return std::nullopt;
  auto distance = [](std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t diag = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        const std::size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    return row[b.size()];
  };
  std::string best;
  std::size_t best_distance = 3;  // no more than two edits away
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (sub->get_name() == word) return std::nullopt;  // a command: the error is elsewhere
    const std::size_t d = sub->get_name().starts_with(word) ? 1 : distance(word, sub->get_name());
    if (d < best_distance) {
      best_distance = d;
      best = sub->get_name();
    }
  }
  if (best.empty()) return "unknown command '" + word + "'";
  return "unknown command '" + word + "'; did you mean '" + best + "'?";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "brokerctl: see and operate a live ubroker broker.\n"
      "Exit codes: 0 success, 1 error reported by the broker (a refused publish or request included), 2 usage,\n"
      "3 no broker reachable, 130 interrupted before anything was sent."};
  app.fallthrough();  // options anywhere on the line: `brokerctl status -s PATH`
  app.set_version_flag("--version", std::string("brokerctl ") + UBROKER_VERSION);
  app.footer(
      "Environment: UBROKER_BROKER_UID (comma-separated uids) names the uids trusted to run the broker\n"
      "(default: your own uid and root); a socket served by any other uid is refused.");
  app.require_subcommand(1);
  Context ctx;
  ctx.socket = ubroker::proto::default_socket_path();
  app.add_option("-s,--socket", ctx.socket,
                 "Broker socket path or @name (default: $UBROKER_SOCKET, else $XDG_RUNTIME_DIR/ubroker.sock, else "
                 "/run/ubroker/ubroker.sock)");

  auto json_flag = [&](CLI::App* sub) { sub->add_flag("--json", ctx.json, "Print one JSON document"); };
  auto* status = app.add_subcommand("status", "Version, uptime, connections, traffic and drop counters, open fds");
  json_flag(status);
  auto* clients = app.add_subcommand("clients", "Every client: identity, traffic, queue, drops, subscriptions");
  json_flag(clients);
  auto* subs = app.add_subcommand("subs", "Every subscription and service: pattern, group, policy, owner");
  json_flag(subs);
  auto* topics = app.add_subcommand("topics", "Topics seen: publishers, subscribers, messages, rate, retained");
  json_flag(topics);
  auto* shm = app.add_subcommand("shm", "Shared-memory segments");
  json_flag(shm);

  std::string pattern = ">", topic;
  std::optional<std::string> data, exec;
  bool lines = false, retain = false;
  std::uint64_t count = 0, kick_id = 0;
  int timeout_ms = 5000;
  std::string reason;
  auto* monitor = app.add_subcommand("monitor", "Live tap of matching traffic (never slows publishers)");
  monitor->add_option("pattern", pattern, "Topic pattern (default: >)");
  auto* pub = app.add_subcommand("pub", "Publish DATA, or standard input (one message, or one per line)");
  pub->add_option("topic", topic, "Topic")->required();
  pub->add_option("data", data, "Message; absent: read standard input");
  pub->add_flag("--lines", lines, "Each line of standard input is one message");
  pub->add_flag("--retain", retain, "Keep as the topic's retained value");
  auto* sub = app.add_subcommand(
      "sub", "Print each matching message: \"topic: payload\" on a terminal, the payload alone in a pipeline");
  sub->add_option("pattern", pattern, "Topic pattern")->required();
  sub->add_option("--count", count, "Exit after this many messages");
  bool raw = false, sub_json = false;
  std::string group;
  sub->add_flag("--raw", raw, "The payload alone, one per line (the default when standard output is not a terminal)");
  sub->add_flag("--json", sub_json,
                "One JSON object per line: topic, payload, sender (client_id, uid, pid), subscription, retained, time_ms");
  sub->add_option("--group", group, "Join this queue group: each message goes to one of its members");
  auto* req = app.add_subcommand("req", "Send a request and print the reply");
  req->add_option("topic", topic, "Topic")->required();
  req->add_option("data", data, "Request body; absent: read standard input");
  req->add_option("--timeout", timeout_ms, "How long to wait: 500ms, 2s, 1m (a bare number is milliseconds; default 5s)")
      ->transform(CLI::AsNumberWithUnit(std::map<std::string, int>{{"ms", 1}, {"s", 1000}, {"m", 60000}},
                                        CLI::AsNumberWithUnit::CASE_SENSITIVE));
  auto* serve = app.add_subcommand(
      "serve", "Answer requests: echo them, or reply with CMD's output (CMD gets the request on stdin)");
  serve->add_option("topic", topic, "Topic pattern")->required();
  serve->add_option("--exec", exec,
                    "Shell command run per request: the request on its stdin; UBROKER_TOPIC, UBROKER_SENDER_UID, "
                    "UBROKER_SENDER_PID and UBROKER_SENDER_ID in its environment; its stdout is the reply");
  unsigned concurrency = 1;
  serve->add_option("--concurrency", concurrency, "Requests answered at once (default 1)")->check(CLI::Range(1u, 1024u));
  auto* kick = app.add_subcommand("kick", "Disconnect a client, telling it why");
  kick->add_option("client", kick_id, "Client id (see `brokerctl clients`)")->required();
  kick->add_option("--reason", reason, "Reason the client is told");
  auto* reload = app.add_subcommand("reload", "Reload the broker's configuration (like SIGHUP)");
  auto* metrics = app.add_subcommand(
      "metrics", "Every counter and gauge in the Prometheus text format (ubroker_*), for a textfile collector");
  std::uint64_t rtt_count = 10;
  auto* rtt = app.add_subcommand("rtt", "Round trips to the broker: min, median and max");
  rtt->add_option("--count", rtt_count, "Round trips (default 10)")->check(CLI::Range(1, 1000000));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (auto hint = suggest_command(app, argc, argv)) {
      std::fprintf(stderr, "brokerctl: %s\nRun with --help for more information.\n", hint->c_str());
      return kUsage;
    }
    const int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }
  // Without SA_RESTART: a read of standard input returns at Ctrl-C, so nothing half-typed is
  // sent. SIGPIPE is ignored: a closed standard output is seen as an error and ends `sub`.
  struct sigaction interrupt {};
  interrupt.sa_handler = [](int) { g_interrupted = true; };
  ::sigemptyset(&interrupt.sa_mask);
  ::sigaction(SIGINT, &interrupt, nullptr);
  ::sigaction(SIGTERM, &interrupt, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  if (status->parsed()) return cmd_status(ctx);
  if (clients->parsed()) return cmd_clients(ctx);
  if (subs->parsed()) return cmd_subs(ctx);
  if (topics->parsed()) return cmd_topics(ctx);
  if (shm->parsed()) return cmd_shm(ctx);
  if (monitor->parsed()) return cmd_monitor(ctx, pattern);
  if (pub->parsed()) return cmd_pub(ctx, topic, data, lines, retain);
  if (sub->parsed()) {
    const SubOutput output = sub_json                          ? SubOutput::kJson
                             : raw || !::isatty(STDOUT_FILENO) ? SubOutput::kRaw
                                                               : SubOutput::kTopic;
    return cmd_sub(ctx, pattern, count, output, group);
  }
  if (req->parsed()) return cmd_req(ctx, topic, data, timeout_ms);
  if (serve->parsed()) return cmd_serve(ctx, topic, exec, concurrency);
  if (kick->parsed()) return cmd_kick(ctx, kick_id, reason);
  if (reload->parsed()) return cmd_reload(ctx);
  if (metrics->parsed()) return cmd_metrics(ctx);
  if (rtt->parsed()) return cmd_rtt(ctx, rtt_count);
  return kUsage;
}
