// A fixed pool of worker threads for data-parallel kernels. The caller thread
// takes part, so a pool of n threads runs n-way parallel with n-1 workers.
// Workers spin briefly between jobs (decode issues hundreds of small parallel
// regions per token) and then sleep on a futex-backed atomic wait.
//
// Pinning: a pool with one thread per CPU this process may use (the default
// size) pins worker i to the i-th of those CPUs, so no two workers share a
// core and none migrates away from its caches mid-job; CPU 0 of the set is
// left to the caller, which stays unpinned (it is the application's thread,
// and what it starts would inherit a pin). Smaller pools float, and
// PENSIEVE_PIN=0 turns pinning off.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace pensieve {

class ThreadPool {
 public:
  // n_threads <= 0 means "one per available core".
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // The CPU each worker is pinned to (index 0: the caller, -1), or empty.
  const std::vector<int>& pinned_cpus() const { return pinned_; }

  // Calls fn(thread_index, n_threads) once on every thread and waits for all.
  void run(const std::function<void(int, int)>& fn);

  // Splits [0, n) into chunks of `grain` (the last may be shorter) and calls
  // fn(begin, end) once per chunk, chunks handed to whichever thread is free.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Like parallel_for with grain 1 (one thread, or one item: a single call
  // fn(0, n)), but each thread first walks its own
  // contiguous share of [0, n) in order and only then helps with the others'
  // (from their current positions). Memory-bound loops keep one sequential
  // stream per thread, which the hardware prefetchers follow; handing out
  // items round-robin makes every thread's stream jump at each item.
  void parallel_for_contiguous(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

  static int default_threads();

 private:
  void worker_main(int index);

  int n_threads_ = 1;
  std::vector<int> pinned_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> n_pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace pensieve
