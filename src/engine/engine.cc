#include "engine/engine.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "engine/prefix_cache.h"
#include "engine/stop_rule.h"
#include "core/kv_geometry.h"

namespace pensieve {

struct Engine::Sequence {
  EngineRequest request;
  StopRule stop;  // from the request, built once
  std::shared_ptr<EngineHandle> handle;
  std::vector<int32_t> tokens;  // prompt, then generated
  int64_t n_prompt = 0;
  int64_t n_generated = 0;
  int64_t n_computed = 0;  // tokens whose K/V are in `kv`
  KvSequence kv;
  PrefixChain chain;         // hashes of the full blocks in kv
  int64_t kv_variant = 0;    // Model::kv_variant the blocks were computed with
  bool publishing = true;    // false once the variant changed under it
  bool started = false;      // the first prefix lookup happened
  bool ran = false;          // took part in a forward
  bool preempted = false;    // in this step: it looks up its prefix again next step
  int64_t n_cached = 0;      // prompt tokens the first lookup found
  int64_t n_cache_created = 0;
  std::unique_ptr<Sampler> sampler;
  uint64_t admitted = 0;  // admission order, for fairness and preemption
  bool done = false;
};

namespace {

int64_t blocks_for(int64_t positions) {
  return (positions + kKvBlockTokens - 1) / kKvBlockTokens;
}

std::string format_bytes(int64_t bytes) {
  if (bytes >= (int64_t{1} << 30)) return fmt::format("{:.2f} GiB", bytes / 1073741824.0);
  return fmt::format("{:.1f} MiB", bytes / 1048576.0);
}

}  // namespace

KvPoolPlan plan_kv_pool(const EngineOptions& o, int64_t bytes_per_block, const MemoryInfo& memory) {
  if (bytes_per_block <= 0) fail(ErrorKind::internal, "KV block size {} bytes", bytes_per_block);
  const int64_t one_context = blocks_for(o.ctx_size + 1);
  KvPoolPlan plan{0, o.ctx_size, ""};
  std::string budget;  // what limited the pool, for the messages below
  if (o.kv_memory_bytes > 0) {
    if (memory.total > 0 && o.kv_memory_bytes > memory.total) {
      fail(ErrorKind::resource, "KV memory of {} is more than this machine's {} of {}",
           format_bytes(o.kv_memory_bytes), format_bytes(memory.total), o.memory_name);
    }
    plan.blocks = o.kv_memory_bytes / bytes_per_block;
    budget = fmt::format("{} gives {}", o.kv_memory_option, format_bytes(o.kv_memory_bytes));
    if (plan.blocks >= one_context) return plan;
    if (!o.fit_ctx_size) {
      fail("KV memory of {} holds {} blocks of {} tokens, but one {}-token context needs {} ({}): "
           "give it more memory ({}) or a shorter context (--ctx-size)",
           format_bytes(o.kv_memory_bytes), plan.blocks, kKvBlockTokens, o.ctx_size,
           one_context, format_bytes(one_context * bytes_per_block), o.kv_memory_option);
    }
  } else {
    plan.blocks = std::max(blocks_for(o.ctx_size) * std::max<int64_t>(o.max_running, 1), one_context);
    if (memory.available <= 0) return plan;  // unknown: the full want
    const int64_t share = static_cast<int64_t>(static_cast<double>(memory.available) *
                                               kKvShareOfAvailableMemory);
    plan.blocks = std::min(plan.blocks, share / bytes_per_block);
    if (plan.blocks >= one_context) return plan;
    budget = fmt::format("the automatic KV cache takes at most {} (half of the {} available)",
                         format_bytes(share), format_bytes(memory.available));
    if (!o.fit_ctx_size) {
      fail(ErrorKind::resource,
           "a {}-token context needs {} of KV cache, but {}: give a shorter context "
           "(--ctx-size {} fits) or the KV cache more memory ({})",
           o.ctx_size, format_bytes(one_context * bytes_per_block), budget,
           std::max<int64_t>(plan.blocks - 1, 0) * kKvBlockTokens, o.kv_memory_option);
    }
  }
  // The default context does not fit: serve what does (the last position
  // of a full context is the one generated token past it).
  plan.ctx_size = std::max<int64_t>(plan.blocks - 1, 0) * kKvBlockTokens;
  if (plan.ctx_size < kMinFittedContext) {
    fail(ErrorKind::resource,
         "the KV cache holds only {} tokens ({} blocks of {} bytes) and {}; a context of at least "
         "{} tokens is needed: free some memory or give the KV cache more ({})",
         plan.ctx_size, plan.blocks, bytes_per_block, budget, kMinFittedContext, o.kv_memory_option);
  }
  plan.note = fmt::format(
      "context shrunk from {} to {} tokens to fit the KV cache: a full context needs {}, and {} "
      "({} or --ctx-size choose otherwise)",
      o.ctx_size, plan.ctx_size, format_bytes(one_context * bytes_per_block), budget,
      o.kv_memory_option);
  return plan;
}

int64_t parse_memory_size(std::string_view text) {
  const std::string shown(text);
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  std::string unit(end, text.data() + text.size());
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double scale = 0;
  if (unit.empty() || unit == "g" || unit == "gb" || unit == "gib") scale = 1073741824.0;
  else if (unit == "m" || unit == "mb" || unit == "mib") scale = 1048576.0;
  if (ec != std::errc() || scale == 0 || !std::isfinite(value)) {
    fail("'{}' is not a memory size: give a number of GiB (like 4 or 0.5) or a number with M "
         "or G (like 512M)",
         shown);
  }
  if (value <= 0) fail("memory size '{}' must be more than 0", shown);
  const double bytes = value * scale;
  if (bytes >= 0x1p62) fail("memory size '{}' is too large", shown);
  if (bytes < 1) fail("memory size '{}' is less than one byte", shown);
  return static_cast<int64_t>(bytes);
}

Engine::Engine(Model& model, const EngineOptions& options)
    : model_(model),
      plan_(options.kv_blocks > 0
                ? KvPoolPlan{options.kv_blocks, options.ctx_size, ""}
                : plan_kv_pool(options, model.kv_bytes_per_block(), model.memory())),
      options_(options),
      context_note_(plan_.note),
      pool_(plan_.blocks) {
  options_.ctx_size = plan_.ctx_size;
  if (!context_note_.empty()) spdlog::warn("{}", context_note_);
  model_.allocate_kv(pool_.n_total());
  n_free_blocks_ = pool_.n_free();
  if (options_.disk && options_.prefix_cache) {
    // A backend that cannot copy blocks out (the GPU's, for now) has no disk tier.
    disk_staging_.resize(static_cast<size_t>(model_.kv_bytes_per_block()));
    if (pool_.n_total() > 0 && model_.read_kv_block(0, disk_staging_.data())) {
      disk_writer_ = std::make_unique<KvDiskWriter>(*options_.disk, options_.disk_queue_bytes);
      disk_reader_ = std::make_unique<KvDiskReader>(*options_.disk, disk_staging_.size(), kKvBlockTokens);
      spdlog::info("engine: prefix cache on disk in {}", options_.disk->folder());
    } else {
      spdlog::info("engine: no prefix cache on disk: the {} backend cannot copy KV blocks out",
                   model_.backend().device());
      disk_staging_.clear();
    }
  }
  spdlog::info("engine: KV cache {} blocks of {} tokens ({:.1f} MiB reserved), context {}, batch {} "
               "tokens, prefix cache {}",
               pool_.n_total(), kKvBlockTokens,
               pool_.n_total() * model_.kv_bytes_per_block() / 1048576.0, options_.ctx_size,
               options_.max_batch_tokens, options_.prefix_cache ? "on" : "off");
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::shared_ptr<EngineHandle> Engine::submit(EngineRequest request) {
  const int64_t n = static_cast<int64_t>(request.prompt.size());
  if (n == 0) fail("the prompt is empty");
  if (n > options_.ctx_size || blocks_for(n + 1) > pool_.n_total()) {
    const int64_t limit = std::min(options_.ctx_size, pool_.n_total() * kKvBlockTokens - 1);
    fail("prompt is too long: {} tokens > {} maximum", n, limit);
  }
  auto seq = std::make_unique<Sequence>();
  seq->handle = std::make_shared<EngineHandle>();
  seq->tokens = request.prompt;
  seq->n_prompt = n;
  seq->sampler = std::make_unique<Sampler>(request.sampling);
  seq->stop = StopRule{request.stop_ids, request.max_tokens, options_.ctx_size};
  seq->request = std::move(request);
  auto handle = seq->handle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (static_cast<int64_t>(waiting_.size()) >= options_.max_queue) return nullptr;
    waiting_.push_back(std::move(seq));
  }
  wake_.notify_all();
  return handle;
}

EngineStats Engine::stats() const {
  EngineStats s;
  s.n_blocks_total = pool_.n_total();
  s.n_blocks_free = n_free_blocks_.load();
  s.n_blocks_cached = n_cached_blocks_.load();
  s.n_blocks_used = s.n_blocks_total - s.n_blocks_free - s.n_blocks_cached;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    s.n_waiting = static_cast<int64_t>(waiting_.size());
  }
  s.n_running = n_running_.load();
  s.n_steps = n_steps_.load();
  s.n_preemptions = n_preemptions_.load();
  s.n_prompt_tokens = n_prompt_tokens_.load();
  s.n_cached_tokens = n_cached_tokens_.load();
  s.n_evictions = n_evictions_.load();
  s.n_disk_reads = n_disk_reads_.load();
  if (disk_writer_) {
    s.n_disk_writes = disk_writer_->n_written();
    s.n_disk_dropped = disk_writer_->n_dropped() + disk_writer_->n_failed();
  }
  return s;
}

