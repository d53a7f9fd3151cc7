// Running the real brokerctl from tests: directly, or in a shell pipeline.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "broker_process.hpp"
#include "process.hpp"

namespace ubroker::test {

struct Run {
  int code;
  std::string out, err;
};

// Runs brokerctl against `b` to completion.
inline Run brokerctl(const BrokerProcess& b, std::vector<std::string> args, const std::string& stdin_path = "/dev/null") {
  args.insert(args.begin(), {UBROKER_BROKERCTL, "--socket", b.socket()});
  Process p = Process::spawn(args, {}, stdin_path);
  auto st = p.wait(std::chrono::seconds(30));
  EXPECT_TRUE(st.has_value()) << "brokerctl did not finish";
  return {st ? exit_code(*st) : -1, p.out(), p.err()};
}

// Runs a shell pipeline (brokerctl is "$BROKERCTL", the socket "$SOCK"); returns its exit
// status and output.
inline Run shell(const BrokerProcess& b, const std::string& script) {
  Process p = Process::spawn({"/bin/sh", "-c", script},
                             {std::string("BROKERCTL=") + UBROKER_BROKERCTL, "SOCK=" + b.socket()});
  auto st = p.wait(std::chrono::seconds(30));
  EXPECT_TRUE(st.has_value()) << "the pipeline did not finish: " << script;
  return {st ? exit_code(*st) : -1, p.out(), p.err()};
}

}  // namespace ubroker::test
