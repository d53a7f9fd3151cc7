// The NATS bridge's parts that need no servers: its configuration's checks (each mistake named
// with its line) and the loss counting between two bridges.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "config.hpp"
#include "sequence_tracker.hpp"

namespace ubroker::bridge {
namespace {

class ConfigFile : public ::testing::Test {
 protected:
  std::expected<Config, std::string> load(const std::string& text) {
    std::ofstream(path_) << text;
    return load_config(path_);
  }
  void TearDown() override { ::unlink(path_.c_str()); }
  std::string path_ = ::testing::TempDir() + "bridge-" + std::to_string(::getpid()) + ".toml";
};

constexpr const char* kGood = R"([nats]
servers = ["nats://127.0.0.1:4222", "tls://10.0.0.2:4222"]
buffer_bytes = 1024
[bridge]
name = "host-a"
prefix = "site1."
export = ["sensors.>"]
import = ["commands.*"]
export_services = ["math.>"]
import_services = ["remote.>"]
request_timeout_ms = 250
)";

TEST_F(ConfigFile, AGoodOneIsReadWithItsDefaults) {
  auto c = load(kGood);
  ASSERT_TRUE(c.has_value()) << c.error();
  EXPECT_EQ(c->nats.servers.size(), 2u);
  EXPECT_EQ(c->nats.buffer_bytes, 1024);
  EXPECT_EQ(c->bridge.name, "host-a");
  EXPECT_EQ(c->bridge.prefix, "site1.");
  EXPECT_EQ(c->bridge.imports, std::vector<std::string>{"commands.*"});
  EXPECT_EQ(c->bridge.request_timeout.count(), 250);
  EXPECT_EQ(c->bridge.max_requests_in_flight, 64u);
  EXPECT_EQ(c->bridge.metrics_topic, "bridge.host-a.metrics");
}

TEST_F(ConfigFile, EachMistakeIsNamedWithItsLine) {
  struct Case {
    std::string text;
    std::string says;
  };
  const Case cases[] = {
      {"[nats]\nservers = [\"nats://x:1\"]\n[bridge]\nname = \"a\"\nexprot = [\"x\"]\n", "line 5: unknown key 'bridge.exprot'"},
      {"[nats]\nservers = [\"http://x:1\"]\n", "line 2: 'servers' has 'http://x:1': a server URL starts with nats:// or tls://"},
      {"[nats]\nservers = [\"nats://x:1\"]\n[bridge]\nname = \"a b\"\nexport = [\"x\"]\n", "line 4: 'name': letters, digits"},
      {"[nats]\nservers = [\"nats://x:1\"]\n[bridge]\nname = \"a\"\nexport = [\"$sys.>\"]\n", "are the broker's own"},
      {"[nats]\nservers = [\"nats://x:1\"]\n[bridge]\nname = \"a\"\nimport = [\"a..b\"]\n", "line 5: 'import' has 'a..b'"},
      {"[nats]\nservers = [\"nats://x:1\"]\n[bridge]\nname = \"a\"\nprefix = \"site\"\nexport = [\"x\"]\n", "a prefix ends with '.'"},
      {"[nats]\nservers = [\"nats://x:1\"]\nbuffer_bytes = -1\n[bridge]\nname = \"a\"\nexport = [\"x\"]\n", "line 3: 'buffer_bytes' = -1 is out of range"},
      {"[nats]\nservers = []\n[bridge]\nname = \"a\"\nexport = [\"x\"]\n", "at least one server"},
      {"[nats]\nservers = [\"nats://x:1\"]\n[bridge]\nexport = [\"x\"]\n", "this host's name is needed"},
      {"[nats]\nservers = [\"nats://x:1\"]\n[bridge]\nname = \"a\"\n", "nothing to bridge"},
      {"[nats]\nservers = [\"nats://x:1\"]\n[bridge]\nname = \"a\"\nexport = \"x\"\n", "line 5: 'export' must be a list of strings"},
      {"[natz]\n", "line 1: unknown section 'natz'"},
      {"[nats]\nservers = [\"nats://x:1\"]\n[bridge]\nname = \"a\"\nexport = [\">\"]\n", "line 5: 'export' has '>': a pattern starting with a wildcard"},
      {"[nats]\nservers = [\"nats://x:1\"]\nbuffer_bytes = 0\n[bridge]\nname = \"a\"\nexport = [\"x\"]\n", "line 3: 'buffer_bytes' = 0 is out of range"},
      {"[nats]\nservers = [\"nats://x:1\"]\npassword = \"p\"\n[bridge]\nname = \"a\"\nexport = [\"x\"]\n", "password needs a user"},
      {"[nats]\nservers = [\"nats://x:1\"]\ntls_cert = \"c.pem\"\n[bridge]\nname = \"a\"\nexport = [\"x\"]\n", "tls_cert and tls_key go together"},
      {"[nats]\nservers = [\"nats://x:1\"]\n[bridge]\nname = \"a\"\nexport_services = [\"m.*\"]\nimport_services = [\"m.>\"]\n",
       "export_services 'm.*' overlaps import_services 'm.>'"},
      {"[nats]\nservers = [\"nats://x:1\"]\n[bridge]\nname = \"a\"\nimport = [\"q.a.*\"]\nexport_services = [\"q.*.b\"]\n",
       "import 'q.a.*' overlaps export_services 'q.*.b'"},
      {"[nats\n", "line 1:"},
  };
  for (const Case& c : cases) {
    auto r = load(c.text);
    ASSERT_FALSE(r.has_value()) << c.text;
    EXPECT_NE(r.error().find(c.says), std::string::npos) << "config:\n" << c.text << "said: " << r.error();
    EXPECT_EQ(r.error().rfind(path_, 0), 0u) << "the error names the file: " << r.error();
  }
}

TEST_F(ConfigFile, PatternsThatCannotMeetAreAcceptedAndTlsFilesTurnTlsOn) {
  auto c = load("[nats]\nservers = [\"nats://x:1\"]\ntls_ca = \"ca.pem\"\n[bridge]\nname = \"a\"\n"
                "export_services = [\"m.a.*\", \"n.>\"]\nimport_services = [\"m.b.*\", \"m.a\", \"o.>\"]\n");
  ASSERT_TRUE(c.has_value()) << c.error();
  EXPECT_TRUE(c->nats.tls);
}

TEST(LossCounting, GapsInAnExportersNumbersAreCountedOncePerSubjectAndOrigin) {
  SequenceNumbers out;
  GapCounter in;
  std::uint64_t lost = 0;
  for (int i = 0; i < 10; ++i) {
    const auto s = out.next("a");
    out.commit("a", s);
    if (i == 3 || i == 4) continue;  // lost between the bridges
    lost += in.saw("host-a", "a", s.epoch, s.seq);
  }
  EXPECT_EQ(lost, 2u);
  // Another subject and another origin number on their own.
  const auto b = out.next("b");
  EXPECT_EQ(b.seq, 1u);
  EXPECT_EQ(in.saw("host-b", "a", 7, 5), 0u);  // the first seen from host-b
  EXPECT_EQ(in.saw("host-b", "a", 7, 6), 0u);
  // A number not committed (the send failed) is used again: no false gap.
  const auto unsent = out.next("a");
  const auto again = out.next("a");
  EXPECT_EQ(unsent.seq, again.seq);
}

TEST(LossCounting, ANewEpochStartsOverInsteadOfCountingAGap) {
  SequenceNumbers out(2);  // two subjects at most: a third starts a new epoch
  GapCounter in;
  auto a = out.next("a");
  out.commit("a", a);
  EXPECT_EQ(in.saw("h", "a", a.epoch, a.seq), 0u);
  auto b = out.next("b");
  out.commit("b", b);
  auto c = out.next("c");
  out.commit("c", c);  // past the bound: forgets, new epoch
  auto a2 = out.next("a");
  EXPECT_NE(a2.epoch, a.epoch);
  EXPECT_EQ(a2.seq, 1u);
  out.commit("a", a2);
  EXPECT_EQ(in.saw("h", "a", a2.epoch, a2.seq), 0u);  // a restart, not 0 lost and not a jump back
}

}  // namespace
}  // namespace ubroker::bridge
