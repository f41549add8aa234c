// The CUDA backend: weights uploaded once, activations and the KV pool in
// device memory, every operation a kernel on one stream. A step's host-side
// description (token ids, KV slots, rope tables, block tables) goes to the
// device in one copy at begin_step; the only copy back is the logits.
//
// Decode steps (up to kGemvMaxTokens rows, or up to kMmaMaxTokens sequences
// of one token each) run as CUDA graphs: the first
// step of a shape is captured while it runs, later ones replay it, so a
// token costs one graph launch instead of hundreds of kernel launches. A
// graph is keyed by what its kernels' arguments depend on: the row count,
// the rows that want logits and the split count of attention (from the
// longest context, rounded up to a power of two). Its device pointers stay
// valid because every buffer the step uses is allocated through alloc(),
// which bumps an epoch; a graph from an older epoch is captured again.
// PENSIEVE_CUDA_GRAPHS=0 turns graphs off; PENSIEVE_CUDA_PROFILE=1 times
// every operation (graphs off) and prints the totals at exit.
#include "backend/cuda_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <string>
#include <map>
#include <tuple>
#include <vector>

#include "core/error_type.h"
#include "kernels/cuda/kernels.h"

namespace pensieve {
namespace {

using cuda::GpuWeight;

class DeviceBuffer final : public Buffer {
 public:
  DeviceBuffer(size_t bytes, int64_t* counter) : counter_(counter) {
    bytes_ = bytes;
    const cudaError_t err = cudaMalloc(&data_, bytes ? bytes : 1);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear it: the device stays usable
      throw Error(ErrorKind::resource, "cannot allocate " + std::to_string(bytes >> 20) +
                                           " MiB on the GPU: " + cudaGetErrorString(err));
    }
    *counter_ += static_cast<int64_t>(bytes);
  }
  ~DeviceBuffer() override {
    cudaFree(data_);
    *counter_ -= static_cast<int64_t>(bytes_);
  }

