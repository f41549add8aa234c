#include "models/synthetic.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/half.h"
#include "format/gguf_writer.h"
#include "format/safetensors_writer.h"

namespace pensieve {
namespace {

using json = nlohmann::ordered_json;

struct Shape {
  std::string architecture, model_type;
  int64_t hidden, intermediate, layers, heads, kv_heads, head_dim, vocab, max_pos;
  double theta, eps;
  bool tied, qkv_bias, qk_norm, fused;  // fused = Phi-3 qkv_proj / gate_up_proj
  std::string rope;                     // "", "longrope", "llama3"
  int64_t bos, eos;
};

const std::map<std::string, Shape>& shapes() {
  static const std::map<std::string, Shape> s = {
      {"phi-3-mini",
       {"Phi3ForCausalLM", "phi3", 3072, 8192, 32, 32, 32, 96, 32064, 131072, 10000.0, 1e-5, false,
        false, false, true, "longrope", 1, 32000}},
      {"llama-3.2-1b",
       {"LlamaForCausalLM", "llama", 2048, 8192, 16, 32, 8, 64, 128256, 131072, 500000.0, 1e-5,
        true, false, false, false, "llama3", 128000, 128001}},
      {"qwen2.5-0.5b",
       {"Qwen2ForCausalLM", "qwen2", 896, 4864, 24, 14, 2, 64, 151936, 32768, 1000000.0, 1e-6,
        true, true, false, false, "", 151643, 151645}},
      {"qwen3-0.6b",
       {"Qwen3ForCausalLM", "qwen3", 1024, 3072, 28, 16, 8, 128, 151936, 40960, 1000000.0, 1e-6,
        true, false, true, false, "", 151643, 151645}},
  };
  return s;
}

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Deterministic random bytes: the value at a byte offset depends only on (seed, tensor, offset).
void random_bytes(uint64_t key, uint8_t* buf, size_t n, size_t offset) {
  for (size_t i = 0; i < n;) {
    const size_t word = (offset + i) / 8;
    const uint64_t r = splitmix(key ^ (word * 0x2545f4914f6cdd1dull));
    const size_t in_word = (offset + i) % 8;
    const size_t take = std::min<size_t>(8 - in_word, n - i);
    std::memcpy(buf + i, reinterpret_cast<const uint8_t*>(&r) + in_word, take);
    i += take;
  }
}

// Uniform in [-1, 1) from 16 random bits.
float unit(uint16_t bits) { return static_cast<float>(bits) / 32768.0f - 1.0f; }

template <typename Tensor>
size_t write_tensors(const std::string& dir, const std::vector<Tensor>& tensors, int n_shards) {
  if (n_shards == 1) {
    SafetensorsWriter w;
    for (const auto& t : tensors) w.add(t.name, t.dtype, t.shape, t.fill);
    return w.write(dir + "/model.safetensors");
  }
  if (static_cast<size_t>(n_shards) > tensors.size()) {
    fail("--shards {} is more than the {} tensors", n_shards, tensors.size());
  }
  // Consecutive tensors, cut where the running size passes each shard's share
  // (every shard gets at least one tensor).
  auto bytes_of = [](const Tensor& t) {
    size_t n = dtype_size(t.dtype);
    for (int64_t d : t.shape) n *= static_cast<size_t>(d);
    return n;
  };
  size_t total = 0;
  for (const auto& t : tensors) total += bytes_of(t);
  json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = json::object();
  size_t file_bytes = 0, done = 0, next = 0;
  for (int shard = 0; shard < n_shards; ++shard) {
    const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", shard + 1, n_shards);
    const size_t shards_left = static_cast<size_t>(n_shards - shard);
    const size_t target = total * static_cast<size_t>(shard + 1) / static_cast<size_t>(n_shards);
    SafetensorsWriter w;
    do {
      const Tensor& t = tensors[next++];
      w.add(t.name, t.dtype, t.shape, t.fill);
      index["weight_map"][t.name] = name;
      done += bytes_of(t);
    } while (tensors.size() - next > shards_left - 1 && (shard + 1 == n_shards || done < target));
    file_bytes += w.write(dir + "/" + name);
  }
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump(2);
  return file_bytes;
}


// The same shapes as a GGUF file in llama.cpp's names and block types, for
// side-by-side runs with llama.cpp: every matrix in one block type (Q4_0,
// Q8_0 or F16), norms and rope factors in F32, and a SentencePiece-style
// vocabulary (<unk>, <s>, </s>, the 256 byte tokens, then filler pieces) so
// that llama.cpp's tools load it.
size_t write_synthetic_gguf(const std::string& dir, const Shape& s, const SynthOptions& o) {
  GgmlType type = GgmlType::Q4_0;
  uint32_t file_type = 2;  // llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_0
  bool k_mix = false;      // Q4_K_M: llama-quantize's mix of Q4_K, Q5_K and Q6_K
  if (o.format == "gguf-q4_0") type = GgmlType::Q4_0, file_type = 2;
  else if (o.format == "gguf-q8_0") type = GgmlType::Q8_0, file_type = 7;
  else if (o.format == "gguf-f16") type = GgmlType::F16, file_type = 1;
  else if (o.format == "gguf-q4_k_m") type = GgmlType::Q4_K, file_type = 15, k_mix = true;
  else fail("--format: unknown format '{}' (gguf-q4_0, gguf-q4_k_m, gguf-q8_0, gguf-f16)", o.format);
  if (s.rope == "llama3") fail("synth-model: --format {} does not write Llama 3's rope_freqs yet", o.format);
  if (o.shards != 1) fail("synth-model: --shards applies to safetensors formats only");
  const std::string arch = s.model_type;  // phi3, llama, qwen2, qwen3: llama.cpp's names too
  const int64_t H = s.hidden, I = s.intermediate, hd = s.head_dim;
  const int64_t qd = s.heads * hd, kvd = s.kv_heads * hd;
  for (const int64_t width : {H, I, qd})
    if (width % ggml_block_elements(k_mix ? GgmlType::Q6_K : type) != 0)
      fail("synth-model: a row of {} is not whole {} blocks", width, o.format);

  GgufWriter w;
  w.set("general.architecture", arch);
  w.set("general.name", "pensieve synthetic " + o.like);
  w.set("general.file_type", file_type);
  w.set("general.quantization_version", uint32_t{2});
  const auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  w.set(arch + ".context_length", u32(s.max_pos));
  w.set(arch + ".embedding_length", u32(H));
  w.set(arch + ".feed_forward_length", u32(I));
  w.set(arch + ".block_count", u32(s.layers));
  w.set(arch + ".attention.head_count", u32(s.heads));
  w.set(arch + ".attention.head_count_kv", u32(s.kv_heads));
  w.set(arch + ".attention.layer_norm_rms_epsilon", static_cast<float>(s.eps));
  w.set(arch + ".rope.dimension_count", u32(hd));
  w.set(arch + ".rope.freq_base", static_cast<float>(s.theta));
  if (hd * s.heads != H) {
    w.set(arch + ".attention.key_length", u32(hd));
    w.set(arch + ".attention.value_length", u32(hd));
  }
  if (s.rope == "longrope") {
    constexpr int64_t kOriginal = 4096;
    w.set(arch + ".rope.scaling.original_context_length", u32(kOriginal));
    const double scale = static_cast<double>(s.max_pos) / kOriginal;
    w.set(arch + ".rope.scaling.attn_factor",
          static_cast<float>(std::sqrt(1.0 + std::log(scale) / std::log(static_cast<double>(kOriginal)))));
    w.set(arch + ".attention.sliding_window", uint32_t{262144});
  }
  // Vocabulary.
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;  // 1 normal, 2 unknown, 3 control, 6 byte
  auto push = [&](std::string t, float score, int32_t type_id) {
    tokens.push_back(std::move(t));
    scores.push_back(score);
    types.push_back(type_id);
  };
  push("<unk>", 0.f, 2);
  push("<s>", 0.f, 3);
  push("</s>", 0.f, 3);
  for (int b = 0; b < 256; ++b) push(fmt::format("<0x{:02X}>", b), 0.f, 6);
  while (static_cast<int64_t>(tokens.size()) < s.vocab) {
    const int64_t i = static_cast<int64_t>(tokens.size());
    if (i == s.eos) push("<|endoftext|>", 0.f, 3);  // (llama.cpp looks it up by name for Phi-3)
    else if (i == s.bos) push(fmt::format("<|special_{}|>", i), 0.f, 3);
    else push(fmt::format("\xE2\x96\x81" "w{}", i), -static_cast<float>(i), 1);  // "▁w<i>"
  }
  tokens.resize(static_cast<size_t>(s.vocab));
  scores.resize(tokens.size());
  types.resize(tokens.size());
  w.set("tokenizer.ggml.model", std::string("llama"));
  w.set("tokenizer.ggml.tokens", std::move(tokens));
  w.set("tokenizer.ggml.scores", std::move(scores));
  w.set("tokenizer.ggml.token_type", std::move(types));
  w.set("tokenizer.ggml.bos_token_id", u32(s.bos < s.vocab ? s.bos : 1));
  w.set("tokenizer.ggml.eos_token_id", u32(s.eos < s.vocab ? s.eos : 2));

  uint64_t key = splitmix(o.seed ^ 0x6767756600000000ull);
  const auto range_for = [](int64_t cols) { return 0.04f * std::sqrt(3072.0f / static_cast<float>(cols)); };
  // A matrix of rows x cols: random blocks whose values span [-range, range].
  // llama-quantize's Q4_K_M: Q6_K for the output and for attn_v / ffn_down of
  // the first and last eighth of the layers and every third between; Q5_K
  // for a fused attn_qkv; Q4_K elsewhere.
  auto more_bits = [&](int64_t l) {
    const int64_t n = s.layers;
    return l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2;
  };
  auto type_of = [&](const std::string& name) {
    if (!k_mix) return type;
    if (name == "output.weight") return GgmlType::Q6_K;
    if (name.find("attn_qkv") != std::string::npos) return GgmlType::Q5_K;
    if (name.find("attn_v.") != std::string::npos || name.find("ffn_down") != std::string::npos) {
      const int64_t l = std::stoll(name.substr(4));
      return more_bits(l) ? GgmlType::Q6_K : GgmlType::Q4_K;
    }
    return GgmlType::Q4_K;
  };
  auto add_matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    const uint64_t k = (key = splitmix(key));
    const float range = range_for(cols);
    const GgmlType type = type_of(name);
    w.add(name, type, {cols, rows}, [=](uint8_t* buf, size_t n, size_t off) {
      if (type == GgmlType::F16) {
        random_bytes(k, buf, n, off);
        for (size_t i = 0; i < n; i += 2) {
          uint16_t r;
          std::memcpy(&r, buf + i, 2);
          const uint16_t h = f32_to_f16(range * unit(r));
          std::memcpy(buf + i, &h, 2);
        }
        return;
      }
      // Q4_0: f16 d, then 16 bytes of nibbles q (value (q - 8)·d, so d = range / 8);
      // Q8_0: f16 d, then 32 int8 (value q·d, d = range / 127). K-quants:
      // random scale bytes and codes, d (and dmin) sized to the range.
      const size_t block = ggml_block_bytes(type);
      uint8_t tmp[256];
      if (type == GgmlType::Q4_K || type == GgmlType::Q5_K || type == GgmlType::Q6_K) {
        for (size_t done = 0; done < n;) {
          const size_t b = (off + done) / block, in_block = (off + done) % block;
          random_bytes(k, tmp, block, b * block);
          auto put = [&](size_t at, float v) {
            const uint16_t h = f32_to_f16(v);
            std::memcpy(tmp + at, &h, 2);
          };
          if (type == GgmlType::Q6_K) {
            for (int j = 192; j < 208; ++j) tmp[j] &= 0x7F;  // positive int8 scales
            put(208, range / (127.f * 32.f));
          } else {
            const float top = type == GgmlType::Q4_K ? 15.f : 31.f;
            put(0, 2.f * range / (63.f * top));  // d: d·sc·q spans up to 2·range
            put(2, range / 63.f);                // dmin: the min up to range
          }
          const size_t take = std::min(block - in_block, n - done);
          std::memcpy(buf + done, tmp + in_block, take);
          done += take;
        }
        return;
      }
      const float levels = type == GgmlType::Q4_0 ? 8.f : 127.f;
      for (size_t done = 0; done < n;) {
        const size_t b = (off + done) / block, in_block = (off + done) % block;
        random_bytes(k, tmp, block, b * block);
        uint16_t r;
        std::memcpy(&r, tmp, 2);
        const uint16_t d = f32_to_f16(range / levels * (1.0f + 0.25f * unit(r)));
        std::memcpy(tmp, &d, 2);
        if (type == GgmlType::Q8_0)
          for (size_t j = 2; j < block; ++j)
            if (tmp[j] == 0x80) tmp[j] = 0x81;  // int8 in [-127, 127]
        const size_t take = std::min(block - in_block, n - done);
        std::memcpy(buf + done, tmp + in_block, take);
        done += take;
      }
    });
  };
  auto add_f32 = [&](const std::string& name, std::vector<int64_t> ne, float center, float range) {
    const uint64_t k = (key = splitmix(key));
    w.add(name, GgmlType::F32, std::move(ne), [=](uint8_t* buf, size_t n, size_t off) {
      random_bytes(k, buf, n, off);
      for (size_t i = 0; i < n; i += 4) {
        uint16_t r;
        std::memcpy(&r, buf + i, 2);
        const float v = center + range * unit(r);
        std::memcpy(buf + i, &v, 4);
      }
    });
  };
  add_matrix("token_embd.weight", s.vocab, H);
  if (s.rope == "longrope") {
    add_f32("rope_factors_long.weight", {hd / 2}, 4.0f, 3.0f);
    add_f32("rope_factors_short.weight", {hd / 2}, 1.25f, 0.25f);
  }
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add_f32(p + "attn_norm.weight", {H}, 1.0f, 0.05f);
    if (s.fused) {
      add_matrix(p + "attn_qkv.weight", qd + 2 * kvd, H);
    } else {
      add_matrix(p + "attn_q.weight", qd, H);
      add_matrix(p + "attn_k.weight", kvd, H);
      add_matrix(p + "attn_v.weight", kvd, H);
      if (s.qkv_bias) {
        add_f32(p + "attn_q.bias", {qd}, 0.0f, 0.1f);
        add_f32(p + "attn_k.bias", {kvd}, 0.0f, 0.1f);
        add_f32(p + "attn_v.bias", {kvd}, 0.0f, 0.1f);
      }
    }
    if (s.qk_norm) {
      add_f32(p + "attn_q_norm.weight", {hd}, 1.0f, 0.05f);
      add_f32(p + "attn_k_norm.weight", {hd}, 1.0f, 0.05f);
    }
    add_matrix(p + "attn_output.weight", H, qd);
    add_f32(p + "ffn_norm.weight", {H}, 1.0f, 0.05f);
    if (s.fused) {
      add_matrix(p + "ffn_up.weight", 2 * I, H);
    } else {
      add_matrix(p + "ffn_gate.weight", I, H);
      add_matrix(p + "ffn_up.weight", I, H);
    }
    add_matrix(p + "ffn_down.weight", H, I);
  }
  add_f32("output_norm.weight", {H}, 1.0f, 0.05f);
  if (!s.tied) add_matrix("output.weight", s.vocab, H);
  std::filesystem::create_directories(dir);
  const std::string suffix = o.format.substr(5);
  return w.write(dir + "/model-" + suffix + ".gguf");
}
}  // namespace