// A prompt block the pool does not hold, read from the disk tier into a
// block of the pool (published, retained once for the sequence). The reader
// thread has read and checked it (and reads the next ones meanwhile); this
// copies it in. Leaves the running sequences a block each to go on with.
std::optional<int32_t> Engine::block_from_disk(const BlockKey& key) {
  if (pool_.n_available() <= static_cast<int64_t>(running_.size()) + 1) return std::nullopt;
  bool off_list = false;
  const std::byte* bytes = disk_reader_->next(key.hash, &off_list);
  if (off_list) {
    // A block that was in memory when the lookup began, evicted since (by
    // this lookup's own allocations): read here, as the reader would have.
    if (!options_.disk->get(key.hash, key.parent, key.tokens, disk_staging_)) return std::nullopt;
    bytes = disk_staging_.data();
  }
  if (bytes == nullptr) return std::nullopt;
  // The reader's buffer goes back however this ends (a copy that throws too).
  struct Release {
    KvDiskReader* reader;
    bool held;
    ~Release() {
      if (held) reader->release();
    }
  } release{disk_reader_.get(), !off_list};
  std::optional<int32_t> b = pool_.allocate();
  const bool copied = b && model_.write_kv_block(*b, bytes);
  if (!copied || !pool_.publish(*b, key)) {
    if (b) pool_.release(*b);
    return std::nullopt;
  }
  ++n_disk_reads_;
  return b;
}

