// pensieve serve: the Anthropic Messages API on a local model.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <map>
#include <mutex>
#include <regex>
#include <thread>

#include "chat/chat_config.h"
#include "chat/stop_ids.h"
#include "cli/command.h"
#include "cli/config_file.h"
#include "core/error.h"
#include "core/memory_info.h"
#include "core/mmap_file.h"
#include "core/log.h"
#include "engine/engine.h"
#include "engine/kv_disk_store.h"
#include "format/gguf.h"
#include "format/hf_config.h"
#include "hub/hub.h"
#include "hub/progress_printer.h"
#include "hub/repo_id.h"
#include "models/model.h"
#include "server/api_error.h"
#include "server/auth.h"
#include "server/engine_backend.h"
#include "server/loading_server.h"
#include "server/server.h"
#include "server/systemd.h"
#include "tokenizer/tokenizer.h"

namespace pensieve::cli {
namespace {

namespace fs = std::filesystem;

struct Opts {
  std::string config;
  std::string model, model_id, aliases, host = "127.0.0.1", api_key;
  std::string default_model, haiku_model, sonnet_model, opus_model, models_memory;
  std::string prefix_cache_dir, prefix_cache_disk = "8G";
  int port = 8080, threads = 0, parallel = 4, http_threads = 64, max_queue = 16, max_per_client = 0;
  int64_t ctx_size = 0, batch_tokens = 0, max_output_tokens = -1, sliding_window = -1;
  std::string kv_memory;  // parse_memory_size; empty: automatic
  std::string device = "auto", gpu_memory;
  std::string kv_type = "f16";
  size_t max_body_mb = 32;
  bool no_prefix_cache = false;
  bool mmap = false;
  bool test_hooks = false;
  bool allow_no_key = false;
  int header_timeout = 10, read_timeout = 30;
  size_t max_connections = 0;
};

// The bundled model: <prefix>/share/pensieve/models/stories260K next to
// <prefix>/bin/pensieve, in an install (cmake --install, the .deb) and in
// every build folder (cmake/Install.cmake copies it there), or
// models/stories260K of the source tree above the binary; PENSIEVE_HOME
// (a source tree, or an install prefix's share/pensieve) comes first.
std::string bundled_model_dir() {
  std::vector<fs::path> roots;
  if (const char* home = std::getenv("PENSIEVE_HOME")) roots.emplace_back(home);
  char exe[PATH_MAX] = {};
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    for (fs::path p = fs::path(std::string(exe, n)).parent_path(); !p.empty() && p != p.root_path();
         p = p.parent_path()) {
      roots.push_back(p);
      roots.push_back(p / "share" / "pensieve");
    }
  }
  for (const auto& r : roots) {
    const fs::path dir = r / "models" / "stories260K";
    if (fs::exists(dir / "config.json")) return dir.string();
  }
  fail(ErrorKind::not_found,
       "no --model given and the bundled model was not found (looked for "
       "models/stories260K in PENSIEVE_HOME and for share/pensieve/models/stories260K in the "
       "folders above {}); pass --model DIR or ORG/NAME, or set PENSIEVE_HOME",
       n > 0 ? fs::path(std::string(exe, n)).parent_path().string() : std::string("the binary"));
}

// --kv-memory and --gpu-memory are checked when parsed (from the command
// line, the environment or a config file), before anything loads.
CLI::Validator memory_size_check() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        try {
          parse_memory_size(v);
          return "";
        } catch (const Error& e) {
          return e.what();
        }
      },
      "SIZE");
}

