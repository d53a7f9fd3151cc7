// brokerctl: see and operate a live ubroker broker. An ordinary client of the broker's
// $sys.admin.* services plus a shell front end for publish, subscribe, request and serve.
// Exit codes: 0 success, 1 an error reported by the broker, 2 usage, 3 no broker reachable,
// 130 interrupted (Ctrl-C) before anything was sent. This file parses the command line; each
// command lives in commands.hpp's files.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ubroker/proto/socket_address.hpp"

namespace {

using namespace ubroker::ctl;

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
      "Exit codes: 0 success, 1 error reported by the broker (a refused publish or request included) or reading input,\n2 usage, "
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
  auto* lanes = app.add_subcommand("lanes", "Direct lanes: publisher, subscriber, state, topics, messages in and out");
  json_flag(lanes);

  std::string pattern = ">", topic;
  std::optional<std::string> data, exec;
  bool lines = false, retain = false;
  std::uint64_t count = 0, kick_id = 0;
  int timeout_ms = 5000;
  std::string reason;
  auto* monitor = app.add_subcommand(
      "monitor", "Live tap of matching traffic, requests, replies and errors (never slows publishers)");
  monitor->add_option("pattern", pattern, "Topic pattern (default: >)");
  bool monitor_json = false;
  monitor->add_flag("--json", monitor_json,
                    "One JSON object per line: time_ms, kind (message, request, reply, error, event), topic, sender, "
                    "payload, headers, and request_id, latency_us, error... for request/reply");
  auto* pub = app.add_subcommand("pub", "Publish DATA, or standard input (one message, or one per line)");
  pub->add_option("topic", topic, "Topic")->required();
  pub->add_option("data", data, "Message; absent: read standard input");
  pub->add_flag("--lines", lines, "Each line of standard input is one message");
  pub->add_flag("--retain", retain, "Keep as the topic's retained value");
  auto header_option = [&](CLI::App* cmd) {
    cmd->add_option("-H,--header", ctx.header_args, "A header KEY=VALUE sent with the message (repeatable)")
        ->check([](const std::string& v) {
          return v.find('=') == std::string::npos || v.front() == '=' ? std::string("expected KEY=VALUE") : std::string();
        });
  };
  header_option(pub);
  auto* sub = app.add_subcommand(
      "sub", "Print each matching message: \"topic: payload\" on a terminal, the payload alone in a pipeline");
  sub->add_option("pattern", pattern, "Topic pattern")->required();
  sub->add_option("--count", count, "Exit after this many messages");
  bool raw = false, sub_json = false;
  std::string group;
  sub->add_flag("--raw", raw, "The payload alone, one per line (the default when standard output is not a terminal)");
  sub->add_flag("--json", sub_json,
                "One JSON object per line: topic, payload, sender (client_id, uid, pid), subscription, retained, time_ms, "
                "headers (when there are any: each key's values in a list)");
  sub->add_option("--group", group, "Join this queue group: each message goes to one of its members");
  auto* req = app.add_subcommand(
      "req", "Send a request and print the reply (its headers on standard error); an error reply exits 1");
  req->add_option("topic", topic, "Topic")->required();
  req->add_option("data", data, "Request body; absent: read standard input");
  header_option(req);
  req->add_option("--timeout", timeout_ms, "How long to wait: 500ms, 2s, 1m (a bare number is milliseconds; default 5s)")
      ->transform(CLI::AsNumberWithUnit(std::map<std::string, int>{{"ms", 1}, {"s", 1000}, {"m", 60000}},
                                        CLI::AsNumberWithUnit::CASE_SENSITIVE));
  auto* serve = app.add_subcommand(
      "serve", "Answer requests: echo them, or reply with CMD's output (CMD gets the request on stdin)");
  serve->add_option("topic", topic, "Topic pattern")->required();
  serve->add_option("--exec", exec,
                    "Shell command run per request: the request on its stdin; UBROKER_TOPIC, UBROKER_SENDER_UID, "
                    "UBROKER_SENDER_PID, UBROKER_SENDER_ID and UBROKER_HEADER_<KEY> in its environment; its stdout "
                    "is the reply; a non-zero exit answers with an error reply (its stderr, its exit status)");
  unsigned concurrency = 1;
  serve->add_option("--concurrency", concurrency, "Requests answered at once (default 1)")->check(CLI::Range(1u, 1024u));
  auto* kick = app.add_subcommand("kick", "Disconnect a client, telling it why");
  kick->add_option("client", kick_id, "Client id (see `brokerctl clients`)")->required();
  kick->add_option("--reason", reason, "Reason the client is told");
  auto* reload = app.add_subcommand("reload", "Reload the broker's configuration (like SIGHUP)");
  auto* metrics = app.add_subcommand(
      "metrics", "Every counter and gauge in the Prometheus text format (ubroker_*), for a textfile collector");
  auto* top = app.add_subcommand(
      "top", "Live view of the broker, its busiest clients and topics, refreshed (q quits, s changes the order)");
  int top_interval_ms = 1000;
  std::uint64_t top_count = 0;
  top->add_option("--interval", top_interval_ms, "Time between refreshes: 500ms, 2s (default 1s)")
      ->transform(CLI::AsNumberWithUnit(std::map<std::string, int>{{"ms", 1}, {"s", 1000}, {"m", 60000}},
                                        CLI::AsNumberWithUnit::CASE_SENSITIVE))
      ->check(CLI::Range(100, 3600000));
  top->add_option("--count", top_count, "Stop after this many refreshes (default: until q or Ctrl-C)");
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
  // Without SA_RESTART: a blocking call returns at Ctrl-C (standard input is read through
  // StdinInput, which cannot miss it), so nothing half-typed is sent. SIGPIPE is ignored: a closed standard output is seen as an error and ends `sub`.
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
  if (lanes->parsed()) return cmd_lanes(ctx);
  if (monitor->parsed()) return cmd_monitor(ctx, pattern, monitor_json);
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
  if (top->parsed()) return cmd_top(ctx, std::chrono::milliseconds(top_interval_ms), top_count);
  return kUsage;
}