 private:
  int64_t* counter_;
};

GpuWeight gpu_view(const WeightMatrix& w) {
  GpuWeight g;
  g.format = static_cast<int>(w.format);
  g.scale_type = static_cast<int>(w.scale_type);
  g.group_size = w.group_size;
  g.rows = w.rows;
  g.cols = w.cols;
  g.data = w.data;
  g.scales = w.scales;
  g.biases = w.biases;
  return g;
}

size_t scale_bytes(ScaleType t) { return t == ScaleType::f32 ? 4 : 2; }

class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    PENSIEVE_CUDA_CHECK(cudaSetDevice(0));
    cudaDeviceProp prop{};
    PENSIEVE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    name_ = prop.name;
    PENSIEVE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    cublas_ = cuda::cublas_open(stream_);
    if (cublas_ == nullptr) cublas_why_ = cuda::cublas_unavailable_reason();
    // The tensor-core gemm's per-tile counters: zero once, left zero by every launch.
    mma_counters_ = alloc(kMmaCounters * sizeof(int));
    PENSIEVE_CUDA_CHECK(cudaMemsetAsync(mma_counters_->data(), 0, kMmaCounters * sizeof(int), stream_));
    PENSIEVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  ~CudaBackend() override {
    if (profiling_) {
      try {
        cudaStreamSynchronize(stream_);
        print_profile();
      } catch (...) {
      }
      for (cudaEvent_t e : events_) cudaEventDestroy(e);
    }
    if (capturing_) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(stream_, &g);
      if (g != nullptr) cudaGraphDestroy(g);
    }
    for (auto& [key, graph] : graphs_) cudaGraphExecDestroy(graph.exec);
    buffers_.clear();
    kv_.reset();
    if (staging_ != nullptr) cudaFreeHost(staging_);
    cuda::cublas_close(cublas_);
    cudaStreamDestroy(stream_);
  }

  const char* device() const override { return "cuda"; }
  std::string description() const override {
    if (cublas_ == nullptr) return "cuda: " + name_ + " (prompts on the built-in gemm: " + cublas_why_ + ")";
    const int v = cuda::cublas_version(cublas_);
    return "cuda: " + name_ + " (prompts on cuBLAS " + std::to_string(v / 10000) + "." +
           std::to_string(v / 100 % 100) + ")";
  }
  MemoryInfo memory() const override {
    size_t free_bytes = 0, total = 0;
    PENSIEVE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    return {.total = static_cast<int64_t>(total), .available = static_cast<int64_t>(free_bytes)};
  }
  int64_t bytes_allocated() const override { return allocated_; }
  // Prompt chunks of 2048 rows fill the card (32 tiles of 64 rows per head
  // in attention, full cuBLAS tiles) with a few hundred MiB of activations.
  int64_t step_tokens() const override { return 2048; }

  std::unique_ptr<Buffer> alloc(size_t bytes) override {
    ++alloc_epoch_;
    return std::make_unique<DeviceBuffer>(bytes, &allocated_);
  }

  // Copies go on the backend's stream and are waited for. (A cudaMemcpy
  // from pageable memory runs on the legacy default stream and returns once
  // the source is staged, not landed: a kernel on this non-blocking stream
  // could read the destination before it arrived, as run 3 of
  // docs/cuda-notes.md saw.)
  void to_device(void* dst, const void* src, size_t bytes) override {
    PENSIEVE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    PENSIEVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    PENSIEVE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    PENSIEVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  WeightMatrix upload(const WeightMatrix& w) override {
    WeightMatrix d = w;
    d.data = static_cast<const uint8_t*>(copy_up(w.data, static_cast<size_t>(w.rows * w.row_bytes())));
    if (w.quantized()) {
      if (is_k_record(w.scale_type) || w.biases == nullptr)  // GGUF forms (models/gguf_model.h)
        throw Error(ErrorKind::unsupported, w.name + ": this weight form has no CUDA kernels yet");
      const size_t n = static_cast<size_t>(w.rows * w.n_groups()) * scale_bytes(w.scale_type);
      d.scales = copy_up(w.scales, n);
      d.biases = copy_up(w.biases, n);
    }
    return d;
  }

  const float* upload(const std::vector<float>& v) override {
    if (v.empty()) return nullptr;
    return static_cast<const float*>(copy_up(v.data(), v.size() * sizeof(float)));
  }

  void allocate_kv(const KvGeometry& g, int64_t n_blocks) override {
    kv_.reset();
    geometry_ = g;
    n_kv_blocks_ = n_blocks;
    kv_ = alloc(static_cast<size_t>(g.bytes_per_block() * n_blocks));
    // Zeros: a block's unwritten positions are never read, but they must not
    // hold NaN bit patterns either.
    PENSIEVE_CUDA_CHECK(cudaMemsetAsync(kv_->data(), 0, kv_->bytes(), stream_));
    PENSIEVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  int64_t kv_blocks() const override { return kv_ ? n_kv_blocks_ : 0; }
  void commit_kv() override {}  // cudaMalloc commits
  // The disk tier's copies: per layer, the block's K then its V.
  bool read_kv_block(int32_t block, std::byte* host_out) override {
    return copy_kv_block(block, host_out, cudaMemcpyDeviceToHost);
  }
  bool write_kv_block(int32_t block, const std::byte* host_in) override {
    return copy_kv_block(block, const_cast<std::byte*>(host_in), cudaMemcpyHostToDevice);
  }

  void begin_step(const StepPlan& plan) override;
  void embed(const WeightMatrix& table, float* x) override {
    if (replaying_) return;
    Span span(this, "embed");
    cuda::embed(gpu_view(table), tokens_, n_rows_, x, stream_);
  }
  void rms_norm(const float* x, const float* w, int64_t n_rows, int64_t dim, float eps,
                float* out) override {
    if (replaying_) return;
    Span span(this, "rms_norm");
    cuda::rms_norm(x, nullptr, w, n_rows, dim, eps, out, stream_);
  }
  void matmul(std::span<const WeightMatrix* const> parts, const float* x, int64_t ldx,
              int64_t n_rows, float* y, int64_t ldy) override {
    if (replaying_) return;
    // (The name is built only when profiling: matmul runs every layer.)
    Span span(this, !profiling_ ? std::string()
                    : parts.size() == 1 ? "matmul " + std::to_string(parts[0]->rows) + "x" + std::to_string(parts[0]->cols)
                                        : "matmul (" + std::to_string(parts.size()) + " parts)");
    int64_t offset = 0;
    for (const WeightMatrix* w : parts) {
      // 9-64 rows: the tensor-core gemm where it applies (it reads the 4-bit
      // weight once; cuBLAS would dequantize it first), else cuBLAS from 64.
      if (mma(*w, x, ldx, n_rows, y + offset, ldy, /*silu=*/false)) {
        offset += w->rows;
        continue;
      }
      if (cublas_ != nullptr && n_rows >= cuda::kCublasMinTokens) {
        const size_t w_bytes = static_cast<size_t>(w->rows * w->cols) * 2;
        const size_t x_bytes = static_cast<size_t>(n_rows * w->cols) * 2;
        if (!w16_ || w16_->bytes() < w_bytes) grow(w16_, w_bytes);
        if (!x16_ || x16_->bytes() < x_bytes) grow(x16_, x_bytes);
        cuda::matmul_cublas(cublas_, gpu_view(*w), x, ldx, n_rows, y + offset, ldy,
                            static_cast<__half*>(w16_->data()), static_cast<__half*>(x16_->data()),
                            stream_);
      } else {
        cuda::matmul(gpu_view(*w), x, ldx, n_rows, y + offset, ldy, stream_);
      }
      offset += w->rows;
    }
  }
  void qkv_post(const QkvPost& p, float* qkv, float* q) override {
    if (replaying_) return;
    Span span(this, "qkv_post");
    cuda::QkvPostArgs a;
    a.n_heads = static_cast<int>(p.n_heads);
    a.n_kv_heads = static_cast<int>(p.n_kv_heads);
    a.head_dim = static_cast<int>(p.head_dim);
    a.rot_dim = static_cast<int>(rot_dim_);
    a.bias = p.bias;
    a.q_norm = p.q_norm;
    a.k_norm = p.k_norm;
    a.eps = p.eps;
    cuda::qkv_post(a, qkv, cos_, sin_, slots_, n_rows_, q, layer(p.layer), stream_);
  }
  void attention(int64_t layer_index, const float* q, int64_t n_heads, float scale, int64_t window,
                 float* out) override {
    if (replaying_) return;
    Span span(this, "attention");
    cuda::AttentionArgs a;
    a.q = q;
    a.out = out;
    a.kv = layer(layer_index);
    a.seqs = seqs_;
    a.row_seq = row_seq_;
    a.tables = tables_;
    a.n_rows = n_rows_;
    a.n_heads = static_cast<int>(n_heads);
    a.scale = scale;
    a.window = static_cast<int>(window);
    a.max_ctx = max_ctx_;
    a.groups = groups_;
    a.n_groups = n_groups_;
    a.group_rows = group_rows_;
    a.tiles = n_tiles_ > 0 ? tiles_ : nullptr;
    a.n_tiles = n_tiles_;
    const int64_t need =
        cuda::attention_scratch_floats(n_rows_, n_groups_, a.n_heads, a.kv.head_dim, max_ctx_);
    if (need > 0) {
      if (!partial_ || partial_->bytes() < static_cast<size_t>(need) * sizeof(float))
        grow(partial_, static_cast<size_t>(need) * sizeof(float));
      a.partial = partial_->f32();
    }
    cuda::attention(a, stream_);
  }
  void add_rms_norm(float* x, float* delta, const float* bias, const float* w, int64_t dim,
                    float eps, float* h) override {
    if (replaying_) return;
    Span span(this, "add_rms_norm");
    cuda::add_rms_norm(x, delta, bias, w, n_rows_, dim, eps, h, stream_);
  }
  void silu_mul(const float* gu, int64_t n, float* out) override {
    if (replaying_) return;
    Span span(this, "silu_mul");
    cuda::silu_mul(gu, n_rows_, n, out, stream_);
  }
  void silu_mul_matmul(const float* gu, int64_t n, float* act, const WeightMatrix& down, float* y,
                       int64_t ldy, int64_t n_rows) override {
    if (replaying_) return;
    {
      Span span(this, profiling_ ? "silu + matmul " + std::to_string(down.rows) + "x" + std::to_string(down.cols)
                                 : std::string());
      if (fuse_silu_ && (mma(down, gu, 2 * n, n_rows, y, ldy, /*silu=*/true) ||
                         cuda::matmul_silu(gpu_view(down), gu, n_rows, y, ldy, stream_)))
        return;
    }
    Backend::silu_mul_matmul(gu, n, act, down, y, ldy, n_rows);
  }
  // The residual fused into the projections (PENSIEVE_CUDA_FUSE_RESIDUAL=0:
  // add_rms_norm as a kernel of its own): decode rows norm x as the 4-bit
  // gemv stages it and add into x as it writes; 9-64 rows add into x from
  // the tensor-core gemm. Elsewhere the backend's defaults (a norm or an
  // add kernel and the matmul).
  bool fuses_residual() const override { return fuse_residual_; }
  void norm_matmul(std::span<const WeightMatrix* const> parts, const float* x, const float* w, float eps,
                   int64_t n_rows, int64_t dim, float* h, float* y, int64_t ldy) override {
    if (replaying_) return;
    if (n_rows > cuda::kGemvMaxTokens) return Backend::norm_matmul(parts, x, w, eps, n_rows, dim, h, y, ldy);
    Span span(this, profiling_ ? "norm + matmul " + std::to_string(parts[0]->rows) + "x" + std::to_string(parts[0]->cols)
                               : std::string());
    bool normed = false;  // h holds rms_norm(x) * w
    int64_t offset = 0;
    for (const WeightMatrix* p : parts) {
      const cuda::GemvIo io{.x = x, .ldx = dim, .y = y + offset, .ldy = ldy, .norm_w = w, .eps = eps};
      if (!cuda::gemv_q4(gpu_view(*p), io, n_rows, cuda::kGemvNorm, false, stream_)) {
        if (!normed) cuda::rms_norm(x, nullptr, w, n_rows, dim, eps, h, stream_);
        normed = true;
        cuda::matmul(gpu_view(*p), h, dim, n_rows, y + offset, ldy, stream_);
      }
      offset += p->rows;
    }
  }
  void matmul_add(const WeightMatrix& w, const float* in, int64_t ld_in, int64_t n_rows, const float* bias,
                  float* x, int64_t dim, float* tmp) override {
    if (replaying_) return;
    {
      Span span(this, profiling_ ? "matmul + add " + std::to_string(w.rows) + "x" + std::to_string(w.cols)
                                 : std::string());
      const cuda::GemvIo io{.x = in, .ldx = ld_in, .y = x, .ldy = dim, .bias = bias};
      if (n_rows <= cuda::kGemvMaxTokens ? cuda::gemv_q4(gpu_view(w), io, n_rows, cuda::kGemvPlain, true, stream_)
                                         : mma(w, in, ld_in, n_rows, x, dim, /*silu=*/false, /*acc=*/true, bias))
        return;
    }
    Backend::matmul_add(w, in, ld_in, n_rows, bias, x, dim, tmp);
  }
  void silu_mul_matmul_add(const float* gu, int64_t n, float* act, const WeightMatrix& down, float* x,
                           int64_t dim, int64_t n_rows, float* tmp) override {
    if (replaying_) return;
    if (fuse_silu_) {
      Span span(this, profiling_ ? "silu + matmul + add " + std::to_string(down.rows) + "x" + std::to_string(down.cols)
                                 : std::string());
      const cuda::GemvIo io{.x = gu, .ldx = 2 * n, .y = x, .ldy = dim};
      if (n_rows <= cuda::kGemvMaxTokens ? cuda::gemv_q4(gpu_view(down), io, n_rows, cuda::kGemvSilu, true, stream_)
                                         : mma(down, gu, 2 * n, n_rows, x, dim, /*silu=*/true, /*acc=*/true))
        return;
    }
    Backend::silu_mul_matmul_add(gu, n, act, down, x, dim, n_rows, tmp);
  }

  void add(float* x, float* delta, const float* bias, int64_t dim) override {
    if (replaying_) return;
    Span span(this, "add");
    cuda::add_rms_norm(x, delta, bias, nullptr, n_rows_, dim, 0.f, nullptr, stream_);
  }
  void logits(const float* x, const float* norm, float eps,
              std::span<const WeightMatrix* const> lm_head, int64_t dim, int64_t vocab,
              float* host_out) override {
    const int64_t n = n_out_;
    if (n == 0) return;
    if (!final_ || final_->bytes() < static_cast<size_t>(n * dim) * sizeof(float))
      grow(final_, static_cast<size_t>(n * dim) * sizeof(float));
    if (!logits_ || logits_->bytes() < static_cast<size_t>(n * vocab) * sizeof(float))
      grow(logits_, static_cast<size_t>(n * vocab) * sizeof(float));
    if (!replaying_) {
      {
        Span span(this, "final rms_norm");
        cuda::rms_norm(x, out_rows_, norm, n, dim, eps, final_->f32(), stream_);
      }
      matmul(lm_head, final_->f32(), dim, n, logits_->f32(), vocab);
    }
    if (capturing_) finish_capture();
    if (graph_ != nullptr) PENSIEVE_CUDA_CHECK(cudaGraphLaunch(graph_, stream_));
    PENSIEVE_CUDA_CHECK(cudaMemcpyAsync(host_out, logits_->data(),
                                        static_cast<size_t>(n * vocab) * sizeof(float),
                                        cudaMemcpyDeviceToHost, stream_));
    PENSIEVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  const void* copy_up(const void* host, size_t bytes) {
    buffers_.push_back(alloc(bytes));
    to_device(buffers_.back()->data(), host, bytes);
    return buffers_.back()->data();
  }
  cuda::GpuKvLayer layer(int64_t i) const {
    if (!kv_) throw Error(ErrorKind::internal, "forward: KV storage not allocated");
    cuda::GpuKvLayer l;
    l.n_kv_heads = static_cast<int>(geometry_.n_kv_heads);
    l.head_dim = static_cast<int>(geometry_.head_dim);
    l.q8 = geometry_.type == KvType::q8;
    l.group = static_cast<int>(kv_q8_group(geometry_.head_dim));
    l.head_bytes = static_cast<int>(kv_head_bytes(geometry_.type, geometry_.head_dim));
    const int64_t per_layer = geometry_.block_bytes() * n_kv_blocks_;
    uint8_t* base = static_cast<uint8_t*>(kv_->data());
    l.k = base + 2 * i * per_layer;
    l.v = l.k + per_layer;
    return l;
  }

  bool copy_kv_block(int32_t block, std::byte* host, cudaMemcpyKind kind) {
    if (!kv_ || block < 0 || block >= n_kv_blocks_) {
      throw Error(ErrorKind::internal, "KV block " + std::to_string(block) + " of " + std::to_string(n_kv_blocks_));
    }
    const size_t bytes = static_cast<size_t>(geometry_.block_bytes());
    for (int64_t i = 0; i < geometry_.n_layers; ++i) {
      const cuda::GpuKvLayer l = layer(i);
      uint8_t* k = l.k + block * geometry_.block_bytes();
      uint8_t* v = l.v + block * geometry_.block_bytes();
      std::byte* hk = host + 2 * i * bytes;
      std::byte* hv = hk + bytes;
      if (kind == cudaMemcpyDeviceToHost) {
        PENSIEVE_CUDA_CHECK(cudaMemcpyAsync(hk, k, bytes, kind, stream_));
        PENSIEVE_CUDA_CHECK(cudaMemcpyAsync(hv, v, bytes, kind, stream_));
      } else {
        PENSIEVE_CUDA_CHECK(cudaMemcpyAsync(k, hk, bytes, kind, stream_));
        PENSIEVE_CUDA_CHECK(cudaMemcpyAsync(v, hv, bytes, kind, stream_));
      }
    }
    PENSIEVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return true;
  }

  // Many streams decoding (9-64 rows of a 4-bit weight): the tensor-core
  // gemm, which reads the weight once. False where it does not apply.
  static constexpr size_t kMmaCounters = 4096;
  bool mma(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n_rows, float* y, int64_t ldy,
           bool silu, bool acc = false, const float* bias = nullptr) {
    if (n_rows < cuda::kMmaMinTokens || n_rows > cuda::kMmaMaxTokens) return false;
    const cuda::GpuWeight gw = gpu_view(w);
    const cuda::MmaPlan p = cuda::gemm_q4_mma_plan(gw, n_rows, x, ldx);
    if (!p.ok || p.counters > kMmaCounters) return false;
    if (!x16_ || x16_->bytes() < p.x16_halves * 2) grow(x16_, p.x16_halves * 2);
    if (p.partial_floats > 0 && (!mma_partial_ || mma_partial_->bytes() < p.partial_floats * sizeof(float)))
      grow(mma_partial_, p.partial_floats * sizeof(float));
    cuda::gemm_q4_mma(gw, x, ldx, n_rows, y, ldy, silu, acc, bias, p, static_cast<__half*>(x16_->data()),
                      p.partial_floats > 0 ? mma_partial_->f32() : nullptr,
                      static_cast<int*>(mma_counters_->data()), stream_);
    return true;
  }

  // Replaces a step buffer by a larger one. The old one is freed at the next
  // begin_step: cudaFree waits for the device, which a capture forbids.
  void grow(std::unique_ptr<Buffer>& b, size_t bytes) {
    if (b) retired_.push_back(std::move(b));
    b = alloc(bytes);
  }
  std::vector<std::unique_ptr<Buffer>> retired_;

  // Decode graphs.
  using GraphKey = std::tuple<int64_t, int64_t, int, int64_t>;  // rows, logit rows, ctx bucket, groups
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    uint64_t epoch = 0;
  };
  void finish_capture() {
    cudaGraph_t g = nullptr;
    capturing_ = false;
    PENSIEVE_CUDA_CHECK(cudaStreamEndCapture(stream_, &g));
    Graph& entry = graphs_[key_];
    if (entry.exec != nullptr) cudaGraphExecDestroy(entry.exec);
    entry.exec = nullptr;
    PENSIEVE_CUDA_CHECK(cudaGraphInstantiate(&entry.exec, g, 0));
    cudaGraphDestroy(g);
    entry.epoch = alloc_epoch_;
    graph_ = entry.exec;
  }

  // PENSIEVE_CUDA_PROFILE=1: every operation between two events (graphs
  // off), summed per operation and step kind, printed when the backend goes.
  struct Span {
    CudaBackend* be;
    size_t index = 0;
    Span(CudaBackend* b, std::string name) : be(b->profiling_ ? b : nullptr) {
      if (be == nullptr) return;
      index = be->spans_.size();
      if (be->events_.size() < 2 * (index + 1)) {
        for (int i = 0; i < 2; ++i) {
          cudaEvent_t e;
          PENSIEVE_CUDA_CHECK(cudaEventCreate(&e));
          be->events_.push_back(e);
        }
      }
      be->spans_.push_back(std::move(name));
      PENSIEVE_CUDA_CHECK(cudaEventRecord(be->events_[2 * index], be->stream_));
    }
    ~Span() {
      if (be != nullptr) cudaEventRecord(be->events_[2 * index + 1], be->stream_);
    }
  };
  struct ProfileEntry {
    int64_t calls = 0;
    double ms = 0;
  };
  // Adds the finished step's spans to the totals (the stream is idle).
  void collect_spans() {
    for (size_t i = 0; i < spans_.size(); ++i) {
      float ms = 0;
      PENSIEVE_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[2 * i], events_[2 * i + 1]));
      ProfileEntry& e = profile_[profile_label_ + spans_[i]];
      ++e.calls;
      e.ms += ms;
    }
    spans_.clear();
  }
  void print_profile() {
    collect_spans();
    std::fprintf(stderr, "%-40s %8s %10s %10s\n", "cuda profile: step op", "calls", "total ms", "avg us");
    for (const auto& [name, e] : profile_)
      std::fprintf(stderr, "%-40s %8lld %10.3f %10.2f\n", name.c_str(), static_cast<long long>(e.calls),
                   e.ms, 1000.0 * e.ms / static_cast<double>(e.calls));
  }
  bool profiling_ = [] {
    const char* e = std::getenv("PENSIEVE_CUDA_PROFILE");
    return e != nullptr && std::string(e) == "1";
  }();
  // Steps by rows: "decode" (graphs' sizes), "batch" (many streams decoding), "prefill".
  std::string profile_label_;
  std::vector<cudaEvent_t> events_;
  std::vector<std::string> spans_;
  std::map<std::string, ProfileEntry> profile_;

  std::string name_;
  cudaStream_t stream_ = nullptr;
  uint64_t alloc_epoch_ = 0;
  bool graphs_enabled_ = [] {
    const char* e = std::getenv("PENSIEVE_CUDA_GRAPHS");
    return e == nullptr || std::string(e) != "0";
  }();
  std::map<GraphKey, Graph> graphs_;
  GraphKey key_{};
  bool capturing_ = false, replaying_ = false;
  cudaGraphExec_t graph_ = nullptr;  // launched by this step's logits()
  int64_t allocated_ = 0;
  std::vector<std::unique_ptr<Buffer>> buffers_;  // weights and vectors
  std::unique_ptr<Buffer> kv_, partial_, final_, logits_, meta_, w16_, x16_, mma_partial_, mma_counters_;
  cuda::CublasContext* cublas_ = nullptr;
  std::string cublas_why_;
  KvGeometry geometry_;
  int64_t n_kv_blocks_ = 0;
  // The step's description: a pinned host copy and its device copy.
  std::byte* staging_ = nullptr;
  size_t staging_bytes_ = 0;
  int64_t n_rows_ = 0, n_out_ = 0, rot_dim_ = 0;
  int max_ctx_ = 0;
  const int32_t *tokens_ = nullptr, *slots_ = nullptr, *row_seq_ = nullptr, *tables_ = nullptr,
                *out_rows_ = nullptr;
  const float *cos_ = nullptr, *sin_ = nullptr;
  const cuda::GpuSeq* seqs_ = nullptr;
  const int32_t* groups_ = nullptr;
  int64_t n_groups_ = 0;
  const int32_t* tiles_ = nullptr;
  int64_t n_tiles_ = 0;
  bool fuse_residual_ = [] {
    const char* e = std::getenv("PENSIEVE_CUDA_FUSE_RESIDUAL");
    return e == nullptr || std::string(e) != "0";
  }();
  bool fuse_silu_ = [] {
    const char* e = std::getenv("PENSIEVE_CUDA_FUSE");
    return e == nullptr || std::string(e) != "0";
  }();
  bool flash_enabled_ = [] {
    const char* e = std::getenv("PENSIEVE_CUDA_FLASH");
    return e == nullptr || std::string(e) != "0";
  }();
  int group_rows_ = 1;
};

