// brokerctl's traffic: pub, sub and req.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.hpp"
#include "stdin_input.hpp"
#include "text.hpp"

namespace ubroker::ctl {

using namespace std::chrono_literals;

// What reading standard input ended with, as an exit code; nullopt when it was read to its end.
std::optional<int> input_failed(StdinInput::Got got) {
  if (got == StdinInput::Got::kEnd) return std::nullopt;
  if (got == StdinInput::Got::kInterrupted) return kInterrupted;
  std::fprintf(stderr, "brokerctl: cannot read standard input: %s\n", std::strerror(errno));
  return kBrokerError;
}

int cmd_pub(Context& ctx, const std::string& topic, const std::optional<std::string>& data, bool lines, bool retain) {
  if (auto e = ctx.connect("brokerctl-pub")) return *e;
  const auto headers = ctx.headers();
  auto publish = [&](std::string_view text) -> std::optional<int> {
    if (auto r = ctx.client->publish(topic, text, {.retain = retain, .headers = headers}); !r) return fail(r.error());
    return std::nullopt;
  };
  if (data) {
    if (auto e = publish(*data)) return *e;
  } else if (lines) {
    StdinInput in;
    std::string pending;
    for (;;) {
      const StdinInput::Got got = in.read_some(pending);
      std::size_t start = 0;
      for (std::size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
        if (auto e = publish(std::string_view(pending).substr(start, nl - start))) return *e;
      }
      pending.erase(0, start);
      if (got == StdinInput::Got::kData) continue;
      if (auto e = input_failed(got)) return *e;
      if (!pending.empty()) {  // a last line without its newline
        if (auto e = publish(pending)) return *e;
      }
      break;
    }
  } else {
    std::string body;
    // Ctrl-C while typing sends nothing; so does Ctrl-D on an empty terminal (an empty
    // retained publish would clear the topic's value: that takes an explicit DATA of "").
    if (auto e = input_failed(StdinInput().read_to_end(body))) return *e;
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

// Prints each message until COUNT messages, an interrupt, or a closed standard output.
int cmd_sub(Context& ctx, const std::string& pattern, std::uint64_t count, SubOutput output,
            const std::string& group) {
  if (auto e = ctx.connect("brokerctl-sub", true)) return *e;
  auto sub = ctx.client->subscribe(pattern, {.group = group});
  if (!sub) return fail(sub.error());
  for (std::uint64_t n = 0; count == 0 || n < count;) {
    int exit = kOk;
    auto m = ctx.next_message(exit);
    if (!m) return exit;
    const std::string_view payload(reinterpret_cast<const char*>(m->payload().data()), m->payload().size());
    if (output == SubOutput::kJson) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
      // The payload as text when it is valid UTF-8, else exactly, in base64.
      const bool text = ubroker::ctl::valid_utf8(payload);
      std::printf("{\"topic\":%s,\"%s\":%s,\"sender\":{\"client_id\":%llu,\"uid\":%u,\"pid\":%u},"
                  "\"subscription\":%llu,\"retained\":%s,\"time_ms\":%lld%s}\n",
                  ubroker::ctl::json_string(m->topic()).c_str(), text ? "payload" : "payload_base64",
                  (text ? ubroker::ctl::json_string(payload) : fmt::format("\"{}\"", ubroker::ctl::base64(payload))).c_str(),
                  static_cast<unsigned long long>(m->sender().client_id), m->sender().uid, m->sender().pid,
                  static_cast<unsigned long long>(m->subscription()), m->retained() ? "true" : "false",
                  static_cast<long long>(ms),
                  m->headers().empty() ? "" : (",\"headers\":" + json_headers(m->headers())).c_str());
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

int cmd_req(Context& ctx, const std::string& topic, const std::optional<std::string>& data, int timeout_ms) {
  if (auto e = ctx.connect("brokerctl-req")) return *e;
  std::string body;
  if (data) {
    body = *data;
  } else if (auto e = input_failed(StdinInput().read_to_end(body))) {
    return *e;
  }
  const auto headers = ctx.headers();
  auto r = ctx.client->request(topic, body,
                               ubroker::RequestOptions{.timeout = std::chrono::milliseconds(timeout_ms), .headers = headers});
  if (!r) return fail(r.error());
  // The reply's headers go to standard error, so standard output is the payload alone.
  for (const ubroker::HeaderField& h : r->headers()) {
    std::fprintf(stderr, "%.*s: %.*s\n", static_cast<int>(h.key.size()), h.key.data(), static_cast<int>(h.value.size()),
                 h.value.data());
  }
  std::fwrite(r->payload().data(), 1, r->payload().size(), stdout);
  if (r->payload().empty() || std::to_integer<char>(r->payload().back()) != '\n') std::fputc('\n', stdout);
  return kOk;
}

}  // namespace ubroker::ctl