// A value as the shell takes it back: bare when it is plain, else in single quotes.
std::string shell_word(const std::string& text) {
  if (!text.empty() &&
      text.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                             "_-.,:/@+=%") == std::string::npos)
    return text;
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The line that starts Claude Code against this server, to paste as it is:
// - ANTHROPIC_AUTH_TOKEN, not ANTHROPIC_API_KEY: with a base URL alone
//   Claude Code says "Not logged in", and with an API key interactive
//   Claude Code first asks whether to use it ("No" preselected). The token
//   is sent as "Authorization: Bearer", which the server takes as a key:
//   the server's own key when it has one, else any word.
// - ANTHROPIC_MODEL names the served model, and CLAUDE_CODE_MAX_CONTEXT_TOKENS
//   its context: for a model name it does not know Claude Code assumes a
//   1M-token window and would compact far too late (it reads the variable
//   only for such names).
std::string claude_command(const std::string& url, const std::string& key, const std::string& model,
                           int64_t context) {
  return fmt::format("ANTHROPIC_BASE_URL={} ANTHROPIC_AUTH_TOKEN={} ANTHROPIC_MODEL={} "
                     "CLAUDE_CODE_MAX_CONTEXT_TOKENS={} claude",
                     shell_word(url), shell_word(key.empty() ? "pensieve" : key),
                     shell_word(model), context);
}

// Each connection is a file descriptor: lift the soft limit to the hard one
// so that thousands of idle clients do not run the server out of them.
void raise_open_file_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// One model the server may serve: where it is and how to serve it.
struct ModelSpec {
  std::string id;
  std::string source;             // a directory or ORG/NAME[@REV]; "" = the bundled model
  std::string where;              // where it was configured, for messages ("--model", "FILE:LINE")
  int64_t ctx_size = 0;           // 0: the model's (65536 for the bundled model)
  int64_t sliding_window = -1;
  int64_t kv_memory_bytes = 0;    // 0: automatic
  KvType kv_type = KvType::f16;
};

// Everything that serves one loaded model. Members go in reverse: the
// backend, then the engine (its thread joined), the tokenizer, the weights.
class ServedModel : public server::LoadedModel {
 public:
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<server::EngineBackend> served;

  server::Backend& backend() override { return *served; }
  int64_t memory_bytes() const override {
    const int64_t kv = model->kv_blocks() * model->kv_bytes_per_block();
    const int64_t device = model->backend().bytes_allocated();  // the GPU's: all of it
    return device > 0 ? device : model->info().weight_bytes + kv;
  }
};

// Loads the configured models for the registry: downloads a Hub model the
// first time, reads the weights, plans the KV pool, starts the engine.
class ServeLoader : public server::ModelLoader {
 public:
  ServeLoader(const Opts& o, int64_t kv_memory_bytes, int64_t gpu_memory_bytes)
      : o_(o), kv_memory_bytes_(kv_memory_bytes), gpu_memory_bytes_(gpu_memory_bytes) {}

