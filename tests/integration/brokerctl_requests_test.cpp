// brokerctl and request/reply: monitor shows requests, replies and error replies correlated
// (as text and as JSON lines for jq); serve --exec turns a failing command into an error reply
// and answers slow requests side by side; headers from the command line; monitor and serve
// come back after a broker restart.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <future>
#include <regex>
#include <thread>

#include "broker_process.hpp"
#include "brokerctl_run.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

Process monitor(const BrokerProcess& b, std::vector<std::string> extra) {
  std::vector<std::string> args = {UBROKER_BROKERCTL, "-s", b.socket(), "monitor"};
  args.insert(args.end(), extra.begin(), extra.end());
  Process p = Process::spawn(args);
  EXPECT_TRUE(eventually([&] { return p.err().find("monitoring") != std::string::npos; })) << p.err();
  return p;
}

TEST(BrokerctlRequests, MonitorShowsRequestsRepliesAndErrorsCorrelated) {
  BrokerProcess broker;
  Process text = monitor(broker, {"calc.>"});
  Process json = monitor(broker, {"calc.>", "--json"});
  Client server = broker.connect("calc-server");
  auto service = server.serve("calc.*", [](Request r) {
    if (r.text() == "0") {
      (void)r.reply_error("division by zero", 22);
    } else {
      (void)r.reply("half");
    }
  });
  ASSERT_TRUE(service.has_value());
  Client caller = broker.connect("calc-caller");
  const HeaderField trace[] = {{"trace-id", "t-1"}};
  ASSERT_TRUE(caller.request("calc.div", "2", RequestOptions{.headers = trace}).has_value());
  ASSERT_FALSE(caller.request("calc.div", "0").has_value());
  ASSERT_FALSE(caller.request("calc.x.none", "x").has_value());  // calc.* serves one token only

  // Text: the request, its reply and the error, each with the request id that ties them.
  const std::string caller_id = std::to_string(caller.id()), server_id = std::to_string(server.id());
  const std::regex request(R"(REQ  .* #(\d+) calc\.div \[client )" + caller_id + R"( uid 0 pid \d+\] -> client )" +
                           server_id + R"(: 1 B \{trace-id=t-1\}: 2)");
  std::string id;
  ASSERT_TRUE(eventually([&] {
    const std::string seen = text.out();
    std::smatch m;
    if (!std::regex_search(seen, m, request) || seen.find("NO_RESPONDERS") == std::string::npos) return false;
    id = m[1];  // copied while `seen` lives
    return true;
  })) << text.out();
  const std::string out = text.out();
  EXPECT_TRUE(std::regex_search(out, std::regex("REPLY.* #" + id + R"( calc\.div \[client )" + server_id +
                                                R"( uid 0 pid \d+\] \d+ us: 4 B: half)")))
      << out;
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(ERROR.* #\d+ calc\.div \[client )" + server_id +
                                                R"( uid 0 pid \d+\] SERVICE_ERROR 22: division by zero)")))
      << out;
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(ERROR.* #0 calc\.x\.none \[broker\] NO_RESPONDERS)"))) << out;
  EXPECT_EQ(out.find("\033["), std::string::npos) << "colour on a pipe";

  // JSON: one object per line, numbers as numbers, the same correlation.
  ASSERT_TRUE(eventually([&] { return json.out().find("NO_RESPONDERS") != std::string::npos; })) << json.out();
  json.signal(SIGINT);
  ASSERT_TRUE(json.wait(10s).has_value());
  const std::string path = broker.dir() + "/monitor.json";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(json.out().c_str(), f);
    std::fclose(f);
  }
  const auto r = shell(broker, fmt::format(R"(jq -e -s '
      (map(select(.kind == "request" and .topic == "calc.div"))[0]) as $q |
      (map(select(.kind == "reply" and .request_id == $q.request_id)) | length == 1) and
      ($q.headers["trace-id"] == ["t-1"]) and ($q.request_id | type == "number") and
      (map(select(.kind == "reply"))[0].latency_us | type == "number") and
      (map(select(.kind == "error" and .error == "SERVICE_ERROR"))[0] | .service_code == 22 and .payload == "division by zero") and
      (map(select(.kind == "error" and .error == "NO_RESPONDERS")) | length == 1)' {})",
                                           path));
  EXPECT_EQ(r.code, 0) << r.out << r.err << json.out();
  text.signal(SIGINT);
  ASSERT_TRUE(text.wait(10s).has_value());
}

