// The access policy against a real brokerd, with clients of real, different identities: the
// test runs as root and starts the script peer through setpriv as other uids, gids and
// supplementary groups. Each script prints one line per command, compared here.
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "broker_process.hpp"
#include "script_peer.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;

class Policy : public OtherIdentitiesTest {};

TEST_F(Policy, StrangersAreRefusedAtConnectByDefaultAndTheRefusalIsCounted) {
  BrokerProcess broker(reachable(""));
  open_dir(broker);
  const std::string out = run_script(broker, {4040, 4040, {}}, "connect\n");
  EXPECT_TRUE(has_outcome(out, "connect: PERMISSION_DENIED connection refused: uid 4040 (gid 4040) has no rights"))
      << out;
  Client root = broker.connect("root");
  const auto st = broker_status(root);
  EXPECT_EQ(st.errors_sent().at("PERMISSION_DENIED"), 1u);
  EXPECT_EQ(st.connections_refused(), 1u);
  EXPECT_EQ(st.policy(), "0 rule(s)");
  EXPECT_TRUE(eventually([&] { return broker.process().err().find("uid 4040") != std::string::npos; }, 5s))
      << broker.process().err();
}

TEST_F(Policy, QueueGroupsAreJoinedOnlyWhereTheJoinRightAllows) {
  // Joining a group takes a share of its members' messages: subscribe on the pattern is not
  // enough, the group's name needs a join grant.
  BrokerProcess broker(reachable(R"(
[[policy.allow]]
uids = [4040]
subscribe = ["jobs.>"]
join = ["workers.*"]
)"));
  open_dir(broker);
  const std::string out = run_script(broker, {4040, 4040, {}}, R"(connect
join jobs.> workers.eu
join jobs.> billing
join jobs.> a..b
subscribe jobs.>
)");
  EXPECT_TRUE(has_line(out, "join jobs.> workers.eu: ok")) << out;
  EXPECT_TRUE(has_outcome(out, "join jobs.> billing: PERMISSION_DENIED join queue group 'billing' denied to uid 4040"))
      << out;
  EXPECT_TRUE(has_outcome(out, "join jobs.> a..b: INVALID_PATTERN queue group name is not")) << out;
  EXPECT_TRUE(has_line(out, "subscribe jobs.>: ok")) << out;
}

TEST_F(Policy, EachRightIsAllowedOnItsPatternsAndDeniedElsewhere) {
  BrokerProcess broker(reachable(R"(
[[policy.allow]]
uids = [4040]
publish = ["orders.>"]
subscribe = ["orders.*", "$sys.client.>"]
request = ["svc.time"]
serve = ["svc.echo"]
admin = ["status"]
)"));
  open_dir(broker);
  Client root = broker.connect("root");
  auto orders = root.subscribe("orders.>").value();
  auto billing = root.subscribe("billing.>").value();
  const std::string out = run_script(broker, {4040, 4040, {}}, R"(connect
publish orders.new
publish billing.x
loan orders.bulk
subscribe orders.*
subscribe orders.>
subscribe >
subscribe *.x
subscribe $sys.client.>
serve svc.echo
serve svc.other
request svc.time
request svc.echo
admin status
admin clients
)");
  for (const char* line : {"connect: ok", "publish orders.new: ok", "loan orders.bulk: ok", "subscribe orders.*: ok",
                           "subscribe $sys.client.>: ok", "serve svc.echo: ok", "admin status: ok"}) {
    EXPECT_TRUE(has_line(out, line)) << line << "\n" << out;
  }
  EXPECT_TRUE(has_outcome(out, "publish billing.x: PERMISSION_DENIED publish 'billing.x' denied to uid 4040")) << out;
  EXPECT_TRUE(has_outcome(out, "subscribe orders.>: PERMISSION_DENIED")) << out;
  EXPECT_TRUE(has_outcome(out, "subscribe >: PERMISSION_DENIED subscribe '>' denied to uid 4040 (gid 4040): no policy "
                               "rule grants it (a pattern that can match the broker's $sys. topics"))
      << out;
  EXPECT_TRUE(has_outcome(out, "subscribe *.x: PERMISSION_DENIED")) << out;
  EXPECT_TRUE(has_outcome(out, "serve svc.other: PERMISSION_DENIED")) << out;
  EXPECT_TRUE(has_outcome(out, "request svc.time: NO_RESPONDERS")) << out;  // allowed; nobody serves it
  EXPECT_TRUE(has_outcome(out, "request svc.echo: PERMISSION_DENIED")) << out;
  EXPECT_TRUE(has_outcome(out, "admin clients: PERMISSION_DENIED admin service 'clients' denied to uid 4040")) << out;

  // What was allowed arrived, stamped with the kernel's uid; what was denied went nowhere.
  auto first = root.receive(5s);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->topic(), "orders.new");
  EXPECT_EQ(first->sender().uid, 4040u);
  auto second = root.receive(5s);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->topic(), "orders.bulk");
  EXPECT_FALSE(root.receive(300ms).has_value());
  const auto st = broker_status(root);
  EXPECT_EQ(st.errors_sent().at("PERMISSION_DENIED"), 7u);
}

