// ubroker_test_peer script ADDRESS: one client that runs the commands on its stdin, one per
// line, and prints one line per command with its outcome ("ok" or the error code name), so a
// test can run it as another uid (setpriv) and compare what the policy allowed:
//   connect [QUEUE]          connect (printed "connect: ok" or "connect: CODE message"), with a
//                            receive queue of QUEUE messages (default 4096)
//   publish TOPIC            publish, then flush: a refusal arrives before the flush's answer
//   loan TOPIC               the same through shared memory (4 KiB)
//   subscribe PATTERN        subscribe (messages go to the receive queue)
//   subscribe-drop PATTERN   the same with overflow = drop
//   join PATTERN GROUP       subscribe as a member of queue group GROUP
//   serve PATTERN            serve, answering "pong"
//   request TOPIC            request with a 2 s deadline
//   admin NAME               request $sys.admin.NAME
//   receive MS               wait up to MS for a message: "receive: TOPIC" or "receive: none"
//   expect-error MS          wait up to MS for an error the broker reported on its own
//   wait-file PATH           wait (up to 20 s) until PATH exists
// Errors with no caller (on_error) are printed as they come: "error: CODE message".
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ubroker/client.hpp"

namespace {

using namespace std::chrono_literals;

struct ErrorLog {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<ubroker::Error> errors;
};

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

std::string outcome(const ubroker::Error& e) {
  return std::string(ubroker::to_string(e.code)) + " " + e.message;
}

template <class T>
std::string outcome(const ubroker::Result<T>& r) {
  return r ? "ok" : outcome(r.error());
}

}  // namespace

int run_script(const std::string& address) {
  ErrorLog log;
  std::optional<ubroker::Client> client;
  std::vector<ubroker::Subscription> subs;
  // Reports the errors the broker sent on its own since the last command, and whether
  // there were any (a refused publish is one of them).
  auto drain_errors = [&] {
    std::lock_guard lk(log.mu);
    const bool any = !log.errors.empty();
    for (const auto& e : log.errors) say("error: " + outcome(e));
    log.errors.clear();
    return any;
  };
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream words(line);
    std::string cmd, arg;
    words >> cmd >> arg;
    if (cmd.empty()) continue;
    if (cmd == "connect") {
      auto c = ubroker::Client::connect({.address = address,
                                         .name = "script",
                                         .receive_queue = arg.empty() ? 4096 : std::stoul(arg),
                                         .reconnect = {.enabled = false},
                                         .on_error = [&](const ubroker::Error& e) {
                                           std::lock_guard lk(log.mu);
                                           log.errors.push_back(e);
                                           log.cv.notify_all();
                                         }});
      say("connect: " + outcome(c));
      if (!c) return 1;
      client.emplace(std::move(*c));
      continue;
    }
    if (cmd == "wait-file") {
      const auto deadline = std::chrono::steady_clock::now() + 20s;
      while (::access(arg.c_str(), F_OK) != 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(10ms);
      }
      say("wait-file: " + std::string(::access(arg.c_str(), F_OK) == 0 ? "ok" : "timeout"));
      continue;
    }
    if (!client) {
      say(cmd + ": not connected");
      return 1;
    }
    if (cmd == "publish" || cmd == "loan") {
      ubroker::Result<void> sent;
      if (cmd == "publish") {
        sent = client->publish(arg, "payload");
      } else if (auto loan = client->loan(arg, 4096, 2s)) {
        sent = client->publish(std::move(*loan));
      } else {
        sent = std::unexpected(loan.error());
      }
      if (sent) sent = client->flush();
      if (!sent) {
        say(cmd + " " + arg + ": " + outcome(sent));
        continue;
      }
      std::lock_guard lk(log.mu);
      if (log.errors.empty()) {
        say(cmd + " " + arg + ": ok");
      } else {
        say(cmd + " " + arg + ": " + outcome(log.errors.front()));
        log.errors.pop_front();
      }
    } else if (cmd == "subscribe" || cmd == "subscribe-drop") {
      auto s = client->subscribe(arg, {.overflow = cmd == "subscribe" ? ubroker::Overflow::kBlock
                                                                       : ubroker::Overflow::kDrop});
      say(cmd + " " + arg + ": " + outcome(s));
      if (s) subs.push_back(std::move(*s));
    } else if (cmd == "join") {
      std::string group;
      words >> group;
      auto s = client->subscribe(arg, {.group = group});
      say("join " + arg + " " + group + ": " + outcome(s));
      if (s) subs.push_back(std::move(*s));
    } else if (cmd == "serve") {
      auto s = client->serve(arg, [](ubroker::Request r) { (void)r.reply("pong"); });
      say("serve " + arg + ": " + outcome(s));
      if (s) subs.push_back(std::move(*s));
    } else if (cmd == "request") {
      say("request " + arg + ": " + outcome(client->request(arg, "ping", 2s)));
    } else if (cmd == "admin") {
      say("admin " + arg + ": " + outcome(client->request("$sys.admin." + arg, "", 2s)));
    } else if (cmd == "receive") {
      auto m = client->receive(std::chrono::milliseconds(std::stoll(arg)));
      say("receive: " + (m ? std::string(m->topic()) : std::string("none")));
    } else if (cmd == "expect-error") {
      std::unique_lock lk(log.mu);
      log.cv.wait_for(lk, std::chrono::milliseconds(std::stoll(arg)), [&] { return !log.errors.empty(); });
      lk.unlock();
      if (!drain_errors()) say("error: none");
    } else {
      say("unknown command: " + cmd);
      return 2;
    }
  }
  drain_errors();
  return 0;
}
