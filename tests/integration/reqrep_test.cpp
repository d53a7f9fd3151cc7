// Request/reply end to end against a real brokerd: round trips, many requests in flight,
// responders sharing requests, and each failure with its own code at the right time, with
// no pending state left behind in the broker.
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <mutex>
#include <thread>

#include "broker_process.hpp"
#include "raw_connection.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// A responder that keeps every request unanswered until the test says so.
class HoldingServer {
 public:
  HoldingServer(BrokerProcess& broker, const std::string& topic, ConnectOptions options = {})
      : client_([&] {
          options.address = broker.socket();
          options.name = "holding-server";
          return std::move(Client::connect(std::move(options)).value());
        }()) {
    service_ = std::move(client_
                             .serve(topic,
                                    [this](Request r) {
                                      std::lock_guard lk(mu_);
                                      held_.push_back(std::move(r));
                                    })
                             .value());
  }
  // Waits until `n` requests are held.
  bool wait_for(std::size_t n) {
    return eventually([&] {
      std::lock_guard lk(mu_);
      return held_.size() >= n;
    });
  }
  // Runs fn(requests) with the held requests locked.
  template <class Fn>
  void with_held(Fn&& fn) {
    std::lock_guard lk(mu_);
    fn(held_);
  }

 private:
  // Declared before the client: destroyed after it, so no callback can outlive them.
  std::mutex mu_;
  std::vector<Request> held_;
  Client client_;
  Subscription service_;
};

TEST(RequestReply, RoundTripWithResponderIdentity) {
  BrokerProcess broker;
  Client server = broker.connect("server");
  auto service = server.serve("math.double", [](Request r) {
    const int n = std::stoi(std::string(r.text()));
    ASSERT_TRUE(r.reply(std::to_string(2 * n)).has_value());
  });
  ASSERT_TRUE(service.has_value());
  Client caller = broker.connect("caller");
  for (int i = 0; i < 100; ++i) {
    auto reply = caller.request("math.double", std::to_string(i));
    ASSERT_TRUE(reply.has_value()) << reply.error().message;
    EXPECT_EQ(reply->text(), std::to_string(2 * i));
    EXPECT_EQ(reply->sender().client_id, server.id());
  }
  EXPECT_EQ(broker_status(caller).requests_pending(), 0u);
}

// Busy polling on both sides (brokerd's busy_poll_us, the clients' ConnectOptions::busy_poll)
// changes how they wait, not what they do.
TEST(RequestReply, WithBusyPollingOnBothSides) {
  BrokerProcess broker("busy_poll_us = 200\n");
  ConnectOptions o;
  o.address = broker.socket();
  o.busy_poll = std::chrono::microseconds(200);
  o.name = "busy-server";
  Client server = std::move(Client::connect(o).value());
  auto service = server.serve("busy.echo", [](Request r) { (void)r.reply(r.payload()); });
  ASSERT_TRUE(service.has_value());
  o.name = "busy-caller";
  Client caller = std::move(Client::connect(o).value());
  auto pongs = caller.subscribe("busy.pong");
  ASSERT_TRUE(pongs.has_value());
  for (int i = 0; i < 200; ++i) {
    auto reply = caller.request("busy.echo", std::to_string(i));
    ASSERT_TRUE(reply.has_value()) << reply.error().message;
    EXPECT_EQ(reply->text(), std::to_string(i));
    ASSERT_TRUE(server.publish("busy.pong", std::to_string(i)).has_value());
    auto m = caller.receive(std::chrono::seconds(5));
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->text(), std::to_string(i));
  }
  // A receive with nothing coming still times out, after its busy window.
  auto none = caller.receive(std::chrono::milliseconds(50));
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code, Errc::kTimeout);
}

TEST(RequestReply, ResponderInAnotherProcess) {
  BrokerProcess broker;
  Process server = serve_from_peer(broker, "echo", "echo");
  ASSERT_TRUE(wait_for_output(server, "ready")) << server.err();
  Client caller = broker.connect("caller");
  for (int i = 0; i < 50; ++i) {
    auto r = caller.request("echo", "ping " + std::to_string(i));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->text(), "ping " + std::to_string(i));
    EXPECT_EQ(r->sender().pid, static_cast<std::uint32_t>(server.pid()));
  }
}

