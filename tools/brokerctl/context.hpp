// What every brokerctl command shares: exit codes, the interrupt flag, and the Context that
// holds the connection to the broker, runs admin requests and prints JSON.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "json.hpp"
#include "ubroker.pb.h"
#include "ubroker/client.hpp"

namespace ubroker::ctl {

enum Exit { kOk = 0, kBrokerError = 1, kUsage = 2, kUnreachable = 3, kInterrupted = 130 };

// Set by SIGINT and SIGTERM (installed without SA_RESTART: blocking reads return).
extern std::atomic<bool> g_interrupted;

// Whoever read our standard output has gone (`sub t | head -n1`).
bool stdout_gone();

// Prints the error and returns its exit code.
int fail(const ubroker::Error& e);

struct Context {
  std::string socket;
  bool json = false;
  std::optional<Client> client;
  std::atomic<bool> closed{false};  // the connection is gone for good (kicked, or not reconnecting)
  std::mutex errors_mu;
  std::vector<ubroker::Error> errors;  // reported by the broker with no caller (on_error)
  std::vector<std::string> header_args;  // -H KEY=VALUE, as given

  // header_args as fields (views into header_args).
  [[nodiscard]] std::vector<ubroker::HeaderField> headers() const;

  // Connects; on failure prints why and returns the exit code.
  // `follow`: a long-running command (sub, monitor, serve) comes back after a broker restart,
  // saying so on standard error; one-shot commands do not reconnect.
  std::optional<int> connect(const std::string& name = "brokerctl", bool follow = false);
  // The first error the broker reported without a caller (a refused publish), if any.
  std::optional<ubroker::Error> first_error();
  // The next message for a command that runs until stopped (sub, monitor), waiting through
  // quiet spells and reconnects; nullopt when it is time to end, with the exit code in `exit`
  // (0 when interrupted or when standard output was closed).
  std::optional<ubroker::Message> next_message(int& exit);

  // Runs an admin request and parses its answer into `out`.
  template <class Msg>
  std::optional<int> admin(const std::string& service, Msg& out, std::span<const std::byte> payload = {}) {
    if (!client) {  // one connection for every request of the command
      if (auto e = connect()) return e;
    }
    auto r = client->request("$sys.admin." + service, payload, std::chrono::seconds(5));
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

}  // namespace ubroker::ctl
