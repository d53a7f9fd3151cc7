// The C API (ubroker/ubroker.h) against a real brokerd: callbacks and receive, the sender's
// identity, serve with a reply from another thread after the handler returned, retained
// values, loans, statuses with sentences, unsubscribing from a callback, and waiting for a
// broker that starts after the client.
#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>

#include "broker_process.hpp"
#include "process.hpp"
#include "ubroker/ubroker.h"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;

// Pointers handed over from a callback (on the I/O thread) to the test thread.
template <class T>
class Handoff {
 public:
  void push(T* item) {
    std::lock_guard lk(mu_);
    items_.push_back(item);
    cv_.notify_all();
  }
  T* pop(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lk(mu_);
    if (!cv_.wait_for(lk, timeout, [&] { return !items_.empty(); })) return nullptr;
    T* item = items_.front();
    items_.pop_front();
    return item;
  }
  std::size_t size() {
    std::lock_guard lk(mu_);
    return items_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T*> items_;
};

std::string text_of(const ubroker_message* m) {
  size_t len = 0;
  const void* data = ubroker_message_data(m, &len);
  return {static_cast<const char*>(data), len};
}

ubroker_client* connect_to(const BrokerProcess& broker, const char* name = "c-api-test") {
  ubroker_client* c = nullptr;
  const int rc = ubroker_connect(broker.socket().c_str(), name, &c);
  EXPECT_EQ(rc, 0) << ubroker_strerror(rc) << ": " << ubroker_last_error();
  return c;
}

void keep_copy(const ubroker_message* msg, void* user) {
  ubroker_message* copy = nullptr;
  ASSERT_EQ(ubroker_message_copy(msg, &copy), 0);
  static_cast<Handoff<ubroker_message>*>(user)->push(copy);
}

TEST(CApi, CallbacksReceiveMessagesWithTheKernelsSender) {
  BrokerProcess broker;
  ubroker_client* c = connect_to(broker);
  ASSERT_NE(c, nullptr);
  Handoff<ubroker_message> got;
  ubroker_subscription* sub = nullptr;
  ASSERT_EQ(ubroker_subscribe(c, "capi.*.temp", keep_copy, &got, &sub), 0) << ubroker_last_error();
  EXPECT_NE(ubroker_subscription_id(sub), 0u);
  ASSERT_EQ(ubroker_publish(c, "capi.kitchen.temp", "21.5", 4), 0);
  ASSERT_EQ(ubroker_publish(c, "capi.kitchen.humidity", "40", 2), 0);  // no match
  ASSERT_EQ(ubroker_publish(c, "capi.hall.temp", "", 0), 0);
  ubroker_message* first = got.pop();
  ubroker_message* second = got.pop();
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  EXPECT_STREQ(ubroker_message_topic(first), "capi.kitchen.temp");
  EXPECT_EQ(text_of(first), "21.5");
  EXPECT_STREQ(ubroker_message_topic(second), "capi.hall.temp");
  EXPECT_EQ(text_of(second), "");
  const ubroker_sender from = ubroker_message_sender(first);
  EXPECT_EQ(from.client_id, ubroker_client_id(c));
  EXPECT_EQ(from.uid, ::getuid());
  EXPECT_EQ(from.pid, static_cast<uint32_t>(::getpid()));
  EXPECT_EQ(ubroker_message_subscription(first), ubroker_subscription_id(sub));
  EXPECT_EQ(ubroker_message_retained(first), 0);
  ubroker_message_free(first);
  ubroker_message_free(second);
  EXPECT_EQ(ubroker_unsubscribe(sub), 0);
  ASSERT_EQ(ubroker_flush(c, 5000), 0);
  EXPECT_EQ(got.size(), 0u);
  ubroker_stats stats{};
  ASSERT_EQ(ubroker_client_stats(c, &stats), 0);
  EXPECT_EQ(stats.reconnects, 0u);
  ubroker_close(c);
  EXPECT_EQ(broker.stop(), 0);
}

void hand_over(ubroker_call* call, void* user) {
  static_cast<Handoff<ubroker_call>*>(user)->push(call);  // answered later, elsewhere
}

// A responder whose requests are handed over to the test (hand_over), and a requester.
struct ServedPair {
  ServedPair(const BrokerProcess& broker, const char* pattern)
      : responder(connect_to(broker, "responder")), requester(connect_to(broker, "requester")) {
    EXPECT_TRUE(responder && requester);
    if (responder) {
      EXPECT_EQ(ubroker_serve(responder, pattern, hand_over, &calls, &service), 0) << ubroker_last_error();
    }
  }
  ubroker_client* responder;
  ubroker_client* requester;
  Handoff<ubroker_call> calls;
  ubroker_subscription* service = nullptr;
};

TEST(CApi, ServeRepliesFromAnotherThreadAfterTheHandlerReturned) {
  BrokerProcess broker;
  ServedPair pair(broker, "capi.math.>");
  auto& [responder, requester, calls, service] = pair;
  ASSERT_TRUE(responder && requester && service);
  ASSERT_EQ(ubroker_wait_for_responder(requester, "capi.math.double", 5000), 0);
  std::thread worker([&] {
    ubroker_call* call = calls.pop();
    ASSERT_NE(call, nullptr);
    EXPECT_STREQ(ubroker_call_topic(call), "capi.math.double");
    size_t len = 0;
    const auto* data = static_cast<const char*>(ubroker_call_data(call, &len));
    const std::string in(data, len);
    EXPECT_EQ(ubroker_call_sender(call).client_id, ubroker_client_id(requester));
    const std::string out = std::to_string(2 * std::stoi(in));
    EXPECT_EQ(ubroker_call_reply(call, out.data(), out.size()), 0);
    EXPECT_EQ(ubroker_call_reply(call, "again", 5), UBROKER_E_INVALID_ARGUMENT);  // at most once
    ubroker_call_free(call);
  });
  ubroker_message* reply = nullptr;
  ASSERT_EQ(ubroker_request(requester, "capi.math.double", "21", 2, 5000, &reply), 0) << ubroker_last_error();
  worker.join();
  EXPECT_EQ(text_of(reply), "42");
  ubroker_message_free(reply);

  // A request never answered: freed unanswered, it times out on the requester's side.
  std::thread dropper([&] { ubroker_call_free(calls.pop()); });
  EXPECT_EQ(ubroker_request(requester, "capi.math.lost", "1", 1, 300, &reply), UBROKER_E_TIMEOUT);
  dropper.join();

  EXPECT_EQ(ubroker_unsubscribe(service), 0);
  EXPECT_EQ(ubroker_request(requester, "capi.math.double", "1", 1, 5000, &reply), UBROKER_E_NO_RESPONDERS);
  EXPECT_NE(std::string(ubroker_last_error()), "");
  ubroker_close(responder);
  ubroker_close(requester);
}

template <class Handle>
std::string header_of(const Handle* h, const char* key) {
  size_t len = 0;
  const char* value = nullptr;
  if constexpr (std::is_same_v<Handle, ubroker_message>) {
    value = ubroker_message_header(h, key, &len);
  } else {
    value = ubroker_call_header(h, key, &len);
  }
  return value == nullptr ? std::string("(absent)") : std::string(value, len);
}

TEST(CApi, HeadersTravelBothWaysAndAnErrorReplyIsServiceError) {
  BrokerProcess broker;
  ServedPair pair(broker, "capi.h");
  auto& [responder, requester, calls, service] = pair;
  ASSERT_TRUE(responder && requester && service);
  std::thread worker([&] {
    for (int i = 0; i < 3; ++i) {
      ubroker_call* call = calls.pop();
      ASSERT_NE(call, nullptr);
      EXPECT_EQ(ubroker_call_header_count(call), 2u);
      if (header_of(call, "mode") == "fail") {
        EXPECT_EQ(ubroker_call_reply_error(call, 503, "busy"), 0);
      } else if (header_of(call, "mode") == "gateway") {
        EXPECT_EQ(ubroker_call_reply_gateway_error(call, UBROKER_E_SERVICE_ERROR, "no"), UBROKER_E_INVALID_ARGUMENT);
        EXPECT_EQ(ubroker_call_reply_gateway_error(call, UBROKER_E_NO_RESPONDERS, "nobody behind the bridge"), 0);
      } else {
        const ubroker_header back[] = {{"status", "fine"}};
        EXPECT_EQ(ubroker_call_reply_ex(call, "ok", 2, back, 1), 0);
      }
      ubroker_call_free(call);
    }
  });
  const ubroker_header ok_headers[] = {{"mode", "ok"}, {"trace", "1"}};
  ubroker_message* reply = nullptr;
  ASSERT_EQ(ubroker_request_ex(requester, "capi.h", "x", 1, ok_headers, 2, 5000, &reply), 0) << ubroker_last_error();
  EXPECT_EQ(text_of(reply), "ok");
  EXPECT_EQ(header_of(reply, "status"), "fine");
  const char *key = nullptr, *value = nullptr;
  size_t key_len = 0, value_len = 0;
  ASSERT_EQ(ubroker_message_header_at(reply, 0, &key, &key_len, &value, &value_len), 0);
  EXPECT_EQ(std::string(key, key_len), "status");
  EXPECT_EQ(ubroker_message_header_at(reply, 1, &key, &key_len, &value, &value_len), UBROKER_E_INVALID_ARGUMENT);
  ubroker_message_free(reply);
  const ubroker_header fail_headers[] = {{"mode", "fail"}, {"trace", "2"}};
  EXPECT_EQ(ubroker_request_ex(requester, "capi.h", "x", 1, fail_headers, 2, 5000, &reply), UBROKER_E_SERVICE_ERROR);
  EXPECT_STREQ(ubroker_last_error(), "busy");
  EXPECT_EQ(ubroker_last_service_code(), 503u);
  const ubroker_header gateway_headers[] = {{"mode", "gateway"}, {"trace", "3"}};
  EXPECT_EQ(ubroker_request_ex(requester, "capi.h", "x", 1, gateway_headers, 2, 5000, &reply), UBROKER_E_NO_RESPONDERS);
  EXPECT_STREQ(ubroker_last_error(), "nobody behind the bridge");
  worker.join();
  EXPECT_NE(std::string(ubroker_strerror(UBROKER_E_SERVICE_ERROR)).find("SERVICE_ERROR"), std::string::npos);

  // Published headers reach a subscriber; bad ones are refused with a sentence.
  Handoff<ubroker_message> got;
  ubroker_subscription* sub = nullptr;
  ASSERT_EQ(ubroker_subscribe(requester, "capi.hp", keep_copy, &got, &sub), 0);
  const ubroker_header h[] = {{"k", "v"}};
  ASSERT_EQ(ubroker_publish_ex(responder, "capi.hp", "p", 1, h, 1, 0), 0);
  ubroker_message* m = got.pop();
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(ubroker_message_header_count(m), 1u);
  EXPECT_EQ(header_of(m, "k"), "v");
  EXPECT_EQ(header_of(m, "absent"), "(absent)");
  ubroker_message_free(m);
  const ubroker_header bad[] = {{"bad key", "v"}};
  EXPECT_EQ(ubroker_publish_ex(responder, "capi.hp", "p", 1, bad, 1, 0), UBROKER_E_INVALID_HEADERS);
  EXPECT_NE(std::string(ubroker_last_error()).find("bad key"), std::string::npos);
  EXPECT_EQ(ubroker_publish_ex(responder, "capi.hp", "p", 1, nullptr, 1, 0), UBROKER_E_INVALID_ARGUMENT);
  EXPECT_EQ(ubroker_publish_ex(responder, "capi.hp", "p", 1, nullptr, 0, 0x80), UBROKER_E_INVALID_ARGUMENT);
  EXPECT_EQ(ubroker_unsubscribe(sub), 0);
  EXPECT_EQ(ubroker_unsubscribe(service), 0);
  ubroker_close(responder);
  ubroker_close(requester);
}

void count_call(const ubroker_message*, void* user) { ++*static_cast<int*>(user); }

TEST(CApi, AManualClientRunsItsCallbacksInUbrokerPoll) {
  BrokerProcess broker;
  ubroker_options* o = nullptr;
  ASSERT_EQ(ubroker_options_new(&o), 0);
  ASSERT_EQ(ubroker_options_set_address(o, broker.socket().c_str()), 0);
  ASSERT_EQ(ubroker_options_set_manual_io(o, 1), 0);
  ubroker_client* manual = nullptr;
  ASSERT_EQ(ubroker_connect_with(o, &manual), 0) << ubroker_last_error();
  ubroker_options_free(o);
  int calls = 0;
  ubroker_subscription* sub = nullptr;
  ASSERT_EQ(ubroker_subscribe(manual, "capi.manual", count_call, &calls, &sub), 0) << ubroker_last_error();
  ubroker_client* pub = connect_to(broker, "pub");
  ASSERT_EQ(ubroker_publish(pub, "capi.manual", "x", 1), 0);
  ASSERT_EQ(ubroker_flush(pub, 5000), 0);
  EXPECT_GE(ubroker_fd(manual), 0);
  for (int i = 0; i < 100 && calls == 0; ++i) ASSERT_GE(ubroker_poll(manual, 100), 0) << ubroker_last_error();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(ubroker_poll(pub, 0), UBROKER_E_INVALID_ARGUMENT);  // it has its own I/O thread
  EXPECT_EQ(ubroker_poll(manual, -1), UBROKER_E_INVALID_ARGUMENT);
  EXPECT_EQ(ubroker_unsubscribe(sub), 0);
  ubroker_close(pub);
  ubroker_close(manual);
}

TEST(CApi, ReceiveGetsRetainedValuesFirstAndTimesOut) {
  BrokerProcess broker;
  ubroker_client* c = connect_to(broker);
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(ubroker_publish_retained(c, "capi.config.level", "debug", 5), 0);
  ASSERT_EQ(ubroker_flush(c, 5000), 0);
  ubroker_subscription* sub = nullptr;
  ASSERT_EQ(ubroker_subscribe_ex(c, "capi.config.>", nullptr, 0, nullptr, nullptr, &sub), 0);
  ubroker_message* m = nullptr;
  ASSERT_EQ(ubroker_receive(c, 5000, &m), 0) << ubroker_last_error();
  EXPECT_STREQ(ubroker_message_topic(m), "capi.config.level");
  EXPECT_EQ(text_of(m), "debug");
  EXPECT_EQ(ubroker_message_retained(m), 1);
  ubroker_message_free(m);
  EXPECT_EQ(ubroker_receive(c, 50, &m), UBROKER_E_TIMEOUT);
  EXPECT_EQ(ubroker_unsubscribe(sub), 0);
  ubroker_close(c);
}

TEST(CApi, LoansPublishInPlaceThroughSharedMemory) {
  BrokerProcess broker;
  ubroker_client* c = connect_to(broker);
  ASSERT_NE(c, nullptr);
  ubroker_subscription* sub = nullptr;
  ASSERT_EQ(ubroker_subscribe_ex(c, "capi.frames", nullptr, 0, nullptr, nullptr, &sub), 0);
  ubroker_loan* loan = nullptr;
  ASSERT_EQ(ubroker_loan_new(c, "capi.frames", 200 * 1024, 5000, &loan), 0) << ubroker_last_error();
  size_t len = 0;
  auto* data = static_cast<unsigned char*>(ubroker_loan_data(loan, &len));
  ASSERT_EQ(len, 200u * 1024);
  for (size_t i = 0; i < len; ++i) data[i] = static_cast<unsigned char>(i * 7);
  ASSERT_EQ(ubroker_publish_loan(c, loan), 0) << ubroker_last_error();
  ubroker_message* m = nullptr;
  ASSERT_EQ(ubroker_receive(c, 5000, &m), 0) << ubroker_last_error();
  EXPECT_EQ(ubroker_message_shared_memory(m), 1);
  size_t got_len = 0;
  const auto* got = static_cast<const unsigned char*>(ubroker_message_data(m, &got_len));
  ASSERT_EQ(got_len, len);
  bool same = true;
  for (size_t i = 0; i < got_len; ++i) same = same && got[i] == static_cast<unsigned char>(i * 7);
  EXPECT_TRUE(same);
  ubroker_message_free(m);
  // A loan given back unpublished, and one too large for the ring.
  ASSERT_EQ(ubroker_loan_new(c, "capi.frames", 1024, 5000, &loan), 0);
  ubroker_loan_free(loan);
  EXPECT_EQ(ubroker_loan_new(c, "capi.frames", size_t{1} << 40, 100, &loan), UBROKER_E_INVALID_ARGUMENT);
  EXPECT_EQ(ubroker_unsubscribe(sub), 0);
  ubroker_close(c);
}

TEST(CApi, BadCallsGetStatusesWithSentences) {
  ubroker_client* c = nullptr;
  EXPECT_EQ(ubroker_connect("/nonexistent/ubroker.sock", "x", &c), UBROKER_E_CONNECT_FAILED);
  EXPECT_NE(std::string(ubroker_last_error()).find("/nonexistent/ubroker.sock"), std::string::npos)
      << ubroker_last_error();
  EXPECT_EQ(c, nullptr);
  EXPECT_EQ(ubroker_connect(nullptr, nullptr, nullptr), UBROKER_E_INVALID_ARGUMENT);
  EXPECT_STREQ(ubroker_strerror(UBROKER_E_NO_RESPONDERS), "NO_RESPONDERS: nobody serves the requested topic");
  EXPECT_STREQ(ubroker_strerror(12345), "UNKNOWN: not a ubroker status code");
  EXPECT_EQ(ubroker_adopt(-1, nullptr, &c), UBROKER_E_INVALID_ARGUMENT);

  BrokerProcess broker;
  c = connect_to(broker);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(ubroker_publish(c, nullptr, "x", 1), UBROKER_E_INVALID_ARGUMENT);
  EXPECT_EQ(ubroker_publish(c, "capi.x", nullptr, 1), UBROKER_E_INVALID_ARGUMENT);
  EXPECT_EQ(ubroker_publish(c, "capi..bad", "x", 1), UBROKER_E_INVALID_TOPIC);
  EXPECT_NE(std::string(ubroker_last_error()), "");
  ubroker_subscription* sub = nullptr;
  EXPECT_EQ(ubroker_subscribe(c, "capi.>.bad", keep_copy, nullptr, &sub), UBROKER_E_INVALID_PATTERN);
  EXPECT_EQ(ubroker_subscribe(c, "capi.x", nullptr, nullptr, &sub), UBROKER_E_INVALID_ARGUMENT);
  EXPECT_EQ(ubroker_subscribe_ex(c, "capi.x", nullptr, 0x80, nullptr, nullptr, &sub), UBROKER_E_INVALID_ARGUMENT);
  EXPECT_EQ(ubroker_flush(c, -1), UBROKER_E_INVALID_ARGUMENT);
  EXPECT_EQ(ubroker_publish(c, "$sys.fake", "x", 1), UBROKER_E_RESERVED_TOPIC);
  // A client's status: set, refused with a sentence when it breaks the rules, cleared.
  const ubroker_header status[] = {{"state", "ready"}};
  EXPECT_EQ(ubroker_set_status(c, status, 1), 0) << ubroker_last_error();
  const ubroker_header reserved[] = {{"ubroker-x", "1"}};
  EXPECT_EQ(ubroker_set_status(c, reserved, 1), UBROKER_E_INVALID_HEADERS);
  EXPECT_NE(std::string(ubroker_last_error()).find("ubroker-"), std::string::npos) << ubroker_last_error();
  EXPECT_EQ(ubroker_set_status(c, nullptr, 1), UBROKER_E_INVALID_ARGUMENT);
  EXPECT_EQ(ubroker_set_status(c, nullptr, 0), 0);
  EXPECT_EQ(ubroker_set_status(nullptr, status, 1), UBROKER_E_INVALID_ARGUMENT);
  EXPECT_EQ(ubroker_flush(c, 5000), 0);
  ubroker_close(c);
  ubroker_close(nullptr);
  ubroker_message_free(nullptr);
  ubroker_call_free(nullptr);
  ubroker_loan_free(nullptr);
}

struct SelfEnding {
  ubroker_subscription* sub = nullptr;
  std::atomic<int> calls{0};
  std::atomic<int> status{1};
};

void end_on_first(const ubroker_message*, void* user) {
  auto* s = static_cast<SelfEnding*>(user);
  if (s->calls.fetch_add(1) == 0) s->status = ubroker_unsubscribe(s->sub);  // from the I/O thread
}

TEST(CApi, UnsubscribeFromItsOwnCallbackStopsDeliveries) {
  BrokerProcess broker;
  ubroker_client* c = connect_to(broker);
  ASSERT_NE(c, nullptr);
  SelfEnding self;
  ASSERT_EQ(ubroker_subscribe(c, "capi.once", end_on_first, &self, &self.sub), 0);
  for (int i = 0; i < 50; ++i) ASSERT_EQ(ubroker_publish(c, "capi.once", "x", 1), 0);
  ASSERT_EQ(ubroker_flush(c, 5000), 0);
  // A round trip through the broker after the flush: every delivery of the 50 has reached
  // the I/O thread before this reply does.
  ubroker_subscription* probe = nullptr;
  Handoff<ubroker_message> got;
  ASSERT_EQ(ubroker_subscribe(c, "capi.probe", keep_copy, &got, &probe), 0);
  ASSERT_EQ(ubroker_publish(c, "capi.probe", "p", 1), 0);
  ubroker_message* m = got.pop();
  ASSERT_NE(m, nullptr);
  ubroker_message_free(m);
  EXPECT_EQ(self.calls.load(), 1);
  EXPECT_EQ(self.status.load(), 0);
  EXPECT_EQ(ubroker_unsubscribe(probe), 0);
  ubroker_close(c);
}

TEST(CApi, WaitForBrokerConnectsToABrokerStartedLater) {
  char tmpl[] = "/tmp/ubroker-capi-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string sock = dir + "/late.sock";
  ubroker_client* c = nullptr;
  EXPECT_EQ(ubroker_connect(sock.c_str(), "impatient", &c), UBROKER_E_CONNECT_FAILED);  // no waiting by default

  ubroker_options* options = nullptr;
  ASSERT_EQ(ubroker_options_new(&options), 0);
  ASSERT_EQ(ubroker_options_set_address(options, sock.c_str()), 0);
  ASSERT_EQ(ubroker_options_set_wait_for_broker(options, 1), 0);
  ASSERT_EQ(ubroker_options_set_timeout(options, 10000), 0);
  int rc = -1;
  std::thread dialer([&] { rc = ubroker_connect_with(options, &c); });
  auto broker = Process::spawn({UBROKER_BROKERD, "--socket", sock});  // started after the client
  dialer.join();
  ubroker_options_free(options);
  ASSERT_EQ(rc, 0) << ubroker_strerror(rc) << ": " << broker.err();
  EXPECT_EQ(ubroker_connected(c), 1);
  ubroker_close(c);
  broker.signal(SIGTERM);
  EXPECT_TRUE(broker.wait(10s));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ubroker::test