TEST(RequestReply, PendingRequestsAreBoundedPerClient) {
  BrokerProcess broker("[limits]\nmax_pending_requests = 5\n");
  HoldingServer server(broker, "queue");
  Client caller = broker.connect("caller");
  std::atomic<int> ok{0}, limited{0};
  for (int i = 0; i < 7; ++i) {
    caller.request_async("queue", {}, std::chrono::seconds(30), [&](Result<Message> r) {
      if (r)
        ++ok;
      else if (r.error().code == Errc::kLimitExceeded)
        ++limited;
    });
  }
  ASSERT_TRUE(eventually([&] { return limited == 2; }));
  ASSERT_TRUE(server.wait_for(5));  // the five went on to the responder (maybe after the refusals came back)
  server.with_held([](std::vector<Request>& held) {
    ASSERT_EQ(held.size(), 5u);
    for (auto& r : held) ASSERT_TRUE(r.reply("ok").has_value());
  });
  ASSERT_TRUE(eventually([&] { return ok == 5; }));
  // With the five answered, there is room again.
  std::thread answerer([&] {
    ASSERT_TRUE(server.wait_for(6));
    server.with_held([](std::vector<Request>& held) { ASSERT_TRUE(held.back().reply("again").has_value()); });
  });
  auto again = caller.request("queue", "?");
  answerer.join();
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(again->text(), "again");
}

TEST(RequestReply, ThousandOutstandingFromOneClientAnsweredLaterFromAnotherThread) {
  BrokerProcess broker;
  static constexpr int kRequests = 1000;  // static: used inside lambdas without capture
  HoldingServer server(broker, "work");
  Client caller = broker.connect("caller");
  std::mutex results_mu;
  std::map<int, std::string> results;
  std::atomic<int> failures{0};
  for (int i = 0; i < kRequests; ++i) {
    const std::string body = "job" + std::to_string(i);
    caller.request_async("work", std::as_bytes(std::span(body.data(), body.size())), std::chrono::seconds(60),
                         [&, i](Result<Message> r) {
                           std::lock_guard lk(results_mu);
                           if (r)
                             results[i] = std::string(r->text());
                           else
                             ++failures;
                         });
  }
  // Every request is held by the responder at once: they are all outstanding together.
  ASSERT_TRUE(server.wait_for(kRequests));
  std::thread replier([&] {
    server.with_held([](std::vector<Request>& held) {
      ASSERT_EQ(held.size(), static_cast<std::size_t>(kRequests));
      for (auto it = held.rbegin(); it != held.rend(); ++it) {  // in reverse: correlation, not order
        ASSERT_TRUE(it->reply("done:" + std::string(it->text())).has_value());
      }
    });
  });
  replier.join();
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(results_mu);
    return static_cast<int>(results.size()) + failures == kRequests;
  }));
  EXPECT_EQ(failures.load(), 0);
  for (int i = 0; i < kRequests; ++i) EXPECT_EQ(results[i], "done:job" + std::to_string(i));
  EXPECT_EQ(broker_status(caller).requests_pending(), 0u);
}

TEST(RequestReply, ThreeRespondersShareTheRequestsEachAnsweredOnce) {
  BrokerProcess broker;
  constexpr int kRequests = 300;
  std::atomic<int> served[3] = {0, 0, 0};
  std::vector<Client> servers;
  std::vector<Subscription> services;
  for (int i = 0; i < 3; ++i) {
    servers.push_back(broker.connect("server" + std::to_string(i)));
    auto s = servers.back().serve("shared.task", [&, i](Request r) {
      ++served[i];
      (void)r.reply(std::to_string(i));
    });
    ASSERT_TRUE(s.has_value());
    services.push_back(std::move(*s));
  }
  Client caller = broker.connect("caller");
  int answered = 0;
  for (int i = 0; i < kRequests; ++i) {
    auto r = caller.request("shared.task", "x");
    ASSERT_TRUE(r.has_value()) << r.error().message;
    ++answered;
  }
  EXPECT_EQ(answered, kRequests);
  EXPECT_EQ(served[0] + served[1] + served[2], kRequests);  // each request to exactly one
  for (auto& n : served) EXPECT_GT(n.load(), 0);
}

TEST(RequestReply, NoRespondersFailsAtOnce) {
  BrokerProcess broker;
  Client caller = broker.connect("caller");
  const auto start = Clock::now();
  auto r = caller.request("nobody.home", "?", std::chrono::seconds(30));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kNoResponders);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2)) << "NO_RESPONDERS must not wait for the deadline";
  EXPECT_EQ(broker_status(caller).no_responders(), 1u);
}

TEST(RequestReply, ResponderKilledMidRequestFailsAtOnce) {
  BrokerProcess broker;
  Process server = serve_from_peer(broker, "fragile", "hang");
  ASSERT_TRUE(wait_for_output(server, "ready")) << server.err();
  Client caller = broker.connect("caller");
  Result<Message> result = std::unexpected(Error{Errc::kProtocolError, "not done"});
  std::atomic<bool> done{false};
  Clock::time_point answered;
  caller.request_async("fragile", {}, std::chrono::seconds(30), [&](Result<Message> r) {
    result = std::move(r);
    answered = Clock::now();
    done = true;
  });
  ASSERT_TRUE(wait_for_output(server, "request"));
  const auto killed = Clock::now();
  server.signal(SIGKILL);
  ASSERT_TRUE(eventually([&] { return done.load(); }, std::chrono::seconds(5)));
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code, Errc::kResponderGone) << result.error().message;
  EXPECT_LT(answered - killed, std::chrono::seconds(2)) << "RESPONDER_GONE must not wait for the deadline";
  const auto st = broker_status(caller);
  EXPECT_EQ(st.responder_gone(), 1u);
  EXPECT_EQ(st.requests_pending(), 0u);
}

