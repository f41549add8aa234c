#include "server/model_registry.h"

#include <algorithm>
#include <cctype>
#include <map>

#include "core/error.h"
#include "core/log.h"
#include "server/api_error.h"

namespace pensieve::server {

using json = nlohmann::ordered_json;

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// claude-<id>: lower case, anything but [a-z0-9.-] a dash, no dash runs.
std::string claude_id(const std::string& id) {
  std::string slug;
  for (char c : lower(id)) {
    const bool keep = std::isalnum(static_cast<unsigned char>(c)) || c == '.';
    if (keep) slug += c;
    else if (!slug.empty() && slug.back() != '-') slug += '-';
  }
  while (!slug.empty() && slug.back() == '-') slug.pop_back();
  return "claude-" + slug;
}

std::string gib(int64_t bytes) { return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / 1073741824.0); }

constexpr const char* kFamilies[3] = {"haiku", "sonnet", "opus"};

}  // namespace

namespace {

class LentModel : public LoadedModel {
 public:
  LentModel(Backend& backend, int64_t bytes) : backend_(backend), bytes_(bytes) {}
  Backend& backend() override { return backend_; }
  int64_t memory_bytes() const override { return bytes_; }

 private:
  Backend& backend_;
  int64_t bytes_;
};

}  // namespace

void LendingLoader::lend(const std::string& id, Backend& backend, int64_t bytes) {
  lent_.push_back({id, {&backend, bytes}});
}

const LendingLoader::Lent& LendingLoader::find(const std::string& id) const {
  for (const auto& [name, lent] : lent_)
    if (name == id) return lent;
  fail(ErrorKind::not_found, "no backend lent for model {}", id);
}

int64_t LendingLoader::estimate_bytes(const ModelEntry& entry) { return find(entry.id).bytes; }

std::unique_ptr<LoadedModel> LendingLoader::load(const ModelEntry& entry) {
  const Lent& l = find(entry.id);
  return std::make_unique<LentModel>(*l.backend, l.bytes);
}

struct ModelRegistry::Slot {
  const ModelEntry* entry = nullptr;
  State state = State::unloaded;
  std::unique_ptr<LoadedModel> model;
  ModelInfo info;
  int in_use = 0;
  int64_t bytes = 0;         // charged: the estimate while loading, then what it holds
  uint64_t last_used = 0;    // use_clock_ at its last acquire or release
  uint64_t n_load_attempts = 0;
  std::string last_error;    // why the last load failed
  int64_t n_loads = 0, n_unloads = 0;
};

ModelRegistry::ModelRegistry(std::vector<ModelEntry> entries, ModelLoader& loader, RegistryOptions options)
    : entries_(std::move(entries)), loader_(loader), options_(std::move(options)) {
  if (entries_.empty()) fail("no model to serve");
  // Every name once, across ids and aliases (compared without case, as resolve() may).
  std::map<std::string, std::pair<size_t, std::string>> owner;  // lower(name) -> (entry, model id)
  auto claim = [&](const std::string& name, size_t i) {
    const std::string& id = entries_[i].id;
    if (name.empty()) fail("model {}: an empty name", id);
    auto [it, fresh] = owner.emplace(lower(name), std::pair{i, id});
    if (fresh) return;
    if (it->second.first == i) fail("model {}: the name '{}' is given twice", id, name);
    if (it->second.second == id) fail("two models are named '{}'", id);
    fail("the name '{}' is given to two models: {} and {}", name, it->second.second, id);
  };
  for (size_t i = 0; i < entries_.size(); ++i) claim(entries_[i].id, i);
  for (size_t i = 0; i < entries_.size(); ++i)
    for (const auto& a : entries_[i].aliases) claim(a, i);
  auto index_of = [&](const std::string& name, const std::string& what) -> size_t {
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (entries_[i].id == name) return i;
      for (const auto& a : entries_[i].aliases)
        if (a == name) return i;
    }
    std::string served;
    for (const auto& e : entries_) served += (served.empty() ? "" : ", ") + e.id;
    fail("{} '{}' names no served model (served: {})", what, name, served);
  };
  if (!options_.default_model.empty()) default_index_ = index_of(options_.default_model, "the default model");
  const std::string* family_names[3] = {&options_.haiku, &options_.sonnet, &options_.opus};
  for (int f = 0; f < 3; ++f)
    family_index_[f] = family_names[f]->empty()
                           ? default_index_
                           : index_of(*family_names[f], fmt::format("the {} model", kFamilies[f]));
  // The listing: the default model first, each model followed by its names.
  std::vector<size_t> order{default_index_};
  for (size_t i = 0; i < entries_.size(); ++i)
    if (i != default_index_) order.push_back(i);
  // Each model's claude-<id> (unless its id starts with "claude" already, or
  // that name is taken: then it is reached by its own names only).
  for (size_t i : order) {
    const ModelEntry& e = entries_[i];
    listing_.push_back({e.id, &e, ModelListing::Kind::model});
    for (const auto& a : e.aliases) listing_.push_back({a, &e, ModelListing::Kind::alias});
    if (lower(e.id).rfind("claude", 0) == 0) continue;
    const std::string c = claude_id(e.id);
    if (auto [it, fresh] = owner.emplace(lower(c), std::pair{i, e.id}); !fresh)
      spdlog::warn("model {}: not listed as {}, which names {}", e.id, c, it->second.second);
    else
      listing_.push_back({c, &e, ModelListing::Kind::claude});
  }
  for (const auto& e : entries_) {
    auto s = std::make_unique<Slot>();
    s->entry = &e;
    slots_.push_back(std::move(s));
  }
}

