#include "models/decoder.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/log.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"
#include "models/rope.h"
#include "models/weights.h"

namespace pensieve {
namespace {

struct Layer {
  std::vector<float> attn_norm, ffn_norm, q_norm, k_norm;
  std::vector<WeightMatrix> qkv;  // one fused part or q, k, v
  std::vector<float> qkv_bias;    // [q | k | v] or empty
  WeightMatrix o;
  std::vector<float> o_bias;
  std::vector<WeightMatrix> gate_up;  // one fused part or gate, up
  WeightMatrix down;
};

std::vector<const WeightMatrix*> pointers(const std::vector<WeightMatrix>& parts) {
  std::vector<const WeightMatrix*> out;
  for (const auto& p : parts) out.push_back(&p);
  return out;
}

class DecoderModel final : public Model {
 public:
  DecoderModel(ModelConfig config, const DecoderLayout& layout, std::shared_ptr<TensorStore> store,
               std::shared_ptr<ThreadPool> pool)
      : Model(std::move(config), std::move(pool)),
        layout_(layout),
        store_(std::move(store)),
        rope_(config_, config_.head_dim) {
    load();
  }

  ModelInfo info() const override { return info_; }

  void allocate_kv(int64_t n_blocks) override {
    kv_.reset();
    kv_ = std::make_unique<KvStorage>(config_.n_layers, config_.n_kv_heads, config_.head_dim,
                                      n_blocks);
  }
  int64_t kv_bytes_per_block() const override {
    return KvStorage::bytes_per_block(config_.n_layers, config_.n_kv_heads, config_.head_dim);
  }
  int64_t kv_blocks() const override { return kv_ ? kv_->n_blocks() : 0; }
  void commit_kv() override {
    if (kv_) kv_->commit();
  }

  void forward(std::span<const ForwardSeq> seqs, std::vector<float>* logits) override;
  int64_t kv_variant(int64_t seq_len) const override { return rope_.variant(seq_len); }

 private:
  void load();

  DecoderLayout layout_;
  std::shared_ptr<TensorStore> store_;
  RopeTable rope_;
  WeightMatrix embed_, lm_head_;
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
  std::unique_ptr<KvStorage> kv_;
  ModelInfo info_;
  std::vector<const WeightMatrix*> lm_head_parts_;
  // Scratch, grown on demand and reused across calls.
  std::vector<float> x_, h_, qkv_, q_, attn_, gu_, act_, tmp_, cos_, sin_;
};

void DecoderModel::load() {
  const ModelConfig& c = config_;
  const TensorStore& s = *store_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t qd = c.n_heads * hd, kvd = c.n_kv_heads * hd;
  embed_ = load_linear(s, c, "model.embed_tokens", c.vocab_size, H);
  if (s.has("lm_head.weight")) {
    lm_head_ = load_linear(s, c, "lm_head", c.vocab_size, H);
  } else if (c.tie_word_embeddings) {
    lm_head_ = embed_;
  } else {
    fail(ErrorKind::not_found,
         "{}: missing tensor 'lm_head.weight' (config.json says tie_word_embeddings is false)",
         s.dir());
  }
  final_norm_ = load_vector(s, "model.norm.weight", H);
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
    L.attn_norm = load_vector(s, p + "input_layernorm.weight", H);
    L.ffn_norm = load_vector(s, p + "post_attention_layernorm.weight", H);
    if (layout_.fused_qkv) {
      L.qkv.push_back(load_linear(s, c, p + "self_attn.qkv_proj", qd + 2 * kvd, H));
      L.qkv_bias = load_optional_bias(s, p + "self_attn.qkv_proj", qd + 2 * kvd);
    } else {
      L.qkv.push_back(load_linear(s, c, p + "self_attn.q_proj", qd, H));
      L.qkv.push_back(load_linear(s, c, p + "self_attn.k_proj", kvd, H));
      L.qkv.push_back(load_linear(s, c, p + "self_attn.v_proj", kvd, H));
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
        L.qkv_bias = qb;
        L.qkv_bias.insert(L.qkv_bias.end(), kb.begin(), kb.end());
        L.qkv_bias.insert(L.qkv_bias.end(), vb.begin(), vb.end());
      }
    }
    if (layout_.qk_norm) {
      L.q_norm = load_vector(s, p + "self_attn.q_norm.weight", hd);
      L.k_norm = load_vector(s, p + "self_attn.k_norm.weight", hd);
    }
    L.o = load_linear(s, c, p + "self_attn.o_proj", H, qd);
    L.o_bias = load_optional_bias(s, p + "self_attn.o_proj", H);
    if (layout_.fused_gate_up) {
      L.gate_up.push_back(load_linear(s, c, p + "mlp.gate_up_proj", 2 * I, H));
    } else {
      L.gate_up.push_back(load_linear(s, c, p + "mlp.gate_proj", I, H));
      L.gate_up.push_back(load_linear(s, c, p + "mlp.up_proj", I, H));
    }
    L.down = load_linear(s, c, p + "mlp.down_proj", H, I);
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
  ThreadPool& pool = *pool_;

  int64_t T = 0;
  for (const auto& s : seqs) T += static_cast<int64_t>(s.tokens.size());
  if (T == 0) return;
  if (!kv_) fail(ErrorKind::internal, "forward: KV storage not allocated");