TEST_F(Policy, RulesMatchByUserNameGidGroupNameAndSupplementaryGroup) {
  const group* users = ::getgrnam("users");
  ASSERT_NE(users, nullptr) << "Debian always has the 'users' group";
  const gid_t users_gid = users->gr_gid;
  BrokerProcess broker(reachable(R"(
[[policy.allow]]
users = ["daemon"]
publish = ["by.user"]

[[policy.allow]]
gids = [4141]
publish = ["by.gid"]

[[policy.allow]]
groups = ["users"]
publish = ["by.group"]

[[policy.allow]]
gids = [4242]
publish = ["by.supplementary"]
)"));
  open_dir(broker);
  const std::string script = "connect\npublish by.user\npublish by.gid\npublish by.group\npublish by.supplementary\n";
  struct Case {
    const char* who;
    Identity id;
    const char* allowed;
  };
  const Case cases[] = {
      {"user daemon", {1, 1, {}}, "by.user"},
      {"primary gid 4141", {4040, 4141, {}}, "by.gid"},
      {"group users as primary", {4040, users_gid, {}}, "by.group"},
      {"group users as supplementary", {4040, 4040, {users_gid}}, "by.group"},
      {"supplementary gid 4242", {4040, 4040, {4343, 4242}}, "by.supplementary"},
  };
  for (const auto& c : cases) {
    const std::string out = run_script(broker, c.id, script);
    for (const char* topic : {"by.user", "by.gid", "by.group", "by.supplementary"}) {
      const std::string line = std::string("publish ") + topic + ": ";
      if (std::string(topic) == c.allowed) {
        EXPECT_TRUE(has_line(out, line + "ok")) << c.who << "\n" << out;
      } else {
        EXPECT_TRUE(has_outcome(out, line + "PERMISSION_DENIED")) << c.who << " " << topic << "\n" << out;
      }
    }
  }
  // Someone no rule names is still refused outright.
  EXPECT_TRUE(has_outcome(run_script(broker, {4040, 4040, {4343}}, "connect\n"), "connect: PERMISSION_DENIED"));
}

TEST_F(Policy, OpenPolicyAllowsEveryoneAndSaysSoLoudly) {
  BrokerProcess broker(reachable("[policy]\nopen = true\n"));
  open_dir(broker);
  const std::string out =
      run_script(broker, {4040, 4040, {}}, "connect\npublish a.b\nsubscribe >\nserve x.y\nadmin clients\n");
  for (const char* line : {"connect: ok", "publish a.b: ok", "subscribe >: ok", "serve x.y: ok", "admin clients: ok"}) {
    EXPECT_TRUE(has_line(out, line)) << line << "\n" << out;
  }
  EXPECT_NE(broker.process().err().find("ACCESS POLICY IS OPEN"), std::string::npos) << broker.process().err();
}

TEST_F(Policy, ReloadRejectsAnInvalidFileAndRevokesWhatAValidOneNoLongerAllows) {
  const std::string before = R"(
[[policy.allow]]
uids = [4040]
publish = ["news.>"]
subscribe = ["news.>"]
)";
  BrokerProcess broker(reachable(before));
  open_dir(broker);
  const std::string config = broker.dir() + "/brokerd.toml";
  const std::string go = broker.dir() + "/reloaded";
  Process subscriber = start_script(broker, {4040, 4040, {}},
                                    "connect\nsubscribe news.>\nwait-file " + go +
                                        "\nexpect-error 10000\nreceive 500\npublish news.still\n");
  ASSERT_TRUE(eventually([&] { return has_line(subscriber.out(), "subscribe news.>: ok"); }, 10s)) << subscriber.out();
  EXPECT_TRUE(has_outcome(run_script(broker, {4041, 4041, {}}, "connect\n"), "connect: PERMISSION_DENIED"));

  // An invalid file: refused with the reason, and the old policy stays in force.
  std::ofstream(config) << reachable(before + "\n[[policy.allow]]\nusers = [\"no-such-user-here\"]\npublish = [\"x\"]\n");
  broker.process().signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return broker.process().err().find("reload refused") != std::string::npos; }, 10s));
  EXPECT_NE(broker.process().err().find("no user named 'no-such-user-here'"), std::string::npos);
  Client root = broker.connect("root");
  ASSERT_TRUE(root.publish("news.a", "kept").has_value());

  // A valid file: uid 4041 gains publish, uid 4040 loses subscribe (its live subscription
  // goes, and it is told which and why) but keeps publish.
  std::ofstream(config) << reachable(R"(
[[policy.allow]]
uids = [4040, 4041]
publish = ["news.>"]
)");
  broker.process().signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return broker.process().err().find("policy reloaded") != std::string::npos; }, 10s));
  ASSERT_TRUE(root.publish("news.b", "after the reload").has_value());
  ASSERT_TRUE(root.flush().has_value());
  std::ofstream(go) << "go";
  ASSERT_TRUE(subscriber.wait(20s).has_value());
  const std::string out = subscriber.out();
  EXPECT_TRUE(has_outcome(out, "error: PERMISSION_DENIED subscription 1 removed by a policy reload: subscribe "
                               "'news.>' denied to uid 4040"))
      << out;
  EXPECT_TRUE(has_line(out, "receive: news.a")) << out;  // published before the reload: delivered
  EXPECT_FALSE(has_line(out, "receive: news.b")) << out;
  EXPECT_TRUE(has_line(out, "publish news.still: ok")) << out;
  EXPECT_TRUE(has_line(run_script(broker, {4041, 4041, {}}, "connect\npublish news.new\n"), "publish news.new: ok"));
  EXPECT_NE(broker.process().err().find("1 subscription(s) and service(s) no longer allowed were removed"),
            std::string::npos);
}