ModelRegistry::~ModelRegistry() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (auto& s : slots_)
    if (s->state == State::loaded) unload(lock, *s);
}

const ModelEntry* ModelRegistry::resolve(const std::string& name) const {
  for (const auto& l : listing_)
    if (l.id == name) return l.model;
  const std::string n = lower(name);
  for (const auto& l : listing_)
    if (lower(l.id) == n) return l.model;
  if (n.rfind("claude", 0) == 0) {
    for (int f = 0; f < 3; ++f)
      if (n.find(kFamilies[f]) != std::string::npos) return &entries_[family_index_[f]];
    return &entries_[default_index_];
  }
  return nullptr;
}

const ModelEntry& ModelRegistry::family_model(const std::string& family) const {
  for (int f = 0; f < 3; ++f)
    if (family == kFamilies[f]) return entries_[family_index_[f]];
  fail(ErrorKind::internal, "no model family '{}'", family);
}

ModelRegistry::Slot& ModelRegistry::slot_of(const ModelEntry& entry) {
  for (auto& s : slots_)
    if (s->entry == &entry) return *s;
  fail(ErrorKind::internal, "model {} is not this registry's", entry.id);
}

int64_t ModelRegistry::charged() const {
  int64_t sum = 0;
  for (const auto& s : slots_) sum += s->bytes;
  return sum;
}

int64_t ModelRegistry::memory_used() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return charged();
}

void ModelRegistry::unload(std::unique_lock<std::mutex>& lock, Slot& slot) {
  slot.state = State::unloading;
  std::unique_ptr<LoadedModel> model = std::move(slot.model);
  spdlog::info("unloading model {} ({})", slot.entry->id, gib(slot.bytes));
  lock.unlock();
  model.reset();  // joins its engine thread and frees its memory
  lock.lock();
  slot.state = State::unloaded;
  slot.bytes = 0;
  ++slot.n_unloads;
  changed_.notify_all();
}

bool ModelRegistry::make_room(std::unique_lock<std::mutex>& lock, int64_t need, const Slot& loading) {
  const bool budget = options_.memory_budget > 0;
  for (;;) {
    if (budget) {
      if (charged() + need <= options_.memory_budget) return true;
    } else {
      // What is free now (the loading model's reservation is not taken yet).
      const int64_t available = loader_.available_bytes();
      if (available < 0 || need <= available) return true;
    }
    Slot* victim = nullptr;
    bool others = false;
    for (auto& s : slots_) {
      if (s.get() == &loading) continue;
      if (s->state != State::unloaded) others = true;
      if (s->state == State::loaded && s->in_use == 0 && (!victim || s->last_used < victim->last_used))
        victim = s.get();
    }
    if (victim) {
      if (budget)
        spdlog::info("model {} needs {} more; {} of the {} budget are in use: unloading the least "
                     "recently used idle model",
                     loading.entry->id, gib(need), gib(charged()), gib(options_.memory_budget));
      else
        spdlog::info("model {} needs {}, more than the memory available: unloading the least "
                     "recently used idle model",
                     loading.entry->id, gib(need));
      unload(lock, *victim);
      continue;
    }
    if (!others) {
      if (need > 0)
        spdlog::warn("model {} needs {}, more than {}: loading it with no other model", loading.entry->id,
                     gib(charged() + need),
                     budget ? "the whole model memory budget of " + gib(options_.memory_budget)
                            : std::string("the memory available"));
      return true;
    }
    return false;  // busy models hold the memory
  }
}

