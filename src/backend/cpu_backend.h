// The CPU backend: kernels/cpu on a thread pool, everything in host memory.
#pragma once

#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/kv_storage.h"
#include "core/thread_pool.h"
#include "kernels/cpu/attention.h"

namespace pensieve {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int n_threads);

  const char* device() const override { return "cpu"; }
  std::string description() const override;
  int n_threads() const override { return pool_.size(); }
  MemoryInfo memory() const override { return read_memory_info(); }

  std::unique_ptr<Buffer> alloc(size_t bytes) override;
  void to_device(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void to_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  WeightMatrix upload(const WeightMatrix& w) override { return w; }
  const float* upload(const std::vector<float>& v) override;
  void allocate_kv(const KvGeometry& geometry, int64_t n_blocks) override;
  int64_t kv_blocks() const override { return kv_ ? kv_->n_blocks() : 0; }
  bool read_kv_block(int32_t block, std::byte* host_out) override {
    if (!kv_) return false;
    kv_->read_block(block, host_out);
    return true;
  }
  bool write_kv_block(int32_t block, const std::byte* host_in) override {
    if (!kv_) return false;
    kv_->write_block(block, host_in);
    return true;
  }
  void commit_kv() override {
    if (kv_) kv_->commit();
  }

  void begin_step(const StepPlan& plan) override;
  void embed(const WeightMatrix& table, float* x) override;
  void rms_norm(const float* x, const float* w, int64_t n_rows, int64_t dim, float eps,
                float* out) override;
  void matmul(std::span<const WeightMatrix* const> parts, const float* x, int64_t ldx,
              int64_t n_rows, float* y, int64_t ldy) override;
  void qkv_post(const QkvPost& p, float* qkv, float* q) override;
  void attention(int64_t layer, const float* q, int64_t n_heads, float scale, int64_t window,
                 float* out) override;
  void add_rms_norm(float* x, float* delta, const float* bias, const float* w, int64_t dim,
                    float eps, float* h) override;
  void silu_mul(const float* gu, int64_t n, float* out) override;
  void add(float* x, float* delta, const float* bias, int64_t dim) override;
  void logits(const float* x, const float* norm, float eps,
              std::span<const WeightMatrix* const> lm_head, int64_t dim, int64_t vocab,
              float* host_out) override;

 private:
  // Rows [0, n) in chunks sized for the pool.
  void rows(int64_t n, const std::function<void(int64_t)>& fn);
  kernels::KvLayerView layer_view(int64_t layer) const;

  ThreadPool pool_;
  std::deque<std::vector<float>> vectors_;  // uploaded vectors
  std::unique_ptr<KvStorage> kv_;
  const StepPlan* plan_ = nullptr;
  std::vector<kernels::AttentionSeq> aseqs_;
  std::vector<float> final_rows_;  // logits(): normed rows
};

}  // namespace pensieve
