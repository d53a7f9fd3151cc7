// brokerctl against a real brokerd: every command's output checked against what the test
// arranged (clients with known names and traffic), through the --json form; pipelines;
// serve --exec; kick; exit codes; admin refused to another uid.
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <regex>
#include <sstream>
#include <thread>

#include "broker_process.hpp"
#include "brokerctl_run.hpp"
#include "lanes_util.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;

template <class Msg>
Msg parse_json(const std::string& json) {
  Msg m;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &m);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << json;
  return m;
}

const wire::ClientInfo* find_client(const wire::ClientList& list, const std::string& name) {
  for (const auto& c : list.clients()) {
    if (c.name() == name) return &c;
  }
  return nullptr;
}

class Brokerctl : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* p : {"orders.*", "orders.>"}) subs_.push_back(std::move(alpha_.subscribe(p).value()));
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(beta_.publish("orders.new", "0123456789").has_value());
    ASSERT_TRUE(beta_.publish("orders.cfg", "v1", {.retain = true}).has_value());
    ASSERT_TRUE(beta_.flush().has_value());
  }

  // Lanes off: these tables count what passes through the broker (lanes_test counts lanes).
  BrokerProcess broker_{"socket_mode = \"0666\"\n[lanes]\nenabled = false\n"};
  Client alpha_ = broker_.connect("alpha");
  Client beta_ = broker_.connect("beta");
  std::vector<Subscription> subs_;
};