std::vector<std::string> synthetic_shapes() {
  std::vector<std::string> out;
  for (const auto& [name, s] : shapes()) out.push_back(name);
  return out;
}

size_t write_synthetic_model(const std::string& dir, const SynthOptions& o) {
  auto it = shapes().find(o.like);
  if (it == shapes().end()) {
    std::string known;
    for (const auto& n : synthetic_shapes()) known += (known.empty() ? "" : ", ") + n;
    fail("--like: unknown model '{}' (known: {})", o.like, known);
  }
  Shape s = it->second;
  const std::pair<int64_t, int64_t*> overrides[] = {
      {o.n_layers, &s.layers},     {o.vocab_size, &s.vocab},        {o.hidden_size, &s.hidden},
      {o.intermediate_size, &s.intermediate}, {o.n_heads, &s.heads}, {o.n_kv_heads, &s.kv_heads},
      {o.head_dim, &s.head_dim}};
  for (const auto& [value, field] : overrides) {
    if (value < 0) fail("synth-model: sizes must be positive (got {})", value);
    if (value > 0) *field = value;
  }
  if (s.heads % s.kv_heads != 0) {
    fail("--heads ({}) must be a multiple of --kv-heads ({})", s.heads, s.kv_heads);
  }
  // Longrope interpolates its factors over head_dim/2 entries, so it needs at least two.
  if (s.head_dim % 2 != 0 || s.head_dim < 4) fail("--head-dim ({}) must be even and at least 4", s.head_dim);
  if (o.shards < 1) fail("--shards must be at least 1");
  if (o.format.rfind("gguf-", 0) == 0) return write_synthetic_gguf(dir, s, o);
  int bits = 0;
  DType float_dtype = DType::BF16;
  if (o.format == "mlx-4bit") bits = 4;
  else if (o.format == "mlx-8bit") bits = 8;
  else if (o.format == "bf16") float_dtype = DType::BF16;
  else if (o.format == "f16") float_dtype = DType::F16;
  else if (o.format == "f32") float_dtype = DType::F32;
  else fail("--format: unknown format '{}' (bf16, f16, f32, mlx-4bit, mlx-8bit, gguf-q4_0, gguf-q4_k_m, gguf-q8_0, gguf-f16)", o.format);
  const int group = o.group_size;
  if (bits != 0 && group != 32 && group != 64 && group != 128) {
    fail("--group-size must be 32, 64 or 128");
  }
  if (bits != 0) {
    // Every quantized matrix's input width is one of these; each must hold whole groups.
    for (const auto& [what, width] : {std::pair<const char*, int64_t>{"hidden size", s.hidden},
                                      {"intermediate size", s.intermediate},
                                      {"heads x head_dim", s.heads * s.head_dim}}) {
      if (width % group != 0) {
        fail("synth-model: {} {} is not a multiple of --group-size {}", what, width, group);
      }
    }
  }

  std::filesystem::create_directories(dir);
  json cfg;
  cfg["architectures"] = {s.architecture};
  cfg["model_type"] = s.model_type;
  cfg["hidden_size"] = s.hidden;
  cfg["intermediate_size"] = s.intermediate;
  cfg["num_hidden_layers"] = s.layers;
  cfg["num_attention_heads"] = s.heads;
  cfg["num_key_value_heads"] = s.kv_heads;
  cfg["head_dim"] = s.head_dim;
  cfg["vocab_size"] = s.vocab;
  cfg["max_position_embeddings"] = s.max_pos;
  cfg["rms_norm_eps"] = s.eps;
  cfg["rope_theta"] = s.theta;
  cfg["hidden_act"] = "silu";
  cfg["tie_word_embeddings"] = s.tied;
  cfg["bos_token_id"] = s.bos;
  cfg["eos_token_id"] = s.eos;
  cfg["torch_dtype"] = "bfloat16";
  if (s.rope == "longrope") {
    std::vector<double> short_f, long_f;
    for (int64_t i = 0; i < s.head_dim / 2; ++i) {
      const double t = static_cast<double>(i) / (s.head_dim / 2 - 1);
      short_f.push_back(1.0 + 0.5 * t * t);
      long_f.push_back(1.0 + 60.0 * t * t);
    }
    cfg["original_max_position_embeddings"] = 4096;
    cfg["rope_scaling"] = {{"type", "longrope"}, {"short_factor", short_f}, {"long_factor", long_f}};
    cfg["sliding_window"] = 262144;
  } else if (s.rope == "llama3") {
    cfg["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  } else {
    cfg["rope_scaling"] = nullptr;
  }
  if (bits != 0) {
    cfg["quantization"] = {{"group_size", group}, {"bits", bits}};
    cfg["quantization_config"] = cfg["quantization"];
  }
  std::ofstream(dir + "/config.json") << cfg.dump(2);
  json gen = {{"bos_token_id", s.bos}, {"eos_token_id", {s.eos}}};
  std::ofstream(dir + "/generation_config.json") << gen.dump(2);

  // Tensors are declared in checkpoint order, then written to one file or split into shards.
  struct Pending {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    SafetensorsWriter::Fill fill;
  };
  std::vector<Pending> tensors;
  auto declare = [&](std::string name, DType dtype, std::vector<int64_t> shape,
                     SafetensorsWriter::Fill fill) {
    tensors.push_back({std::move(name), dtype, std::move(shape), std::move(fill)});
  };
  uint64_t key = splitmix(o.seed);
  // Uniform in [-r, r] with r = 0.04 at 3072 inputs (Phi-3-mini's width) and
  // r ~ 1/sqrt(inputs) elsewhere, as trained models' weights scale: each
  // projection's output then has about the same size at every width, so a
  // small test model mixes its tokens like a large one instead of echoing its
  // (tied) input embedding.
  auto range_for = [](int64_t cols) {
    return 0.04f * std::sqrt(3072.0f / static_cast<float>(cols));
  };
  auto add_float = [&](const std::string& name, std::vector<int64_t> shape, float center,
                       float range) {
    const uint64_t k = (key = splitmix(key));
    declare(name, float_dtype, shape, [=](uint8_t* buf, size_t n, size_t off) {
      const size_t es = dtype_size(float_dtype);
      random_bytes(k, buf, n, off);
      for (size_t i = 0; i < n; i += es) {
        uint16_t bits16;
        std::memcpy(&bits16, buf + i, 2);
        const float v = center + range * unit(bits16);
        if (float_dtype == DType::F32) std::memcpy(buf + i, &v, 4);
        else {
          const uint16_t h = float_dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
          std::memcpy(buf + i, &h, 2);
        }
      }
    });
  };
  auto add_linear = [&](const std::string& module, int64_t rows, int64_t cols) {
    const float weight_range = range_for(cols);
    if (bits == 0) return add_float(module + ".weight", {rows, cols}, 0.0f, weight_range);
    const uint64_t k = (key = splitmix(key));
    declare(module + ".weight", DType::U32, {rows, cols * bits / 32},
          [=](uint8_t* buf, size_t n, size_t off) { random_bytes(k, buf, n, off); });
    // scale*q + bias spans [-range, range] for q in [0, 2^bits - 1], jittered per group.
    const float levels = static_cast<float>((1 << bits) - 1);
    const uint64_t ks = (key = splitmix(key));
    for (const char* part : {".scales", ".biases"}) {
      const bool is_scale = std::strcmp(part, ".scales") == 0;
      declare(module + part, DType::BF16, {rows, cols / group}, [=](uint8_t* buf, size_t n, size_t off) {
        random_bytes(ks, buf, n, off);  // same stream for both, so bias = -scale*levels/2
        for (size_t i = 0; i < n; i += 2) {
          uint16_t r;
          std::memcpy(&r, buf + i, 2);
          const float scale = weight_range * 2 / levels * (1.0f + 0.25f * unit(r));
          const float v = is_scale ? scale : -scale * levels / 2;
          const uint16_t h = f32_to_bf16(v);
          std::memcpy(buf + i, &h, 2);
        }
      });
    }
  };
  auto add_norm = [&](const std::string& name, int64_t n) {
    const DType saved = float_dtype;
    if (bits != 0) float_dtype = DType::BF16;
    add_float(name, {n}, 1.0f, 0.05f);
    float_dtype = saved;
  };
  const int64_t H = s.hidden, I = s.intermediate, hd = s.head_dim;
  const int64_t qd = s.heads * hd, kvd = s.kv_heads * hd;
  add_linear("model.embed_tokens", s.vocab, H);
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add_norm(p + "input_layernorm.weight", H);
    add_norm(p + "post_attention_layernorm.weight", H);
    if (s.fused) {
      add_linear(p + "self_attn.qkv_proj", qd + 2 * kvd, H);
      add_linear(p + "mlp.gate_up_proj", 2 * I, H);
    } else {
      add_linear(p + "self_attn.q_proj", qd, H);
      add_linear(p + "self_attn.k_proj", kvd, H);
      add_linear(p + "self_attn.v_proj", kvd, H);
      add_linear(p + "mlp.gate_proj", I, H);
      add_linear(p + "mlp.up_proj", I, H);
      if (s.qkv_bias) {
        const DType saved = float_dtype;
        if (bits != 0) float_dtype = DType::BF16;
        add_float(p + "self_attn.q_proj.bias", {qd}, 0.0f, 0.1f);
        add_float(p + "self_attn.k_proj.bias", {kvd}, 0.0f, 0.1f);
        add_float(p + "self_attn.v_proj.bias", {kvd}, 0.0f, 0.1f);
        float_dtype = saved;
      }
    }
    if (s.qk_norm) {
      add_norm(p + "self_attn.q_norm.weight", hd);
      add_norm(p + "self_attn.k_norm.weight", hd);
    }
    add_linear(p + "self_attn.o_proj", H, qd);
    add_linear(p + "mlp.down_proj", H, I);
  }
  add_norm("model.norm.weight", H);
  if (!s.tied) add_linear("lm_head", s.vocab, H);
  return write_tensors(dir, tensors, o.shards);
}

}  // namespace pensieve
