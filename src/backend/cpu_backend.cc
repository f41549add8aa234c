#include "backend/cpu_backend.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"

namespace pensieve {
namespace {

class HostBuffer final : public Buffer {
 public:
  explicit HostBuffer(size_t bytes) {
    // 64-byte lines for the SIMD kernels; at least one byte so data() is valid.
    const size_t rounded = ((bytes ? bytes : 1) + 63) / 64 * 64;
    data_ = std::aligned_alloc(64, rounded);
    if (data_ == nullptr) fail(ErrorKind::resource, "cannot allocate {} bytes", bytes);
    bytes_ = bytes;
  }
  ~HostBuffer() override { std::free(data_); }
};

}  // namespace

CpuBackend::CpuBackend(int n_threads) : pool_(n_threads) {}

std::string CpuBackend::description() const {
  return std::string("cpu: ") + kernels::isa_name(kernels::active_isa()) + ", " +
         std::to_string(pool_.size()) + " threads";
}

std::unique_ptr<Buffer> CpuBackend::alloc(size_t bytes) {
  return std::make_unique<HostBuffer>(bytes);
}

const float* CpuBackend::upload(const std::vector<float>& v) {
  if (v.empty()) return nullptr;
  vectors_.push_back(v);
  return vectors_.back().data();
}

void CpuBackend::allocate_kv(const KvGeometry& g, int64_t n_blocks) {
  kv_.reset();
  kv_ = std::make_unique<KvStorage>(g, n_blocks);
}

kernels::KvLayerView CpuBackend::layer_view(int64_t layer) const {
  if (!kv_) fail(ErrorKind::internal, "forward: KV storage not allocated");
  return kv_->layer(layer);
}

void CpuBackend::rows(int64_t n, const std::function<void(int64_t)>& fn) {
  const int64_t grain = std::max<int64_t>(1, n / (4 * pool_.size()));
  pool_.parallel_for(n, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) fn(r);
  });
}

void CpuBackend::begin_step(const StepPlan& plan) {
  plan_ = &plan;
  aseqs_.clear();
  for (const StepSeq& s : plan.seqs) aseqs_.push_back({s.block_table.data(), s.n_ctx, s.q_row, s.n_q});
}

void CpuBackend::embed(const WeightMatrix& table, float* x) {
  const int64_t dim = table.cols;
  rows(plan_->n_rows(), [&](int64_t r) { dequantize_row_ref(table, plan_->tokens[r], x + r * dim); });
}

void CpuBackend::rms_norm(const float* x, const float* w, int64_t n_rows, int64_t dim, float eps,
                          float* out) {
  rows(n_rows, [&](int64_t r) { kernels::rms_norm(x + r * dim, w, dim, eps, out + r * dim); });
}

void CpuBackend::matmul(std::span<const WeightMatrix* const> parts, const float* x, int64_t ldx,
                        int64_t n_rows, float* y, int64_t ldy) {
  kernels::matmul(parts, x, ldx, n_rows, y, ldy, pool_);
}

void CpuBackend::qkv_post(const QkvPost& p, float* qkv, float* q) {
  const kernels::KvLayerView kv = layer_view(p.layer);
  const int64_t hd = p.head_dim, qd = p.n_heads * hd, kvd = p.n_kv_heads * hd;
  const int64_t ld = qd + 2 * kvd, half = plan_->rot_dim / 2;
  rows(plan_->n_rows(), [&](int64_t r) {
    float* row = qkv + r * ld;
    if (p.bias != nullptr) kernels::add_inplace(row, p.bias, ld);
    const float* cos = &plan_->cos[r * half];
    const float* sin = &plan_->sin[r * half];
    for (int64_t h = 0; h < p.n_heads; ++h) {
      float* qh = row + h * hd;
      if (p.q_norm != nullptr) kernels::rms_norm(qh, p.q_norm, hd, p.eps, qh);
      kernels::rope_apply(qh, cos, sin, plan_->rot_dim);
    }
    float* k = row + qd;
    for (int64_t h = 0; h < p.n_kv_heads; ++h) {
      float* kh = k + h * hd;
      if (p.k_norm != nullptr) kernels::rms_norm(kh, p.k_norm, hd, p.eps, kh);
      kernels::rope_apply(kh, cos, sin, plan_->rot_dim);
    }
    std::memcpy(q + r * qd, row, qd * sizeof(float));
    // kv_write reads the block from a table: a one-entry table for this slot.
    const int32_t slot = plan_->slots[r];
    const int32_t block = slot / static_cast<int32_t>(kKvBlockTokens);
    kernels::kv_write(kv, &block, slot % kKvBlockTokens, k, k + kvd);
  });
}

void CpuBackend::attention(int64_t layer, const float* q, int64_t n_heads, float scale,
                           int64_t window, float* out) {
  kernels::attention(q, layer_view(layer), aseqs_, n_heads, scale, window, out, pool_);
}

void CpuBackend::add_rms_norm(float* x, float* delta, const float* bias, const float* w,
                              int64_t dim, float eps, float* h) {
  rows(plan_->n_rows(), [&](int64_t r) {
    float* xr = x + r * dim;
    // (delta + bias) first, then into x: the order the sums were always taken in.
    if (bias != nullptr) kernels::add_inplace(delta + r * dim, bias, dim);
    kernels::add_inplace(xr, delta + r * dim, dim);
    kernels::rms_norm(xr, w, dim, eps, h + r * dim);
  });
}

void CpuBackend::silu_mul(const float* gu, int64_t n, float* out) {
  rows(plan_->n_rows(), [&](int64_t r) {
    kernels::silu_mul(gu + r * 2 * n, gu + r * 2 * n + n, n, out + r * n);
  });
}

void CpuBackend::add(float* x, float* delta, const float* bias, int64_t dim) {
  rows(plan_->n_rows(), [&](int64_t r) {
    if (bias != nullptr) kernels::add_inplace(delta + r * dim, bias, dim);
    kernels::add_inplace(x + r * dim, delta + r * dim, dim);
  });
}

void CpuBackend::logits(const float* x, const float* norm, float eps,
                        std::span<const WeightMatrix* const> lm_head, int64_t dim, int64_t vocab,
                        float* host_out) {
  const int64_t n = static_cast<int64_t>(plan_->out_rows.size());
  final_rows_.resize(static_cast<size_t>(n * dim));
  for (int64_t i = 0; i < n; ++i)
    kernels::rms_norm(x + plan_->out_rows[i] * dim, norm, dim, eps, &final_rows_[i * dim]);
  kernels::matmul(lm_head, final_rows_.data(), dim, n, host_out, vocab, pool_);
}

}  // namespace pensieve
