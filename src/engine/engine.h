// The engine thread: owns the model, runs many requests at once.
//
// There are no prefill and decode phases. Every request has the tokens it
// knows (prompt + generated) and how many of them are in the KV cache
// (n_computed); each step hands out up to `max_batch_tokens` tokens toward
// closing those gaps (one for each decoding request first, then chunks of
// prompts from what is left), runs them as one batch, and samples where a
// request's known tokens are all computed. Long prompts are therefore
// chunked and never stall the others' decoding.
//
// Fairness: requests are admitted first come first served, and KV blocks go
// to the oldest request first. When they run out, an older request preempts
// the most recently admitted ones (their blocks released, their tokens
// recomputed later); when only older ones hold the rest, its prompt chunk
// shrinks to what is free, or it waits, and no newcomer is admitted ahead of
// it meanwhile. So the oldest request always progresses and none starves.
//
// Prefix cache (prefix_cache.h): when a request starts (or resumes after
// preemption) it first takes every cached full block that starts its tokens
// and only computes the rest. Every full block a request computes, prompt or
// generated, is published as it completes; when the last holder lets go it
// stays cached (evictable, LRU) instead of free.
#pragma once

#include "core/kv_geometry.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/finish_reason.h"
#include "core/memory_info.h"
#include "engine/constraint.h"
#include "engine/kv_block_pool.h"
#include "engine/kv_disk_store.h"
#include "engine/sampler.h"
#include "models/model.h"

