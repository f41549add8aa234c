#include "format/gguf_config.h"

#include <algorithm>

#include "core/error.h"

namespace pensieve {

const GgufArchInfo* gguf_arch_info(const std::string& arch) {
  static const std::pair<const char*, GgufArchInfo> table[] = {
      {"llama", {"LlamaForCausalLM", true}},
      {"phi3", {"Phi3ForCausalLM", false}},
      {"qwen2", {"Qwen2ForCausalLM", false}},
      {"qwen3", {"Qwen3ForCausalLM", false}},
  };
  for (const auto& [name, info] : table)
    if (arch == name) return &info;
  return nullptr;
}


std::string gguf_meta_key(const std::string& arch, const char* key) { return arch + "." + key; }


ModelConfig gguf_model_config(const GgufFile& f) {
  ModelConfig c;
  c.dir = f.path();
  const std::string arch = f.need_string("general.architecture");
  const GgufArchInfo* info = gguf_arch_info(arch);
  if (info == nullptr)
    fail(ErrorKind::unsupported, "{}: GGUF architecture '{}' is not supported (llama, phi3, qwen2 and qwen3 are)",
         f.path(), arch);
  c.architecture = info->hf_architecture;
  c.model_type = arch;
  auto key = [&](const char* k) { return gguf_meta_key(arch, k); };
  c.n_layers = f.need_int(key("block_count"));
  c.hidden_size = f.need_int(key("embedding_length"));
  c.intermediate_size = f.need_int(key("feed_forward_length"));
  c.n_heads = f.need_int(key("attention.head_count"));
  c.n_kv_heads = f.get_int(key("attention.head_count_kv")).value_or(c.n_heads);
  if (c.n_layers <= 0 || c.hidden_size <= 0 || c.intermediate_size <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 ||
      c.n_heads % c.n_kv_heads != 0 || c.n_layers > 4096 || c.hidden_size > (1 << 20) || c.n_heads > 4096)
    fail("{}: impossible shape in the metadata ({} layers, width {}, {} heads over {} KV heads)", f.path(),
         c.n_layers, c.hidden_size, c.n_heads, c.n_kv_heads);
  c.head_dim = f.get_int(key("attention.key_length")).value_or(c.hidden_size / c.n_heads);
  if (c.head_dim <= 0 || c.head_dim > 1024 || c.head_dim % 2 != 0)
    fail("{}: head dim {} is not supported", f.path(), c.head_dim);
  if (auto v = f.get_int(key("attention.value_length")); v && *v != c.head_dim)
    fail(ErrorKind::unsupported, "{}: value head dim {} differs from key head dim {}", f.path(), *v, c.head_dim);
  c.rms_norm_eps = f.get_double(key("attention.layer_norm_rms_epsilon")).value_or(1e-5);
  c.max_position_embeddings = f.get_int(key("context_length")).value_or(4096);
  c.rope.theta = f.get_double(key("rope.freq_base")).value_or(10000.0);
  const int64_t rot = f.get_int(key("rope.dimension_count")).value_or(c.head_dim);
  if (rot <= 0 || rot > c.head_dim || rot % 2 != 0)
    fail("{}: rope dimension count {} does not fit head dim {}", f.path(), rot, c.head_dim);
  c.rope.partial_rotary_factor = static_cast<double>(rot) / static_cast<double>(c.head_dim);
  if (auto type = f.get_string(key("rope.scaling.type")); type && *type != "none") {
    const double factor = f.get_double(key("rope.scaling.factor")).value_or(1.0);
    c.rope.factor = factor;
    c.rope.original_max_position = f.get_int(key("rope.scaling.original_context_length")).value_or(0);
    if (*type == "linear") {
      c.rope.type = RopeScaling::linear;
    } else if (*type == "yarn") {
      c.rope.type = RopeScaling::yarn;
      c.rope.attention_factor = f.get_double(key("rope.scaling.attn_factor")).value_or(0.0);
    } else {
      fail(ErrorKind::unsupported, "{}: rope scaling '{}' is not supported (linear, yarn)", f.path(), *type);
    }
  }
  if (auto w = f.get_int(key("attention.sliding_window")); w && *w > 0 && *w < c.max_position_embeddings)
    c.sliding_window = *w;
  c.hidden_act = "silu";
  if (auto bos = f.get_int("tokenizer.ggml.bos_token_id")) c.bos_token_id = *bos;
  for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
    if (auto e = f.get_int(k); e && std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), *e) == c.eos_token_ids.end())
      c.eos_token_ids.push_back(*e);
  }
  if (const GgufTensor* emb = f.tensor("token_embd.weight"); emb != nullptr && emb->ne.size() == 2)
    c.vocab_size = emb->ne[1];
  else if (auto v = f.get_int(key("vocab_size")))
    c.vocab_size = *v;
  else if (const GgufValue* toks = f.get_array("tokenizer.ggml.tokens", true))
    c.vocab_size = static_cast<int64_t>(toks->count);
  c.tie_word_embeddings = f.tensor("output.weight") == nullptr;
  c.attention_bias = f.tensor("blk.0.attn_q.bias") != nullptr;
  c.torch_dtype = "gguf";
  return c;
}

}  // namespace pensieve
