// Message headers and error replies end to end against a real brokerd: headers reach every
// kind of receiver in order (callbacks, receive(), a retained value, a bulk payload, a
// responder, a requester); an error reply is its own error, apart from timeouts and
// no-responders; headers that break the rules are refused by the library and, from a raw
// peer, by the broker; each service, topic and client counts its requests and how they
// ended; and a tap on $sys.trace.> sees requests, replies and errors correlated.
#include <gtest/gtest.h>

#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "broker_process.hpp"
#include "raw_connection.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;
using Fields = std::vector<std::pair<std::string, std::string>>;

Fields fields_of(const Headers& h) {
  Fields out;
  for (const HeaderField& f : h) out.emplace_back(f.key, f.value);
  return out;
}

const HeaderField kTrace[] = {{"trace-id", "4bf92f35"}, {"Nats-Msg-Id", "ünïcode ✓"}, {"trace-id", "again"},
                              {"empty", ""}};
const Fields kTraceFields = {{"trace-id", "4bf92f35"}, {"Nats-Msg-Id", "ünïcode ✓"}, {"trace-id", "again"},
                             {"empty", ""}};

template <class List>
List admin_list(Client& c, const std::string& what) {
  List list;
  auto r = c.request("$sys.admin." + what, std::string_view{}, 5s);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  if (r) {
    EXPECT_TRUE(list.ParseFromArray(r->payload().data(), static_cast<int>(r->payload().size())));
  }
  return list;
}

TEST(Headers, ReachCallbacksReceiveRetainedAndBulkReceiversInOrder) {
  BrokerProcess broker;
  Client sub = broker.connect("sub");
  std::mutex mu;
  std::vector<Fields> seen;
  auto cb = sub.subscribe("h.cb", [&](const MessageView& m) {
    std::lock_guard lk(mu);
    seen.push_back(fields_of(m.headers));
  });
  ASSERT_TRUE(cb.has_value());
  auto queued = sub.subscribe("h.q");
  ASSERT_TRUE(queued.has_value());
  Client pub = broker.connect("pub");
  ASSERT_TRUE(pub.publish("h.cb", "x", {.headers = kTrace}).has_value());
  ASSERT_TRUE(pub.publish("h.cb", "no headers").has_value());
  ASSERT_TRUE(pub.publish("h.q", "y", {.headers = kTrace}).has_value());
  // A bulk payload (through shared memory) keeps its headers too.
  const std::string big(256 * 1024, 'b');
  ASSERT_TRUE(pub.publish("h.q", big, {.headers = std::span(kTrace, 1)}).has_value());
  ASSERT_TRUE(pub.flush().has_value());
  auto m = sub.receive(5s);
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_EQ(fields_of(m->headers()), kTraceFields);
  EXPECT_EQ(m->headers().get("trace-id"), "4bf92f35");  // the first of a repeated key
  EXPECT_EQ(m->headers().get("empty"), "");
  EXPECT_FALSE(m->headers().get("absent").has_value());
  EXPECT_EQ(m->headers().size(), 4u);
  auto bulk = sub.receive(5s);
  ASSERT_TRUE(bulk.has_value());
  EXPECT_TRUE(bulk->shared_memory());
  EXPECT_EQ(bulk->text().size(), big.size());
  EXPECT_EQ(fields_of(bulk->headers()), (Fields{{"trace-id", "4bf92f35"}}));
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(mu);
    return seen.size() == 2;
  }));
  EXPECT_EQ(seen[0], kTraceFields);
  EXPECT_TRUE(seen[1].empty());

  // A retained value is replayed with the headers it was published with.
  ASSERT_TRUE(pub.publish("h.kept", "v", {.retain = true, .headers = std::span(kTrace, 2)}).has_value());
  ASSERT_TRUE(pub.flush().has_value());
  Client late = broker.connect("late");
  auto r = late.subscribe("h.kept");
  ASSERT_TRUE(r.has_value());
  auto kept = late.receive(5s);
  ASSERT_TRUE(kept.has_value());
  EXPECT_TRUE(kept->retained());
  EXPECT_EQ(fields_of(kept->headers()), (Fields{kTraceFields[0], kTraceFields[1]}));
}