namespace pensieve {

struct EngineOptions {
  int64_t ctx_size = 4096;          // most tokens one sequence may hold
  int64_t kv_blocks = 0;            // KV pool size in blocks; 0 = from kv_memory_bytes
  int64_t kv_memory_bytes = 0;      // 0 = automatic (kv_pool_blocks below)
  // How messages name the budget and the memory it comes from.
  std::string kv_memory_option = "--kv-memory", memory_name = "RAM";
  int64_t max_batch_tokens = 512;   // tokens per forward step
  int64_t max_running = 8;          // sequences decoded together
  int64_t max_queue = 64;           // waiting requests before submit() refuses
  bool prefix_cache = true;         // reuse K/V of earlier requests' full blocks
  // The prefix cache's disk tier (null: none): published blocks are
  // written to it behind the engine's back, and a prompt's blocks that are
  // not in memory are read from it instead of computed. Only where the
  // model's backend can copy KV blocks (the CPU's).
  std::shared_ptr<KvDiskStore> disk;
  int64_t disk_queue_bytes = int64_t{256} << 20;  // blocks waiting to be written, at most
  // ctx_size is a default (the model's), not the user's: when one full
  // context does not fit the KV memory, serve the context that fits instead
  // of failing (plan_kv_pool).
  bool fit_ctx_size = false;
};

struct EngineEvent {
  enum class Kind { progress, token, done, error };
  Kind kind = Kind::progress;
  int64_t n_prompt_done = 0;
  int64_t n_cached = 0;          // prompt tokens taken from the prefix cache (every event)
  int64_t n_cache_created = 0;   // prompt tokens this request writes into the cache (full blocks
                                 // past the cached prefix; known from the first event on)
  int32_t token = -1;
  // progress: the prefix lookup is still reading blocks from disk (the
  // event that ends it carries n_cached); a client's usage waits for it.
  bool lookup_pending = false;
  FinishReason finish = FinishReason::eos;  // done: why
  std::string error;
};

struct EngineRequest {
  std::vector<int32_t> prompt;
  int64_t max_tokens = 0;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;  // generation ends after one of these (not reported as a token)
  // Optional grammar for the output (engine/constraint.h); "eos" when complete.
  std::shared_ptr<TokenConstraint> constraint;
  std::function<void(const EngineEvent&)> on_event;  // called on the engine thread
};

class EngineHandle {
 public:
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  std::atomic<bool> cancelled_{false};
};

struct EngineStats {
  // n_blocks_total = free + cached + used. Idle: used == 0.
  int64_t n_blocks_total = 0, n_blocks_free = 0, n_blocks_cached = 0, n_blocks_used = 0;
  int64_t n_waiting = 0, n_running = 0;
  int64_t n_steps = 0, n_preemptions = 0;
  int64_t n_prompt_tokens = 0, n_cached_tokens = 0;  // over all requests started so far
  int64_t n_evictions = 0;
  // The disk tier: blocks read instead of computed, written, and not
  // written (the queue was full, or the disk failed).
  int64_t n_disk_reads = 0, n_disk_writes = 0, n_disk_dropped = 0;
};

// The share of available memory an automatic KV pool may take.
inline constexpr double kKvShareOfAvailableMemory = 0.5;

struct KvPoolPlan {
  int64_t blocks = 0;    // the KV pool's size
  int64_t ctx_size = 0;  // options.ctx_size, or what fits when it was shrunk
  std::string note;      // one line saying why it was shrunk; "" when it was not
};

// The KV pool's size in blocks when options.kv_blocks is 0, and the context
// it can serve. An explicit kv_memory_bytes is taken as given, and is an
// error when it exceeds the machine's memory. Automatic: enough for
// max_running full contexts, capped at kKvShareOfAvailableMemory of the
// available memory (never more, however long the context). When the pool
// cannot hold one full context (ctx_size tokens and the first generated
// one), fit_ctx_size shrinks the context to what it holds, saying so in
// `note`; otherwise that is an error saying what to change.
KvPoolPlan plan_kv_pool(const EngineOptions& options, int64_t bytes_per_block,
                        const MemoryInfo& memory);
inline int64_t kv_pool_blocks(const EngineOptions& options, int64_t bytes_per_block,
                              const MemoryInfo& memory) {
  return plan_kv_pool(options, bytes_per_block, memory).blocks;
}

// A memory size as --kv-memory takes it: a number of GiB ("4", "0.5"), or
// a number with a unit M/MB/MiB or G/GB/GiB (binary units, any case).
// Returns bytes; an Error says what is wrong with anything else.
int64_t parse_memory_size(std::string_view text);

class Engine {
 public:
  Engine(Model& model, const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request; nullptr when the queue is full. Throws Error for a
  // prompt that can never fit (longer than ctx_size or the whole KV pool).
  std::shared_ptr<EngineHandle> submit(EngineRequest request);
  EngineStats stats() const;
  // Test hook: while held the engine runs no step (requests queue up and
  // stay in flight, cancellations wait too); release() lets it go on. Tests
  // that need a request to stay busy hold it by construction with this
  // instead of hoping the model is slow.
  void hold();
  void release();
  const EngineOptions& options() const { return options_; }
  const Model& model() const { return model_; }
  // The context served: options.ctx_size, or less when it was shrunk to fit
  // the KV memory (context_note() then says why).
  int64_t ctx_size() const { return options_.ctx_size; }
  const std::string& context_note() const { return context_note_; }

 private:
  struct Sequence;
  void loop();
  void step(std::vector<std::unique_ptr<Sequence>>& running);
  void finish(Sequence& s, FinishReason reason);
  void finish_with_error(Sequence& s, const std::string& error);
  void emit(Sequence& s, EngineEvent e);
  void start_sequence(Sequence& s);
  void release(Sequence& s);
  void publish_stats();

  Model& model_;
  KvPoolPlan plan_;  // before options_ and pool_: both are made from it
  EngineOptions options_;
  std::string context_note_;
  KvBlockPool pool_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Sequence>> waiting_;  // guarded by mutex_
  std::vector<std::unique_ptr<Sequence>> running_;  // engine thread only
  // Engine thread only: the last step could not give some request all its
  // tokens for lack of KV blocks (it then takes precedence over newcomers).
  bool memory_short_ = false;
  bool stop_ = false;
  bool held_ = false;  // guarded by mutex_
  std::atomic<int64_t> n_running_{0}, n_free_blocks_{0}, n_cached_blocks_{0}, n_steps_{0},
      n_preemptions_{0}, n_prompt_tokens_{0}, n_cached_tokens_{0}, n_evictions_{0}, n_disk_reads_{0};
  // The disk tier (null without one); declared before thread_, which uses them.
  std::unique_ptr<KvDiskWriter> disk_writer_;
  std::unique_ptr<KvDiskReader> disk_reader_;
  std::vector<std::byte> disk_staging_;  // engine thread: one block on its way out (or in, read here)
  std::optional<int32_t> block_from_disk(const BlockKey& key);
  void block_to_disk(int32_t block, const BlockKey& key);
  std::thread thread_;
};

}  // namespace pensieve
