#include "format/hf_config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "format/gguf.h"
#include "format/gguf_config.h"

namespace pensieve {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) fail(ErrorKind::not_found, "{}: cannot open", path.string());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
}

void add_ids(const json& j, std::vector<int64_t>* out, const std::string& where) {
  if (j.is_null()) return;
  if (j.is_number_integer()) {
    out->push_back(j.get<int64_t>());
  } else if (j.is_array()) {
    for (const auto& v : j) {
      if (!v.is_number_integer()) fail("{}: eos_token_id entries must be integers", where);
      out->push_back(v.get<int64_t>());
    }
  } else {
    fail("{}: eos_token_id must be an integer or a list", where);
  }
}

std::vector<double> double_list(const json& j, const std::string& key, const std::string& file) {
  std::vector<double> out;
  if (!j.contains(key)) fail("{}: rope_scaling.{} is required for longrope", file, key);
  if (!j[key].is_array()) fail("{}: rope_scaling.{} must be a list", file, key);
  for (const auto& v : j[key]) {
    if (!v.is_number()) fail("{}: rope_scaling.{} must hold numbers", file, key);
    out.push_back(v.get<double>());
  }
  return out;
}

void parse_rope(const json& cfg, const std::string& file, ModelConfig* c) {
  RopeConfig& r = c->rope;
  r.theta = config_double_or(cfg, "rope_theta", 10000.0, file);
  r.partial_rotary_factor = config_double_or(cfg, "partial_rotary_factor", 1.0, file);
  r.original_max_position = config_int_or(cfg, "original_max_position_embeddings", 0, file);
  // Newer transformers puts everything under rope_parameters.
  const json* rs = nullptr;
  std::string section = "rope_scaling";
  if (cfg.contains("rope_scaling") && !cfg["rope_scaling"].is_null()) rs = &cfg["rope_scaling"];
  if (rs == nullptr && cfg.contains("rope_parameters") && cfg["rope_parameters"].is_object()) {
    rs = &cfg["rope_parameters"];
    section = "rope_parameters";
    r.theta = config_double_or(*rs, "rope_theta", r.theta, file + ": " + section);
  }
  if (rs == nullptr) return;
  if (!rs->is_object()) fail("{}: {} must be an object or null", file, section);
  // Older configs spell the key `type` (Phi-3's "su", Llama 2's "linear");
  // transformers reads `rope_type` first, as here.
  std::string type, type_key;
  for (const char* key : {"rope_type", "type"}) {
    if (rs->contains(key) && (*rs)[key].is_string()) {
      type = (*rs)[key].get<std::string>();
      type_key = section + "." + key;
      break;
    }
  }
  if (type_key.empty()) fail("{}: {} needs 'rope_type' or 'type'", file, section);
  const std::string f = file + ": " + section;
  r.factor = config_double_or(*rs, "factor", 1.0, f);
  if (rs->contains("original_max_position_embeddings")) {
    r.original_max_position = config_int(*rs, "original_max_position_embeddings", f);
  }
  if (type == "default") {
    r.type = RopeScaling::none;
  } else if (type == "linear") {
    r.type = RopeScaling::linear;
  } else if (type == "llama3") {
    r.type = RopeScaling::llama3;
    r.low_freq_factor = config_double_or(*rs, "low_freq_factor", 1.0, f);
    r.high_freq_factor = config_double_or(*rs, "high_freq_factor", 4.0, f);
    if (r.original_max_position == 0) {
      fail("{}: missing required key '{}.original_max_position_embeddings' (llama3)", file, section);
    }
  } else if (type == "longrope" || type == "su") {
    r.type = RopeScaling::longrope;
    r.short_factor = double_list(*rs, "short_factor", file);
    r.long_factor = double_list(*rs, "long_factor", file);
    r.attention_factor = config_double_or(*rs, "attention_factor", 0.0, f);
    if (r.original_max_position == 0) {
      fail("{}: missing required key 'original_max_position_embeddings' (longrope)", file);
    }
  } else if (type == "dynamic") {
    r.type = RopeScaling::dynamic;
  } else if (type == "yarn") {
    r.type = RopeScaling::yarn;
    r.beta_fast = config_double_or(*rs, "beta_fast", 32.0, f);
    r.beta_slow = config_double_or(*rs, "beta_slow", 1.0, f);
    r.attention_factor = config_double_or(*rs, "attention_factor", 0.0, f);
  } else {
    fail(ErrorKind::unsupported,
         "{}: {} '{}' is not supported (default, linear, dynamic, yarn, llama3, longrope or su)",
         file, type_key, type);
  }
}

