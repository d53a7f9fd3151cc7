// brokerd: parse the command line and config, set up logging, take the socket systemd may
// pass, run the broker. Exit status: 0 after a clean stop, 1 when it cannot start or run
// (e.g. the socket cannot be bound), 2 for a bad command line, config file or inherited fd.
#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>

#include <sys/resource.h>
#include <CLI/CLI.hpp>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "broker.hpp"
#include "config.hpp"
#include "logging.hpp"
#include "systemd.hpp"
#include "ubroker/proto/socket_address.hpp"

namespace {

// Every client costs the broker one fd: take the soft RLIMIT_NOFILE up to the hard limit,
// and say so when even that cannot hold max_connections.
void raise_fd_limit(std::uint32_t max_connections) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    spdlog::warn("getrlimit(RLIMIT_NOFILE): {}", std::strerror(errno));
    return;
  }
  if (rl.rlim_cur < rl.rlim_max) {
    const rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      spdlog::warn("setrlimit(RLIMIT_NOFILE, {}): {}", rl.rlim_max, std::strerror(errno));
      rl.rlim_cur = old;
    }
  }
  constexpr rlim_t kReserve = 64;  // listener, logs, epoll, signals
  if (rl.rlim_cur < max_connections + kReserve) {
    spdlog::warn("RLIMIT_NOFILE is {}: fewer than limits.max_connections ({}) clients will fit", rl.rlim_cur,
                 max_connections);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using ubroker::broker::Config;
  CLI::App app{
      "brokerd: the ubroker message broker for the processes of one machine.\n"
      "Clients connect over a Unix domain socket. Under systemd socket activation it serves the socket\n"
      "systemd passes (ubroker.socket) and reports readiness with sd_notify. Exit status: 0 after a clean\n"
      "stop, 1 if it cannot start or run, 2 for a bad command line, config file or inherited socket.\n"
      "See brokerd(8) and ubroker.toml(5)."};
  app.set_version_flag("--version", std::string("brokerd ") + UBROKER_VERSION);
  std::string socket, config_file, log_level;
  bool check_config = false;
  app.add_option("-s,--socket", socket,
                 "Socket path, or @name for an abstract socket "
                 "(default: $UBROKER_SOCKET, else $XDG_RUNTIME_DIR/ubroker.sock, else /run/ubroker/ubroker.sock; "
                 "ignored when systemd passes the socket)");
  app.add_option("-c,--config", config_file, "TOML config file (every setting has a default; see ubroker.toml(5))");
  app.add_option("-l,--log-level", log_level, "trace, debug, info, warn, error, critical or off (default: info)");
  app.add_flag("--check-config", check_config,
               "Parse and validate the config (and the other options), print what is wrong with its line number, "
               "exit 0 if valid or 2 if not; starts nothing");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, the version, or what is wrong
    return code == 0 ? 0 : 2;
  }

  Config config;
  if (!config_file.empty()) {
    if (auto r = ubroker::broker::load_config_file(config_file, config); !r) {
      std::fprintf(stderr, "brokerd: %s\n", r.error().c_str());
      return 2;
    }
  }
  if (!socket.empty()) config.socket_path = socket;
  if (config.socket_path.empty()) config.socket_path = ubroker::proto::default_socket_path();
  if (!log_level.empty()) config.log_level = log_level;
  if (auto r = ubroker::broker::validate(config); !r) {
    std::fprintf(stderr, "brokerd: %s\n", r.error().c_str());
    return 2;
  }
  if (check_config) {
    std::printf("brokerd: %s is valid\n", config_file.empty() ? "the default configuration" : config_file.c_str());
    return 0;
  }

  ubroker::broker::setup_logging(config.log_level);
  // protobuf logs every string field with invalid UTF-8 it refuses to parse: a client could
  // fill the log with one frame after another. The frame is refused (PROTOCOL_ERROR, logged
  // and counted by the broker); protobuf's own words go to the debug log only.
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string& message) {
    spdlog::debug("protobuf: {}", message);
  });
  // Writes use MSG_NOSIGNAL; this also covers anything else that might raise SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);

  auto inherited = ubroker::broker::take_inherited_listener();
  if (!inherited) {
    spdlog::error("{}", inherited.error());
    return 2;
  }
  raise_fd_limit(config.limits.max_connections);

  ubroker::broker::Broker broker(std::move(config));
  return broker.run(std::move(*inherited));
}