TEST(Headers, TravelWithRequestsAndReplies) {
  BrokerProcess broker;
  Client server = broker.connect("server");
  auto service = server.serve("svc.echo", [](Request r) {
    const std::string seen = std::to_string(fields_of(r.headers()).size());  // outlives the views below
    const HeaderField back[] = {{"seen", seen}, {"by", "server"}};
    (void)r.reply(r.text(), back);
  });
  ASSERT_TRUE(service.has_value());
  Client caller = broker.connect("caller");
  auto reply = caller.request("svc.echo", "ping", RequestOptions{.timeout = 5s, .headers = kTrace});
  ASSERT_TRUE(reply.has_value()) << reply.error().message;
  EXPECT_EQ(reply->text(), "ping");
  EXPECT_EQ(fields_of(reply->headers()), (Fields{{"seen", "4"}, {"by", "server"}}));
  // Without headers, a reply has none.
  auto plain = caller.request("svc.echo", "ping");
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->headers().get("seen"), "0");
}

TEST(ErrorReplies, AreTheirOwnErrorApartFromTimeoutsAndNoResponders) {
  BrokerProcess broker;
  Client server = broker.connect("server");
  auto service = server.serve("svc.div", [](Request r) {
    if (r.text() == "0") {
      (void)r.reply_error("division by zero", 400);
    } else if (r.text() == "bytes") {
      (void)r.reply_error("bad \xff byte");  // not UTF-8: replaced, never a broken frame
    } else if (r.text() != "never") {
      (void)r.reply(r.text());
    }
  });
  ASSERT_TRUE(service.has_value());
  Client caller = broker.connect("caller");
  auto e = caller.request("svc.div", "0");
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, Errc::kServiceError);
  EXPECT_EQ(e.error().message, "division by zero");
  EXPECT_EQ(e.error().service_code, 400u);
  auto b = caller.request("svc.div", "bytes");
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error().code, Errc::kServiceError);
  EXPECT_EQ(b.error().message, "bad ? byte");
  EXPECT_EQ(b.error().service_code, 0u);
  auto t = caller.request("svc.div", "never", 200ms);
  ASSERT_FALSE(t.has_value());
  EXPECT_EQ(t.error().code, Errc::kTimeout);
  auto n = caller.request("svc.nobody", "1");
  ASSERT_FALSE(n.has_value());
  EXPECT_EQ(n.error().code, Errc::kNoResponders);
  auto ok = caller.request("svc.div", "7");
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->text(), "7");

  // An asynchronous request gets the same error.
  std::promise<Error> async_error;
  caller.request_async("svc.div", std::as_bytes(std::span("0", 1)), RequestOptions{},
                       [&](Result<Message> r) { async_error.set_value(r ? Error{} : r.error()); });
  const Error got = async_error.get_future().get();
  EXPECT_EQ(got.code, Errc::kServiceError);
  EXPECT_EQ(got.service_code, 400u);
  EXPECT_EQ(broker_status(caller).error_replies(), 3u);
}

TEST(ErrorReplies, AGatewaySaysNoRespondersOrTimeoutAndTheCallerSeesThoseCodes) {
  BrokerProcess broker;
  Client gateway = broker.connect("gateway");
  auto service = gateway.serve("remote.>", [](Request r) {
    if (r.topic() == "remote.gone") {
      (void)r.reply_gateway_error(Errc::kNoResponders, "nobody serves remote.gone behind the bridge");
    } else if (r.topic() == "remote.slow") {
      (void)r.reply_gateway_error(Errc::kTimeout, "no answer in time behind the bridge");
    } else {
      auto refused = r.reply_gateway_error(Errc::kProtocolError, "not a gateway code");
      EXPECT_FALSE(refused.has_value());
      (void)r.reply("ok");
    }
  });
  ASSERT_TRUE(service.has_value());
  Client caller = broker.connect("caller");
  auto gone = caller.request("remote.gone", "x");
  ASSERT_FALSE(gone.has_value());
  EXPECT_EQ(gone.error().code, Errc::kNoResponders);
  EXPECT_EQ(gone.error().message, "nobody serves remote.gone behind the bridge");
  auto slow = caller.request("remote.slow", "x");
  ASSERT_FALSE(slow.has_value());
  EXPECT_EQ(slow.error().code, Errc::kTimeout);
  auto other = caller.request("remote.other", "x");
  ASSERT_TRUE(other.has_value()) << other.error().message;
  EXPECT_EQ(other->text(), "ok");
  EXPECT_EQ(broker_status(caller).error_replies(), 2u);
}

