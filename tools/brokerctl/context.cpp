// Context: connecting as brokerctl does (context.hpp).
#include "context.hpp"

#include <poll.h>
#include <unistd.h>

namespace ubroker::ctl {

std::atomic<bool> g_interrupted{false};

// Whoever read our standard output has gone (`sub t | head -n1`): a pipe's write end reports
// POLLERR once its reader closed, before anything is written to it. A syscall: asked while
// idle; after a write, ferror(stdout) tells the same for free.
bool stdout_gone() {
  pollfd p{.fd = STDOUT_FILENO, .events = POLLOUT, .revents = 0};
  return std::ferror(stdout) != 0 || (::poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP)) != 0);
}

int fail(const ubroker::Error& e) {
  if (e.code == ubroker::Errc::kServiceError) {
    std::fprintf(stderr, "brokerctl: the service answered with an error (code %u): %s\n", e.service_code,
                 e.message.c_str());
    return kBrokerError;
  }
  std::fprintf(stderr, "brokerctl: %s\n", e.message.c_str());
  return e.code == ubroker::Errc::kConnectFailed ? kUnreachable : kBrokerError;
}

std::optional<int> Context::connect(const std::string& name, bool follow) {
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

std::vector<ubroker::HeaderField> Context::headers() const {
  std::vector<ubroker::HeaderField> fields;
  for (const std::string& arg : header_args) {
    const std::size_t eq = arg.find('=');  // checked when parsed
    const std::string_view a(arg);
    fields.push_back({a.substr(0, eq), a.substr(eq + 1)});
  }
  return fields;
}

std::optional<ubroker::Message> Context::next_message(int& exit) {
  for (;;) {
    if (g_interrupted || std::ferror(stdout)) {  // Ctrl-C, or `| head` has what it wanted
      exit = kOk;
      return std::nullopt;
    }
    auto m = client->receive(std::chrono::milliseconds(200));
    if (m) return std::move(*m);
    if (m.error().code == ubroker::Errc::kTimeout) {
      // While idle, poll whether the reader went away (after a write, ferror says it).
      if (!stdout_gone()) continue;
      exit = kOk;
      return std::nullopt;
    }
    if (m.error().code == ubroker::Errc::kNotConnected && !closed) continue;  // reconnecting
    exit = fail(client->disconnect_reason().value_or(m.error()));
    return std::nullopt;
  }
}

std::optional<ubroker::Error> Context::first_error() {
  std::lock_guard lk(errors_mu);
  if (errors.empty()) return std::nullopt;
  return errors.front();
}

}  // namespace ubroker::ctl