// A block just published, copied out for the disk tier's writer (not when
// its queue is full: the copy would be dropped).
void Engine::block_to_disk(int32_t block, const BlockKey& key) {
  if (!disk_writer_->admits(static_cast<int64_t>(disk_staging_.size()))) return;
  std::vector<std::byte> bytes(disk_staging_.size());
  if (!model_.read_kv_block(block, bytes.data())) return;
  disk_writer_->enqueue(key.hash, key.parent, std::vector<int32_t>(key.tokens.begin(), key.tokens.end()),
                        std::move(bytes));
}

void Engine::publish_stats() {
  n_running_ = static_cast<int64_t>(std::count_if(
      running_.begin(), running_.end(), [](const std::unique_ptr<Sequence>& s) { return !s->done; }));
  n_free_blocks_ = pool_.n_free();
  n_cached_blocks_ = pool_.n_cached();
  n_evictions_ = pool_.n_evictions();
}

void Engine::emit(Sequence& s, EngineEvent e) {
  e.n_cached = s.n_cached;
  e.n_cache_created = s.n_cache_created;
  s.request.on_event(e);
}

// Its blocks go back (published ones stay cached); its tokens are kept, so
// it can start again from whatever of them the cache still holds.
void Engine::release(Sequence& s) {
  release_blocks(pool_, s.kv);
  s.chain.hashes.clear();
  s.n_computed = 0;
}