// The frames a raw peer can send about itself and as a responder, beyond what the library
// sends: a STATUS that breaks the rules or the bound is refused (not fatal) and the last good
// one stays; a responder's error code other than the two gateway codes reaches the caller as
// SERVICE_ERROR, never as a broker error it did not send.
TEST(ErrorReplies, ARawPeersStatusAndErrorCodesAreHeldToTheRules) {
  BrokerProcess broker;
  RawConnection raw(broker.socket());
  raw.hello("raw-peer");
  auto status_frame = [](std::string_view key, std::string_view value) {
    wire::Header h;
    h.set_type(wire::STATUS);
    auto* f = h.mutable_headers()->add_fields();
    f->set_key(std::string(key));
    f->set_value(std::string(value));
    return h;
  };
  raw.send_frame(status_frame("state", "good"));
  for (const auto& bad : {status_frame("state", std::string(5000, 'x')), status_frame("ubroker-x", "1"),
                          status_frame("bad key", "1"), status_frame("k", "a\nb")}) {
    raw.send_frame(bad);
    auto err = raw.read_frame();
    ASSERT_TRUE(err.has_value());
    EXPECT_EQ(err->type(), wire::ERROR);
    EXPECT_EQ(err->error().code(), wire::INVALID_HEADERS) << err->error().message();
    EXPECT_FALSE(err->error().fatal());
  }
  Client admin = broker.connect("admin");
  auto list = admin.request("$sys.admin.clients", std::string_view{}, 5s);
  ASSERT_TRUE(list.has_value());
  wire::ClientList clients;
  ASSERT_TRUE(clients.ParseFromArray(list->payload().data(), static_cast<int>(list->payload().size())));
  bool found = false;
  for (const auto& c : clients.clients()) {
    if (c.name() != "raw-peer") continue;
    found = true;
    ASSERT_EQ(c.status().fields_size(), 1);
    EXPECT_EQ(c.status().fields(0).value(), "good");
  }
  EXPECT_TRUE(found);

  // As a responder: a REPLY claiming a broker error (PERMISSION_DENIED) is the service's error.
  wire::Header serve;
  serve.set_type(wire::SERVE);
  serve.set_seq(1);
  serve.add_sub_ids(1);
  serve.set_topic("raw.svc");
  raw.send_frame(serve);
  auto ack = raw.read_frame();
  ASSERT_TRUE(ack.has_value());
  ASSERT_EQ(ack->type(), wire::ACK);
  std::thread answer([&] {
    auto req = raw.read_frame(10s);
    ASSERT_TRUE(req.has_value());
    ASSERT_EQ(req->type(), wire::REQUEST);
    wire::Header reply;
    reply.set_type(wire::REPLY);
    reply.set_request_id(req->request_id());
    reply.mutable_error()->set_code(wire::PERMISSION_DENIED);
    reply.mutable_error()->set_message("claims to be the broker");
    raw.send_frame(reply);
  });
  auto r = admin.request("raw.svc", "?", 5s);
  answer.join();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kServiceError);
  EXPECT_EQ(r.error().message, "claims to be the broker");
}