TEST_F(Policy, AdminReloadAnswersWithTheErrorOfAnInvalidFile) {
  BrokerProcess broker(reachable(""));
  std::ofstream(broker.dir() + "/brokerd.toml") << "[policy]\nopen = 3\n";
  Client root = broker.connect("root");
  auto r = root.request("$sys.admin.reload", std::string_view{}, 5s);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kInvalidConfig);
  EXPECT_NE(r.error().message.find("'policy.open' must be true or false"), std::string::npos) << r.error().message;
}

TEST_F(Policy, TheSocketFileGetsTheConfiguredModeAndGroup) {
  const group* users = ::getgrnam("users");
  ASSERT_NE(users, nullptr);
  BrokerProcess broker("socket_mode = \"0660\"\nsocket_group = \"users\"\n[policy]\nopen = true\n");
  open_dir(broker);
  struct stat st {};
  ASSERT_EQ(::stat(broker.socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, users->gr_gid);
  EXPECT_TRUE(has_line(run_script(broker, {4040, 4040, {users->gr_gid}}, "connect\n"), "connect: ok"));
  EXPECT_TRUE(has_outcome(run_script(broker, {4040, 4040, {}}, "connect\n"),
                          "connect: CONNECT_FAILED cannot connect to broker at " + broker.socket() +
                              ": permission denied"));
}

// A process of another uid listening on the path is not taken for the broker.
TEST_F(Policy, TheClientRefusesABrokerOfAnUntrustedUid) {
  char tmpl[] = "/tmp/ubroker-squat-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  ASSERT_EQ(::chown(dir.c_str(), 4040, 4040), 0);
  const std::string socket = dir + "/ubroker.sock";
  Process squatter = Process::spawn(as({4040, 4040, {}}, {UBROKER_BROKERD, "--socket", socket}));
  ASSERT_TRUE(eventually([&] { return std::filesystem::exists(socket); }, 10s)) << squatter.err();
  ASSERT_TRUE(eventually([&] { return squatter.err().find("listening") != std::string::npos; }, 10s));

  auto refused = Client::connect({.address = socket});
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, Errc::kUntrustedBroker);
  EXPECT_NE(refused.error().message.find("runs as uid 4040, which is not a trusted broker uid (0)"),
            std::string::npos)
      << refused.error().message;

  // Trusted explicitly, in the options or through the environment, it is used.
  auto trusted = Client::connect({.address = socket, .trusted_broker_uids = {4040}});
  ASSERT_TRUE(trusted.has_value()) << trusted.error().message;
  EXPECT_TRUE(trusted->flush().has_value());
  std::ofstream(dir + "/cmd") << "connect\n";
  Process env_ok = Process::spawn({UBROKER_TEST_PEER, "script", socket}, {"UBROKER_BROKER_UID=1,4040"}, dir + "/cmd");
  ASSERT_TRUE(env_ok.wait(10s).has_value());
  EXPECT_TRUE(has_line(env_ok.out(), "connect: ok")) << env_ok.out() << env_ok.err();
  Process env_bad = Process::spawn({UBROKER_TEST_PEER, "script", socket}, {"UBROKER_BROKER_UID=1"}, dir + "/cmd");
  ASSERT_TRUE(env_bad.wait(10s).has_value());
  EXPECT_TRUE(has_outcome(env_bad.out(), "connect: UNTRUSTED_BROKER")) << env_bad.out();

  squatter.signal(SIGTERM);
  (void)squatter.wait(10s);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace ubroker::test