void parse_quant(const json& cfg, const std::string& file, QuantConfig* q) {
  const json* qj = nullptr;
  if (cfg.contains("quantization") && !cfg["quantization"].is_null()) qj = &cfg["quantization"];
  else if (cfg.contains("quantization_config") && !cfg["quantization_config"].is_null())
    qj = &cfg["quantization_config"];
  if (qj == nullptr) return;
  const std::string f = file + ": quantization";
  if (!qj->is_object()) fail("{} must be an object", f);
  if (qj->contains("quant_method")) {
    const auto m = (*qj)["quant_method"].get<std::string>();
    fail(ErrorKind::unsupported, "{}: quant_method '{}' is not supported (MLX affine only)", f, m);
  }
  q->bits = static_cast<int>(config_int(*qj, "bits", f));
  q->group_size = static_cast<int>(config_int(*qj, "group_size", f));
  if (q->bits != 4 && q->bits != 8) {
    fail(ErrorKind::unsupported, "{}.bits = {} is not supported (4 or 8)", f, q->bits);
  }
  if (q->group_size != 32 && q->group_size != 64 && q->group_size != 128) {
    fail(ErrorKind::unsupported, "{}.group_size = {} is not supported (32, 64 or 128)", f,
         q->group_size);
  }
  if (qj->contains("mode") && (*qj)["mode"] != "affine") {
    fail(ErrorKind::unsupported, "{}.mode = {} is not supported (affine only)", f,
         (*qj)["mode"].dump());
  }
  for (auto& [key, val] : qj->items()) {
    if (val.is_object()) {
      const int b = static_cast<int>(config_int(val, "bits", f + "." + key));
      const int g = static_cast<int>(config_int(val, "group_size", f + "." + key));
      if ((b != 4 && b != 8) || (g != 32 && g != 64 && g != 128)) {
        fail(ErrorKind::unsupported, "{}.{}: bits {} / group_size {} is not supported (4 or 8 bits; "
             "groups of 32, 64 or 128)", f, key, b, g);
      }
      q->overrides.push_back({key, {b, g}});
    } else if (val.is_boolean() && !val.get<bool>()) {
      q->overrides.push_back({key, {0, 0}});
    }
  }
}

}  // namespace

std::pair<int, int> QuantConfig::for_module(const std::string& module) const {
  for (const auto& [name, bg] : overrides) {
    if (name == module) return bg;
  }
  return {bits, group_size};
}

int64_t config_int(const json& j, const std::string& key, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) fail("{}: missing required key '{}'", file, key);
  if (!j[key].is_number_integer()) {
    fail("{}: key '{}' must be an integer, got {}", file, key, j[key].dump());
  }
  return j[key].get<int64_t>();
}

int64_t config_int_or(const json& j, const std::string& key, int64_t fallback,
                      const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return config_int(j, key, file);
}

double config_double_or(const json& j, const std::string& key, double fallback,
                        const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number()) fail("{}: key '{}' must be a number, got {}", file, key, j[key].dump());
  return j[key].get<double>();
}

