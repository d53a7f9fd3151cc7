// The out-of-tree consumer: publish/subscribe with headers, request/reply (blocking and
// asynchronous), an error reply, and the error for a topic nobody serves, against the broker at argv[1]. Exits 0 when every step
// behaved; prints what it saw.
#include <ubroker/client.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <utility>

namespace {

int failed(const char* step, const ubroker::Error& e) {
  std::fprintf(stderr, "consumer: %s: %s (%s)\n", step, e.message.c_str(), std::string(ubroker::to_string(e.code)).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer SOCKET\n");
    return 2;
  }
  using namespace std::chrono_literals;
  ubroker::ConnectOptions options;
  options.address = argv[1];
  options.name = "consumer-c++" + std::to_string(__cplusplus / 100 % 100);
  options.wait_for_broker = true;  // started together with the broker
  options.timeout = 10s;
  auto client = ubroker::Client::connect(options);
  if (!client) return failed("connect", client.error());
  std::printf("connected as client %llu (__cplusplus %ld)\n", static_cast<unsigned long long>(client->id()), __cplusplus);

  // Request/reply.
  auto service = client->serve("consumer.double", [](ubroker::Request r) {
    if (r.text() == "x") {
      (void)r.reply_error("not a number", 400);
      return;
    }
    (void)r.reply(std::to_string(2 * std::stoi(std::string(r.text()))));
  });
  if (!service) return failed("serve", service.error());
  auto answer = client->request("consumer.double", "21", 2s);
  if (!answer) return failed("request", answer.error());
  std::printf("request consumer.double 21 -> %s\n", std::string(answer->text()).c_str());
  if (answer->text() != "42") return 1;

  auto refused = client->request("consumer.double", "x", 2s);
  if (refused || refused.error().code != ubroker::Errc::kServiceError || refused.error().service_code != 400) {
    std::fprintf(stderr, "consumer: expected SERVICE_ERROR 400 for x\n");
    return 1;
  }
  std::printf("request consumer.double x -> %s %u: %s\n", std::string(ubroker::to_string(refused.error().code)).c_str(),
              refused.error().service_code, refused.error().message.c_str());

  // The asynchronous form: its handler takes a Result whose type depends on the standard.
  std::mutex mu;
  std::condition_variable cv;
  std::string async_answer;
  bool done = false;
  const std::string seven = "7";
  client->request_async("consumer.double", std::as_bytes(std::span(seven.data(), seven.size())), 2s,
                        [&](ubroker::Result<ubroker::Message> reply) {
                          std::lock_guard lk(mu);
                          async_answer = reply ? std::string(reply->text()) : reply.error().message;
                          done = true;
                          cv.notify_one();
                        });
  {
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, 5s, [&] { return done; })) return failed("request_async", {ubroker::Errc::kTimeout, "no answer"});
  }
  std::printf("request_async consumer.double 7 -> %s\n", async_answer.c_str());
  if (async_answer != "14") return 1;

  // Publish/subscribe, through receive().
  auto sub = client->subscribe("consumer.news.>");
  if (!sub) return failed("subscribe", sub.error());
  const ubroker::HeaderField headers[] = {{"source", "out-of-tree"}, {"source", "again"}};
  ubroker::PublishOptions with_headers;
  with_headers.headers = headers;
  if (auto r = client->publish("consumer.news.today", "sunny", with_headers); !r) return failed("publish", r.error());
  auto m = client->receive(5s);
  if (!m) return failed("receive", m.error());
  std::printf("received %s: %s (from uid %u)\n", std::string(m->topic()).c_str(), std::string(m->text()).c_str(),
              m->sender().uid);
  if (m->topic() != "consumer.news.today" || m->text() != "sunny") return 1;
  std::size_t fields = 0;
  for (const ubroker::HeaderField& h : m->headers()) {
    std::printf("  header %s: %s\n", std::string(h.key).c_str(), std::string(h.value).c_str());
    ++fields;
  }
  if (fields != 2 || m->headers().get("source") != "out-of-tree") return 1;

  // Nobody serves this one: the broker says so at once.
  auto nobody = client->request("consumer.nobody", "?", 2s);
  if (nobody || nobody.error().code != ubroker::Errc::kNoResponders) {
    std::fprintf(stderr, "consumer: expected NO_RESPONDERS for consumer.nobody\n");
    return 1;
  }
  std::printf("request consumer.nobody -> %s\n", std::string(ubroker::to_string(nobody.error().code)).c_str());
  std::printf("consumer: all steps behaved\n");
  return 0;
}
