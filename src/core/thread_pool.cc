#include "core/thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>

#if defined(__x86_64__)
#include <immintrin.h>
#define PENSIEVE_PAUSE() _mm_pause()
#else
#define PENSIEVE_PAUSE() ((void)0)
#endif

namespace pensieve {
namespace {

// Denormal floats cost a microcode assist (~100+ cycles) per operation;
// softmax weights of far-away keys underflow into that range all the time.
// Kernel threads flush them to zero (FTZ) and read them as zero (DAZ).
void flush_denormals() {
#if defined(__x86_64__)
  thread_local bool done = false;
  if (!done) {
    _mm_setcsr(_mm_getcsr() | 0x8040);
    done = true;
  }
#endif
}

}  // namespace

int ThreadPool::default_threads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

ThreadPool::ThreadPool(int n_threads) {
  n_threads_ = n_threads > 0 ? n_threads : default_threads();
  cpu_set_t set;
  CPU_ZERO(&set);
  const char* pin_env = std::getenv("PENSIEVE_PIN");
  const bool pin_allowed = pin_env == nullptr || pin_env[0] != '0';
  if (pin_allowed && n_threads_ > 1 && sched_getaffinity(0, sizeof(set), &set) == 0 &&
      CPU_COUNT(&set) == n_threads_) {
    // [caller (floats), the set's 2nd CPU, 3rd, ...]: its 1st is the caller's.
    pinned_.push_back(-1);
    bool first = true;
    for (int cpu = 0; cpu < CPU_SETSIZE && static_cast<int>(pinned_.size()) < n_threads_; ++cpu) {
      if (!CPU_ISSET(cpu, &set)) continue;
      if (!first) pinned_.push_back(cpu);
      first = false;
    }
  }
  workers_.reserve(n_threads_ - 1);
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_main(int index) {
  flush_denormals();
  if (!pinned_.empty()) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(pinned_[static_cast<size_t>(index)], &one);
    pthread_setaffinity_np(pthread_self(), sizeof(one), &one);  // a hint: ignore failure
  }
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    // Spin for a while before sleeping: the next job usually comes within microseconds.
    for (int spin = 0; g == seen && spin < 20000; ++spin) {
      PENSIEVE_PAUSE();
      g = generation_.load(std::memory_order_acquire);
    }
    while (g == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      g = generation_.load(std::memory_order_acquire);
    }
    seen = g;
    if (stop_.load()) return;
    (*job_)(index, n_threads_);
    n_pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  flush_denormals();
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  job_ = &fn;
  n_pending_.store(n_threads_ - 1, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  fn(0, n_threads_);
  // Wait for the workers; yield now and then so that a worker the OS has
  // descheduled (a busy machine) gets the core back instead of us spinning.
  for (int spin = 0; n_pending_.load(std::memory_order_acquire) != 0; ++spin) {
    if (spin % 256 == 255) {
      sched_yield();
    } else {
      PENSIEVE_PAUSE();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t n_chunks = (n + grain - 1) / grain;
  if (n_threads_ == 1 || n_chunks == 1) {
    flush_denormals();
    fn(0, n);
    return;
  }
  // Chunks are handed out dynamically, so a thread that runs slower (another
  // process on its core, a smaller core) takes fewer and nobody waits long.
  std::atomic<int64_t> next{0};
  run([&](int, int) {
    for (;;) {
      const int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= n_chunks) return;
      fn(c * grain, std::min(n, (c + 1) * grain));
    }
  });
}

void ThreadPool::parallel_for_contiguous(int64_t n,
                                         const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (n_threads_ == 1 || n == 1) {
    flush_denormals();
    fn(0, n);
    return;
  }
  const int t = n_threads_;
  struct alignas(64) Share {
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  std::vector<Share> shares(static_cast<size_t>(t));
  for (int i = 0; i < t; ++i) {
    shares[i].next.store(n * i / t, std::memory_order_relaxed);
    shares[i].end = n * (i + 1) / t;
  }
  run([&](int index, int) {
    for (int k = 0; k < t; ++k) {
      Share& s = shares[(index + k) % t];
      for (;;) {
        const int64_t item = s.next.fetch_add(1, std::memory_order_relaxed);
        if (item >= s.end) break;
        fn(item, item + 1);
      }
    }
  });
}

}  // namespace pensieve