TEST(Headers, BreakingTheRulesIsRefusedByTheLibraryAndByTheBroker) {
  BrokerProcess broker;
  Client c = broker.connect("c");
  const HeaderField colon[] = {{"a:b", "v"}};
  auto r = c.publish("t", "x", {.headers = colon});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kInvalidHeaders);
  EXPECT_NE(r.error().message.find("a:b"), std::string::npos);
  const HeaderField crlf[] = {{"k", "v\r\nX: y"}};
  auto q = c.request("t", "x", RequestOptions{.headers = crlf});
  ASSERT_FALSE(q.has_value());
  EXPECT_EQ(q.error().code, Errc::kInvalidHeaders);
  // The broker's own keys (its $sys.trace copies carry them) cannot be forged.
  const HeaderField forged[] = {{"ubroker-request", "7"}};
  auto forged_publish = c.publish("t", "x", {.headers = forged});
  ASSERT_FALSE(forged_publish.has_value());
  EXPECT_EQ(forged_publish.error().code, Errc::kInvalidHeaders);
  const std::string huge(20 * 1024, 'v');
  const HeaderField big[] = {{"k", huge}};
  EXPECT_EQ(c.publish("t", "x", {.headers = big}).error().code, Errc::kInvalidHeaders);

  // A raw peer that sends them anyway gets INVALID_HEADERS (not fatal), and nothing is delivered.
  Client sub = broker.connect("sub");
  auto s = sub.subscribe("raw.>");
  ASSERT_TRUE(s.has_value());
  RawConnection raw(broker.socket());
  raw.hello();
  wire::Header h;
  h.set_type(wire::PUBLISH);
  h.set_topic("raw.t");
  auto* f = h.mutable_headers()->add_fields();
  f->set_key("line");
  f->set_value("a\nb");
  raw.send_frame(h, "payload");
  auto err = raw.read_frame();
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->type(), wire::ERROR);
  EXPECT_EQ(err->error().code(), wire::INVALID_HEADERS);
  EXPECT_FALSE(err->error().fatal());
  // Nor from a raw peer, whichever path its frame takes (the fast PUBLISH decoder, or protobuf
  // for a REQUEST).
  for (const auto type : {wire::PUBLISH, wire::REQUEST}) {
    wire::Header forged_frame;
    forged_frame.set_type(type);
    forged_frame.set_topic("raw.t");
    forged_frame.set_seq(5);
    auto* ff = forged_frame.mutable_headers()->add_fields();
    ff->set_key("ubroker-caller");
    ff->set_value("1");
    raw.send_frame(forged_frame, "payload");
    auto refused = raw.read_frame();
    ASSERT_TRUE(refused.has_value());
    EXPECT_EQ(refused->type(), wire::ERROR);
    EXPECT_EQ(refused->error().code(), wire::INVALID_HEADERS) << refused->error().message();
    EXPECT_NE(refused->error().message().find("ubroker-"), std::string::npos);
  }
  // Headers in another order than protobuf writes are fine, and arrive in the canonical form.
  wire::Header odd;
  odd.set_type(wire::PUBLISH);
  odd.set_topic("raw.t");
  const std::string value_first = "\x0a\x06\x12\x01v\x0a\x01k";
  std::string frame_header = odd.SerializeAsString() + "\xaa\x01" + static_cast<char>(value_first.size()) + value_first;
  std::vector<std::byte> frame(8 + frame_header.size() + 1);
  const std::uint32_t header_len = static_cast<std::uint32_t>(frame_header.size());
  const std::uint32_t frame_len = header_len + 1;
  std::memcpy(frame.data(), &frame_len, 4);
  std::memcpy(frame.data() + 4, &header_len, 4);
  std::memcpy(frame.data() + 8, frame_header.data(), frame_header.size());
  frame.back() = std::byte{'p'};
  raw.send_bytes(frame);
  auto m = sub.receive(5s);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->text(), "p");
  // The first to arrive, though sent last on that connection: the refused ones never did.
  EXPECT_EQ(fields_of(m->headers()), (Fields{{"k", "v"}}));
}

TEST(ServiceCounts, ServicesTopicsAndClientsCountRequestsAndHowTheyEnded) {
  BrokerProcess broker;
  Client server = broker.connect("counted-server");
  auto service = server.serve("count.*", [](Request r) {
    if (r.text() == "fail") {
      (void)r.reply_error("no");
    } else if (r.text() != "drop") {
      (void)r.reply("yes");
    }
  });
  ASSERT_TRUE(service.has_value());
  Client caller = broker.connect("counted-caller");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(caller.request("count.a", "ok").has_value());
  EXPECT_FALSE(caller.request("count.a", "fail").has_value());
  EXPECT_FALSE(caller.request("count.b", "drop", 100ms).has_value());
  ASSERT_TRUE(eventually([&] { return broker_status(caller).request_timeouts() == 1; }));

  const auto subs = admin_list<wire::SubscriptionList>(caller, "subscriptions");
  const wire::SubscriptionInfo* svc = nullptr;
  for (const auto& s : subs.subscriptions()) {
    if (s.client_name() == "counted-server") svc = &s;
  }
  ASSERT_NE(svc, nullptr);
  EXPECT_EQ(svc->policy(), "serve");
  EXPECT_EQ(svc->requests(), 5u);
  EXPECT_EQ(svc->replies(), 3u);
  EXPECT_EQ(svc->errors(), 1u);
  EXPECT_EQ(svc->timeouts(), 1u);
  EXPECT_GT(svc->latency_max_us(), 0u);
  EXPECT_LE(svc->latency_mean_us(), svc->latency_max_us());

  const auto topics = admin_list<wire::TopicList>(caller, "topics");
  std::map<std::string, wire::TopicInfo> by_topic;
  for (const auto& t : topics.topics()) by_topic[t.topic()] = t;
  ASSERT_TRUE(by_topic.contains("count.a") && by_topic.contains("count.b"));
  EXPECT_EQ(by_topic["count.a"].requests(), 4u);
  EXPECT_EQ(by_topic["count.a"].replies(), 3u);
  EXPECT_EQ(by_topic["count.a"].errors(), 1u);
  EXPECT_EQ(by_topic["count.b"].requests(), 1u);
  EXPECT_EQ(by_topic["count.b"].timeouts(), 1u);

  const auto clients = admin_list<wire::ClientList>(caller, "clients");
  for (const auto& c : clients.clients()) {
    if (c.name() == "counted-server") {
      EXPECT_EQ(c.replies(), 3u);
      EXPECT_EQ(c.error_replies(), 1u);
    } else if (c.name() == "counted-caller") {
      EXPECT_GE(c.requests(), 5u);  // and its admin requests
    }
  }
}