TEST(BrokerctlRequests, ServeExecFailureIsAnErrorReplyAndSlowRequestsRunSideBySide) {
  BrokerProcess broker;
  Process serve = Process::spawn(
      {UBROKER_BROKERCTL, "-s", broker.socket(), "serve", "job.>", "--concurrency", "3", "--exec",
       R"sh(case "$UBROKER_TOPIC" in job.fail) echo "disk full on $UBROKER_HEADER_VOLUME" >&2; exit 4;; esac; sleep 1; echo "done $(cat)")sh"});
  Client caller = broker.connect("caller");
  ASSERT_TRUE(caller.wait_for_responder("job.x", 10s).has_value()) << serve.err();
  // A failing command: an error reply with its stderr and its exit status, and `req` exits 1 saying so.
  const HeaderField volume[] = {{"volume", "/srv"}};
  auto e = caller.request("job.fail", "x", RequestOptions{.timeout = 10s, .headers = volume});
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, Errc::kServiceError);
  EXPECT_EQ(e.error().message, "disk full on /srv");
  EXPECT_EQ(e.error().service_code, 4u);
  auto r = shell(broker, R"("$BROKERCTL" -s "$SOCK" req job.fail x -H volume=/data)");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("error (code 4): disk full on /data"), std::string::npos) << r.err;
  // Three one-second requests at once, with --concurrency 3: all answered within 2 s.
  const auto t0 = Clock::now();
  std::vector<std::future<Result<Message>>> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back(std::async(std::launch::async, [&, i] { return caller.request("job.slow", fmt::format("q{}", i), 10s); }));
  }
  for (int i = 0; i < 3; ++i) {
    auto answer = calls[static_cast<std::size_t>(i)].get();
    ASSERT_TRUE(answer.has_value()) << answer.error().message;
    EXPECT_EQ(answer->text(), fmt::format("done q{}\n", i));
  }
  EXPECT_LT(Clock::now() - t0, 2s);
  serve.signal(SIGINT);
  ASSERT_TRUE(serve.wait(10s).has_value());
}

TEST(BrokerctlRequests, HeadersFromTheCommandLineBothWays) {
  BrokerProcess broker;
  Process serve = Process::spawn({UBROKER_BROKERCTL, "-s", broker.socket(), "serve", "echo.>"});
  Client caller = broker.connect("caller");
  ASSERT_TRUE(caller.wait_for_responder("echo.x", 10s).has_value()) << serve.err();
  // serve (echo) sends the request's headers back; req prints them on stderr, the payload on stdout.
  auto r = shell(broker, R"("$BROKERCTL" -s "$SOCK" req echo.x hi -H a=1 -H 'b=two words')");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_EQ(r.err, "a: 1\nb: two words\n");
  // pub -H reaches sub --json; a header that is no KEY=VALUE is a usage error.
  r = shell(broker, R"("$BROKERCTL" -s "$SOCK" pub --retain h.t v -H k=1 -H k=2 -H other= &&
                       "$BROKERCTL" -s "$SOCK" sub h.t --json --count 1 |
                         jq -e '.headers == {"k": ["1", "2"], "other": [""]}')");
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  r = shell(broker, R"("$BROKERCTL" -s "$SOCK" pub h.t v -H novalue)");
  EXPECT_EQ(r.code, 2) << r.err;
  r = shell(broker, R"("$BROKERCTL" -s "$SOCK" pub h.t v -H 'bad key=1')");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("header 'bad key'"), std::string::npos) << r.err;
  serve.signal(SIGINT);
  ASSERT_TRUE(serve.wait(10s).has_value());
}

TEST(BrokerctlRequests, MonitorAndServeComeBackAfterABrokerRestart) {
  BrokerProcess broker;
  Process mon = monitor(broker, {"back.>"});
  Process serve = Process::spawn({UBROKER_BROKERCTL, "-s", broker.socket(), "serve", "back.svc"});
  {
    Client probe = broker.connect("probe");
    ASSERT_TRUE(probe.wait_for_responder("back.svc", 10s).has_value()) << serve.err();
  }
  broker.kill();
  broker.restart();
  for (const Process* p : {&mon, &serve}) {
    ASSERT_TRUE(eventually([&] { return p->err().find("reconnected") != std::string::npos; }, 20s)) << p->err();
    EXPECT_NE(p->err().find("connection lost"), std::string::npos) << p->err();
  }
  Client c = broker.connect("after");
  ASSERT_TRUE(c.wait_for_responder("back.svc", 10s).has_value());
  auto reply = c.request("back.svc", "still here");
  ASSERT_TRUE(reply.has_value()) << reply.error().message;
  EXPECT_EQ(reply->text(), "still here");
  ASSERT_TRUE(c.publish("back.note", "seen").has_value());
  ASSERT_TRUE(c.flush().has_value());
  EXPECT_TRUE(eventually([&] { return mon.out().find("back.note") != std::string::npos; })) << mon.out();
  EXPECT_TRUE(eventually([&] { return mon.out().find("REPLY") != std::string::npos; })) << mon.out();
  for (Process* p : {&mon, &serve}) {
    p->signal(SIGINT);
    auto st = p->wait(10s);
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(exit_code(*st), 0) << p->err();
  }
}

}  // namespace
}  // namespace ubroker::test
