// brokerctl's views and operations of the broker itself: status, metrics, rtt, the listings
// (clients, subs, topics, shm), kick and reload.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.hpp"
#include "metrics.hpp"
#include "table.hpp"
#include "text.hpp"

namespace ubroker::ctl {

using namespace std::chrono_literals;

// "120 us / 3.4 ms": a service's mean and worst answer time.
std::string latency(std::uint64_t mean_us, std::uint64_t max_us) {
  auto one = [](std::uint64_t us) {
    return us < 10000 ? fmt::format("{} us", us) : fmt::format("{:.1f} ms", static_cast<double>(us) / 1000);
  };
  return one(mean_us) + " / " + one(max_us);
}

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
  row("error replies", st.error_replies());
  row("retained topics", st.retained_topics());
  row("retained bytes", st.retained_bytes());
  row("slow consumers cut off", st.slow_consumer_disconnects());
  row("lanes open", st.lanes_open());
  row("lanes opened", st.lanes_opened());
  row("lanes broken", st.lanes_broken());
  row("lane messages in", st.lane_accepted());
  row("lane messages delivered", st.lane_delivered());
  row("lane messages dropped", st.lane_dropped());
  row("lane messages lost", st.lane_lost());
  row("lane messages queued", st.lane_queued());
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
                         "BYTES OUT", "QUEUED", "DROPS", "SUBS", "SERVES", "REQS", "REPLIES", "ERR REPLIES",
                         "LANES OUT/IN", "LANE MSGS OUT/IN", "STATUS"});
  // What a client reports about itself (Client::set_status), as key=value words.
  auto status_of = [](const ubroker::wire::ClientInfo& c) {
    std::string out;
    for (const auto& f : c.status().fields()) out += fmt::format("{}{}={}", out.empty() ? "" : " ", f.key(), f.value());
    return out.empty() ? std::string("-") : out;
  };
  for (const auto& c : list.clients()) {
    t.add({std::to_string(c.client_id()), c.name().empty() ? "-" : c.name(), std::to_string(c.pid()),
           c.command().empty() ? "-" : c.command(), user_name(c.uid()), std::to_string(c.gid()),
           clock_time(c.connected_unix_ms()), std::to_string(c.messages_in()), std::to_string(c.bytes_in()),
           std::to_string(c.messages_out()), std::to_string(c.bytes_out()), std::to_string(c.queued_messages()),
           std::to_string(c.dropped()), std::to_string(c.subscriptions()), std::to_string(c.services()),
           std::to_string(c.requests()), std::to_string(c.replies()), std::to_string(c.error_replies()),
           fmt::format("{}/{}", c.lanes_out(), c.lanes_in()),
           fmt::format("{}/{}", c.lane_messages_out(), c.lane_messages_in()), status_of(c)});
  }
  t.print(stdout);
  return kOk;
}

int cmd_subs(Context& ctx) {
  ubroker::wire::SubscriptionList list;
  if (auto e = ctx.admin_list("subscriptions", list)) return *e;
  if (ctx.json) return ctx.print_json(list);
  ubroker::ctl::Table t({"CLIENT", "NAME", "ID", "PATTERN", "GROUP", "POLICY", "DELIVERED", "DROPPED", "REQUESTS",
                         "ERRORS", "TIMEOUTS", "LATENCY MEAN/MAX"});
  for (const auto& s : list.subscriptions()) {
    const bool service = s.policy() == "serve";
    auto served = [&](std::uint64_t n) { return service ? std::to_string(n) : std::string("-"); };
    t.add({std::to_string(s.client_id()), s.client_name().empty() ? "-" : s.client_name(), std::to_string(s.id()),
           s.pattern(), s.group().empty() ? "-" : s.group(), s.policy(), service ? "-" : std::to_string(s.delivered()),
           service ? "-" : std::to_string(s.dropped()), served(s.requests()), served(s.errors()), served(s.timeouts()),
           service ? latency(s.latency_mean_us(), s.latency_max_us()) : "-"});
  }
  t.print(stdout);
  return kOk;
}

int cmd_topics(Context& ctx) {
  ubroker::wire::TopicList list;
  if (auto e = ctx.admin_list("topics", list)) return *e;
  if (ctx.json) return ctx.print_json(list);
  ubroker::ctl::Table t({"TOPIC", "PUBLISHERS", "SUBSCRIBERS", "MESSAGES", "BYTES", "RATE/S", "RETAINED", "LANES",
                         "REQUESTS", "ERRORS", "TIMEOUTS", "LATENCY MEAN/MAX"});
  for (const auto& s : list.topics()) {
    char rate[32];
    std::snprintf(rate, sizeof rate, "%.1f", s.rate());
    const bool requested = s.requests() != 0;
    t.add({s.topic(), std::to_string(s.publishers()), std::to_string(s.subscribers()), std::to_string(s.messages()),
           std::to_string(s.bytes()), rate, s.retained() ? "yes" : "no", std::to_string(s.lanes()),
           std::to_string(s.requests()),
           std::to_string(s.errors()), std::to_string(s.timeouts()),
           requested ? latency(s.latency_mean_us(), s.latency_max_us()) : "-"});
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

int cmd_lanes(Context& ctx) {
  ubroker::wire::LaneList list;
  if (auto e = ctx.admin_list("lanes", list)) return *e;
  if (ctx.json) return ctx.print_json(list);
  ubroker::ctl::Table t({"LANE", "PUBLISHER", "SUBSCRIBER", "STATE", "AGE", "CAPACITY", "MSGS IN", "DELIVERED",
                         "DROPPED", "QUEUED", "TOPICS"});
  auto end = [](std::uint64_t id, const std::string& name) {
    return name.empty() ? std::to_string(id) : std::to_string(id) + " " + name;
  };
  for (const auto& l : list.lanes()) {
    std::string topics;
    for (const auto& topic : l.topics()) topics += (topics.empty() ? "" : " ") + topic;
    if (l.topics_total() > static_cast<std::uint32_t>(l.topics_size())) {
      topics += fmt::format(" (+{} more)", l.topics_total() - static_cast<std::uint32_t>(l.topics_size()));
    }
    t.add({std::to_string(l.id()), end(l.publisher_id(), l.publisher_name()),
           end(l.subscriber_id(), l.subscriber_name()), l.state(), human_duration(l.age_ms()),
           std::to_string(l.capacity()), std::to_string(l.accepted()), std::to_string(l.delivered()),
           std::to_string(l.dropped()), std::to_string(l.queued()), topics.empty() ? "-" : topics});
  }
  t.print(stdout);
  return kOk;
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

}  // namespace ubroker::ctl