// Takes the cached prefix of a sequence that holds no blocks: a new one, or
// one preempted earlier. The first lookup is reported at once.
void Engine::start_sequence(Sequence& s) {
  s.kv_variant = model_.kv_variant(static_cast<int64_t>(s.tokens.size()));
  s.publishing = options_.prefix_cache;
  if (options_.prefix_cache) {
    MissedBlock from_disk;
    if (disk_writer_) {
      from_disk = [this](const BlockKey& key) { return block_from_disk(key); };
      // The blocks memory lacks, in chain order, read (and checked) on the
      // reader's thread ahead of the engine, which copies them in.
      std::vector<KvDiskReader::Key> missing;
      uint64_t parent = prefix_root(s.kv_variant);
      const int64_t n_blocks = (static_cast<int64_t>(s.tokens.size()) - 1) / kKvBlockTokens;
      for (int64_t i = 0; i < n_blocks; ++i) {
        const auto tokens = std::span<const int32_t>(s.tokens).subspan(i * kKvBlockTokens, kKvBlockTokens);
        const uint64_t hash = chain_block_hash(parent, tokens);
        if (!pool_.indexed(hash)) missing.push_back({hash, parent, std::vector<int32_t>(tokens.begin(), tokens.end())});
        parent = hash;
      }
      const bool on_disk = !missing.empty() && options_.disk->has(missing.front().hash);
      disk_reader_->start(on_disk ? std::move(missing) : std::vector<KvDiskReader::Key>{});
      if (on_disk && !s.started) {
        EngineEvent e;
        e.kind = EngineEvent::Kind::progress;
        e.lookup_pending = true;
        emit(s, e);
      }
    }
    s.n_computed = match_prefix(pool_, s.tokens, s.kv_variant, s.chain, s.kv, from_disk);
    if (disk_reader_) disk_reader_->cancel();  // what was read past the chain's end
  } else {
    s.chain = PrefixChain{};
    s.n_computed = 0;
  }
  if (s.started) {
    // Not run yet (no room so far) and now more of it is cached: count it.
    if (!s.ran && s.n_computed > s.n_cached) {
      n_cached_tokens_ += s.n_computed - s.n_cached;
      s.n_cached = s.n_computed;
    }
    return;
  }
  s.started = true;
  s.n_cached = std::min(s.n_computed, s.n_prompt);
  // What this request writes into the cache: the full blocks of its prompt
  // past the cached prefix. Counted now, once, so that the first event
  // already carries the number every later one repeats (a client's usage
  // must not change its mind between the start of an answer and its end).
  s.n_cache_created =
      s.publishing ? std::max<int64_t>(s.n_prompt / kKvBlockTokens * kKvBlockTokens -
                                           s.n_cached,
                                       0)
                   : 0;
  n_prompt_tokens_ += s.n_prompt;
  n_cached_tokens_ += s.n_cached;
  EngineEvent e;
  e.kind = EngineEvent::Kind::progress;
  e.n_prompt_done = s.n_cached;
  emit(s, e);
}

void Engine::finish(Sequence& s, FinishReason reason) {
  release(s);
  s.done = true;
  publish_stats();  // whoever hears "done" sees the blocks back
  EngineEvent e;
  e.kind = EngineEvent::Kind::done;
  e.finish = reason;
  emit(s, e);
}

void Engine::finish_with_error(Sequence& s, const std::string& error) {
  release(s);
  s.done = true;
  publish_stats();
  EngineEvent e;
  e.kind = EngineEvent::Kind::error;
  e.error = error;
  emit(s, e);
}

void Engine::hold() {
  std::lock_guard<std::mutex> lock(mutex_);
  held_ = true;
}

void Engine::release() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    held_ = false;
  }
  wake_.notify_all();
}

