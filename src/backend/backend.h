// The backend seam: the few operations a decoder-only transformer needs, and
// the memory they run on. A model is written once over these operations
// (models/decoder.cc); a backend is another implementation of them, not
// another model. The CPU backend wraps kernels/cpu and the thread pool; the
// CUDA backend wraps kernels/cuda on one stream.
//
// Every float* an operation takes lives in the backend's memory: host memory
// for the CPU, device memory for CUDA (from alloc(), or a weight/vector the
// backend uploaded). What describes a step (token ids, positions, KV slots,
// rope tables, block tables) stays on the host in a StepPlan; begin_step()
// hands it over once per forward, and the operations of that step read it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/kv_geometry.h"
#include "core/memory_info.h"
#include "quant/weight_matrix.h"

namespace pensieve {

// Backend memory; freed with the object.
class Buffer {
 public:
  virtual ~Buffer() = default;
  float* f32() const { return static_cast<float*>(data_); }
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 protected:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// The paged KV cache: n_blocks blocks of kKvBlockTokens positions for each
// layer, K and V stored as `type` says (core/kv_geometry.h: f16, or int8
// with per-group scales). Within a block, per KV head, K is stored
// transposed ([head_dim][kKvBlockTokens]) and V as rows
// ([kKvBlockTokens][head_dim]); every backend uses this one layout. Per
// layer the pool holds every block's K ([block][kv_head]), then every
// block's V.
struct KvGeometry {
  int64_t n_layers = 0, n_kv_heads = 0, head_dim = 0;
  KvType type = KvType::f16;
  // Bytes of one block's K (or V) in one layer.
  int64_t block_bytes() const { return n_kv_heads * kv_head_bytes(type, head_dim); }
  int64_t bytes_per_block() const { return 2 * n_layers * block_bytes(); }
};

// One sequence's queries in a step, for attention.
struct StepSeq {
  std::span<const int32_t> block_table;  // covers positions 0 .. n_ctx-1
  int64_t n_ctx = 0;  // positions in the cache once this step's are written
  int64_t q_row = 0;  // first row of this sequence's queries
  int64_t n_q = 0;    // its queries sit at positions n_ctx-n_q .. n_ctx-1
};

// What one forward step computes, described on the host.
struct StepPlan {
  std::vector<int32_t> tokens;     // [T] token ids
  std::vector<int32_t> slots;      // [T] KV slot of each row: block * kKvBlockTokens + offset
  std::vector<float> cos, sin;     // [T][rot_dim/2] rotary tables per row
  int64_t rot_dim = 0;
  std::vector<StepSeq> seqs;
  std::vector<int32_t> out_rows;   // rows whose logits are wanted, in output order
  int64_t n_rows() const { return static_cast<int64_t>(tokens.size()); }
};

// Per-layer parameters of qkv_post.
struct QkvPost {
  int64_t layer = 0;
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  const float* bias = nullptr;    // [q | k | v] or null
  const float* q_norm = nullptr;  // [head_dim] or null (Qwen3)
  const float* k_norm = nullptr;
  float eps = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // "cpu" or "cuda".
  virtual const char* device() const = 0;
  // What runs, for logs and bench: e.g. "cpu: avx512, 2 threads" or "cuda: NVIDIA H100 80GB HBM3".
  virtual std::string description() const = 0;
  // Compute threads on the host (1 for a device backend).
  virtual int n_threads() const { return 1; }
  // Tokens per forward step this backend runs best with when nothing else
  // decides (the prompt chunk size): a GPU wants larger steps.
  virtual int64_t step_tokens() const { return 512; }
  // Memory the KV pool may come from: the host's for the CPU, the card's for CUDA.
  virtual MemoryInfo memory() const = 0;
  // Device memory this backend holds now: weights, KV pool, scratch (0 for
  // the CPU). bench --json reports it as device_memory_bytes.
  virtual int64_t bytes_allocated() const { return 0; }