void CudaBackend::begin_step(const StepPlan& plan) {
  if (capturing_) {  // a step that failed mid-capture: drop what it captured
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(stream_, &g);
    if (g != nullptr) cudaGraphDestroy(g);
    capturing_ = false;
  }
  replaying_ = false;
  graph_ = nullptr;
  // The staging copy of the last step must have landed (logits() waits for
  // it; a step without logits may not have).
  PENSIEVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  retired_.clear();
  if (profiling_) collect_spans();
  n_rows_ = plan.n_rows();
  n_out_ = static_cast<int64_t>(plan.out_rows.size());
  rot_dim_ = plan.rot_dim;
  std::vector<int32_t> row_seq(static_cast<size_t>(n_rows_));
  // One entry per row at most (a sequence has at least one row), so the
  // layout below depends on the row count alone.
  std::vector<cuda::GpuSeq> seqs(static_cast<size_t>(n_rows_));
  std::vector<int32_t> tables;
  max_ctx_ = 0;
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const StepSeq& s = plan.seqs[i];
    seqs[i] = {static_cast<int32_t>(tables.size()), static_cast<int32_t>(s.n_ctx),
               static_cast<int32_t>(s.q_row), static_cast<int32_t>(s.n_q)};
    tables.insert(tables.end(), s.block_table.begin(), s.block_table.end());
    for (int64_t r = s.q_row; r < s.q_row + s.n_q; ++r) row_seq[r] = static_cast<int32_t>(i);
    if (s.n_ctx > max_ctx_) max_ctx_ = static_cast<int>(s.n_ctx);
  }
  // Decode steps: up to 8 rows, or up to 64 streams of one token each (the
  // tensor-core gemm's rows); these run as graphs.
  bool one_token_each = true;
  for (const StepSeq& s : plan.seqs) one_token_each = one_token_each && s.n_q == 1;
  const bool decode = n_rows_ <= cuda::kGemvMaxTokens || (one_token_each && n_rows_ <= cuda::kMmaMaxTokens);
  const bool graph = graphs_enabled_ && !profiling_ && decode && n_out_ > 0;
  profile_label_ = decode ? "decode  " : n_rows_ <= cuda::kGemvBatchTokens ? "batch   " : "prefill ";
  if (decode) {
    // Attention's split count comes from this bucket, so that one graph
    // serves a range of context lengths (and a step computes the same with
    // graphs on or off).
    int bucket = 256;
    while (bucket < max_ctx_) bucket *= 2;
    max_ctx_ = bucket;
  }
  // Attention works on groups of rows of one sequence: 4 for prompts (each
  // staged KV block serves 4 queries), 1 for decode. At most one group per
  // row, so the layout depends on the row count alone.
  group_rows_ = decode ? 1 : 4;
  std::vector<int32_t> groups(static_cast<size_t>(n_rows_));
  n_groups_ = 0;
  for (const StepSeq& s : plan.seqs)
    for (int64_t r = s.q_row; r < s.q_row + s.n_q; r += group_rows_)
      groups[n_groups_++] = static_cast<int32_t>(
          (r << 4) | std::min<int64_t>(group_rows_, s.q_row + s.n_q - r));
  // Prompt steps: 64-row tiles of each sequence for the tensor-core kernel.
  std::vector<int32_t> tiles;
  if (!decode && flash_enabled_)
    for (const StepSeq& s : plan.seqs)
      for (int64_t r = s.q_row; r < s.q_row + s.n_q; r += cuda::kFlashTileRows) {
        tiles.push_back(static_cast<int32_t>(r));
        tiles.push_back(static_cast<int32_t>(std::min<int64_t>(cuda::kFlashTileRows, s.q_row + s.n_q - r)));
      }
  n_tiles_ = static_cast<int64_t>(tiles.size() / 2);
  // One packed copy, each array at a 16-byte boundary; the block tables,
  // whose length changes from step to step, go last.
  struct Part {
    const void* src;
    size_t bytes;
    size_t offset = 0;
  };
  Part parts[] = {
      {plan.tokens.data(), plan.tokens.size() * 4},
      {plan.slots.data(), plan.slots.size() * 4},
      {row_seq.data(), row_seq.size() * 4},
      {plan.out_rows.data(), plan.out_rows.size() * 4},
      {plan.cos.data(), plan.cos.size() * 4},
      {plan.sin.data(), plan.sin.size() * 4},
      {seqs.data(), seqs.size() * sizeof(cuda::GpuSeq)},
      {groups.data(), groups.size() * 4},
      {tiles.data(), tiles.size() * 4},
      {tables.data(), tables.size() * 4},
  };
  size_t total = 0;
  for (Part& p : parts) {
    p.offset = total;
    total += (p.bytes + 15) / 16 * 16;
  }
  if (total > staging_bytes_) {
    if (staging_ != nullptr) PENSIEVE_CUDA_CHECK(cudaFreeHost(staging_));
    staging_bytes_ = std::max<size_t>(total * 2, 1 << 20);
    PENSIEVE_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&staging_), staging_bytes_));
    meta_ = alloc(staging_bytes_);
  }
  for (const Part& p : parts)
    if (p.bytes > 0) std::memcpy(staging_ + p.offset, p.src, p.bytes);
  PENSIEVE_CUDA_CHECK(cudaMemcpyAsync(meta_->data(), staging_, total, cudaMemcpyHostToDevice, stream_));
  auto* base = static_cast<std::byte*>(meta_->data());
  tokens_ = reinterpret_cast<const int32_t*>(base + parts[0].offset);
  slots_ = reinterpret_cast<const int32_t*>(base + parts[1].offset);
  row_seq_ = reinterpret_cast<const int32_t*>(base + parts[2].offset);
  out_rows_ = reinterpret_cast<const int32_t*>(base + parts[3].offset);
  cos_ = reinterpret_cast<const float*>(base + parts[4].offset);
  sin_ = reinterpret_cast<const float*>(base + parts[5].offset);
  seqs_ = reinterpret_cast<const cuda::GpuSeq*>(base + parts[6].offset);
  groups_ = reinterpret_cast<const int32_t*>(base + parts[7].offset);
  tiles_ = reinterpret_cast<const int32_t*>(base + parts[8].offset);
  tables_ = reinterpret_cast<const int32_t*>(base + parts[9].offset);
  if (graph) {
    key_ = {n_rows_, n_out_, max_ctx_, n_groups_};
    auto it = graphs_.find(key_);
    if (it != graphs_.end() && it->second.epoch == alloc_epoch_) {
      replaying_ = true;
      graph_ = it->second.exec;
    } else {
      // Buffers a step grows are allocated during the capture (relaxed
      // mode allows it); the graph is stamped with the epoch after them.
      PENSIEVE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
      capturing_ = true;
    }
  }
}

}  // namespace

std::string cuda_probe() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    // No libcuda at all reads as an "insufficient" driver to the runtime.
    if (err == cudaErrorInsufficientDriver)
      return "no NVIDIA driver found, or one older than this build's CUDA runtime needs";
    return std::string("no usable NVIDIA GPU (") + cudaGetErrorString(err) + ")";
  }
  if (n == 0) return "no CUDA device";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "cannot read the CUDA device";
  if (prop.major < 9) {
    return std::string(prop.name) + " has compute capability " + std::to_string(prop.major) + "." +
           std::to_string(prop.minor) + "; this build runs on 9.0 (Hopper) and later";
  }
  return "";
}

std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<CudaBackend>(); }

}  // namespace pensieve