void Engine::loop() {
  uint64_t next_admission = 0;
  for (;;) {
    std::vector<std::unique_ptr<Sequence>> cancelled_waiting;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock,
                 [&] { return stop_ || (!held_ && (!waiting_.empty() || !running_.empty())); });
      if (stop_) break;
      // A request cancelled while waiting for a place leaves now, not when
      // a place frees up.
      for (auto it = waiting_.begin(); it != waiting_.end();) {
        if ((*it)->handle->cancelled()) {
          cancelled_waiting.push_back(std::move(*it));
          it = waiting_.erase(it);
        } else {
          ++it;
        }
      }
      // Admit in arrival order while there is room to run them. While a
      // running request is short of KV blocks, newcomers wait: the blocks
      // that free up are its first.
      while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < options_.max_running) {
        auto& front = waiting_.front();
        const int64_t first_chunk = std::min<int64_t>(
            static_cast<int64_t>(front->tokens.size()), options_.max_batch_tokens);
        if (!running_.empty() && !front->handle->cancelled() &&
            (memory_short_ || blocks_for(first_chunk + 1) > pool_.n_available())) {
          break;  // wait for memory; the running ones will free some
        }
        if (front->admitted == 0) front->admitted = ++next_admission;
        running_.push_back(std::move(front));
        waiting_.pop_front();
      }
      n_running_ = static_cast<int64_t>(running_.size());  // with waiting_, under the lock
    }
    for (auto& s : cancelled_waiting) finish(*s, FinishReason::cancelled);
    try {
      step(running_);
    } catch (const std::exception& ex) {
      spdlog::error("engine step failed: {}", ex.what());
      for (auto& s : running_) {
        if (s->done) continue;
        // Blocks are published only after a forward completes, so what the
        // failed step was writing never reaches the cache.
        finish_with_error(*s, ex.what());
      }
    }
    running_.erase(std::remove_if(running_.begin(), running_.end(),
                                  [](const std::unique_ptr<Sequence>& s) { return s->done; }),
                   running_.end());
    publish_stats();
  }
  // Shutting down: everything still known ends as cancelled.
  for (auto& s : running_) finish(*s, FinishReason::cancelled);
  for (auto& s : waiting_) finish(*s, FinishReason::cancelled);
}

