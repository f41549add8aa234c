// The models one server serves, by name: which model a request's `model`
// names, loading it on first use and unloading the least recently used idle
// model when the next one would not fit the memory budget (as Ollama does).
//
// Names: a model's id, its aliases, and claude-<id> (Claude Code's model
// picker lists only ids starting with "claude"; docs/api-compatibility.md).
// Any other name starting with "claude" maps by family: one containing
// "haiku", "sonnet" or "opus" to that family's model (configurable), any
// other to the default model, so Claude Code's background Haiku requests
// are served whatever the user configured. A name matching nothing is
// unknown (the server answers 404 not_found_error).
//
// Memory: a model is charged what it holds once loaded (weights + KV pool,
// LoadedModel::memory_bytes()); before loading, the loader's estimate makes
// room within the budget, or, without one, within what the loader says is
// available. Only idle models (no request holds them) are unloaded; a load that
// needs a busy model's memory waits for it to go idle. A model that alone
// exceeds the budget is loaded with nothing else (a warning says so).
//
// Thread-safe. acquire() blocks while the model loads (other models keep
// serving); a request holds its ModelLease until its answer is complete.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/backend.h"

namespace pensieve::server {

struct ModelEntry {
  std::string id;                    // the canonical name (responses carry it)
  std::vector<std::string> aliases;  // more names for it
  std::string display_name;          // "" = id
  bool load_at_start = false;
  int64_t context_size_hint = 0;     // listed before it is loaded (0: unknown until then)
  int64_t max_output_tokens = 0;     // cap on one answer's tokens (0: the context's)
};

// A model in memory with everything that serves it (weights, KV pool,
// engine thread, tokenizer); destroying it frees that memory.
class LoadedModel {
 public:
  virtual ~LoadedModel() = default;
  virtual Backend& backend() = 0;
  virtual int64_t memory_bytes() const = 0;
};

class ModelLoader {
 public:
  virtual ~ModelLoader() = default;
  // Bytes the model will hold once loaded, before loading it (it may
  // download the model first). Throws pensieve::Error when it cannot.
  virtual int64_t estimate_bytes(const ModelEntry& entry) = 0;
  // Loads it. Throws pensieve::Error when it cannot.
  virtual std::unique_ptr<LoadedModel> load(const ModelEntry& entry) = 0;
  // Memory free now for models (the device's), for a registry without a
  // budget: a model whose estimate exceeds it makes idle models unload
  // first. -1: unknown (every model fits).
  virtual int64_t available_bytes() { return -1; }
};

// Lends backends made elsewhere: the entry whose id is `id` is `backend`,
// holding `bytes` (tests; a server of one backend).
class LendingLoader : public ModelLoader {
 public:
  void lend(const std::string& id, Backend& backend, int64_t bytes = 0);
  int64_t estimate_bytes(const ModelEntry& entry) override;
  std::unique_ptr<LoadedModel> load(const ModelEntry& entry) override;

 private:
  struct Lent {
    Backend* backend;
    int64_t bytes;
  };
  std::vector<std::pair<std::string, Lent>> lent_;
  const Lent& find(const std::string& id) const;
};

struct RegistryOptions {
  std::string default_model;             // a name; "" = the first entry
  std::string haiku, sonnet, opus;       // names; "" = the default model
  // Bytes for all loaded models. 0: what the loader says is available when
  // a model is to be loaded (ModelLoader::available_bytes).
  int64_t memory_budget = 0;
  // How long a request waits for busy models to free the memory its model
  // needs before it gets 529 overloaded_error.
  std::chrono::milliseconds memory_wait{std::chrono::minutes(10)};
};

// A loaded model held for one request: it is not unloaded while a lease exists.
class ModelLease {
 public:
  ModelLease(const ModelEntry& entry, Backend& backend, ModelInfo info, std::function<void()> release)
      : entry(entry), backend(backend), info(std::move(info)), release_(std::move(release)) {}
  ~ModelLease() {
    if (release_) release_();
  }
  ModelLease(const ModelLease&) = delete;
  ModelLease& operator=(const ModelLease&) = delete;

  const ModelEntry& entry;
  Backend& backend;
  const ModelInfo info;  // its id is entry.id

 private:
  std::function<void()> release_;
};

// One id GET /v1/models lists.
struct ModelListing {
  std::string id;
  const ModelEntry* model = nullptr;  // the model it names
  enum class Kind { model, alias, claude } kind = Kind::model;
};

class ModelRegistry {
 public:
  // Throws pensieve::Error(invalid_input) for an empty list, a name given
  // twice (ids and aliases together), or a default/family name that names
  // no model.
  ModelRegistry(std::vector<ModelEntry> entries, ModelLoader& loader, RegistryOptions options = {});
  ~ModelRegistry();  // unloads every model (no lease may outlive the registry)
  ModelRegistry(const ModelRegistry&) = delete;
  ModelRegistry& operator=(const ModelRegistry&) = delete;

  // The model `name` selects, or null when it names none.
  const ModelEntry* resolve(const std::string& name) const;
  const ModelEntry& default_model() const { return entries_[default_index_]; }
  const ModelEntry& family_model(const std::string& family) const;  // "haiku", "sonnet", "opus"
  const std::vector<ModelEntry>& entries() const { return entries_; }
  // Every listed id: each model (the default first, then in the given
  // order) followed by its aliases and its claude- id.
  const std::vector<ModelListing>& listing() const { return listing_; }

  // The model loaded and held. Loads it when it is not (unloading idle
  // models as the budget needs), waiting for a load already under way.
  // Throws what loading threw (a request that waited for that load:
  // pensieve::Error with its message), ApiError 529 when busy models hold
  // the memory it needs longer than memory_wait.
  std::shared_ptr<ModelLease> acquire(const ModelEntry& entry);
  // Loads the models marked load_at_start (the default model always).
  void load_at_start();

  // The loaded model's info, or null when it is not loaded.
  std::optional<ModelInfo> loaded_info(const ModelEntry& entry) const;
  // Calls fn for each loaded model (under the registry's lock: fn must not
  // call back into the registry).
  void for_each_loaded(const std::function<void(const ModelEntry&, Backend&)>& fn) const;
  // For GET /health: each model's state, memory and use, and the budget.
  nlohmann::ordered_json status() const;
  int64_t memory_used() const;

 private:
  struct Slot;
  enum class State { unloaded, loading, loaded, unloading };
  Slot& slot_of(const ModelEntry& entry);
  void release(Slot& slot);
  // With the lock held: unloads idle models (least recently used first)
  // until `need` more bytes fit; true when they do.
  bool make_room(std::unique_lock<std::mutex>& lock, int64_t need, const Slot& loading);
  void unload(std::unique_lock<std::mutex>& lock, Slot& slot);
  int64_t charged() const;  // with the lock held

  std::vector<ModelEntry> entries_;
  ModelLoader& loader_;
  RegistryOptions options_;
  size_t default_index_ = 0;
  size_t family_index_[3] = {0, 0, 0};
  std::vector<ModelListing> listing_;
  std::vector<std::unique_ptr<Slot>> slots_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  uint64_t use_clock_ = 0;
};

}  // namespace pensieve::server
