// Clients of other identities for integration tests: the script peer (test_peer_script.cpp)
// started through setpriv as another uid, gid and supplementary groups, and helpers to read
// the one line per command it prints.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include "broker_process.hpp"
#include "process.hpp"

#include <gtest/gtest.h>

namespace ubroker::test {

// Tests that start clients as other uids need to be root (CI runs as root).
class OtherIdentitiesTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(::geteuid(), 0u) << "these tests start clients as other uids: run them as root"; }
};

struct Identity {
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups;  // supplementary
};

inline std::vector<std::string> as(const Identity& who, std::vector<std::string> argv) {
  // Strings built with append: GCC 12 warns (-Wrestrict) on "literal" + std::string at -O3.
  std::vector<std::string> full = {"/usr/bin/setpriv", std::string("--reuid=").append(std::to_string(who.uid)),
                                   std::string("--regid=").append(std::to_string(who.gid))};
  if (who.groups.empty()) {
    full.push_back("--clear-groups");
  } else {
    std::string list;
    for (gid_t g : who.groups) list.append(list.empty() ? "" : ",").append(std::to_string(g));
    full.push_back(std::string("--groups=").append(list));
  }
  full.insert(full.end(), argv.begin(), argv.end());
  return full;
}

// Starts the script peer as `who` with `commands` on its stdin.
inline Process start_script(const BrokerProcess& b, const Identity& who, const std::string& commands,
                     const std::vector<std::string>& env = {}) {
  static int n = 0;  // one test process, one thread
  const std::string path = std::string(b.dir()).append("/script-").append(std::to_string(++n));
  std::ofstream(path) << commands;
  return Process::spawn(as(who, {UBROKER_TEST_PEER, "script", b.socket()}), env, path);
}

// Runs a script to its end and returns what it printed.
inline std::string run_script(const BrokerProcess& b, const Identity& who, const std::string& commands) {
  Process p = start_script(b, who, commands);
  const auto st = p.wait(std::chrono::seconds(30));
  EXPECT_TRUE(st.has_value()) << "the script peer did not finish: " << p.out() << p.err();
  return p.out();
}

// A broker other uids can reach: the socket is 0666 in a 0755 directory.
inline std::string reachable(const std::string& extra_toml) {
  return std::string("socket_mode = \"0666\"\n").append(extra_toml);
}
inline void open_dir(const BrokerProcess& b) {
  ASSERT_EQ(::chmod(b.dir().c_str(), 0755), 0);
}

inline bool has_line(const std::string& out, const std::string& line) {
  return std::string("\n").append(out).find(std::string("\n").append(line).append("\n")) != std::string::npos;
}

// "COMMAND: CODE" prefixes: the message after the code is checked where it matters.
inline bool has_outcome(const std::string& out, const std::string& prefix) {
  return std::string("\n").append(out).find(std::string("\n").append(prefix)) != std::string::npos;
}

}  // namespace ubroker::test
