#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace pensieve::server {
namespace {

// A label value with Prometheus' three escapes.
std::string escape_label(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string number(double v) {
  if (v == static_cast<double>(static_cast<int64_t>(v)) && std::abs(v) < 1e15)
    return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{:.9g}", v);
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

int64_t stat(const nlohmann::ordered_json& s, const char* key) {
  const auto it = s.find(key);
  return it != s.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  const size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  ++buckets_[i];
  ++count_;
  sum_ += v;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& labels) const {
  const std::string sep = labels.empty() ? "" : ",";
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += buckets_[i];
    out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, number(bounds_[i]), cumulative);
  }
  out += fmt::format("{}_bucket{{{}{}le=\"+Inf\"}} {}\n", name, labels, sep, count_);
  out += fmt::format("{}_sum{{{}}} {}\n", name, labels, number(sum_));
  out += fmt::format("{}_count{{{}}} {}\n", name, labels, count_);
}

Metrics::PerModel::PerModel()
    : ttft({0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}),
      itl({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}) {}

Metrics::Metrics(std::string model) : model_(std::move(model)) { models_[model_]; }

std::string Metrics::route_label(const std::string& path) {
  static const char* const kExact[] = {"/v1/messages", "/v1/messages/count_tokens", "/v1/models",
                                       "/health",      "/",                         "/metrics",
                                       "/test/hold",   "/test/release"};
  for (const char* r : kExact)
    if (path == r) return r;
  if (path.rfind("/v1/models/", 0) == 0 && path.find('/', 11) == std::string::npos) return "/v1/models/{id}";
  return "other";
}

void Metrics::record_request(const std::string& route, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
}

void Metrics::record_generation(const std::string& model, const GenerationRecord& g) {
  std::lock_guard<std::mutex> lock(mutex_);
  PerModel& m = models_[model];
  ++m.n_generations;
  m.n_prompt += g.n_prompt;
  m.n_cached += g.n_cached;
  m.n_output += g.n_output;
  if (g.n_cached > 0) ++m.n_cache_hits;
  if (g.ttft_s >= 0) m.ttft.observe(g.ttft_s);
  for (const double d : g.inter_token_s) m.itl.observe(d);
}

std::string Metrics::render(const std::vector<std::pair<std::string, nlohmann::ordered_json>>& engines,
                            int64_t n_inflight, int64_t n_connections) const {
  const auto label = [](const std::string& model) { return "model=\"" + escape_label(model) + "\""; };
  const std::string m = label(model_);
  std::string out;
  std::lock_guard<std::mutex> lock(mutex_);
  header(out, "pensieve_requests_total", "counter", "HTTP requests answered, by route and status.");
  for (const auto& [key, n] : requests_)
    out += fmt::format("pensieve_requests_total{{{},route=\"{}\",status=\"{}\"}} {}\n", m,
                       escape_label(key.first), key.second, n);
  // One family at a time, a sample per model.
  const auto per_model = [&](const char* name, const char* type, const char* help, auto value) {
    header(out, name, type, help);
    for (const auto& [model, pm] : models_) out += fmt::format("{}{{{}}} {}\n", name, label(model), value(pm));
  };
  per_model("pensieve_generations_total", "counter", "Generations finished or failed.",
            [](const PerModel& p) { return p.n_generations; });
  per_model("pensieve_prompt_tokens_total", "counter",
            "Prompt tokens of finished generations, cached ones included.",
            [](const PerModel& p) { return p.n_prompt; });
  per_model("pensieve_prompt_cached_tokens_total", "counter", "Prompt tokens read from the prefix cache.",
            [](const PerModel& p) { return p.n_cached; });
  per_model("pensieve_generated_tokens_total", "counter", "Tokens generated.",
            [](const PerModel& p) { return p.n_output; });
  per_model("pensieve_prefix_cache_hits_total", "counter",
            "Generations that read part of their prompt from the prefix cache.",
            [](const PerModel& p) { return p.n_cache_hits; });
  header(out, "pensieve_time_to_first_token_seconds", "histogram",
         "From the request's arrival to its first generated token.");
  for (const auto& [model, pm] : models_) pm.ttft.write(out, "pensieve_time_to_first_token_seconds", label(model));
  header(out, "pensieve_inter_token_latency_seconds", "histogram", "Between successive generated tokens.");
  for (const auto& [model, pm] : models_) pm.itl.write(out, "pensieve_inter_token_latency_seconds", label(model));
  const auto gauge = [&](const char* name, const char* help, int64_t v) {
    header(out, name, "gauge", help);
    out += fmt::format("{}{{{}}} {}\n", name, m, v);
  };
  gauge("pensieve_inflight_requests", "Generations being answered.", n_inflight);
  gauge("pensieve_open_connections", "Client connections open.", n_connections);
  header(out, "pensieve_model_loaded", "gauge", "1 for each model in memory.");
  for (const auto& [model, engine] : engines) out += fmt::format("pensieve_model_loaded{{{}}} 1\n", label(model));
  // The engines' figures, for the loaded models that have an engine.
  std::vector<std::pair<std::string, const nlohmann::ordered_json*>> with;
  for (const auto& [model, engine] : engines)
    if (engine.is_object()) with.emplace_back(label(model), &engine);
  if (with.empty()) return out;
  const auto engine_family = [&](const char* name, const char* type, const char* help, const char* key) {
    header(out, name, type, help);
    for (const auto& [l, e] : with) out += fmt::format("{}{{{}}} {}\n", name, l, stat(*e, key));
  };
  engine_family("pensieve_queue_depth", "gauge", "Sequences waiting for the engine.", "n_waiting");
  engine_family("pensieve_running_sequences", "gauge", "Sequences the engine is running.", "n_running");
  header(out, "pensieve_kv_blocks", "gauge", "KV cache blocks by state (used + cached + free = the pool).");
  for (const auto& [l, e] : with)
    for (const auto& [state, key] : {std::pair{"used", "kv_blocks_used"}, std::pair{"cached", "kv_blocks_cached"},
                                     std::pair{"free", "kv_blocks_free"}})
      out += fmt::format("pensieve_kv_blocks{{{},state=\"{}\"}} {}\n", l, state, stat(*e, key));
  engine_family("pensieve_engine_steps_total", "counter", "Engine steps run.", "n_steps");
  engine_family("pensieve_preemptions_total", "counter", "Sequences preempted for KV memory.", "n_preemptions");
  engine_family("pensieve_prefix_cache_evictions_total", "counter", "Cached KV blocks evicted for new ones.",
                "n_evictions");
  engine_family("pensieve_prefix_cache_disk_reads_total", "counter",
                "KV blocks read from the prefix cache's disk tier instead of computed.", "n_disk_blocks_read");
  engine_family("pensieve_prefix_cache_disk_writes_total", "counter",
                "KV blocks written to the prefix cache's disk tier.", "n_disk_blocks_written");
  return out;
}

}  // namespace pensieve::server