  // Token rows -> (sequence, position); rope tables per row.
  std::vector<int32_t> row_seq(T);
  std::vector<int64_t> row_pos(T);
  std::vector<kernels::AttentionSeq> aseqs;
  {
    int64_t r = 0;
    for (size_t si = 0; si < seqs.size(); ++si) {
      const ForwardSeq& s = seqs[si];
      const int64_t n = static_cast<int64_t>(s.tokens.size());
      if (n == 0) continue;
      aseqs.push_back({s.block_table, s.n_past + n, r, n});
      for (int64_t i = 0; i < n; ++i, ++r) {
        row_seq[r] = static_cast<int32_t>(si);
        row_pos[r] = s.n_past + i;
        const int32_t tok = s.tokens[i];
        if (tok < 0 || tok >= c.vocab_size) {
          fail("token id {} is out of range (vocabulary size {})", tok, c.vocab_size);
        }
      }
    }
  }
  x_.resize(T * H);
  h_.resize(T * H);
  qkv_.resize(T * qkv_ld);
  q_.resize(T * qd);
  attn_.resize(T * qd);
  gu_.resize(T * 2 * I);
  act_.resize(T * I);
  tmp_.resize(T * H);
  cos_.resize(T * half_rot);
  sin_.resize(T * half_rot);

  const int64_t grain = std::max<int64_t>(1, T / (4 * pool.size()));
  pool.parallel_for(T, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const ForwardSeq& s = seqs[row_seq[r]];
      const int64_t seq_len =
          std::max(s.n_planned, s.n_past + static_cast<int64_t>(s.tokens.size()));
      rope_.cos_sin(row_pos[r], seq_len, &cos_[r * half_rot], &sin_[r * half_rot]);
      dequantize_row_ref(embed_, s.tokens[row_pos[r] - s.n_past], &x_[r * H]);
    }
  });

  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int64_t li = 0; li < c.n_layers; ++li) {
    const Layer& L = layers_[li];
    const kernels::KvLayerView kv = kv_->layer(li);
    pool.parallel_for(T, grain, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) kernels::rms_norm(&x_[r * H], L.attn_norm.data(), H, eps, &h_[r * H]);
    });
    const auto qkv_parts = pointers(L.qkv);
    kernels::matmul(qkv_parts, h_.data(), H, T, qkv_.data(), qkv_ld, pool);
    pool.parallel_for(T, grain, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        float* row = &qkv_[r * qkv_ld];
        if (!L.qkv_bias.empty()) kernels::add_inplace(row, L.qkv_bias.data(), qkv_ld);
        float* k = row + qd;
        const float* v = row + qd + kvd;
        for (int64_t h = 0; h < n_heads; ++h) {
          float* qh = row + h * hd;
          if (!L.q_norm.empty()) kernels::rms_norm(qh, L.q_norm.data(), hd, eps, qh);
          kernels::rope_apply(qh, &cos_[r * half_rot], &sin_[r * half_rot], rope_.rot_dim());
        }
        for (int64_t h = 0; h < n_kv; ++h) {
          float* kh = k + h * hd;
          if (!L.k_norm.empty()) kernels::rms_norm(kh, L.k_norm.data(), hd, eps, kh);
          kernels::rope_apply(kh, &cos_[r * half_rot], &sin_[r * half_rot], rope_.rot_dim());
        }
        std::memcpy(&q_[r * qd], row, qd * sizeof(float));
        const ForwardSeq& s = seqs[row_seq[r]];
        kernels::kv_write(kv, s.block_table, row_pos[r], k, v);
      }
    });
    kernels::attention(q_.data(), kv, aseqs, n_heads, scale, c.sliding_window, attn_.data(), pool);
    kernels::matmul(L.o, attn_.data(), qd, T, tmp_.data(), H, pool);
    pool.parallel_for(T, grain, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        if (!L.o_bias.empty()) kernels::add_inplace(&tmp_[r * H], L.o_bias.data(), H);
        kernels::add_inplace(&x_[r * H], &tmp_[r * H], H);
        kernels::rms_norm(&x_[r * H], L.ffn_norm.data(), H, eps, &h_[r * H]);
      }
    });
    const auto gu_parts = pointers(L.gate_up);
    kernels::matmul(gu_parts, h_.data(), H, T, gu_.data(), 2 * I, pool);
    pool.parallel_for(T, grain, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        kernels::silu_mul(&gu_[r * 2 * I], &gu_[r * 2 * I + I], I, &act_[r * I]);
      }
    });
    kernels::matmul(L.down, act_.data(), I, T, tmp_.data(), H, pool);
    pool.parallel_for(T, grain, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) kernels::add_inplace(&x_[r * H], &tmp_[r * H], H);
    });
  }

  // Final norm and lm_head only for the rows whose logits are wanted.
  std::vector<int64_t> out_rows;
  {
    int64_t r = 0;
    for (const auto& s : seqs) {
      const int64_t n = static_cast<int64_t>(s.tokens.size());
      if (s.all_logits) {
        for (int64_t i = 0; i < n; ++i) out_rows.push_back(r + i);
      } else if (n > 0) {
        out_rows.push_back(r + n - 1);
      }
      r += n;
    }
  }
  const int64_t R = static_cast<int64_t>(out_rows.size());
  for (int64_t i = 0; i < R; ++i) {
    kernels::rms_norm(&x_[out_rows[i] * H], final_norm_.data(), H, eps, &h_[i * H]);
  }
  const size_t base = logits->size();
  logits->resize(base + static_cast<size_t>(R * c.vocab_size));
  kernels::matmul(lm_head_parts_, h_.data(), H, R, logits->data() + base, c.vocab_size, pool);
}

}  // namespace

std::unique_ptr<Model> build_decoder(ModelConfig config, const DecoderLayout& layout,
                                     std::shared_ptr<TensorStore> store,
                                     const LoadOptions& options) {
  auto pool = std::make_shared<ThreadPool>(options.n_threads);
  return std::make_unique<DecoderModel>(std::move(config), layout, std::move(store),
                                        std::move(pool));
}

}  // namespace pensieve
