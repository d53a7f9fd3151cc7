#include "request_pool.hpp"

namespace ubroker::bridge {

RequestPool::RequestPool(unsigned threads, std::size_t capacity) : capacity_(capacity) {
  for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
}

RequestPool::~RequestPool() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

bool RequestPool::try_submit(std::function<void()> task) {
  {
    std::lock_guard lk(mu_);
    if (stopping_ || accepted_ >= capacity_) return false;
    ++accepted_;
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
  return true;
}

void RequestPool::work() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything accepted is done
    std::function<void()> task = std::move(queue_.front());
    queue_.pop_front();
    lk.unlock();
    task();
    lk.lock();
    --accepted_;
  }
}

}  // namespace ubroker::bridge
