// ubroker-nats-bridge: joins the local broker to a NATS cluster (bridge.hpp says how).
//   ubroker-nats-bridge --socket PATH --config FILE
// Runs until SIGINT or SIGTERM. Exit status: 0 stopped by a signal, 1 it could not start
// (configuration, NATS options, local subscriptions) or a connection closed for good (the local
// broker kicked or refused it, NATS refused it), 2 usage.
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "bridge.hpp"
#include "config.hpp"
#include "ubroker/proto/socket_address.hpp"

namespace {

using namespace ubroker;

// Waits up to `timeout` for SIGINT or SIGTERM (blocked in every thread); true if one came.
bool signalled(const sigset_t& set, std::chrono::milliseconds timeout) {
  const timespec ts{.tv_sec = timeout.count() / 1000, .tv_nsec = (timeout.count() % 1000) * 1000000};
  const int sig = ::sigtimedwait(&set, nullptr, &ts);
  return sig == SIGINT || sig == SIGTERM;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ubroker-nats-bridge: joins the local ubroker broker to a NATS cluster. Local topics matching "
               "'export' are published to NATS, NATS subjects matching 'import' are published locally, and "
               "requests cross both ways for 'export_services' and 'import_services'; each message crosses once "
               "and never loops. See ubroker-nats-bridge(1)."};
  std::string socket = proto::default_socket_path();
  std::string config_path;
  std::string level = "info";
  app.add_option("-s,--socket", socket, "The local broker's socket (default: $UBROKER_SOCKET, else " + socket + ")");
  app.add_option("-c,--config", config_path, "The bridge's TOML configuration")->required();
  app.add_option("--log-level", level, "trace, debug, info, warn or error (default info)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("ubroker-nats-bridge"));  // stdout stays the data's
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  auto config = bridge::load_config(config_path);
  if (!config) {
    spdlog::error("{}", config.error());
    return 1;
  }
  // Signals are taken by sigtimedwait here, never delivered to a library thread.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  // The local broker may not be up yet: dial until it is (each failure logged once per kind).
  ConnectOptions options;
  options.address = socket;
  options.name = "ubroker-nats-bridge:" + config->bridge.name;
  options.offline_buffer_bytes = 8 << 20;  // imports while the local broker restarts
  options.coalesce_writes = true;  // imports arrive in bursts: a few writes, not one per message
  std::atomic<bool> local_closed{false};  // the local client gave up for good (kicked, refused)
  options.on_connection = [&local_closed](const ConnectionChange& c) {
    switch (c.event) {
      case ConnectionEvent::kConnected: break;
      case ConnectionEvent::kDisconnected:
        spdlog::warn("local broker: connection lost ({}); reconnecting", c.reason ? c.reason->message : "");
        break;
      case ConnectionEvent::kReconnected: spdlog::info("local broker: reconnected after {} dial(s)", c.attempts); break;
      case ConnectionEvent::kClosed:
        spdlog::error("local broker: connection closed for good ({})", c.reason ? c.reason->message : "");
        local_closed = true;
        break;
    }
  };
  options.on_error = [](const Error& e) { spdlog::warn("local broker: {}", e.message); };
  std::optional<Client> local;
  std::string last_error;
  for (;;) {
    auto c = Client::connect(options);
    if (c) {
      local.emplace(std::move(*c));
      break;
    }
    if (c.error().message != last_error) {
      last_error = c.error().message;
      spdlog::warn("local broker at {}: {}; retrying", socket, last_error);
    }
    if (signalled(set, std::chrono::milliseconds(500))) return 0;
  }
  spdlog::info("local broker: connected to {} as client {}", socket, local->id());

  int status = 0;
  {
    bridge::Bridge b(std::move(*config));
    if (auto started = b.start(std::move(*local)); !started) {
      spdlog::error("{}", started.error());
      status = 1;
    } else {
      b.tick();
      // A bridge that can no longer carry anything exits (status 1), so a supervisor sees it.
      while (!signalled(set, std::chrono::milliseconds(1000))) {
        b.tick();
        if (local_closed || b.nats_closed_for_good()) {
          spdlog::error("stopping: the {} connection is closed for good", local_closed ? "local broker" : "NATS");
          status = 1;
          break;
        }
      }
      spdlog::info("stopping");
    }
    b.stop();
    const bridge::Counters& c = b.counters();
    spdlog::info("exported {}, imported {}, export dropped {} (buffer full) {} (too large) {} (failed), import lost {}, "
                 "import failed {}, requests to NATS {}, from NATS {}",
                 c.exported.load(), c.imported.load(), c.export_dropped_buffer_full.load(),
                 c.export_refused_too_large.load(), c.export_failed.load(), c.import_lost.load(),
                 c.import_failed.load(), c.requests_to_nats.load(), c.requests_from_nats.load());
    nats_CloseAndWait(5000);  // every NATS thread gone before the bridge they call back is
  }
  return status;
}