TEST_F(Brokerctl, StatusJson) {
  const auto r = brokerctl(broker_, {"status", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto st = parse_json<wire::BrokerStatus>(r.out);
  EXPECT_EQ(st.messages_in(), 6u);
  EXPECT_EQ(st.connections(), 3u);  // alpha, beta, brokerctl
  EXPECT_EQ(st.subscriptions(), 2u);
  EXPECT_EQ(st.deliveries(), 6u);  // one frame per message to alpha, naming both its subscriptions
  EXPECT_EQ(st.retained_topics(), 1u);
  EXPECT_EQ(st.socket(), broker_.socket());
  EXPECT_EQ(st.pid(), static_cast<std::uint32_t>(broker_.process().pid()));
  // Its own count of its fds is /proc's, brokerctl's connection included while it asked.
  EXPECT_TRUE(eventually([&] { return open_fds(broker_.process().pid()) + 1 == st.open_fds(); }))
      << st.open_fds() << " by the broker, " << open_fds(broker_.process().pid()) << " in /proc now";
  EXPECT_GT(st.fd_limit(), st.open_fds());
  EXPECT_EQ(st.fds_queued(), 0u);
}

TEST_F(Brokerctl, ClientsJson) {
  const auto r = brokerctl(broker_, {"clients", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto list = parse_json<wire::ClientList>(r.out);
  const auto* alpha = find_client(list, "alpha");
  const auto* beta = find_client(list, "beta");
  ASSERT_NE(alpha, nullptr) << r.out;
  ASSERT_NE(beta, nullptr);
  EXPECT_EQ(alpha->client_id(), alpha_.id());
  EXPECT_EQ(alpha->pid(), static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(alpha->uid(), ::getuid());
  EXPECT_EQ(alpha->subscriptions(), 2u);
  EXPECT_EQ(alpha->messages_out(), 6u);
  EXPECT_EQ(beta->messages_in(), 6u);
  EXPECT_EQ(beta->bytes_in(), 52u);
  EXPECT_FALSE(beta->command().empty());
  EXPECT_GT(beta->connected_unix_ms(), 0u);
  // The table for people has the same clients.
  const auto table = brokerctl(broker_, {"clients"});
  ASSERT_EQ(table.code, 0);
  EXPECT_NE(table.out.find("alpha"), std::string::npos);
  EXPECT_NE(table.out.find("MSGS IN"), std::string::npos);
}

TEST_F(Brokerctl, AClientsOwnStatusIsShownReplacedClearedAndKeptAcrossAReconnect) {
  const HeaderField first[] = {{"nats", "connected"}, {"exported", "5"}};
  ASSERT_TRUE(alpha_.set_status(first));
  ASSERT_TRUE(alpha_.flush());
  auto table = brokerctl(broker_, {"clients"});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_NE(table.out.find("nats=connected exported=5"), std::string::npos) << table.out;
  const HeaderField second[] = {{"exported", "6"}};
  ASSERT_TRUE(alpha_.set_status(second));
  ASSERT_TRUE(alpha_.flush());
  auto json = brokerctl(broker_, {"clients", "--json"});
  const auto list = parse_json<wire::ClientList>(json.out);
  const auto* alpha = find_client(list, "alpha");
  ASSERT_NE(alpha, nullptr);
  ASSERT_EQ(alpha->status().fields_size(), 1);
  EXPECT_EQ(alpha->status().fields(0).key(), "exported");
  EXPECT_EQ(alpha->status().fields(0).value(), "6");
  // Bigger than 4 KiB, or breaking the rules of headers: refused with a sentence.
  const std::string big(5000, 'x');
  const HeaderField too_big[] = {{"blob", big}};
  auto refused = alpha_.set_status(too_big);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, Errc::kInvalidArgument);
  const HeaderField bad[] = {{"ubroker-mine", "1"}};
  EXPECT_FALSE(alpha_.set_status(bad).has_value());
  // A new connection gets it again.
  broker_.stop();
  broker_.restart();
  ASSERT_TRUE(eventually([&] { return alpha_.connected(); }));
  ASSERT_TRUE(alpha_.flush());
  table = brokerctl(broker_, {"clients"});
  EXPECT_NE(table.out.find("exported=6"), std::string::npos) << table.out;
  ASSERT_TRUE(alpha_.set_status({}));
  ASSERT_TRUE(alpha_.flush());
  table = brokerctl(broker_, {"clients"});
  EXPECT_EQ(table.out.find("exported=6"), std::string::npos) << table.out;
}

TEST_F(Brokerctl, SubsAndTopicsJson) {
  auto r = brokerctl(broker_, {"subs", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto subs = parse_json<wire::SubscriptionList>(r.out);
  ASSERT_EQ(subs.subscriptions_size(), 2);
  for (const auto& s : subs.subscriptions()) {
    EXPECT_EQ(s.client_name(), "alpha");
    EXPECT_EQ(s.policy(), "block");
    EXPECT_EQ(s.delivered(), 6u);
  }
  r = brokerctl(broker_, {"topics", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto topics = parse_json<wire::TopicList>(r.out);
  bool seen_new = false, seen_cfg = false;
  for (const auto& t : topics.topics()) {
    if (t.topic() == "orders.new") {
      seen_new = true;
      EXPECT_EQ(t.messages(), 5u);
      EXPECT_EQ(t.bytes(), 50u);
      EXPECT_EQ(t.publishers(), 1u);
      EXPECT_EQ(t.subscribers(), 2u);
      EXPECT_FALSE(t.retained());
    } else if (t.topic() == "orders.cfg") {
      seen_cfg = true;
      EXPECT_TRUE(t.retained());
    }
  }
  EXPECT_TRUE(seen_new && seen_cfg) << r.out;
  auto loan = alpha_.loan("orders.bulk", 4096);  // alpha's ring is registered on first use
  ASSERT_TRUE(loan.has_value());
  r = brokerctl(broker_, {"shm", "--json"});
  ASSERT_EQ(r.code, 0);
  ubroker::wire::SegmentList segments;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &segments).ok()) << r.out;
  ASSERT_EQ(segments.segments_size(), 1) << r.out;
  EXPECT_EQ(segments.segments(0).owner_client_id(), alpha_.id());
  EXPECT_EQ(segments.segments(0).bytes(), 32u << 20);
  r = brokerctl(broker_, {"shm"});
  ASSERT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("SEGMENT"), std::string::npos) << r.out;
}

TEST_F(Brokerctl, MonitorSeesExactlyWhatIsPublishedWithoutDisturbingSubscribers) {
  Process mon = Process::spawn({UBROKER_BROKERCTL, "--socket", broker_.socket(), "monitor", "orders.>"});
  ASSERT_TRUE(eventually([&] { return mon.err().find("monitoring") != std::string::npos; })) << mon.err();
  std::atomic<int> normal{0};
  auto watcher = beta_.subscribe("orders.>", [&](const MessageView& m) { normal += m.retained ? 0 : 1; });
  ASSERT_TRUE(watcher.has_value());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(beta_.publish("orders.m" + std::to_string(i), "item").has_value());
  ASSERT_TRUE(eventually([&] {
    const std::string out = mon.out();
    return std::count(out.begin(), out.end(), '\n') >= 20 && normal == 20;
  })) << "monitor printed:\n" << mon.out() << "\nstderr:\n" << mon.err() << "\nnormal: " << normal;
  mon.signal(SIGINT);
  auto st = mon.wait(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 0);
  std::istringstream lines(mon.out());
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    EXPECT_NE(line.find("orders.m" + std::to_string(n) + " "), std::string::npos) << line;
    EXPECT_NE(line.find("client " + std::to_string(beta_.id())), std::string::npos) << line;
    EXPECT_NE(line.find("4 B: item"), std::string::npos) << line;
  }
  EXPECT_EQ(n, 20);
  EXPECT_EQ(normal.load(), 20);
}

TEST_F(Brokerctl, PubAndSubPipelinesDeliverEveryLineInOrder) {
  const std::string input = broker_.dir() + "/lines.txt";
  std::string expected;
  {
    std::ofstream f(input);
    for (int i = 0; i < 200; ++i) {
      f << "line " << i << "\n";
      expected += "line " + std::to_string(i) + "\n";
    }
  }
  Process sub = Process::spawn({UBROKER_BROKERCTL, "--socket", broker_.socket(), "sub", "pipe.t", "--count", "200"});
  // Subscribed once the broker lists it.
  ASSERT_TRUE(eventually([&] {
    auto r = alpha_.request("$sys.admin.subscriptions", std::string_view{}, 5s);
    wire::SubscriptionList l;
    if (r) l.ParseFromArray(r->payload().data(), static_cast<int>(r->payload().size()));
    for (const auto& s : l.subscriptions()) {
      if (s.pattern() == "pipe.t") return true;
    }
    return false;
  }));
  const auto pub = brokerctl(broker_, {"pub", "pipe.t", "--lines"}, input);
  ASSERT_EQ(pub.code, 0) << pub.err;
  auto st = sub.wait(30s);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 0) << sub.err();
  EXPECT_EQ(sub.out(), expected);
}

TEST_F(Brokerctl, ReqAgainstServeExecAndAgainstNobody) {
  Process server =
      Process::spawn({UBROKER_BROKERCTL, "--socket", broker_.socket(), "serve", "text.upper", "--exec", "tr a-z A-Z"});
  ASSERT_TRUE(eventually([&] { return server.err().find("serving") != std::string::npos; })) << server.err();
  auto r = brokerctl(broker_, {"req", "text.upper", "make me loud"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "MAKE ME LOUD\n");
  r = brokerctl(broker_, {"req", "text.nobody", "x"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no responder serves 'text.nobody'"), std::string::npos) << r.err;
  server.signal(SIGINT);
  auto st = server.wait(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 0);
}

TEST_F(Brokerctl, KickDisconnectsTheClientWithAReasonItCanRead) {
  Client victim = broker_.connect("victim");
  const auto r = brokerctl(broker_, {"kick", std::to_string(victim.id()), "--reason", "maintenance window"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_TRUE(eventually([&] { return !victim.connected(); }));
  const auto why = victim.disconnect_reason();
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(why->code, Errc::kKicked);
  EXPECT_NE(why->message.find("maintenance window"), std::string::npos) << why->message;
  const auto missing = brokerctl(broker_, {"kick", "999999"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("no client 999999"), std::string::npos) << missing.err;
}

TEST_F(Brokerctl, ReloadIsTheSameAsSighup) {
  const auto r = brokerctl(broker_, {"reload"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "reloaded\n");
  ASSERT_TRUE(eventually([&] { return broker_.process().err().find("reload:") != std::string::npos; }));
  broker_.process().signal(SIGHUP);
  ASSERT_TRUE(eventually([&] {
    const std::string log = broker_.process().err();
    return log.find("reload:") != log.rfind("reload:");  // logged twice
  }));
  EXPECT_TRUE(alpha_.flush().has_value());  // and the broker goes on
}

TEST_F(Brokerctl, ExitCodesForUsageAndUnreachableBroker) {
  auto r = brokerctl(broker_, {"frobnicate"});
  EXPECT_EQ(r.code, 2);
  Process p = Process::spawn({UBROKER_BROKERCTL, "--socket", broker_.dir() + "/absent.sock", "status"});
  auto st = p.wait(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 3);
  EXPECT_NE(p.err().find(broker_.dir() + "/absent.sock"), std::string::npos) << p.err();
  EXPECT_NE(p.err().find("no such file"), std::string::npos) << p.err();
}

// Admin services follow the policy's `admin` right: uid 4040 may read the status but not
// list the clients.
TEST(BrokerctlPolicy, AnotherUidGetsOnlyTheAdminServicesThePolicyGrants) {
  ASSERT_EQ(::geteuid(), 0u) << "this test runs brokerctl as uid 4040: run it as root (CI does)";
  BrokerProcess broker("socket_mode = \"0666\"\n[[policy.allow]]\nuids = [4040]\nadmin = [\"status\"]\n");
  ASSERT_EQ(::chmod(broker.dir().c_str(), 0755), 0);  // the socket (0666) must be reachable
  auto as_4040 = [&](const char* command) {
    return Process::spawn({"/usr/bin/setpriv", "--reuid=4040", "--regid=4040", "--clear-groups", UBROKER_BROKERCTL,
                           "--socket", broker.socket(), command, "--json"});
  };
  Process clients = as_4040("clients");
  auto st = clients.wait(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 1) << clients.err();
  EXPECT_NE(clients.err().find("admin service 'clients' denied to uid 4040"), std::string::npos) << clients.err();
  EXPECT_TRUE(clients.out().empty());
  Process status = as_4040("status");
  st = status.wait(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 0) << status.err();
  EXPECT_NE(status.out().find("\"connections\""), std::string::npos) << status.out();
}

}  // namespace
}  // namespace ubroker::test

namespace ubroker::test {
namespace {

// A page ends before the entry that would take it past the frame: clients whose statuses
// (3 KiB each) are larger than the frame's slack still list, every one of them.
TEST(BrokerctlTables, APageNeverOutgrowsAFrameWhateverItsEntries) {
  BrokerProcess broker("[limits]\nmax_frame_bytes = 16384\n");
  std::vector<Client> clients;
  const std::string big(2900, 'x');
  const HeaderField status[] = {{"big", big}};
  for (int i = 0; i < 24; ++i) {
    clients.push_back(broker.connect(fmt::format("big-{:02}", i)));
    ASSERT_TRUE(clients.back().set_status(status));
    ASSERT_TRUE(clients.back().flush());
  }
  const auto r = brokerctl(broker, {"clients", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto list = parse_json<wire::ClientList>(r.out);
  int with_status = 0;
  for (const auto& c : list.clients()) with_status += c.status().fields_size() == 1 ? 1 : 0;
  EXPECT_EQ(with_status, 24);
}

TEST(BrokerctlTables, ListingsLargerThanAFrameComeInPagesAndTheTopicTableMakesRoomForNewTopics) {
  // Frames of 64 KiB: 3,000 subscriptions do not fit in one answer.
  BrokerProcess broker("[limits]\nmax_frame_bytes = 65536\nmax_subscriptions = 5000\n");
  Client many = broker.connect("many");
  std::vector<Subscription> subs;
  for (int i = 0; i < 3000; ++i) subs.push_back(std::move(many.subscribe(fmt::format("page.{:05}.>", i)).value()));
  const auto r = brokerctl(broker, {"subs", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto list = parse_json<wire::SubscriptionList>(r.out);
  ASSERT_EQ(list.subscriptions_size(), 3000);
  for (int i = 1; i < list.subscriptions_size(); ++i) {
    EXPECT_LT(list.subscriptions(i - 1).id(), list.subscriptions(i).id());  // each once, in order
  }
  // More topics than the table tracks: once they are idle, new topics get in.
  Client pub = broker.connect("pub");
  for (int i = 0; i < 70'000; ++i) ASSERT_TRUE(pub.publish(fmt::format("flood.{}", i), "x").has_value());
  ASSERT_TRUE(pub.flush().has_value());
  ASSERT_TRUE(eventually(
      [&] {
        (void)pub.publish("fresh.topic", "x");
        (void)pub.flush();
        const auto t = brokerctl(broker, {"topics", "--json"});
        const auto topics = parse_json<wire::TopicList>(t.out);
        return t.code == 0 && topics.topics_forgotten() > 0 &&
               std::any_of(topics.topics().begin(), topics.topics().end(),
                           [](const wire::TopicInfo& ti) { return ti.topic() == "fresh.topic"; });
      },
      60s));  // each try lists 65,536 topics: seconds apiece under ASan
}

}  // namespace
}  // namespace ubroker::test

namespace ubroker::test {
namespace {

TEST(BrokerctlOperator, JsonNumbersAreNumbersForJq) {
  BrokerProcess broker;
  Client c = broker.connect("busy");
  auto s = c.subscribe("jq.>");
  ASSERT_TRUE(s.has_value());
  ASSERT_TRUE(c.publish("jq.t", "x").has_value());
  ASSERT_TRUE(c.flush().has_value());
  for (const char* check : {
           R"("$BROKERCTL" -s "$SOCK" status --json | jq -e '(.deliveries_accepted|type) == "number" and (.uids[0].memory_bytes|type) == "number" and .messages_in >= 1')",
           R"("$BROKERCTL" -s "$SOCK" clients --json | jq -e '[.clients[] | select(.messages_in > 0)] | length == 1')",
           R"("$BROKERCTL" -s "$SOCK" clients --json | jq -e '[.clients[].bytes_in] | add == 1')",
           R"("$BROKERCTL" -s "$SOCK" subs --json | jq -e '.subscriptions[0].delivered | type == "number"')",
           R"("$BROKERCTL" -s "$SOCK" topics --json | jq -e '.topics[] | select(.topic == "jq.t") | .messages == 1')",
           R"("$BROKERCTL" -s "$SOCK" shm --json | jq -e '.segments | type == "array"')"}) {
    const auto r = shell(broker, check);
    EXPECT_EQ(r.code, 0) << check << "\n" << r.out << r.err;
  }
}

TEST(BrokerctlOperator, ExitStatusPipelinesOptionsAndTypos) {
  BrokerProcess broker;
  // A publish the broker refuses exits 1 with its reason.
  auto r = shell(broker, R"("$BROKERCTL" -s "$SOCK" pub '$sys.forged' x)");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("reserved for the broker"), std::string::npos) << r.err;
  // `sub | head -n1` ends once head has its line (a retained value, so nothing races the
  // subscription), with no further message to write.
  r = shell(broker, R"("$BROKERCTL" -s "$SOCK" pub --retain pipe.a first &&
                       "$BROKERCTL" -s "$SOCK" sub 'pipe.>' | head -n1)");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "first\n");
  // Options after the subcommand; a mistyped command gets a suggestion and exit 2.
  r = shell(broker, R"("$BROKERCTL" status -s "$SOCK")");
  EXPECT_EQ(r.code, 0) << r.err;
  r = shell(broker, R"("$BROKERCTL" stat -s "$SOCK")");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("did you mean 'status'?"), std::string::npos) << r.err;
  // Durations with units: accepted (here nobody serves, which is exit 1), or a usage error.
  r = shell(broker, R"("$BROKERCTL" -s "$SOCK" req nobody.here x --timeout 1s)");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no responder"), std::string::npos) << r.err;
  r = shell(broker, R"("$BROKERCTL" -s "$SOCK" req nobody.here x --timeout 2fortnights)");
  EXPECT_EQ(r.code, 2) << r.err;
}

TEST(BrokerctlOperator, SubPrintsJsonPerMessageAndComesBackAfterABrokerRestart) {
  BrokerProcess broker;
  // Text as text, anything else exactly in base64; retained values are marked.
  auto r = shell(broker, R"("$BROKERCTL" -s "$SOCK" pub --retain out.a 'hello' &&
                            printf '\377\000' | "$BROKERCTL" -s "$SOCK" pub --retain out.b &&
                            "$BROKERCTL" -s "$SOCK" sub 'out.*' --json --count 2 |
                              jq -e -s '.[0].payload == "hello" and .[1].payload_base64 == "/wA=" and
                                        .[0].retained and (.[1].sender.uid | type) == "number"')");
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  // On a pipe the payload alone (the default there, and --raw).
  r = shell(broker, R"("$BROKERCTL" -s "$SOCK" sub out.a --count 1 && "$BROKERCTL" -s "$SOCK" sub out.a --raw --count 1)");
  EXPECT_EQ(r.out, "hello\nhello\n") << r.err;

  // A broker restart under `sub`: it says so, comes back, and goes on printing.
  Process sub = Process::spawn({UBROKER_BROKERCTL, "-s", broker.socket(), "sub", "again.>", "--count", "1"});
  Client watcher = broker.connect("watcher");
  ASSERT_TRUE(eventually([&] {
    const auto subs = brokerctl(broker, {"subs", "--json"});
    return subs.out.find("again.>") != std::string::npos;
  }));
  broker.kill();
  broker.restart();
  ASSERT_TRUE(eventually([&] { return sub.err().find("reconnected") != std::string::npos; }, 20s)) << sub.err();
  EXPECT_NE(sub.err().find("connection lost"), std::string::npos) << sub.err();
  ASSERT_TRUE(eventually([&] {  // its subscription is live in the new broker
    const auto subs = brokerctl(broker, {"subs", "--json"});
    return subs.out.find("again.>") != std::string::npos;
  }));
  Client pub = broker.connect("pub");
  ASSERT_TRUE(pub.publish("again.x", "after the restart").has_value());
  ASSERT_TRUE(pub.flush().has_value());
  auto st = sub.wait(10s);
  ASSERT_TRUE(st.has_value()) << sub.err();
  EXPECT_EQ(exit_code(*st), 0) << sub.err();
  EXPECT_EQ(sub.out(), "after the restart\n");
}

TEST(BrokerctlOperator, MetricsParseAsPrometheusTextAndRttMeasures) {
  BrokerProcess broker;
  Client c = broker.connect("traffic");
  ASSERT_TRUE(c.publish("m.t", "x").has_value());
  ASSERT_TRUE(c.flush().has_value());
  const auto r = brokerctl(broker, {"metrics"});
  ASSERT_EQ(r.code, 0) << r.err;
  // Every line is a HELP or TYPE comment or "name{labels} number", and every name is typed.
  const std::regex sample(R"(^(ubroker_[a-z_]+)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (-?[0-9.]+(e[-+]?[0-9]+)?)$)");
  const std::regex type_line(R"(^# TYPE (ubroker_[a-z_]+) (counter|gauge)$)");
  std::set<std::string> typed, seen;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_match(line, m, type_line)) {
      typed.insert(m[1]);
    } else if (std::regex_match(line, m, sample)) {
      seen.insert(m[1]);
    } else {
      EXPECT_TRUE(line.starts_with("# HELP ")) << "not Prometheus text: " << line;
    }
  }
  for (const auto& name : seen) EXPECT_TRUE(typed.contains(name)) << name << " has no TYPE";
  for (const char* name : {"ubroker_messages_in_total", "ubroker_connections", "ubroker_deliveries_accepted_total",
                           "ubroker_uid_memory_bytes", "ubroker_info"}) {
    EXPECT_TRUE(seen.contains(name)) << name << "\n" << r.out;
  }
  EXPECT_NE(r.out.find("ubroker_messages_in_total 1\n"), std::string::npos) << r.out;
  const auto rtt = brokerctl(broker, {"rtt", "--count", "20"});
  ASSERT_EQ(rtt.code, 0) << rtt.err;
  EXPECT_TRUE(std::regex_search(rtt.out, std::regex(R"(^20 round trips to .*: min [0-9.]+ us, median [0-9.]+ us, max [0-9.]+ us)")))
      << rtt.out;
}

TEST(BrokerctlOperator, ServeExecGetsTheCallerInItsEnvironmentAndRunsConcurrently) {
  BrokerProcess broker;
  // Each command waits until three have started: only three running at once can answer.
  const std::string started = broker.dir() + "/started";
  const std::string command = fmt::format(
      "echo x >> {0}; while [ $(wc -l < {0}) -lt 3 ]; do sleep 0.02; done; "
      "printf '%s %s %s' \"$UBROKER_TOPIC\" \"$UBROKER_SENDER_UID\" \"$(cat)\"",
      started);
  Process serve = Process::spawn({UBROKER_BROKERCTL, "-s", broker.socket(), "serve", "par.>", "--exec", command,
                                  "--concurrency", "3"});
  Client caller = broker.connect("caller");
  ASSERT_TRUE(caller.wait_for_responder("par.x", 10s).has_value()) << serve.err();
  std::vector<std::string> answers(3);
  {
    std::vector<std::jthread> calls;
    for (int i = 0; i < 3; ++i) {
      calls.emplace_back([&, i] {
        auto r = caller.request("par.x", fmt::format("q{}", i), 10s);
        answers[static_cast<std::size_t>(i)] = r ? std::string(r->text()) : r.error().message;
      });
    }
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(answers[static_cast<std::size_t>(i)], fmt::format("par.x 0 q{}", i));
}

TEST(BrokerctlOperator, MonitorDecodesTheBrokersOwnEvents) {
  BrokerProcess broker;
  Process mon = Process::spawn({UBROKER_BROKERCTL, "-s", broker.socket(), "monitor", "$sys.>"});
  ASSERT_TRUE(eventually([&] { return mon.err().find("monitoring") != std::string::npos; })) << mon.err();
  std::uint64_t id = 0;
  {
    Client visitor = broker.connect("visitor");
    id = visitor.id();
    auto svc = visitor.serve("svc.x", [](Request r) { (void)r.reply("ok"); });
    ASSERT_TRUE(svc.has_value());
    ASSERT_TRUE(visitor.flush().has_value());
  }
  const std::string who = fmt::format("client {} (visitor, uid 0, gid 0, pid {})", id, ::getpid());
  for (const std::string& line : {fmt::format("$sys.client.connected [broker] {} connected", who),
                                  fmt::format("$sys.service.up [broker] service 'svc.x' of {} up", who),
                                  fmt::format("$sys.client.disconnected [broker] {} disconnected", who)}) {
    EXPECT_TRUE(eventually([&] { return mon.out().find(line) != std::string::npos; }, 10s))
        << line << "\nin:\n" << mon.out();
  }
  mon.signal(SIGINT);
  ASSERT_TRUE(mon.wait(10s).has_value());
}

// Direct lanes carry messages the broker never sees: each lane with its ends, state, counts
// and topics (brokerctl lanes), and per client and per topic what lanes carry.
TEST(BrokerctlLanes, EachLaneIsListedWithItsEndsCountsAndTopicsAndClientsAndTopicsCountThem) {
  BrokerProcess broker(kLanesOn);
  Client sub = broker.connect("lane-reader");
  auto s = sub.subscribe("lanes.listed");
  ASSERT_TRUE(s);
  Client pub = broker.connect("lane-writer");
  ASSERT_TRUE(lane_carries(pub, "lanes.listed", sub));
  for (std::uint64_t i = 1; i <= 100; ++i) ASSERT_TRUE(pub.publish("lanes.listed", number(i)));
  std::uint64_t last = 0;
  while (last != 100) {
    auto m = sub.receive(10s);
    ASSERT_TRUE(m);
    last = number_of(m->payload());
  }
  ASSERT_TRUE(eventually([&] { return broker_status(pub).lane_queued() == 0; }));
  const auto st = broker_status(pub);

  auto r = brokerctl(broker, {"lanes", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto lanes = parse_json<wire::LaneList>(r.out);
  ASSERT_EQ(lanes.lanes_size(), 1) << r.out;
  const auto& l = lanes.lanes(0);
  EXPECT_EQ(l.publisher_id(), pub.id());
  EXPECT_EQ(l.publisher_name(), "lane-writer");
  EXPECT_EQ(l.subscriber_id(), sub.id());
  EXPECT_EQ(l.subscriber_name(), "lane-reader");
  EXPECT_EQ(l.state(), "open");
  ASSERT_EQ(l.topics_size(), 1);
  EXPECT_EQ(l.topics(0), "lanes.listed");
  EXPECT_EQ(l.accepted(), st.lane_accepted());
  EXPECT_GE(l.accepted(), 100u);
  EXPECT_EQ(l.delivered(), l.accepted());
  EXPECT_EQ(l.queued(), 0u);

  r = brokerctl(broker, {"clients", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  bool writer = false, reader = false;
  const auto clients = parse_json<wire::ClientList>(r.out);
  for (const auto& c : clients.clients()) {
    if (c.client_id() == pub.id()) {
      writer = c.lanes_out() == 1 && c.lanes_in() == 0 && c.lane_messages_out() == l.accepted();
    } else if (c.client_id() == sub.id()) {
      reader = c.lanes_out() == 0 && c.lanes_in() == 1 && c.lane_messages_in() == l.delivered();
    }
  }
  EXPECT_TRUE(writer && reader) << r.out;

  r = brokerctl(broker, {"topics", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  bool counted = false;
  const auto topics = parse_json<wire::TopicList>(r.out);
  for (const auto& t : topics.topics()) counted |= t.topic() == "lanes.listed" && t.lanes() == 1;
  EXPECT_TRUE(counted) << r.out;

  // The table for people: one row, its state and its topic.
  r = brokerctl(broker, {"lanes"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("LANE"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lane-writer"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("open"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lanes.listed"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace ubroker::test