TEST(RequestReply, TimeoutAtTheDeadlineAndTheLateReplyIsRefused) {
  BrokerProcess broker;
  std::atomic<int> refusals{0};
  HoldingServer server(broker, "slow", {.on_error = [&](const Error& e) {
                         if (e.code == Errc::kUnknownRequest) ++refusals;
                       }});
  Client caller = broker.connect("caller");
  const auto start = Clock::now();
  auto r = caller.request("slow", "?", milliseconds(300));
  const auto took = Clock::now() - start;
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kTimeout) << r.error().message;
  EXPECT_GE(took, milliseconds(300));
  EXPECT_LT(took, milliseconds(1200));
  EXPECT_EQ(broker_status(caller).requests_pending(), 0u);
  ASSERT_TRUE(server.wait_for(1));
  server.with_held([](std::vector<Request>& held) {
    ASSERT_EQ(held.size(), 1u);
    ASSERT_TRUE(held[0].reply("too late").has_value());  // sent; the broker refuses it
  });
  ASSERT_TRUE(eventually([&] { return refusals == 1; }));
  const auto st = broker_status(caller);
  EXPECT_EQ(st.request_timeouts(), 1u);
  EXPECT_EQ(st.replies_refused(), 1u);
}

TEST(RequestReply, ForgedReplyIsRefusedAndNeverDelivered) {
  BrokerProcess broker;
  HoldingServer server(broker, "guarded");
  Client caller = broker.connect("caller");
  std::atomic<bool> done{false};
  std::string answer;
  caller.request_async("guarded", {}, std::chrono::seconds(30), [&](Result<Message> r) {
    answer = r ? std::string(r->text()) : "error";
    done = true;
  });
  ASSERT_TRUE(server.wait_for(1));
  // A third client guesses request ids: every forged reply is refused.
  RawConnection forger(broker.socket());
  forger.hello("forger");
  for (std::uint64_t id = 1; id <= 3; ++id) {
    wire::Header h;
    h.set_type(wire::REPLY);
    h.set_request_id(id);
    forger.send_frame(h, "forged");
    auto f = forger.read_frame();
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->error().code(), wire::UNKNOWN_REQUEST);
    EXPECT_FALSE(f->error().fatal());
  }
  EXPECT_FALSE(done.load());
  server.with_held([](std::vector<Request>& held) { ASSERT_TRUE(held[0].reply("genuine").has_value()); });
  ASSERT_TRUE(eventually([&] { return done.load(); }));
  EXPECT_EQ(answer, "genuine");
  const auto st = broker_status(caller);
  EXPECT_EQ(st.replies_refused(), 3u);
  EXPECT_EQ(st.requests_pending(), 0u);
}

TEST(RequestReply, CallerLeavingFreesItsRequests) {
  BrokerProcess broker;
  HoldingServer server(broker, "sink");
  {
    Client caller = broker.connect("caller");
    for (int i = 0; i < 10; ++i) caller.request_async("sink", {}, std::chrono::seconds(60), [](Result<Message>) {});
    ASSERT_TRUE(server.wait_for(10));
  }  // the caller disconnects with 10 requests pending
  Client observer = broker.connect("observer");
  ASSERT_TRUE(eventually([&] { return broker_status(observer).requests_pending() == 0; }));
}

TEST(RequestReply, WaitForResponder) {
  BrokerProcess broker;
  Client caller = broker.connect("caller");
  auto none = caller.wait_for_responder("late.service", milliseconds(200));
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code, Errc::kTimeout);
  Client server = broker.connect("server");
  std::optional<Subscription> late;  // touched by the main thread only after join()
  std::thread starter([&] {
    std::this_thread::sleep_for(milliseconds(200));  // the service appears while we wait
    auto s = server.serve("late.*", [](Request r) { (void)r.reply("here"); });
    ASSERT_TRUE(s.has_value());
    late.emplace(std::move(*s));
  });
  auto ok = caller.wait_for_responder("late.service", std::chrono::seconds(10));
  starter.join();
  EXPECT_TRUE(ok.has_value()) << ok.error().message;
  auto r = caller.request("late.service", "?");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->text(), "here");
}

}  // namespace
}  // namespace ubroker::test