  void add(ModelSpec spec) { specs_.push_back(std::move(spec)); }
  const std::vector<ModelSpec>& specs() const { return specs_; }
  // While set, downloads and loads report their progress to it (/health).
  void set_loading_server(server::LoadingServer* loading) {
    std::lock_guard<std::mutex> lock(mutex_);
    loading_ = loading;
  }
  std::string device_name() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return device_name_;
  }

  int64_t estimate_bytes(const server::ModelEntry& entry) override {
    const ModelSpec& sp = spec(entry.id);
    const std::string dir = local_dir(sp);
    return sp.kv_memory_bytes + model_weight_file_bytes(dir);
  }

  int64_t available_bytes() override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (device_name_ == "cuda" && probe_) return probe_->memory().available;
    return read_memory_info().available;
  }

  std::unique_ptr<server::LoadedModel> load(const server::ModelEntry& entry) override {
    const ModelSpec& sp = spec(entry.id);
    const std::string dir = local_dir(sp);
    report({{"stage", "load"}, {"model", dir}});
    const bool bundled = sp.source.empty();
    int64_t window = sp.sliding_window;
    // stories260K was trained on 512 positions. Claude Code's first request is
    // ~32k tokens in its 512-piece vocabulary: attending over all of them the
    // model never ends a story (it writes noise until the output cap); with
    // each layer attending over at most the last 512 positions it stays in
    // the regime it was trained in (RoPE only sees relative distances) and
    // ends its stories as it learned to.
    if (window < 0 && bundled) window = load_model_config(dir).max_position_embeddings;
    auto out = std::make_unique<ServedModel>();
    out->model = load_model(dir, {.n_threads = o_.threads, .prefault = true, .sliding_window = window,
                                  .device = o_.device, .kv_type = sp.kv_type});
    const ModelConfig& c = out->model->config();
    const bool on_gpu = std::string(out->model->backend().device()) == "cuda";
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (device_name_.empty()) {
        device_name_ = on_gpu ? "cuda" : "cpu";
        if (on_gpu) probe_ = make_backend("cuda", 1);
        spdlog::info("backend: {}", out->model->backend().description());
        if (!on_gpu && o_.device == "auto") spdlog::info("no GPU: {}", cuda_unavailable_reason());
      }
    }
    int64_t ctx = sp.ctx_size;
    if (ctx == 0) ctx = bundled ? 65536 : c.max_position_embeddings;
    if (ctx > c.max_position_embeddings &&
        (c.sliding_window == 0 || c.sliding_window > c.max_position_embeddings)) {
      spdlog::warn("{}: context {} is longer than the {} positions {} was trained on; quality may "
                   "drop (--sliding-window {} keeps attention within them)",
                   entry.id, ctx, c.max_position_embeddings, c.architecture, c.max_position_embeddings);
    }
    if (c.sliding_window > 0 && c.sliding_window < ctx)
      spdlog::info("{}: attention window: the last {} positions", entry.id, c.sliding_window);
    out->tokenizer = Tokenizer::load(dir);
    // A tokenizer with more tokens than the model has embeddings is another
    // model's: its ids would index past the embedding table.
    if (out->tokenizer->vocab_size() > c.vocab_size)
      fail("{}/tokenizer.json has {} tokens but {}/config.json's vocab_size is {}: the tokenizer "
           "belongs to another model",
           dir, out->tokenizer->vocab_size(), dir, c.vocab_size);
    chat::ChatConfig chat = chat::load_chat_config(dir);
    std::vector<int32_t> stop_ids = chat::collect_stop_ids(c.eos_token_ids, *out->tokenizer, chat);
    EngineOptions eo;
    eo.ctx_size = ctx;
    eo.max_running = o_.parallel;
    eo.max_batch_tokens = o_.batch_tokens > 0 ? o_.batch_tokens : out->model->backend().step_tokens();
    eo.max_queue = o_.max_queue;
    eo.kv_memory_bytes = sp.kv_memory_bytes > 0 ? sp.kv_memory_bytes
                         : on_gpu               ? gpu_memory_bytes_
                                                : kv_memory_bytes_;
    if (on_gpu) {
      eo.kv_memory_option = "--gpu-memory";
      eo.memory_name = "GPU memory";
    }
    eo.prefix_cache = !o_.no_prefix_cache;
    eo.disk = disk_tier(dir, *out->model);
    eo.fit_ctx_size = sp.ctx_size == 0;  // the model's default shrinks to fit; the user's does not
    out->engine = std::make_unique<Engine>(*out->model, eo);
    out->served = std::make_unique<server::EngineBackend>(entry.id, *out->engine, *out->tokenizer,
                                                          std::move(chat), std::move(stop_ids));
    return out;
  }

  // The prefix cache's disk tier for a model, or null (off, or a folder it
  // cannot use: then it warns and the server runs without).
  std::shared_ptr<KvDiskStore> disk_tier(const std::string& dir, const Model& model) {
    if (o_.no_prefix_cache || o_.prefix_cache_disk == "0") return nullptr;
    const ModelConfig& c = model.config();
    std::string root = o_.prefix_cache_dir;
    if (root.empty()) {
      const char* xdg = std::getenv("XDG_CACHE_HOME");
      const char* home = std::getenv("HOME");
      if (xdg != nullptr && xdg[0] == '/') root = fs::path(xdg) / "pensieve" / "prefix-cache";
      else if (home != nullptr && home[0] != '\0') root = fs::path(home) / ".cache" / "pensieve" / "prefix-cache";
      else return nullptr;
    }
    try {
      return std::make_shared<KvDiskStore>(root,
                                           kv_fingerprint(dir, c.architecture, c.sliding_window,
                                                          model.backend().device(), model.kv_type()),
                                           parse_memory_size(o_.prefix_cache_disk));
    } catch (const Error& e) {
      spdlog::warn("no prefix cache on disk: {}", e.what());
      return nullptr;
    }
  }

  // The folder a spec's model is in, downloading a Hub model the first time.
  std::string local_dir(const ModelSpec& sp) {
    if (sp.source.empty()) return bundled_model_dir();
    if (fs::exists(sp.source)) return sp.source;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (auto it = downloaded_.find(sp.id); it != downloaded_.end()) return it->second;
    }
    spdlog::info("{} is not a folder here: taking it from the Hugging Face cache or Hub", sp.source);
    hub::ProgressPrinter printer(stderr, false);  // plain lines into the log
    const std::string dir = hub::ensure_model(sp.source, [&](const hub::PullProgress& p) {
      printer.update(p);
      report({{"stage", "download"},
              {"download",
               {{"repo", p.repo},
                {"file", p.file},
                {"file_index", p.file_index},
                {"n_files", p.n_files},
                {"bytes_done", p.bytes_done},
                {"bytes_total", p.bytes_total},
                {"percent", p.bytes_total > 0 ? 100.0 * static_cast<double>(p.bytes_done) /
                                                    static_cast<double>(p.bytes_total)
                                              : 0.0}}}});
    });
    printer.finish();
    std::lock_guard<std::mutex> lock(mutex_);
    downloaded_[sp.id] = dir;
    return dir;
  }

  const ModelSpec& spec(const std::string& id) const {
    for (const auto& sp : specs_)
      if (sp.id == id) return sp;
    fail(ErrorKind::internal, "no model spec for {}", id);
  }

 private:
  void report(nlohmann::ordered_json state) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (loading_ != nullptr) loading_->set_state(std::move(state));
  }

  const Opts& o_;
  int64_t kv_memory_bytes_, gpu_memory_bytes_;
  std::vector<ModelSpec> specs_;
  mutable std::mutex mutex_;
  server::LoadingServer* loading_ = nullptr;
  std::string device_name_;              // of the first model loaded
  std::unique_ptr<Backend> probe_;       // asks the GPU for its free memory
  std::map<std::string, std::string> downloaded_;  // id -> its Hub snapshot folder
};

