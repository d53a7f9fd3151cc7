// BrokerProcess: temporary directory, config file, readiness by connecting.
#include "broker_process.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "ubroker/proto/socket_address.hpp"

namespace ubroker::test {

BrokerProcess::BrokerProcess(const std::string& config_toml, std::vector<std::string> extra_args,
                             std::vector<std::string> wrapper) {
  char tmpl[] = "/tmp/ubroker-broker-XXXXXX";
  dir_ = ::mkdtemp(tmpl);
  socket_ = dir_ + "/ubroker.sock";
  std::vector<std::string> argv = std::move(wrapper);
  // $UBROKER_TEST_LOG_LEVEL (e.g. debug) to see more of what the brokers of a failing test did.
  const char* level = std::getenv("UBROKER_TEST_LOG_LEVEL");
  argv.insert(argv.end(), {UBROKER_BROKERD, "--socket", socket_, "--log-level", level != nullptr ? level : "info"});
  if (!config_toml.empty()) {
    const std::string config = dir_ + "/brokerd.toml";
    std::ofstream(config) << config_toml;
    argv.push_back("--config");
    argv.push_back(config);
  }
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  argv_ = std::move(argv);
  start();
}

void BrokerProcess::start() {
  process_.emplace(Process::spawn(argv_));
  const auto addr = proto::make_socket_address(socket_).value();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool up = ::connect(fd, addr.get(), addr.len) == 0;
    ::close(fd);
    if (up) return;
    if (process_->wait(std::chrono::milliseconds(0))) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ADD_FAILURE() << "brokerd did not come up on " << socket_ << "; stderr:\n" << process_->err();
}

void BrokerProcess::kill() {
  process_->signal(SIGKILL);
  if (!process_->wait(std::chrono::seconds(10))) ADD_FAILURE() << "brokerd did not die of SIGKILL";
}

void BrokerProcess::restart() {
  if (!process_->wait(std::chrono::milliseconds(0))) ADD_FAILURE() << "restart() of a broker still running";
  start();
}

BrokerProcess::~BrokerProcess() {
  process_.reset();  // kills it if still running
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

Client BrokerProcess::connect(const std::string& name) {
  auto c = Client::connect({.address = socket_, .name = name});
  if (!c) {
    ADD_FAILURE() << "connect: " << c.error().message;
    throw std::runtime_error(c.error().message);
  }
  return std::move(*c);
}

int BrokerProcess::stop(std::chrono::milliseconds timeout) {
  process_->signal(SIGTERM);
  auto st = process_->wait(timeout);
  return st ? exit_code(*st) : -1000;
}

void raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace ubroker::test