void Engine::step(std::vector<std::unique_ptr<Sequence>>& running) {
  // Cancelled requests leave before any work is spent on them.
  for (auto& s : running) {
    if (!s->done && s->handle->cancelled()) finish(*s, FinishReason::cancelled);
  }
  for (auto& s : running) {
    s->preempted = false;
    if (!s->done && s->kv.blocks.empty() && s->n_computed == 0) start_sequence(*s);
  }
  std::vector<Sequence*> by_age;
  for (auto& s : running) {
    if (!s->done) by_age.push_back(s.get());
  }
  std::sort(by_age.begin(), by_age.end(),
            [](const Sequence* a, const Sequence* b) { return a->admitted < b->admitted; });
  auto pending = [](const Sequence* s) {
    return static_cast<int64_t>(s->tokens.size()) - s->n_computed;
  };
  // Tokens: one for every decoding request first, so that a long prompt
  // never costs them their token; then chunks of the prompts (or of tokens
  // to recompute after preemption), oldest first, from what is left.
  struct Planned {
    Sequence* seq;
    int64_t n;
  };
  std::vector<Planned> plan;
  int64_t budget = options_.max_batch_tokens;
  for (Sequence* s : by_age) {
    if (budget > 0 && pending(s) == 1) {
      plan.push_back({s, 1});
      --budget;
    }
  }
  for (Sequence* s : by_age) {
    if (budget > 0 && pending(s) > 1) {
      plan.push_back({s, std::min(pending(s), budget)});
      budget -= plan.back().n;
    }
  }
  // Memory: oldest first, so an older request takes freed blocks before
  // newer ones and may preempt them (newest first) to make room; it is
  // never the other way round, so the oldest request always progresses.
  // When only older requests hold the rest, a prompt chunk shrinks to what
  // is free, and what cannot get even that waits.
  std::stable_sort(plan.begin(), plan.end(), [](const Planned& a, const Planned& b) {
    return a.seq->admitted < b.seq->admitted;
  });
  memory_short_ = false;
  for (Planned& p : plan) {
    Sequence* s = p.seq;
    if (s->preempted) {
      p.n = 0;
      continue;
    }
    while (!reserve_blocks(pool_, s->kv, s->n_computed + p.n)) {
      Sequence* victim = nullptr;
      for (Sequence* o : by_age) {
        if (o->admitted > s->admitted && !o->kv.blocks.empty()) victim = o;  // the newest
      }
      if (victim == nullptr) break;
      release(*victim);  // resumed from the cache, or recomputed, when it runs again
      victim->preempted = true;
      ++n_preemptions_;
      spdlog::debug("engine: preempted a request to free KV blocks");
    }
    const int64_t room =
        (static_cast<int64_t>(s->kv.blocks.size()) + pool_.n_available()) * kKvBlockTokens -
        s->n_computed;
    if (room < p.n) {
      memory_short_ = true;
      p.n = std::max<int64_t>(room, 0);
      if (p.n > 0 && !reserve_blocks(pool_, s->kv, s->n_computed + p.n)) {
        fail(ErrorKind::internal, "KV blocks counted free could not be reserved");
      }
    }
    if (p.n == 0) {
      const bool alone = std::all_of(by_age.begin(), by_age.end(), [&](const Sequence* o) {
        return o == s || o->kv.blocks.empty();
      });
      if (alone) finish(*s, FinishReason::max_tokens);  // the pool cannot hold it any longer
    }
  }
  plan.erase(std::remove_if(plan.begin(), plan.end(), [](const Planned& p) { return p.n == 0; }),
             plan.end());
  if (plan.empty()) return;

  std::vector<ForwardSeq> batch;
  for (const Planned& p : plan) {
    ForwardSeq fs;
    fs.tokens = std::span<const int32_t>(p.seq->tokens).subspan(p.seq->n_computed, p.n);
    fs.block_table = p.seq->kv.blocks.data();
    fs.n_past = p.seq->n_computed;
    fs.n_planned = static_cast<int64_t>(p.seq->tokens.size());
    if (model_.kv_variant(fs.n_planned) != p.seq->kv_variant) p.seq->publishing = false;
    p.seq->ran = true;
    batch.push_back(fs);
  }
  std::vector<float> logits;
  model_.forward(batch, &logits);
  ++n_steps_;
  const int64_t vocab = model_.config().vocab_size;
  for (size_t i = 0; i < plan.size(); ++i) {
    Sequence& s = *plan[i].seq;
    s.n_computed += plan[i].n;
    s.kv.n_tokens = s.n_computed;
    std::function<void(int32_t, const BlockKey&)> to_disk;
    if (disk_writer_) to_disk = [this](int32_t block, const BlockKey& key) { block_to_disk(block, key); };
    publish_prefix(pool_, s.tokens, s.n_computed, s.kv, s.chain, s.publishing, s.n_prompt, to_disk);
    const bool reading_prompt = s.n_generated == 0;
    if (reading_prompt) {
      EngineEvent e;
      e.kind = EngineEvent::Kind::progress;
      e.n_prompt_done = std::min(s.n_computed, s.n_prompt);
      emit(s, e);
    }
    if (s.n_computed < static_cast<int64_t>(s.tokens.size())) continue;  // more prompt to read
    TokenConstraint* constraint = s.request.constraint.get();
    float* row = logits.data() + i * vocab;
    int32_t tok = s.sampler->sample(row, vocab);
    if (constraint != nullptr && !constraint->allows(tok)) {
      int64_t n_allowed = 0;
      for (int64_t v = 0; v < vocab; ++v) {
        if (constraint->allows(static_cast<int32_t>(v))) ++n_allowed;
        else row[v] = -std::numeric_limits<float>::infinity();
      }
      if (n_allowed == 0) {
        finish_with_error(s, "the output grammar allows no token of the vocabulary here");
        continue;
      }
      tok = s.sampler->sample(row, vocab);
    }
    if (constraint != nullptr) constraint->accept(tok);
    if (s.stop.is_stop(tok)) {
      finish(s, FinishReason::eos);
      continue;
    }
    s.tokens.push_back(tok);
    ++s.n_generated;
    EngineEvent e;
    e.kind = EngineEvent::Kind::token;
    e.token = tok;
    emit(s, e);
    if (constraint != nullptr && constraint->complete()) {
      finish(s, FinishReason::eos);
    } else if (auto end = s.stop.after_token(s.n_generated, static_cast<int64_t>(s.tokens.size()))) {
      finish(s, *end);
    }
  }
}

}  // namespace pensieve