// The name clients see for the top-level model: --model-id, else ORG/NAME
// for a Hub model (not the commit its snapshot folder is named after), else
// the folder's name.
std::string model_id_for(const std::string& source, const std::string& given, const std::string& bundled_dir) {
  if (!given.empty()) return given;
  const std::string dir = source.empty() ? bundled_dir : source;
  std::string id;
  if (source.rfind("ollama:", 0) == 0) return source.substr(7);  // Ollama's own name, NAME:TAG
  if (!source.empty() && !fs::exists(source)) id = hub::parse_repo_ref(source).repo;
  if (id.empty()) id = hub::repo_of_snapshot_dir(dir);
  if (id.empty()) id = fs::path(dir).lexically_normal().filename().string();
  if (id.empty()) id = fs::path(dir).lexically_normal().parent_path().filename().string();
  // A GGUF file: its name without ".gguf" (and without "-00001-of-0000N" for split files).
  if (id.size() > 5 && id.ends_with(".gguf")) {
    id.resize(id.size() - 5);
    static const std::regex split(R"(-\d{5}-of-\d{5}$)");
    id = std::regex_replace(id, split, "");
  }
  return id;
}

// What the listing shows before a model is loaded: its configured context,
// else its config.json's (for a folder here), else unknown (0).
int64_t context_hint(const ModelSpec& sp) {
  if (sp.ctx_size > 0) return sp.ctx_size;
  if (sp.source.empty()) return 65536;
  try {
    if (!fs::exists(fs::path(sp.source) / "config.json") && find_gguf(sp.source).empty()) return 0;
    return load_model_config(sp.source).max_position_embeddings;
  } catch (const Error&) {
    return 0;  // loading it will say what is wrong
  }
}