std::shared_ptr<ModelLease> ModelRegistry::acquire(const ModelEntry& entry) {
  std::unique_lock<std::mutex> lock(mutex_);
  Slot& s = slot_of(entry);
  for (;;) {
    if (s.state == State::loaded) {
      ++s.in_use;
      s.last_used = ++use_clock_;
      Backend& backend = s.model->backend();
      return std::make_shared<ModelLease>(entry, backend, s.info, [this, &s] { release(s); });
    }
    if (s.state == State::loading || s.state == State::unloading) {
      const uint64_t attempt = s.n_load_attempts;
      changed_.wait(lock);
      // A load this request waited for failed: its error, not another try.
      if (s.state == State::unloaded && s.n_load_attempts == attempt && !s.last_error.empty())
        throw Error(ErrorKind::internal, s.last_error);
      continue;
    }
    // Unloaded: this request loads it.
    s.state = State::loading;
    ++s.n_load_attempts;
    s.last_error.clear();
    auto give_up = [&](const std::string& why) {
      s.state = State::unloaded;
      s.bytes = 0;
      s.last_error = why;
      changed_.notify_all();
    };
    int64_t estimate = 0;
    lock.unlock();
    try {
      estimate = std::max<int64_t>(loader_.estimate_bytes(entry), 0);
    } catch (const std::exception& e) {
      lock.lock();
      give_up(e.what());
      throw;
    }
    lock.lock();
    const auto deadline = std::chrono::steady_clock::now() + options_.memory_wait;
    while (!make_room(lock, estimate, s)) {
      if (changed_.wait_until(lock, deadline) == std::cv_status::timeout &&
          !make_room(lock, estimate, s)) {
        give_up("");
        throw ApiError(529, "overloaded_error",
                       fmt::format("model {} needs {} but the models busy answering requests hold "
                                   "{} of the {} model memory budget",
                                   entry.id, gib(estimate), gib(charged()), gib(options_.memory_budget)));
      }
    }
    s.bytes = estimate;  // reserved while it loads
    spdlog::info("loading model {}", entry.id);
    lock.unlock();
    std::unique_ptr<LoadedModel> model;
    ModelInfo info;
    try {
      model = loader_.load(entry);
      info = model->backend().info();
    } catch (const std::exception& e) {
      model.reset();
      lock.lock();
      give_up(e.what());
      throw;
    }
    info.id = entry.id;
    if (!entry.display_name.empty()) info.display_name = entry.display_name;
    else if (info.display_name.empty()) info.display_name = entry.id;
    lock.lock();
    s.model = std::move(model);
    s.info = std::move(info);
    s.bytes = s.model->memory_bytes();
    s.state = State::loaded;
    ++s.n_loads;
    s.last_used = ++use_clock_;
    spdlog::info("model {} loaded ({})", entry.id, gib(s.bytes));
    // What it holds may exceed the estimate (its KV pool): make room now,
    // without waiting for busy models.
    if (!make_room(lock, 0, s))
      spdlog::warn("the loaded models hold {}, more than the {} budget, until busy ones go idle",
                   gib(charged()), gib(options_.memory_budget));
    changed_.notify_all();
  }
}

void ModelRegistry::release(Slot& slot) {
  std::lock_guard<std::mutex> lock(mutex_);
  --slot.in_use;
  slot.last_used = ++use_clock_;
  changed_.notify_all();
}

void ModelRegistry::load_at_start() {
  acquire(default_model());
  for (const auto& e : entries_)
    if (e.load_at_start) acquire(e);
}

std::optional<ModelInfo> ModelRegistry::loaded_info(const ModelEntry& entry) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& s : slots_)
    if (s->entry == &entry && s->state == State::loaded) return s->info;
  return std::nullopt;
}

void ModelRegistry::for_each_loaded(const std::function<void(const ModelEntry&, Backend&)>& fn) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& s : slots_)
    if (s->state == State::loaded) fn(*s->entry, s->model->backend());
}

json ModelRegistry::status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  json models = json::array();
  for (const auto& s : slots_) {
    static const char* const kStates[] = {"unloaded", "loading", "loaded", "unloading"};
    json m = {{"id", s->entry->id}, {"state", kStates[static_cast<int>(s->state)]},
              {"memory_bytes", s->bytes}, {"requests", s->in_use},
              {"loads", s->n_loads}, {"unloads", s->n_unloads}};
    if (s->state == State::loaded) m["context_size"] = s->info.context_size;
    if (!s->last_error.empty()) m["last_error"] = s->last_error;
    models.push_back(std::move(m));
  }
  return {{"models", models},
          {"memory", {{"used_bytes", charged()}, {"budget_bytes", options_.memory_budget}}},
          {"default", default_model().id},
          {"families",
           {{"haiku", entries_[family_index_[0]].id},
            {"sonnet", entries_[family_index_[1]].id},
            {"opus", entries_[family_index_[2]].id}}}};
}

}  // namespace pensieve::server
