// brokerctl serve: answer requests by echoing them (payload and headers) or with a command's
// output; a command that fails answers with an error reply (its stderr, its exit status).
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "commands.hpp"
#include "ubroker/unique_fd.hpp"

namespace ubroker::ctl {

using namespace std::chrono_literals;

// What a command run for a request left behind.
struct CommandResult {
  std::string out;  // its standard output: the reply
  std::string err;  // its standard error: the error reply's sentence when it failed
  int status = 0;   // its exit status (128 + N when killed by signal N)
};

// Reads both of the child's output pipes to their ends (poll: neither can fill up and stall it).
void drain(int out_fd, int err_fd, CommandResult& r) {
  pollfd fds[2] = {{.fd = out_fd, .events = POLLIN, .revents = 0}, {.fd = err_fd, .events = POLLIN, .revents = 0}};
  std::string* into[2] = {&r.out, &r.err};
  char buf[65536];
  int open = 2;
  while (open > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        into[i]->append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        fds[i].fd = -1;  // poll ignores it from now on
        --open;
      }
    }
  }
}

// Runs `command` with the request on its standard input and, in its environment, the topic,
// the caller's identity (UBROKER_TOPIC, UBROKER_SENDER_UID, UBROKER_SENDER_PID,
// UBROKER_SENDER_ID) and the request's headers (UBROKER_HEADER_<KEY>, the key upper-cased,
// '-' and '.' as '_'; the first value of a repeated key).
CommandResult run_command(const std::string& command, const ubroker::Request& request) {
  const std::string_view input = request.text();
  // Built before fork(): the child only calls async-signal-safe functions.
  std::vector<std::string> vars = {
      fmt::format("UBROKER_TOPIC={}", request.topic()), fmt::format("UBROKER_SENDER_UID={}", request.sender().uid),
      fmt::format("UBROKER_SENDER_PID={}", request.sender().pid),
      fmt::format("UBROKER_SENDER_ID={}", request.sender().client_id)};
  std::vector<std::string> seen;
  for (const ubroker::HeaderField& h : request.headers()) {
    std::string name = "UBROKER_HEADER_";
    for (const char c : h.key) name += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : '_';
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) continue;
    seen.push_back(name);
    vars.push_back(fmt::format("{}={}", name, h.value));
  }
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  for (std::string& v : vars) env.push_back(v.data());
  env.push_back(nullptr);
  // Each end owned once: closed when this returns, whatever path it takes. (In the child,
  // exec closes them all: O_CLOEXEC, the dup2 copies excepted.)
  struct Pipe {
    ubroker::UniqueFd read, write;
  };
  auto make_pipe = [](Pipe& p) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    p.read = ubroker::UniqueFd(fds[0]);
    p.write = ubroker::UniqueFd(fds[1]);
    return true;
  };
  Pipe in, out, err;
  if (!make_pipe(in) || !make_pipe(out) || !make_pipe(err)) return {.err = "brokerctl: pipe failed", .status = 126};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in.read.get(), STDIN_FILENO);
    ::dup2(out.write.get(), STDOUT_FILENO);
    ::dup2(err.write.get(), STDERR_FILENO);
    const char* argv[] = {"sh", "-c", command.c_str(), nullptr};
    ::execve("/bin/sh", const_cast<char* const*>(argv), env.data());
    _exit(127);
  }
  // The child's ends: ours must go, or reading its output would never see the end.
  in.read.reset();
  out.write.reset();
  err.write.reset();
  if (pid < 0) return {.err = "brokerctl: fork failed", .status = 126};
  // Feed stdin from a thread so a command that writes before reading cannot deadlock us.
  std::thread feeder([fd = std::move(in.write), input]() mutable {
    std::size_t off = 0;
    while (off < input.size()) {
      const ssize_t n = ::write(fd.get(), input.data() + off, input.size() - off);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    fd.reset();  // end of the command's input
  });
  CommandResult result;
  drain(out.read.get(), err.read.get(), result);
  feeder.join();
  int status = 0;
  pid_t waited;
  while ((waited = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  if (waited != pid) {
    result.err = "brokerctl: could not wait for the command";
    result.status = 126;
    return result;
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

// The error reply's sentence for a failed command: its standard error (trimmed), else how it ended.
std::string failure_sentence(const CommandResult& r) {
  std::string why = r.err;
  while (!why.empty() && (why.back() == '\n' || why.back() == '\r')) why.pop_back();
  if (why.empty()) why = r.status > 128 ? fmt::format("the command was killed by signal {}", r.status - 128)
                                        : fmt::format("the command exited with status {}", r.status);
  constexpr std::size_t kMax = 4096;  // a sentence, not a log
  if (why.size() > kMax) why = why.substr(why.size() - kMax);
  return why;
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
      if (!exec) {
        (void)r.reply(r.text(), std::vector<ubroker::HeaderField>(r.headers().begin(), r.headers().end()));
        continue;
      }
      const CommandResult done = run_command(*exec, r);
      // A failing command answers with an error: its stderr, and its exit status as the code.
      if (done.status != 0) {
        (void)r.reply_error(failure_sentence(done), static_cast<std::uint32_t>(done.status));
      } else {
        (void)r.reply(done.out);
      }
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