TEST(Trace, ATapOnSysTraceSeesRequestsRepliesAndErrorsCorrelated) {
  BrokerProcess broker;
  Client server = broker.connect("server");
  auto service = server.serve("traced.op", [](Request r) {
    if (r.text() == "bad") {
      (void)r.reply_error("refused", 7);
    } else {
      const HeaderField h[] = {{"answer", "yes"}};
      (void)r.reply("done", h);
    }
  });
  ASSERT_TRUE(service.has_value());
  Client tap = broker.connect("tap");
  auto t = tap.subscribe("$sys.trace.>");
  ASSERT_TRUE(t.has_value());
  Client caller = broker.connect("caller");
  const HeaderField mine[] = {{"who", "caller"}};
  ASSERT_TRUE(caller.request("traced.op", "go", RequestOptions{.headers = mine}).has_value());
  EXPECT_FALSE(caller.request("traced.op", "bad").has_value());
  EXPECT_FALSE(caller.request("traced.none", "x").has_value());

  std::vector<Message> seen;
  for (int i = 0; i < 5; ++i) {
    auto m = tap.receive(5s);
    ASSERT_TRUE(m.has_value()) << "trace message " << i;
    seen.push_back(std::move(*m));
  }
  EXPECT_EQ(seen[0].topic(), "$sys.trace.request.traced.op");
  EXPECT_EQ(seen[0].text(), "go");
  EXPECT_EQ(seen[0].sender().client_id, caller.id());
  EXPECT_EQ(seen[0].headers().get("who"), "caller");
  EXPECT_EQ(seen[0].headers().get("ubroker-responder"), std::to_string(server.id()));
  const auto id = seen[0].headers().get("ubroker-request");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(seen[1].topic(), "$sys.trace.reply.traced.op");
  EXPECT_EQ(seen[1].text(), "done");
  EXPECT_EQ(seen[1].sender().client_id, server.id());
  EXPECT_EQ(seen[1].headers().get("ubroker-request"), id);
  EXPECT_EQ(seen[1].headers().get("answer"), "yes");
  EXPECT_TRUE(seen[1].headers().get("ubroker-latency-us").has_value());
  EXPECT_EQ(seen[2].topic(), "$sys.trace.request.traced.op");
  EXPECT_EQ(seen[3].topic(), "$sys.trace.error.traced.op");
  EXPECT_EQ(seen[3].text(), "refused");
  EXPECT_EQ(seen[3].headers().get("ubroker-error"), "SERVICE_ERROR");
  EXPECT_EQ(seen[3].headers().get("ubroker-service-code"), "7");
  EXPECT_EQ(seen[3].headers().get("ubroker-request"), seen[2].headers().get("ubroker-request"));
  EXPECT_EQ(seen[4].topic(), "$sys.trace.error.traced.none");
  EXPECT_EQ(seen[4].headers().get("ubroker-error"), "NO_RESPONDERS");
  EXPECT_EQ(seen[4].sender().client_id, 0u);  // the broker's own
}

}  // namespace
}  // namespace ubroker::test
