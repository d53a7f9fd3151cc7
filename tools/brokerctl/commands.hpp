// brokerctl's commands, one function each; main.cpp parses the line and calls one.
// Each returns the process's exit code (context.hpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "context.hpp"

namespace ubroker::ctl {

int cmd_status(Context& ctx);
int cmd_metrics(Context& ctx);
int cmd_rtt(Context& ctx, std::uint64_t count);
int cmd_clients(Context& ctx);
int cmd_subs(Context& ctx);
int cmd_topics(Context& ctx);
int cmd_shm(Context& ctx);
int cmd_lanes(Context& ctx);
int cmd_kick(Context& ctx, std::uint64_t id, const std::string& reason);
int cmd_reload(Context& ctx);

int cmd_pub(Context& ctx, const std::string& topic, const std::optional<std::string>& data, bool lines, bool retain);
// How `sub` prints a message.
enum class SubOutput { kRaw, kTopic, kJson };
int cmd_sub(Context& ctx, const std::string& pattern, std::uint64_t count, SubOutput output, const std::string& group);
int cmd_req(Context& ctx, const std::string& topic, const std::optional<std::string>& data, int timeout_ms);
int cmd_serve(Context& ctx, const std::string& topic, const std::optional<std::string>& exec, unsigned concurrency);
int cmd_monitor(Context& ctx, const std::string& pattern, bool json);
// `count` refreshes (0: until q or Ctrl-C), `interval` apart.
int cmd_top(Context& ctx, std::chrono::milliseconds interval, std::uint64_t count);

}  // namespace ubroker::ctl
