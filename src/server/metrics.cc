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

Metrics::Metrics(std::string model)
    : model_(std::move(model)),
      ttft_({0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}) {}

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

void Metrics::record_generation(const GenerationRecord& g) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++n_generations_;
  n_prompt_ += g.n_prompt;
  n_cached_ += g.n_cached;
  n_output_ += g.n_output;
  if (g.n_cached > 0) ++n_cache_hits_;
  if (g.ttft_s >= 0) ttft_.observe(g.ttft_s);
  for (const double d : g.inter_token_s) itl_.observe(d);
}

std::string Metrics::render(const nlohmann::ordered_json& engine, int64_t n_inflight,
                            int64_t n_connections) const {
  const std::string m = "model=\"" + escape_label(model_) + "\"";
  std::string out;
  std::lock_guard<std::mutex> lock(mutex_);
  header(out, "pensieve_requests_total", "counter", "HTTP requests answered, by route and status.");
  for (const auto& [key, n] : requests_)
    out += fmt::format("pensieve_requests_total{{{},route=\"{}\",status=\"{}\"}} {}\n", m,
                       escape_label(key.first), key.second, n);
  const auto counter = [&](const char* name, const char* help, int64_t v) {
    header(out, name, "counter", help);
    out += fmt::format("{}{{{}}} {}\n", name, m, v);
  };
  const auto gauge = [&](const char* name, const char* help, int64_t v) {
    header(out, name, "gauge", help);
    out += fmt::format("{}{{{}}} {}\n", name, m, v);
  };
  counter("pensieve_generations_total", "Generations finished or failed.", n_generations_);
  counter("pensieve_prompt_tokens_total", "Prompt tokens of finished generations, cached ones included.", n_prompt_);
  counter("pensieve_prompt_cached_tokens_total", "Prompt tokens read from the prefix cache.", n_cached_);
  counter("pensieve_generated_tokens_total", "Tokens generated.", n_output_);
  counter("pensieve_prefix_cache_hits_total", "Generations that read part of their prompt from the prefix cache.",
          n_cache_hits_);
  header(out, "pensieve_time_to_first_token_seconds", "histogram",
         "From the request's arrival to its first generated token.");
  ttft_.write(out, "pensieve_time_to_first_token_seconds", m);
  header(out, "pensieve_inter_token_latency_seconds", "histogram", "Between successive generated tokens.");
  itl_.write(out, "pensieve_inter_token_latency_seconds", m);
  gauge("pensieve_inflight_requests", "Generations being answered.", n_inflight);
  gauge("pensieve_open_connections", "Client connections open.", n_connections);
  if (engine.is_object()) {
    gauge("pensieve_queue_depth", "Sequences waiting for the engine.", stat(engine, "n_waiting"));
    gauge("pensieve_running_sequences", "Sequences the engine is running.", stat(engine, "n_running"));
    header(out, "pensieve_kv_blocks", "gauge", "KV cache blocks by state (used + cached + free = the pool).");
    for (const auto& [state, key] : {std::pair{"used", "kv_blocks_used"}, std::pair{"cached", "kv_blocks_cached"},
                                     std::pair{"free", "kv_blocks_free"}})
      out += fmt::format("pensieve_kv_blocks{{{},state=\"{}\"}} {}\n", m, state, stat(engine, key));
    counter("pensieve_engine_steps_total", "Engine steps run.", stat(engine, "n_steps"));
    counter("pensieve_preemptions_total", "Sequences preempted for KV memory.", stat(engine, "n_preemptions"));
    counter("pensieve_prefix_cache_evictions_total", "Cached KV blocks evicted for new ones.",
            stat(engine, "n_evictions"));
  }
  return out;
}

}  // namespace pensieve::server
