// The workers of the connection gate (server/http_server.h): each job reads
// one request that has arrived and answers it, and an SSE stream holds its
// thread until the answer ends. A fixed pool would make new clients wait
// behind long streams, so this queue starts a thread whenever none is idle,
// up to a maximum.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <httplib.h>

namespace pensieve::server {

class ElasticTaskQueue : public httplib::TaskQueue {
 public:
  explicit ElasticTaskQueue(int max_threads);
  ~ElasticTaskQueue() override;
  void enqueue(std::function<void()> fn) override;
  void shutdown() override;

 private:
  void work();

  const int max_threads_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  int n_idle_ = 0;
  bool shutdown_ = false;
};

}  // namespace pensieve::server