  // --- Memory.
  virtual std::unique_ptr<Buffer> alloc(size_t bytes) = 0;
  // Copies between host memory and the backend's (a memcpy on the CPU);
  // both wait until the bytes have landed.
  virtual void to_device(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void to_host(void* host_dst, const void* src, size_t bytes) = 0;
  // A weight in the backend's memory (the CPU uses the host bytes in place;
  // they must outlive the backend). The result is the view operations take.
  virtual WeightMatrix upload(const WeightMatrix& w) = 0;
  // A vector (norm weight, bias) in the backend's memory; empty stays null.
  virtual const float* upload(const std::vector<float>& v) = 0;
  // Reserves the KV pool (replacing any earlier one). commit_kv() writes every
  // page now so that no later step pays for first touches.
  virtual void allocate_kv(const KvGeometry& geometry, int64_t n_blocks) = 0;
  virtual int64_t kv_blocks() const = 0;
  virtual void commit_kv() = 0;
  // One KV block (every layer's K then V, KvGeometry::bytes_per_block bytes)
  // to or from host memory, for the prefix cache's disk tier; false where the
  // backend cannot (then there is no disk tier).
  virtual bool read_kv_block(int32_t block, std::byte* host_out) {
    (void)block, (void)host_out;
    return false;
  }
  virtual bool write_kv_block(int32_t block, const std::byte* host_in) {
    (void)block, (void)host_in;
    return false;
  }

  // --- One forward step: begin_step, then the operations in order, each
  // over the plan's T rows unless it says otherwise.
  virtual void begin_step(const StepPlan& plan) = 0;
  // x[r] = row tokens[r] of the table, as f32.
  virtual void embed(const WeightMatrix& table, float* x) = 0;
  // out[r] = rms_norm(x[r]) * w, rows of dim.
  virtual void rms_norm(const float* x, const float* w, int64_t n_rows, int64_t dim, float eps,
                        float* out) = 0;
  // y[t][offset_p + r] = x[t] · part_p[r], parts side by side (q/k/v, gate/up).
  virtual void matmul(std::span<const WeightMatrix* const> parts, const float* x, int64_t ldx,
                      int64_t n_rows, float* y, int64_t ldy) = 0;
  // The projections' output row [q | k | v] (ld = (n_heads + 2 n_kv) hd):
  // bias, per-head q/k norm, rope on q and k, q out to q[T][n_heads*hd], k and
  // v into the layer's KV slots.
  virtual void qkv_post(const QkvPost& p, float* qkv, float* q) = 0;
  // Causal attention of q over the layer's cache (GQA: n_heads / n_kv_heads
  // query heads per KV head); window 0 = unlimited.
  virtual void attention(int64_t layer, const float* q, int64_t n_heads, float scale,
                         int64_t window, float* out) = 0;
  // x += delta (+ bias), then h = rms_norm(x) * w. delta is scratch: the
  // bias may be added into it first.
  virtual void add_rms_norm(float* x, float* delta, const float* bias, const float* w,
                            int64_t dim, float eps, float* h) = 0;
  // out[r] = silu(gu[r][0..n)) * gu[r][n..2n).
  virtual void silu_mul(const float* gu, int64_t n, float* out) = 0;
  // The MLP's end: act = silu_mul(gu), then y = act · downᵀ (rows of ldy).
  // A backend may fuse the two (act is then scratch it need not write).
  virtual void silu_mul_matmul(const float* gu, int64_t n, float* act, const WeightMatrix& down,
                               float* y, int64_t ldy, int64_t n_rows) {
    silu_mul(gu, n, act);
    const WeightMatrix* part = &down;
    matmul({&part, 1}, act, n, n_rows, y, ldy);
  }
  // x += delta (+ bias), rows of dim (delta is scratch, as above).
  virtual void add(float* x, float* delta, const float* bias, int64_t dim) = 0;

  // The residual stream fused into the projections, for a backend where a
  // norm or an add of its own costs a launch (fuses_residual()); the decoder
  // then calls these three instead of add_rms_norm. h, tmp: scratch rows of
  // dim the backend may use.
  virtual bool fuses_residual() const { return false; }
  // y = (rms_norm(x) * w) · partsᵀ, x rows of dim.
  virtual void norm_matmul(std::span<const WeightMatrix* const> parts, const float* x, const float* w,
                           float eps, int64_t n_rows, int64_t dim, float* h, float* y, int64_t ldy) {
    rms_norm(x, w, n_rows, dim, eps, h);
    matmul(parts, h, dim, n_rows, y, ldy);
  }
  // x += in · wᵀ (+ bias), rows of dim.
  virtual void matmul_add(const WeightMatrix& w, const float* in, int64_t ld_in, int64_t n_rows,
                          const float* bias, float* x, int64_t dim, float* tmp) {
    const WeightMatrix* part = &w;
    matmul({&part, 1}, in, ld_in, n_rows, tmp, dim);
    add(x, tmp, bias, dim);
  }
  // x += (silu(gu[r][0..n)) * gu[r][n..2n)) · downᵀ, rows of dim.
  virtual void silu_mul_matmul_add(const float* gu, int64_t n, float* act, const WeightMatrix& down,
                                   float* x, int64_t dim, int64_t n_rows, float* tmp) {
    silu_mul_matmul(gu, n, act, down, tmp, dim, n_rows);
    add(x, tmp, nullptr, dim);
  }
  // Final norm and lm_head for plan.out_rows; the logits land on the host.
  virtual void logits(const float* x, const float* norm, float eps,
                      std::span<const WeightMatrix* const> lm_head, int64_t dim, int64_t vocab,
                      float* host_out) = 0;
};

// "auto" (the GPU when one is usable, else the CPU), "cpu" or "cuda".
// n_threads: CPU compute threads (0 = all cores). Throws Error for an
// unknown device, or "cuda" where this build or machine has none.
std::unique_ptr<Backend> make_backend(const std::string& device, int n_threads);

// Why the CUDA backend cannot run here ("" when it can): not compiled in, no
// driver, no device.
std::string cuda_unavailable_reason();

// Whether a model fits a device before any of it is uploaded: its weights,
// the KV cache of the smallest context served, and the work space of a
// step, against the device's free memory. "" when it fits, else one line
// naming what is needed and what is free.
std::string device_fit_problem(const std::string& device_name, int64_t weight_bytes,
                               int64_t min_kv_bytes, int64_t workspace_bytes, int64_t available);
// The work space set aside for a GPU step (activations of a 2048-token
// prompt chunk, the f16 copy of one weight for cuBLAS, cuBLAS itself).
inline constexpr int64_t kGpuWorkspaceBytes = int64_t{768} << 20;

}  // namespace pensieve
