// config.json (+ generation_config.json) of a Hugging Face model directory,
// reduced to what a decoder-only transformer needs. Every architecture reads
// the same struct; the per-architecture files decide which fields they need.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pensieve {

// factors: frequency i divided by short_factor[i] (a GGUF file's rope_freqs
// tensor, Llama 3's scaling as llama.cpp's converter stores it).
enum class RopeScaling { none, linear, llama3, longrope, dynamic, yarn, factors };

struct RopeConfig {
  RopeScaling type = RopeScaling::none;
  double theta = 10000.0;
  double factor = 1.0;
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 0;
  // longrope / su (Phi-3)
  std::vector<double> short_factor;
  std::vector<double> long_factor;
  double attention_factor = 0.0;  // 0 = derive from the scale
  // yarn
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double partial_rotary_factor = 1.0;
};

struct QuantConfig {
  int bits = 0;  // 0 = not quantized
  int group_size = 0;
  // Per-module overrides as mlx-lm writes them ("model.layers.0.mlp.down_proj": {...}).
  std::vector<std::pair<std::string, std::pair<int, int>>> overrides;
  bool quantized() const { return bits != 0; }
  // bits/group for one module name (without ".weight"); {0,0} if that module is left unquantized.
  std::pair<int, int> for_module(const std::string& module) const;
};

struct ModelConfig {
  std::string dir;
  std::string architecture;  // architectures[0]
  std::string model_type;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  int64_t sliding_window = 0;  // 0 = none
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  std::string hidden_act = "silu";
  RopeConfig rope;
  QuantConfig quant;
  std::string torch_dtype;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;  // config.json + generation_config.json, deduplicated

  nlohmann::json raw;  // config.json as read, for architecture-specific keys
};

// Reads DIR/config.json and, if present, DIR/generation_config.json.
// Errors name the file and the JSON key.
ModelConfig load_model_config(const std::string& dir);

// Parsing helpers shared with the architecture files: each throws an Error
// naming `file` and `key` when the key is missing or has the wrong type.
int64_t config_int(const nlohmann::json& j, const std::string& key, const std::string& file);
int64_t config_int_or(const nlohmann::json& j, const std::string& key, int64_t fallback,
                      const std::string& file);
double config_double_or(const nlohmann::json& j, const std::string& key, double fallback,
                        const std::string& file);

}  // namespace pensieve
