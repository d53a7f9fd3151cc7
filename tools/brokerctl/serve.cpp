// brokerctl serve: answer requests by echoing them or with a command's output.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "commands.hpp"

namespace ubroker::ctl {

using namespace std::chrono_literals;

// Runs `command` with the request on its standard input and, in its environment, the topic
// and the caller's identity (UBROKER_TOPIC, UBROKER_SENDER_UID, UBROKER_SENDER_PID,
// UBROKER_SENDER_ID); returns its standard output.
std::string run_command(const std::string& command, const ubroker::Request& request) {
  const std::string_view input = request.text();
  // Built before fork(): the child only calls async-signal-safe functions.
  const std::string topic = "UBROKER_TOPIC=" + std::string(request.topic());
  const std::string uid = "UBROKER_SENDER_UID=" + std::to_string(request.sender().uid);
  const std::string pid_var = "UBROKER_SENDER_PID=" + std::to_string(request.sender().pid);
  const std::string id = "UBROKER_SENDER_ID=" + std::to_string(request.sender().client_id);
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  for (const std::string* v : {&topic, &uid, &pid_var, &id}) env.push_back(const_cast<char*>(v->c_str()));
  env.push_back(nullptr);
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return "brokerctl: pipe failed\n";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in[0], STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    const char* argv[] = {"sh", "-c", command.c_str(), nullptr};
    ::execve("/bin/sh", const_cast<char* const*>(argv), env.data());
    _exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  // Feed stdin from a thread so a command that writes before reading cannot deadlock us.
  std::thread feeder([fd = in[1], input] {
    std::size_t off = 0;
    while (off < input.size()) {
      const ssize_t n = ::write(fd, input.data() + off, input.size() - off);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    ::close(fd);
  });
  std::string result;
  char buf[65536];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) result.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  feeder.join();
  int status = 0;
  ::waitpid(pid, &status, 0);
  return result;
}

int cmd_serve(Context& ctx, const std::string& topic, const std::optional<std::string>& exec, unsigned concurrency) {
  if (auto e = ctx.connect("brokerctl-serve", true)) return *e;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<ubroker::Request> work;
  auto service = ctx.client->serve(topic, [&](ubroker::Request r) {
    std::lock_guard lk(mu);
    work.push_back(std::move(r));
    cv.notify_one();
  });
  if (!service) return fail(service.error());
  std::fprintf(stderr, "serving %s%s, %u at a time (Ctrl-C to stop)\n", topic.c_str(),
               exec ? (" with: " + *exec).c_str() : "", concurrency);
  // Requests are answered off the I/O thread, by `concurrency` workers, like inetd.
  auto worker = [&] {
    while (!g_interrupted && !ctx.closed) {
      std::unique_lock lk(mu);
      if (!cv.wait_for(lk, 200ms, [&] { return !work.empty(); })) continue;
      ubroker::Request r = std::move(work.front());
      work.pop_front();
      lk.unlock();
      const std::string answer = exec ? run_command(*exec, r) : std::string(r.text());
      (void)r.reply(answer);
    }
  };
  std::vector<std::jthread> workers;
  for (unsigned i = 1; i < concurrency; ++i) workers.emplace_back(worker);
  worker();
  workers.clear();  // joined
  if (!ctx.closed) return kOk;
  return fail(ctx.client->disconnect_reason().value_or(ubroker::Error{Errc::kNotConnected, "the connection closed"}));
}

}  // namespace ubroker::ctl
