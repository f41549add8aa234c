#include "models/decoder.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/kv_geometry.h"
#include "core/log.h"
#include "models/rope.h"
#include "models/weights.h"

namespace pensieve {
namespace {

// A layer's weights and vectors, in the backend's memory.
struct Layer {
  const float *attn_norm = nullptr, *ffn_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;
  std::vector<WeightMatrix> qkv;  // one fused part or q, k, v
  const float* qkv_bias = nullptr;  // [q | k | v] or null
  WeightMatrix o;
  const float* o_bias = nullptr;
  std::vector<WeightMatrix> gate_up;  // one fused part or gate, up
  WeightMatrix down;
};

std::vector<const WeightMatrix*> pointers(const std::vector<WeightMatrix>& parts) {
  std::vector<const WeightMatrix*> out;
  for (const auto& p : parts) out.push_back(&p);
  return out;
}

// A scratch buffer in backend memory, grown on demand and kept across steps.
class Scratch {
 public:
  float* get(Backend& backend, int64_t n_floats) {
    const size_t bytes = static_cast<size_t>(n_floats) * sizeof(float);
    if (!buffer_ || buffer_->bytes() < bytes) {
      buffer_.reset();
      buffer_ = backend.alloc(bytes + bytes / 4);  // headroom for the next larger step
    }
    return buffer_->f32();
  }

 private:
  std::unique_ptr<Buffer> buffer_;
};

class DecoderModel final : public Model {
 public:
  DecoderModel(ModelConfig config, const DecoderLayout& layout, std::shared_ptr<TensorStore> store,
               std::unique_ptr<Backend> backend, KvType kv_type)
      : Model(std::move(config), std::move(backend)),
        kv_type_(kv_type),
        layout_(layout),
        store_(std::move(store)),
        rope_(config_, config_.head_dim) {
    load();
  }

  ModelInfo info() const override { return info_; }

  void allocate_kv(int64_t n_blocks) override { backend_->allocate_kv(kv_geometry(), n_blocks); }
  int64_t kv_bytes_per_block() const override { return kv_geometry().bytes_per_block(); }
  KvType kv_type() const override { return kv_type_; }
  int64_t kv_blocks() const override { return backend_->kv_blocks(); }
  void commit_kv() override { backend_->commit_kv(); }
  MemoryInfo memory() const override { return backend_->memory(); }

  void forward(std::span<const ForwardSeq> seqs, std::vector<float>* logits) override;
  int64_t kv_variant(int64_t seq_len) const override { return rope_.variant(seq_len); }

 private:
  void load();
  KvGeometry kv_geometry() const {
    return {.n_layers = config_.n_layers, .n_kv_heads = config_.n_kv_heads,
            .head_dim = config_.head_dim, .type = kv_type_};
  }
  // Copies a host vector to the backend.
  const float* vec(const std::vector<float>& v) { return backend_->upload(v); }
  WeightMatrix linear(const std::string& module, int64_t rows, int64_t cols) {
    return backend_->upload(load_linear(*store_, config_, module, rows, cols));
  }