ModelConfig load_model_config(const std::string& dir) {
  if (const std::string gguf = find_gguf(dir); !gguf.empty()) return gguf_model_config(GgufFile(gguf));
  const fs::path cfg_path = fs::path(dir) / "config.json";
  if (!fs::exists(cfg_path)) fail(ErrorKind::not_found, "{}: no such file", cfg_path.string());
  const std::string file = cfg_path.string();
  const json cfg = read_json_file(cfg_path);
  if (!cfg.is_object()) fail("{}: not a JSON object", file);

  ModelConfig c;
  c.dir = dir;
  c.raw = cfg;
  if (!cfg.contains("architectures") || !cfg["architectures"].is_array() ||
      cfg["architectures"].empty() || !cfg["architectures"][0].is_string()) {
    fail("{}: missing required key 'architectures'", file);
  }
  c.architecture = cfg["architectures"][0].get<std::string>();
  if (cfg.contains("model_type") && cfg["model_type"].is_string()) {
    c.model_type = cfg["model_type"].get<std::string>();
  }
  c.vocab_size = config_int(cfg, "vocab_size", file);
  c.hidden_size = config_int(cfg, "hidden_size", file);
  c.intermediate_size = config_int(cfg, "intermediate_size", file);
  c.n_layers = config_int(cfg, "num_hidden_layers", file);
  c.n_heads = config_int(cfg, "num_attention_heads", file);
  c.n_kv_heads = config_int_or(cfg, "num_key_value_heads", c.n_heads, file);
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.intermediate_size <= 0 || c.n_layers <= 0 ||
      c.n_heads <= 0 || c.n_kv_heads <= 0) {
    fail("{}: sizes must be positive", file);
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    fail("{}: num_attention_heads ({}) is not a multiple of num_key_value_heads ({})", file,
         c.n_heads, c.n_kv_heads);
  }
  c.head_dim = config_int_or(cfg, "head_dim", 0, file);
  if (c.head_dim == 0) {
    if (c.hidden_size % c.n_heads != 0) {
      fail("{}: hidden_size is not a multiple of num_attention_heads and no head_dim", file);
    }
    c.head_dim = c.hidden_size / c.n_heads;
  }
  if (c.head_dim % 2 != 0) fail("{}: head_dim {} must be even", file, c.head_dim);
  if (c.head_dim > 256) fail(ErrorKind::unsupported, "{}: head_dim {} is larger than the 256 supported", file, c.head_dim);
  c.rms_norm_eps = config_double_or(cfg, "rms_norm_eps", 1e-6, file);
  c.max_position_embeddings = config_int_or(cfg, "max_position_embeddings", 4096, file);
  c.tie_word_embeddings = cfg.value("tie_word_embeddings", false);
  c.attention_bias = cfg.value("attention_bias", false);
  if (cfg.contains("hidden_act") && cfg["hidden_act"].is_string()) {
    c.hidden_act = cfg["hidden_act"].get<std::string>();
  }
  if (c.hidden_act != "silu" && c.hidden_act != "swish") {
    fail(ErrorKind::unsupported, "{}: hidden_act '{}' is not supported", file, c.hidden_act);
  }
  const bool use_sw = !cfg.contains("use_sliding_window") || cfg["use_sliding_window"].is_null() ||
                      cfg["use_sliding_window"].get<bool>();
  if (use_sw) c.sliding_window = config_int_or(cfg, "sliding_window", 0, file);
  if (cfg.contains("torch_dtype") && cfg["torch_dtype"].is_string()) {
    c.torch_dtype = cfg["torch_dtype"].get<std::string>();
  }
  parse_rope(cfg, file, &c);
  parse_quant(cfg, file, &c.quant);

  c.bos_token_id = config_int_or(cfg, "bos_token_id", -1, file);
  if (cfg.contains("eos_token_id")) add_ids(cfg["eos_token_id"], &c.eos_token_ids, file);
  const fs::path gen_path = fs::path(dir) / "generation_config.json";
  if (fs::exists(gen_path)) {
    const json gen = read_json_file(gen_path);
    if (gen.contains("eos_token_id")) add_ids(gen["eos_token_id"], &c.eos_token_ids, gen_path);
    if (c.bos_token_id < 0) c.bos_token_id = config_int_or(gen, "bos_token_id", -1, gen_path);
  }
  std::sort(c.eos_token_ids.begin(), c.eos_token_ids.end());
  c.eos_token_ids.erase(std::unique(c.eos_token_ids.begin(), c.eos_token_ids.end()),
                        c.eos_token_ids.end());
  return c;
}

}  // namespace pensieve
