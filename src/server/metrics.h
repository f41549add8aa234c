// GET /metrics: the server's counters in Prometheus' text format (version
// 0.0.4): requests by route and status, prompt / cached / generated tokens,
// time-to-first-token and inter-token latency histograms, and the engine's
// queue, sequences, KV blocks, prefix-cache hits and preemptions, each
// labelled with the model. Thread-safe: HTTP threads record, a scrape reads.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace pensieve::server {

// A cumulative histogram over fixed upper bounds (seconds); +Inf is implied.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // Prometheus lines for `name` with `labels` (`key="value",...`, may be empty).
  void write(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> buckets_;  // per bound, not cumulative; the last is +Inf
  int64_t count_ = 0;
  double sum_ = 0;
};

// One finished (or failed) generation, as the messages route saw it.
struct GenerationRecord {
  int64_t n_prompt = 0, n_cached = 0, n_output = 0;
  double ttft_s = -1;                  // < 0: no token came
  std::vector<double> inter_token_s;   // gaps between successive tokens
};

class Metrics {
 public:
  explicit Metrics(std::string model);

  // Every answered request; route is the path pattern (route_label()).
  void record_request(const std::string& route, int status);
  void record_generation(const std::string& model, const GenerationRecord& g);
  // The exposition: this object's counters (generations per model) and each
  // loaded model's engine (its /health stats object, null when it has none)
  // as gauges and counters. Requests, in-flight requests and connections are
  // the server's, labelled with the default model.
  std::string render(const std::vector<std::pair<std::string, nlohmann::ordered_json>>& engines,
                     int64_t n_inflight, int64_t n_connections) const;

  // The route a path is counted under: a registered pattern, or "other"
  // (so a client cannot grow the label set without bound).
  static std::string route_label(const std::string& path);

 private:
  const std::string model_;
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  struct PerModel {
    PerModel();
    int64_t n_generations = 0, n_prompt = 0, n_cached = 0, n_output = 0, n_cache_hits = 0;
    Histogram ttft, itl;
  };
  std::map<std::string, PerModel> models_;  // the default model's always, others once used
};

}  // namespace pensieve::server
