#include "server/task_queue.h"

#include <algorithm>

namespace pensieve::server {

ElasticTaskQueue::ElasticTaskQueue(int max_threads) : max_threads_(std::max(1, max_threads)) {}

ElasticTaskQueue::~ElasticTaskQueue() { shutdown(); }

void ElasticTaskQueue::enqueue(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (shutdown_) return;
  jobs_.push_back(std::move(fn));
  if (n_idle_ < static_cast<int>(jobs_.size()) &&
      static_cast<int>(threads_.size()) < max_threads_) {
    ++n_idle_;  // counted idle until it picks up a job
    threads_.emplace_back([this] { work(); });
  }
  cv_.notify_one();
}

void ElasticTaskQueue::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [&] { return shutdown_ || !jobs_.empty(); });
    if (jobs_.empty()) break;  // shutting down with nothing left
    auto fn = std::move(jobs_.front());
    jobs_.pop_front();
    --n_idle_;
    lock.unlock();
    fn();
    lock.lock();
    ++n_idle_;
  }
  --n_idle_;
}

void ElasticTaskQueue::shutdown() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shutdown_ = true;
    threads.swap(threads_);
  }
  cv_.notify_all();
  for (auto& t : threads) t.join();
}

}  // namespace pensieve::server