RegisterCommand reg("serve", [](CLI::App& app) {
  app.description("Serve the Anthropic Messages API (POST /v1/messages) on a local model");
  auto o = std::make_shared<Opts>();
  app.add_option("--config", o->config,
                 "TOML file of these options (keys: their long names, e.g. port = 8080); default: "
                 "$PENSIEVE_CONFIG, else $XDG_CONFIG_HOME/pensieve/config.toml if it exists. "
                 "Flags and environment variables win over it; `pensieve config` shows the result");
  app.add_option("--model", o->model,
                 "model directory or Hugging Face repo (ORG/NAME[@REV]); default: the bundled "
                 "stories260K")
      ->envname("PENSIEVE_MODEL");
  app.add_option("--model-id", o->model_id,
                 "name listed by GET /v1/models (default: ORG/NAME for a Hub model, else the "
                 "folder's name)");
  app.add_option("--aliases", o->aliases,
                 "more names for --model, comma-separated (e.g. gpt-4o-mini for tools that insist "
                 "on a name); a config file's [models.NAME] tables add more models, each with "
                 "its own aliases");
  app.add_option("--default-model", o->default_model,
                 "the model (a name or alias) loaded at start and answering claude-* names of no "
                 "family below (default: --model when given, else the first [models.NAME] table)");
  app.add_option("--haiku-model", o->haiku_model,
                 "the model answering claude-*haiku* names, e.g. Claude Code's background requests "
                 "(default: the default model)");
  app.add_option("--sonnet-model", o->sonnet_model,
                 "the model answering claude-*sonnet* names (default: the default model)");
  app.add_option("--opus-model", o->opus_model,
                 "the model answering claude-*opus* names (default: the default model)");
  app.add_option("--models-memory", o->models_memory,
                 "memory all loaded models may hold together (weights and KV caches), as "
                 "--kv-memory takes it; loading one more unloads the least recently used idle "
                 "model when it would not fit (default: what is free when a model is loaded)")
      ->check(memory_size_check());
  app.add_option("--host", o->host, "address to bind")
      ->capture_default_str()
      ->envname("PENSIEVE_HOST");
  app.add_option("--port", o->port, "port to bind (0: any free port)")
      ->capture_default_str()
      ->envname("PENSIEVE_PORT")
      ->check(CLI::Range(0, 65535));
  app.add_option("--ctx-size", o->ctx_size,
                 "tokens per sequence (default: the model's; 65536 for the bundled model)")
      ->check(CLI::PositiveNumber);
  app.add_option("--sliding-window", o->sliding_window,
                 "each token attends to the last N positions only (0: all of them; default: "
                 "config.json's sliding_window, and for the bundled model its 512 trained "
                 "positions, so that it still writes stories after a 30k-token Claude Code prompt)")
      ->check(CLI::NonNegativeNumber);
  add_threads_option(app, o->threads);
  app.add_option("--parallel", o->parallel, "sequences decoded together")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  add_device_option(app, o->device);
  add_kv_type_option(app, o->kv_type);
  app.add_option("--batch-tokens", o->batch_tokens,
                 "tokens per forward step (prompt chunk size) (default: 512 on the CPU, 2048 on a GPU)")
      ->check(CLI::Range(16, 65536));
  app.add_option("--kv-memory", o->kv_memory,
                 "KV cache budget: GiB, or with a unit (512M, 2G) (default: enough for --parallel "
                 "full contexts, at most half of the memory available at start). When it cannot "
                 "hold one full context, the model's context is shrunk to what it holds (and "
                 "/health says so); an explicit --ctx-size is refused instead")
      ->check(memory_size_check());
  app.add_option("--gpu-memory", o->gpu_memory,
                 "KV cache budget on the GPU (with --device cuda or auto on a GPU), as --kv-memory "
                 "takes it (default: enough for --parallel full contexts, at most half of the "
                 "GPU memory free after the weights)")
      ->check(memory_size_check());
  app.add_flag("--mmap", o->mmap,
               "use the weights mapped from the page cache (instant load, pages the kernel may "
               "drop) instead of read into memory (faster decoding; the default)");
  app.add_flag("--no-prefix-cache", o->no_prefix_cache,
               "recompute every prompt instead of reusing earlier requests' KV blocks");
  app.add_option("--prefix-cache-dir", o->prefix_cache_dir,
                 "folder of the prefix cache's disk tier: prompts' KV blocks kept across restarts "
                 "(default: $XDG_CACHE_HOME/pensieve/prefix-cache, ~/.cache when unset)")
      ->envname("PENSIEVE_PREFIX_CACHE_DIR");
  app.add_option("--prefix-cache-disk", o->prefix_cache_disk,
                 "disk each model's KV blocks may take there, as --kv-memory takes it; the least "
                 "recently used go past it (0: no disk tier) (CPU only for now)")
      ->capture_default_str()
      ->envname("PENSIEVE_PREFIX_CACHE_DISK")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            if (v == "0") return "";
            try {
              parse_memory_size(v);
              return "";
            } catch (const Error& e) {
              return e.what();
            }
          },
          "SIZE"));
  app.add_option("--api-key", o->api_key,
                 "the keys clients must send (x-api-key or Authorization: Bearer), "
                 "comma-separated; $PENSIEVE_API_KEY when not given (default: none, and then "
                 "only local clients are served)")
      ->envname("PENSIEVE_API_KEY");
  app.add_flag("--allow-no-key", o->allow_no_key,
               "serve clients on any address without an API key (without this flag, a server "
               "with no key refuses to bind a non-loopback address and answers only local "
               "clients)");
  app.add_option("--header-timeout", o->header_timeout,
                 "seconds a client has to send its request line and headers (slow or stalled "
                 "clients are closed after it)")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  app.add_option("--read-timeout", o->read_timeout,
                 "seconds a client may stall while sending its body, or while not reading the "
                 "answer, before it is dropped")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  app.add_option("--max-connections", o->max_connections,
                 "open connections at most; a new one past it closes the connection that has "
                 "waited longest without sending a request (0: the open-file limit less 128)")
      ->capture_default_str();
  app.add_option("--http-threads", o->http_threads, "requests read or answered at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--max-queue", o->max_queue, "generations running or waiting before 529")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-output-tokens", o->max_output_tokens,
                 "cap on the tokens of one response, whatever max_tokens asks (0: only the context "
                 "limits it; default 0, and 512 for the bundled model, whose stories end well "
                 "before that and which writes noise past its 512 trained positions); an answer it cuts "
                 "ends as end_turn")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-per-client", o->max_per_client,
                 "generations one client (API key, else address) may run at once before 429 "
                 "(0: no limit)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-body-mb", o->max_body_mb, "largest request body in MiB (413 above)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  // Not in --help: POST /test/hold and /test/release, for the end-to-end
  // tests that must keep a generation in flight while they probe.
  app.add_flag("--test-hooks", o->test_hooks)->group("");
  return std::function<int()>([o, self = &app] {
    ConfigFile config(config_file_path(o->config));
    config.apply(*self);
    if (o->mmap) set_default_file_residency(FileResidency::mapped);
    // Bad values fail before anything is downloaded or loaded.
    int64_t kv_memory_bytes = 0, gpu_memory_bytes = 0;
    if (!o->kv_memory.empty()) {
      try {
        kv_memory_bytes = parse_memory_size(o->kv_memory);
      } catch (const Error& e) {
        fail("--kv-memory: {}", e.what());
      }
    }
    if (!o->gpu_memory.empty()) {
      try {
        gpu_memory_bytes = parse_memory_size(o->gpu_memory);
      } catch (const Error& e) {
        fail("--gpu-memory: {}", e.what());
      }
    }
    // A socket systemd passed (socket activation) replaces --host/--port.
    const int inherited = server::inherited_listen_socket();
    if (inherited >= 0) {
      const server::SocketAddress at = server::local_address(inherited);
      spdlog::info("listening on the socket systemd passed ({}:{}); --host and --port are not used", at.host,
                   at.port);
      o->host = at.host;
      o->port = at.port;
    }
    // Before anything is loaded: a server without a key only binds loopback.
    if (server::split_api_keys(o->api_key).empty() && !o->allow_no_key &&
        !server::is_loopback_address(o->host))
      fail("refusing to listen on {} without an API key: pass --api-key (or set "
           "PENSIEVE_API_KEY), bind to 127.0.0.1, or pass --allow-no-key to serve anyone who can "
           "reach it",
           o->host);
    raise_open_file_limit();
    // SIGINT/SIGTERM are taken by one thread with sigwait (below), so block
    // them before any other thread exists.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    // The signal thread: before the server runs (download, load) a signal
    // ends the process at once (a partial download resumes next time);
    // afterwards it stops the server gracefully.
    std::atomic<server::Server*> running{nullptr};
    std::atomic<bool> done{false};
    std::thread waiter([&] {
      int sig = 0;
      sigwait(&set, &sig);
      if (done.load()) return;
      server::Server* srv = running.load();
      if (srv == nullptr) {
        spdlog::warn("signal {} while loading: exiting (a partial download resumes next time)", sig);
        std::_Exit(130);
      }
      spdlog::info("signal {}: shutting down", sig);
      srv->stop();
    });
    struct JoinWaiter {
      std::thread& t;
      std::atomic<bool>& done;
      ~JoinWaiter() {
        done.store(true);
        pthread_kill(t.native_handle(), SIGTERM);
        t.join();
      }
    } join_waiter{waiter, done};
    // The models: --model (or, with no [models.NAME] table, the bundled
    // one) first, then the tables.
    const std::vector<ModelTable> tables = config.models();
    int64_t models_memory_bytes = 0;
    if (!o->models_memory.empty()) models_memory_bytes = parse_memory_size(o->models_memory);
    ServeLoader loader(*o, kv_memory_bytes, gpu_memory_bytes);
    std::vector<server::ModelEntry> entries;
    const bool top_level = !o->model.empty() || tables.empty();
    const bool bundled = o->model.empty() && tables.empty();
    const std::string bundled_dir = bundled ? bundled_model_dir() : std::string();
    // A path is a path: a missing one is not looked for on the Hub.
    auto check_source = [&](const std::string& source, const std::string& where, const std::string& origin) {
      if (!source.empty() && !fs::exists(source) && source.rfind("ollama:", 0) != 0 && hub::looks_like_path(source))
        fail(ErrorKind::not_found, "{} {}: no such folder{}", where, source, origin);
    };
    if (top_level) {
      ModelSpec sp;
      sp.source = o->model;
      sp.where = "--model";
      check_source(sp.source, "--model", config.origin("model"));
      sp.id = model_id_for(sp.source, o->model_id, bundled_dir);
      sp.ctx_size = o->ctx_size;
      sp.sliding_window = o->sliding_window;
      sp.kv_type = *parse_kv_type(o->kv_type);
      server::ModelEntry e{.id = sp.id, .aliases = server::split_api_keys(o->aliases)};
      e.context_size_hint = context_hint(sp);
      // The bundled model's stories end well before 512 tokens, and past its
      // 512 trained positions it writes noise.
      e.max_output_tokens = o->max_output_tokens >= 0 ? o->max_output_tokens : (bundled ? 512 : 0);
      entries.push_back(std::move(e));
      loader.add(std::move(sp));
    } else if (!o->aliases.empty()) {
      fail("--aliases{} names more names for --model, which is not given: put the aliases in the "
           "[models.NAME] table of the model they are for",
           config.origin("aliases"));
    }
    for (const ModelTable& t : tables) {
      ModelSpec sp;
      sp.id = t.name;
      sp.source = t.model;
      sp.where = t.where;
      check_source(sp.source, t.where + ": models." + t.name + ".model", "");
      sp.ctx_size = t.ctx_size;
      sp.sliding_window = t.sliding_window;
      sp.kv_memory_bytes = t.kv_memory.empty() ? 0 : parse_memory_size(t.kv_memory);
      sp.kv_type = *parse_kv_type(t.kv_type.empty() ? o->kv_type : t.kv_type);
      server::ModelEntry e{.id = t.name, .aliases = t.aliases, .display_name = t.display_name,
                           .load_at_start = t.load_at_start};
      e.context_size_hint = context_hint(sp);
      e.max_output_tokens = t.max_output_tokens;
      entries.push_back(std::move(e));
      loader.add(std::move(sp));
    }
    server::RegistryOptions ro;
    ro.default_model = o->default_model;
    ro.haiku = o->haiku_model;
    ro.sonnet = o->sonnet_model;
    ro.opus = o->opus_model;
    ro.memory_budget = models_memory_bytes;
    std::unique_ptr<server::ModelRegistry> registry;
    try {
      registry = std::make_unique<server::ModelRegistry>(std::move(entries), loader, ro);
    } catch (const Error& e) {
      fail("{}{}", e.what(), config.path().empty() ? "" : " (config file " + config.path() + ")");
    }
    const std::string id = registry->default_model().id;
    // Until the models loaded at start are ready a stand-in answers /health
    // with the progress.
    auto loading = std::make_unique<server::LoadingServer>(o->host, o->port, inherited);
    const int port = loading->port();
    if (bundled) {
      spdlog::info("serving the bundled stories260K model (a 260K-parameter story writer for first "
                   "runs and tests); pass --model DIR for a real model");
    }
    loader.set_loading_server(loading.get());
    try {
      registry->load_at_start();
    } catch (const server::ApiError& e) {
      throw Error(ErrorKind::invalid_input, e.what());  // one line, as any other start failure
    }
    loader.set_loading_server(nullptr);
    const int64_t ctx = registry->loaded_info(registry->default_model())->context_size;
    server::ServerOptions so;
    so.host = o->host;
    so.port = port;
    so.listen_fd = inherited;
    // --api-key reads $PENSIEVE_API_KEY itself (CLI11's envname), so the
    // server's own look at the variable is off: one source, one rule.
    so.api_keys = server::split_api_keys(o->api_key);
    so.api_keys_from_env = false;
    so.n_http_threads = o->http_threads;
    so.max_queue = o->max_queue;
    so.max_per_client = o->max_per_client;
    so.max_output_tokens = 0;  // per model (ModelEntry::max_output_tokens)
    so.max_body_bytes = o->max_body_mb << 20;
    so.test_hooks = o->test_hooks;
    so.allow_no_key = o->allow_no_key;
    so.header_timeout_s = o->header_timeout;
    so.read_timeout_s = o->read_timeout;
    so.write_timeout_s = o->read_timeout;
    so.max_connections = o->max_connections;
    server::Server server(*registry, so);
    loading->stop();  // frees the port for the real server
    loading.reset();
    server.start();
    const std::string url = client_url(o->host, server.port());
    const std::string bound =
        o->host.find(':') != std::string::npos ? "[" + o->host + "]" : o->host;
    std::printf("pensieve: serving %s on http://%s:%d (context %lld tokens)\n", id.c_str(),
                bound.c_str(), server.port(), static_cast<long long>(ctx));
    if (registry->entries().size() > 1) {
      std::string others;
      for (const auto& e : registry->entries()) {
        if (e.id == id) continue;
        others += fmt::format("{}{} ({})", others.empty() ? "" : ", ", e.id,
                              registry->loaded_info(e) ? "loaded" : "loads on first use");
      }
      std::printf("  and %s\n", others.c_str());
    }
    std::printf("  %s\n", claude_command(url, so.api_keys.empty() ? "" : so.api_keys.front(), id,
                                         ctx).c_str());
    std::fflush(stdout);
    running.store(&server);
    server::notify_ready(fmt::format("serving {} on {}", id, url));
    server.wait();
    server::notify_stopping();
    running.store(nullptr);
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