  KvType kv_type_;
  DecoderLayout layout_;
  // The checkpoint's bytes: the CPU backend computes on them in place.
  std::shared_ptr<TensorStore> store_;
  RopeTable rope_;
  WeightMatrix embed_, lm_head_;
  const float* final_norm_ = nullptr;
  std::vector<Layer> layers_;
  ModelInfo info_;
  std::vector<const WeightMatrix*> lm_head_parts_;
  StepPlan plan_;
  Scratch x_, h_, qkv_, q_, attn_, gu_, act_, tmp_;
};

void DecoderModel::load() {
  const ModelConfig& c = config_;
  const TensorStore& s = *store_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t qd = c.n_heads * hd, kvd = c.n_kv_heads * hd;
  embed_ = linear("model.embed_tokens", c.vocab_size, H);
  if (s.has("lm_head.weight")) {
    lm_head_ = linear("lm_head", c.vocab_size, H);
  } else if (c.tie_word_embeddings) {
    lm_head_ = embed_;
  } else {
    fail(ErrorKind::not_found,
         "{}: missing tensor 'lm_head.weight' (config.json says tie_word_embeddings is false)",
         s.dir());
  }
  final_norm_ = vec(load_vector(s, "model.norm.weight", H));
  int64_t n_params = embed_.rows * embed_.cols + H;
  int64_t bytes = embed_.total_bytes();
  if (lm_head_.data != embed_.data) {
    n_params += lm_head_.rows * lm_head_.cols;
    bytes += lm_head_.total_bytes();
  }
  layers_.resize(c.n_layers);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    Layer& L = layers_[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    L.attn_norm = vec(load_vector(s, p + "input_layernorm.weight", H));
    L.ffn_norm = vec(load_vector(s, p + "post_attention_layernorm.weight", H));
    if (layout_.fused_qkv) {
      L.qkv.push_back(linear(p + "self_attn.qkv_proj", qd + 2 * kvd, H));
      L.qkv_bias = vec(load_optional_bias(s, p + "self_attn.qkv_proj", qd + 2 * kvd));
    } else {
      L.qkv.push_back(linear(p + "self_attn.q_proj", qd, H));
      L.qkv.push_back(linear(p + "self_attn.k_proj", kvd, H));
      L.qkv.push_back(linear(p + "self_attn.v_proj", kvd, H));
      auto qb = load_optional_bias(s, p + "self_attn.q_proj", qd);
      auto kb = load_optional_bias(s, p + "self_attn.k_proj", kvd);
      auto vb = load_optional_bias(s, p + "self_attn.v_proj", kvd);
      if (layout_.require_qkv_bias && (qb.empty() || kb.empty() || vb.empty())) {
        fail(ErrorKind::not_found, "{}: missing tensor '{}self_attn.q_proj.bias' (or k/v bias)",
             s.dir(), p);
      }
      if (!qb.empty() || !kb.empty() || !vb.empty()) {
        qb.resize(qd, 0.f);
        kb.resize(kvd, 0.f);
        vb.resize(kvd, 0.f);
        std::vector<float> bias = qb;
        bias.insert(bias.end(), kb.begin(), kb.end());
        bias.insert(bias.end(), vb.begin(), vb.end());
        L.qkv_bias = vec(bias);
      }
    }
    if (layout_.qk_norm) {
      L.q_norm = vec(load_vector(s, p + "self_attn.q_norm.weight", hd));
      L.k_norm = vec(load_vector(s, p + "self_attn.k_norm.weight", hd));
    }
    L.o = linear(p + "self_attn.o_proj", H, qd);
    L.o_bias = vec(load_optional_bias(s, p + "self_attn.o_proj", H));
    if (layout_.fused_gate_up) {
      L.gate_up.push_back(linear(p + "mlp.gate_up_proj", 2 * I, H));
    } else {
      L.gate_up.push_back(linear(p + "mlp.gate_proj", I, H));
      L.gate_up.push_back(linear(p + "mlp.up_proj", I, H));
    }
    L.down = linear(p + "mlp.down_proj", H, I);
    for (const auto* list : {&L.qkv, &L.gate_up}) {
      for (const auto& w : *list) {
        n_params += w.rows * w.cols;
        bytes += w.total_bytes();
      }
    }
    n_params += L.o.rows * L.o.cols + L.down.rows * L.down.cols + 2 * H;
    bytes += L.o.total_bytes() + L.down.total_bytes();
  }
  lm_head_parts_ = {&lm_head_};
  info_.n_params = n_params;
  info_.weight_bytes = bytes;
  info_.decode_bytes_per_token = s.has("lm_head.weight") ? bytes - embed_.total_bytes() : bytes;
  // Named after the first projection: a quantized checkpoint may keep some
  // matrices (e.g. a down_proj whose width is no multiple of the group) in bf16.
  const WeightMatrix& first = layers_.empty() ? embed_ : layers_[0].qkv[0];
  info_.weight_format = weight_format_name(first.format);
  if (first.quantized()) info_.weight_format += " (group " + std::to_string(first.group_size) + ")";
}

void DecoderModel::forward(std::span<const ForwardSeq> seqs, std::vector<float>* logits) {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t n_heads = c.n_heads, n_kv = c.n_kv_heads;
  const int64_t qd = n_heads * hd, kvd = n_kv * hd, qkv_ld = qd + 2 * kvd;
  const int64_t half_rot = rope_.rot_dim() / 2;
  Backend& be = *backend_;

  int64_t T = 0;
  for (const auto& s : seqs) T += static_cast<int64_t>(s.tokens.size());
  if (T == 0) return;
  if (be.kv_blocks() == 0) fail(ErrorKind::internal, "forward: KV storage not allocated");

  // The step on the host: each row's token, position, KV slot and rope
  // table; each sequence's block table; the rows whose logits are wanted.
  StepPlan& plan = plan_;
  plan.tokens.resize(T);
  plan.slots.resize(T);
  plan.cos.resize(T * half_rot);
  plan.sin.resize(T * half_rot);
  plan.rot_dim = rope_.rot_dim();
  plan.seqs.clear();
  plan.out_rows.clear();
  {
    int64_t r = 0;
    for (const ForwardSeq& s : seqs) {
      const int64_t n = static_cast<int64_t>(s.tokens.size());
      if (n == 0) continue;
      const int64_t n_ctx = s.n_past + n;
      const int64_t seq_len = std::max(s.n_planned, n_ctx);
      plan.seqs.push_back({std::span<const int32_t>(s.block_table, kv_blocks_for(n_ctx)), n_ctx,
                           r, n});
      for (int64_t i = 0; i < n; ++i, ++r) {
        const int32_t tok = s.tokens[i];
        if (tok < 0 || tok >= c.vocab_size) {
          fail("token id {} is out of range (vocabulary size {})", tok, c.vocab_size);
        }
        const int64_t pos = s.n_past + i;
        plan.tokens[r] = tok;
        plan.slots[r] = static_cast<int32_t>(s.block_table[pos / kKvBlockTokens] * kKvBlockTokens +
                                             pos % kKvBlockTokens);
        rope_.cos_sin(pos, seq_len, &plan.cos[r * half_rot], &plan.sin[r * half_rot]);
        if (s.all_logits || i == n - 1) plan.out_rows.push_back(static_cast<int32_t>(r));
      }
    }
  }
  float* x = x_.get(be, T * H);
  float* h = h_.get(be, T * H);
  float* qkv = qkv_.get(be, T * qkv_ld);
  float* q = q_.get(be, T * qd);
  float* attn = attn_.get(be, T * qd);
  float* gu = gu_.get(be, T * 2 * I);
  float* act = act_.get(be, T * I);
  float* tmp = tmp_.get(be, T * H);

  be.begin_step(plan);
  be.embed(embed_, x);
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // The residual stream: x += attention, x += MLP, each reading a norm of
  // x. A backend that fuses the adds into the projections (fuses_residual)
  // gets them as norm_matmul / matmul_add; else each add is fused with the
  // next norm (add_rms_norm).
  const bool fused = be.fuses_residual();
  for (int64_t li = 0; li < c.n_layers; ++li) {
    const Layer& L = layers_[li];
    const auto qkv_parts = pointers(L.qkv);
    if (fused) {
      be.norm_matmul(qkv_parts, x, L.attn_norm, eps, T, H, h, qkv, qkv_ld);
    } else {
      if (li == 0) be.rms_norm(x, L.attn_norm, T, H, eps, h);
      be.matmul(qkv_parts, h, H, T, qkv, qkv_ld);
    }
    be.qkv_post({.layer = li, .n_heads = n_heads, .n_kv_heads = n_kv, .head_dim = hd,
                 .bias = L.qkv_bias, .q_norm = L.q_norm, .k_norm = L.k_norm, .eps = eps},
                qkv, q);
    be.attention(li, q, n_heads, scale, c.sliding_window, attn);
    const auto gu_parts = pointers(L.gate_up);
    if (fused) {
      be.matmul_add(L.o, attn, qd, T, L.o_bias, x, H, tmp);
      be.norm_matmul(gu_parts, x, L.ffn_norm, eps, T, H, h, gu, 2 * I);
      be.silu_mul_matmul_add(gu, I, act, L.down, x, H, T, tmp);
      continue;
    }
    const WeightMatrix* o_part = &L.o;
    be.matmul({&o_part, 1}, attn, qd, T, tmp, H);
    be.add_rms_norm(x, tmp, L.o_bias, L.ffn_norm, H, eps, h);
    be.matmul(gu_parts, h, H, T, gu, 2 * I);
    be.silu_mul_matmul(gu, I, act, L.down, tmp, H, T);
    // The residual, fused with the next layer's input norm.
    if (li + 1 < c.n_layers) be.add_rms_norm(x, tmp, nullptr, layers_[li + 1].attn_norm, H, eps, h);
    else be.add(x, tmp, nullptr, H);
  }

  const int64_t R = static_cast<int64_t>(plan.out_rows.size());
  const size_t base = logits->size();
  logits->resize(base + static_cast<size_t>(R * c.vocab_size));
  be.logits(x, final_norm_, eps, lm_head_parts_, H, c.vocab_size, logits->data() + base);
}

}  // namespace

std::unique_ptr<Model> build_decoder(ModelConfig config, const DecoderLayout& layout,
                                     std::shared_ptr<TensorStore> store,
                                     const LoadOptions& options) {
  if (options.kv_type == KvType::q8 && kv_q8_group(config.head_dim) == 0) {
    fail(ErrorKind::unsupported, "--kv-type q8 needs a head dimension that is a multiple of 8 (this model's is {}); use f16",
         config.head_dim);
  }
  std::unique_ptr<Backend> backend = make_backend(options.device, options.n_threads);
  if (std::string(backend->device()) != "cpu") {
    // Refused before anything is uploaded, in one line naming the sizes.
    const KvGeometry g{.n_layers = config.n_layers, .n_kv_heads = config.n_kv_heads,
                       .head_dim = config.head_dim, .type = options.kv_type};
    const int64_t min_kv = g.bytes_per_block() * kv_blocks_for(kMinFittedContext + 1);
    const std::string problem =
        device_fit_problem(backend->description(), static_cast<int64_t>(store->total_file_bytes()),
                           min_kv, kGpuWorkspaceBytes, backend->memory().available);
    if (!problem.empty()) {
      if (options.device == "cuda") fail(ErrorKind::resource, "{}", problem);
      spdlog::warn("{}: serving on the CPU instead", problem);
      backend = make_backend("cpu", options.n_threads);
    }
  }
  return std::make_unique<DecoderModel>(std::move(config), layout, std::move(store),
                                        std::move(backend), options.kv_type);
}

}  // namespace pensieve
