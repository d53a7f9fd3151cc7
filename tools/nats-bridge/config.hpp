// ubroker-nats-bridge's configuration: a TOML file, every key checked against the schema so a
// typo is an error naming the key and its line, never a setting silently ignored.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <string>
#include <vector>

namespace ubroker::bridge {

struct NatsConfig {
  std::vector<std::string> servers;  // a cluster: the client fails over between them
  std::string user, password, token;
  std::string credentials;  // a .creds file (JWT and NKey seed)
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key;
  std::chrono::milliseconds reconnect_wait{250};
  std::chrono::milliseconds connect_timeout{2000};
  // Exported messages kept while no NATS server is reachable; beyond this they are dropped
  // and counted.
  std::int64_t buffer_bytes = 8 << 20;
};

struct BridgeConfig {
  std::string name;                 // this host's name, carried on what it exports
  std::string prefix;               // NATS subject = prefix + local topic
  std::vector<std::string> exports;          // local topic patterns published to NATS
  std::vector<std::string> imports;          // NATS subject patterns (without prefix) published locally
  std::vector<std::string> export_services;  // local responders answer requests from NATS
  std::vector<std::string> import_services;  // local requests answered behind NATS
  std::chrono::milliseconds request_timeout{5000};
  unsigned max_requests_in_flight = 64;      // local requests forwarded to NATS at once
  std::string metrics_topic;                 // default: bridge.<name>.metrics
};

struct Config {
  NatsConfig nats;
  BridgeConfig bridge;
};

// Reads and checks `path`; the error says which file, line and key.
std::expected<Config, std::string> load_config(const std::string& path);

}  // namespace ubroker::bridge
