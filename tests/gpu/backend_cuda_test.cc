// The CUDA backend's operations against the CPU backend's (whose kernels
// are checked against scalar and float64 references in tests/unit), on
// random inputs of awkward sizes, through the backend seam. Skipped where no
// usable GPU exists; run on the GPU machine (ctest -L gpu).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "backend/backend.h"
#include "core/half.h"
#include "engine/session.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/matmul.h"
#include "models/model.h"
#include "quant/weight_matrix.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = cuda_unavailable_reason();
    if (!why.empty()) GTEST_SKIP() << why;
    cpu_ = make_backend("cpu", 2);
    gpu_ = make_backend("cuda", 0);
  }

  // A host vector copied into a fresh GPU buffer (kept until the test ends).
  // Copies through the backend that uses the buffer (each backend waits for
  // its own stream only).
  float* on_gpu(const std::vector<float>& v, Backend* be = nullptr) {
    if (be == nullptr) be = gpu_.get();
    buffers_.push_back(be->alloc(v.size() * sizeof(float)));
    be->to_device(buffers_.back()->data(), v.data(), v.size() * sizeof(float));
    return buffers_.back()->f32();
  }
  float* gpu_zeros(size_t n, Backend* be = nullptr) {
    return on_gpu(std::vector<float>(n, std::nanf("")), be);
  }
  std::vector<float> from_gpu(const float* p, size_t n, Backend* be = nullptr) {
    if (be == nullptr) be = gpu_.get();
    std::vector<float> out(n);
    be->to_host(out.data(), p, n * sizeof(float));
    return out;
  }

  std::unique_ptr<Backend> cpu_, gpu_;
  std::vector<std::unique_ptr<Buffer>> buffers_;
  std::mt19937 rng_{1234};
};

// ‖got − ref‖ / ‖ref‖, and NaN anywhere fails.
double relative_error(const std::vector<float>& ref, const std::vector<float>& got) {
  EXPECT_EQ(ref.size(), got.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

std::vector<float> random_floats(std::mt19937& rng, size_t n, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A random weight of one format with its own host storage.
struct HostWeight {
  std::vector<uint8_t> data, scales, biases;
  WeightMatrix w;
};

HostWeight random_weight(std::mt19937& rng, WeightFormat format, ScaleType st, int group,
                         int64_t rows, int64_t cols) {
  HostWeight h;
  WeightMatrix& w = h.w;
  w.format = format;
  w.rows = rows;
  w.cols = cols;
  w.scale_type = st;
  w.group_size = group;
  w.name = "test";
  h.data.resize(static_cast<size_t>(rows * w.row_bytes()));
  std::uniform_int_distribution<int> byte(0, 255);
  if (format == WeightFormat::affine4 || format == WeightFormat::affine8) {
    for (auto& b : h.data) b = static_cast<uint8_t>(byte(rng));
    const size_t n = static_cast<size_t>(rows * (cols / group));
    const size_t es = st == ScaleType::f32 ? 4 : 2;
    h.scales.resize(n * es);
    h.biases.resize(n * es);
    std::uniform_real_distribution<float> sd(0.001f, 0.02f), bd(-0.1f, 0.1f);
    for (size_t i = 0; i < n; ++i) {
      const float s = sd(rng), b = bd(rng);
      if (st == ScaleType::f32) {
        std::memcpy(&h.scales[i * 4], &s, 4);
        std::memcpy(&h.biases[i * 4], &b, 4);
      } else {
        const uint16_t sb = st == ScaleType::bf16 ? f32_to_bf16(s) : f32_to_f16(s);
        const uint16_t bb = st == ScaleType::bf16 ? f32_to_bf16(b) : f32_to_f16(b);
        std::memcpy(&h.scales[i * 2], &sb, 2);
        std::memcpy(&h.biases[i * 2], &bb, 2);
      }
    }
    w.scales = h.scales.data();
    w.biases = h.biases.data();
  } else {
    const std::vector<float> v = random_floats(rng, static_cast<size_t>(rows * cols), 0.05f);
    for (size_t i = 0; i < v.size(); ++i) {
      if (format == WeightFormat::f32) {
        std::memcpy(&h.data[i * 4], &v[i], 4);
      } else {
        const uint16_t b = format == WeightFormat::bf16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
        std::memcpy(&h.data[i * 2], &b, 2);
      }
    }
  }
  w.data = h.data.data();
  return h;
}

// The reference's input of a matmul: x itself (rows of cols), or, for the
// MLP's down projection, silu(gate) · up of gate|up rows (width 2·cols).
std::vector<float> reference_input(const std::vector<float>& gu, int64_t tokens, int64_t cols, bool silu) {
  const int64_t ldx = silu ? 2 * cols : cols;
  std::vector<float> x(static_cast<size_t>(tokens * cols));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t k = 0; k < cols; ++k) {
      const float g = gu[t * ldx + k];
      x[t * cols + k] = silu ? g / (1.0f + std::exp(-g)) * gu[t * ldx + cols + k] : g;
    }
  return x;
}

struct MatmulCase {
  WeightFormat format;
  ScaleType scale_type;
  int group;
};

// Every format, row counts that are not multiples of a tile, widths that
// are (and, for dense weights, are not) multiples of the vector loads, token
// counts on both sides of the decode/prefill switch and past the large-prompt
// kernel's 128.
TEST_F(CudaBackendTest, MatmulMatchesTheScalarReference) {
  const MatmulCase cases[] = {
      {WeightFormat::affine4, ScaleType::bf16, 64}, {WeightFormat::affine4, ScaleType::f16, 32},
      {WeightFormat::affine4, ScaleType::f32, 128}, {WeightFormat::affine8, ScaleType::bf16, 64},
      {WeightFormat::affine8, ScaleType::f16, 32},  {WeightFormat::bf16, ScaleType::bf16, 0},
      {WeightFormat::f16, ScaleType::bf16, 0},      {WeightFormat::f32, ScaleType::bf16, 0},
  };
  // Prompts take cuBLAS where it is installed; the built-in gemm is checked
  // on a second backend made with cuBLAS turned off.
  setenv("PENSIEVE_CUBLAS", "0", 1);
  const std::unique_ptr<Backend> builtin = make_backend("cuda", 0);
  unsetenv("PENSIEVE_CUBLAS");
  std::printf("default backend: %s\n", gpu_->description().c_str());
  for (Backend* gpu : {gpu_.get(), builtin.get()})
  for (const MatmulCase& c : cases) {
    const bool quant = c.group > 0;
    for (const int64_t rows : {1, 37, 300}) {
      // 5120 columns: the streaming gemv's wide rows (4-bit) and its
      // fallback to the chunked gemv (8-bit rows past its 256 loads).
      for (const int64_t cols : quant ? std::vector<int64_t>{128, 384, 5120} : std::vector<int64_t>{72, 100, 256}) {
        for (const int64_t tokens : quant ? std::vector<int64_t>{1, 3, 8, 9, 20, 70, 130, 300}
                                          : std::vector<int64_t>{1, 3, 8, 9, 70}) {
          HostWeight hw = random_weight(rng_, c.format, c.scale_type, c.group, rows, cols);
          const std::vector<float> x = random_floats(rng_, static_cast<size_t>(tokens * cols));
          std::vector<float> ref(static_cast<size_t>(tokens * rows));
          kernels::matmul_ref(hw.w, x.data(), cols, tokens, ref.data(), rows);
          const WeightMatrix dw = gpu->upload(hw.w);
          // An output row wider than the weight (ldy > rows), as q/k/v parts write.
          const int64_t ldy = rows + 5;
          float* y = gpu_zeros(static_cast<size_t>(tokens * ldy), gpu);
          const WeightMatrix* parts[] = {&dw};
          // The second backend takes the f32 gemvs for 4-bit decode rows
          // (the int8 gemv off), the streaming one (off by default) included.
          if (gpu != gpu_.get()) {
            setenv("PENSIEVE_CUDA_STREAM_GEMV", "1", 1);
            setenv("PENSIEVE_CUDA_GEMV_Q4", "0", 1);
          }
          gpu->matmul(parts, on_gpu(x, gpu), cols, tokens, y, ldy);
          unsetenv("PENSIEVE_CUDA_STREAM_GEMV");
          unsetenv("PENSIEVE_CUDA_GEMV_Q4");
          const std::vector<float> all = from_gpu(y, static_cast<size_t>(tokens * ldy), gpu);
          std::vector<float> got;
          for (int64_t t = 0; t < tokens; ++t)
            got.insert(got.end(), all.begin() + t * ldy, all.begin() + t * ldy + rows);
          // Decode is f32 throughout, but for 4-bit weights on the default
          // backend; prefill rounds both operands to f16. (f32 sums in
          // another order than the reference's: a single output row with
          // cancellation showed 1.2e-5.) The 4-bit decode gemv stages x as
          // two int8 levels per 32 columns (each value within half a step,
          // max|x| / (2·127·254), of itself): each output is held to that
          // rounding's bound, Σ|w|·step/2, plus f32 rounding. (An error
          // relative to ‖y‖ is no measure of it: a row whose sum cancels
          // showed 2.8e-4 on the H100, run 7.)
          const bool q4 = c.format == WeightFormat::affine4 && gpu == gpu_.get() && tokens <= 8;
          if (q4) {
            std::vector<float> wrow(static_cast<size_t>(cols));
            for (int64_t r = 0; r < rows; ++r) {
              dequantize_row_ref(hw.w, r, wrow.data());
              for (int64_t t = 0; t < tokens; ++t) {
                const float* xt = x.data() + t * cols;
                double bound = 0, magnitude = 0;
                for (int64_t k0 = 0; k0 < cols; k0 += 32) {
                  float amax = 0;
                  for (int64_t k = k0; k < k0 + 32; ++k) amax = std::max(amax, std::abs(xt[k]));
                  for (int64_t k = k0; k < k0 + 32; ++k) {
                    bound += std::abs(wrow[k]) * amax / (2.0 * 127 * 254);
                    magnitude += std::abs(wrow[k] * xt[k]);
                  }
                }
                ASSERT_LE(std::abs(got[t * rows + r] - ref[t * rows + r]), 1.01 * bound + 1e-5 * magnitude)
                    << weight_format_name(c.format) << " group " << c.group << " rows " << rows << " cols "
                    << cols << " tokens " << tokens << ": row " << r << " token " << t;
              }
            }
          } else {
            const double tol = tokens <= 8 ? 5e-5 : 2e-3;
            EXPECT_LT(relative_error(ref, got), tol)
                << weight_format_name(c.format) << " group " << c.group << " rows " << rows
                << " cols " << cols << " tokens " << tokens << " on " << gpu->description();
          }
          for (int64_t t = 0; t < tokens; ++t)  // the columns past the weight stay untouched
            for (int64_t r = rows; r < ldy; ++r) ASSERT_TRUE(std::isnan(all[t * ldy + r]));
        }
      }
    }
  }
}

// The 4-bit decode gemv with more rows than the card's resident warps (each
// warp walks several rows) and rows of several column chunks, and the MLP's
// fused silu(gate)·up gemv for both quantized formats, against the scalar
// reference. Each is also run with the int8 gemv off (the f32 gemvs).
TEST_F(CudaBackendTest, DecodeGemvsOnManyRowsAndTheFusedSiluMatchTheReference) {
  struct Case { WeightFormat format; ScaleType st; int group; int64_t rows, cols; bool silu; };
  const Case cases[] = {
      {WeightFormat::affine4, ScaleType::bf16, 64, 20000, 384, false},
      {WeightFormat::affine4, ScaleType::f16, 128, 700, 8320, false},
      {WeightFormat::affine4, ScaleType::bf16, 64, 301, 8192, true},
      {WeightFormat::affine4, ScaleType::f32, 32, 5000, 96, true},
      {WeightFormat::affine8, ScaleType::bf16, 64, 301, 3072, true},
  };
  for (const Case& c : cases) {
    for (const int64_t tokens : {1, 2, 5, 8, 13}) {
      for (const char* q4 : {"1", "0"}) {
        HostWeight hw = random_weight(rng_, c.format, c.st, c.group, c.rows, c.cols);
        const int64_t ldx = c.silu ? 2 * c.cols : c.cols;
        const std::vector<float> gu = random_floats(rng_, static_cast<size_t>(tokens * ldx));
        const std::vector<float> x = reference_input(gu, tokens, c.cols, c.silu);
        std::vector<float> ref(static_cast<size_t>(tokens * c.rows));
        kernels::matmul_ref(hw.w, x.data(), c.cols, tokens, ref.data(), c.rows);
        const WeightMatrix dw = gpu_->upload(hw.w);
        float* y = gpu_zeros(static_cast<size_t>(tokens * c.rows));
        setenv("PENSIEVE_CUDA_GEMV_Q4", q4, 1);
        setenv("PENSIEVE_CUDA_MMA", "0", 1);  // 13 rows: the gemv in groups of 8 (the mma's test is below)
        if (c.silu) {
          float* act = gpu_zeros(static_cast<size_t>(tokens * c.cols));
          gpu_->silu_mul_matmul(on_gpu(gu), c.cols, act, dw, y, c.rows, tokens);
        } else {
          const WeightMatrix* parts[] = {&dw};
          gpu_->matmul(parts, on_gpu(gu), ldx, tokens, y, c.rows);
        }
        unsetenv("PENSIEVE_CUDA_GEMV_Q4");
        unsetenv("PENSIEVE_CUDA_MMA");
        // The int8 gemv rounds x to two int8 levels: run 9 measured
        // 5.0-6.6e-5 on 96-wide rows; the f32 gemv (0) stays at 5e-5.
        const double tol = c.format == WeightFormat::affine4 && q4[0] != '0' ? 1e-4 : 5e-5;
        EXPECT_LT(relative_error(ref, from_gpu(y, ref.size())), tol)
            << weight_format_name(c.format) << " group " << c.group << " rows " << c.rows << " cols "
            << c.cols << " tokens " << tokens << " silu " << c.silu << " int8 gemv " << q4;
      }
    }
  }
}

// Many streams decoding (9-64 rows of a 4-bit weight) on tensor cores:
// every scale type and group size, row counts that are not multiples of a
// tile, columns split over blocks (few rows, wide rows: the last block adds
// the splits' sums) and not, token counts on both sides of each m-tile, and
// the fused silu(gate)·up input. Operands are rounded to f16 as for prompts
// (2e-3 of ‖y‖); a second run gives the same bits (the split sums are added
// in a fixed order), and columns past the weight in y stay untouched.
TEST_F(CudaBackendTest, ManyStreamsGemmOnTensorCoresMatchesTheReference) {
  struct Case { ScaleType st; int group; int64_t rows, cols; bool silu; };
  const Case cases[] = {
      {ScaleType::bf16, 64, 301, 8192, true},  {ScaleType::f16, 32, 1000, 384, false},
      {ScaleType::f32, 128, 64, 3072, false},  {ScaleType::bf16, 64, 9216, 3072, false},
      {ScaleType::bf16, 64, 37, 1024, true},
  };
  for (const Case& c : cases) {
    for (const int64_t tokens : {9, 16, 17, 32, 33, 48, 63, 64}) {
      HostWeight hw = random_weight(rng_, WeightFormat::affine4, c.st, c.group, c.rows, c.cols);
      const int64_t ldx = c.silu ? 2 * c.cols : c.cols;
      const std::vector<float> gu = random_floats(rng_, static_cast<size_t>(tokens * ldx));
      const std::vector<float> x = reference_input(gu, tokens, c.cols, c.silu);
      std::vector<float> ref(static_cast<size_t>(tokens * c.rows));
      kernels::matmul_ref(hw.w, x.data(), c.cols, tokens, ref.data(), c.rows);
      const WeightMatrix dw = gpu_->upload(hw.w);
      const int64_t ldy = c.rows + 3;
      const float* xg = on_gpu(gu);
      std::vector<float> first;
      for (int run = 0; run < 2; ++run) {
        float* y = gpu_zeros(static_cast<size_t>(tokens * ldy));
        if (c.silu) {
          float* act = gpu_zeros(static_cast<size_t>(tokens * c.cols));
          gpu_->silu_mul_matmul(xg, c.cols, act, dw, y, ldy, tokens);
        } else {
          const WeightMatrix* parts[] = {&dw};
          gpu_->matmul(parts, xg, ldx, tokens, y, ldy);
        }
        const std::vector<float> all = from_gpu(y, static_cast<size_t>(tokens * ldy));
        std::vector<float> got;
        for (int64_t t = 0; t < tokens; ++t) {
          got.insert(got.end(), all.begin() + t * ldy, all.begin() + t * ldy + c.rows);
          for (int64_t r = c.rows; r < ldy; ++r) ASSERT_TRUE(std::isnan(all[t * ldy + r])) << "token " << t;
        }
        const std::string what = std::string("scale ") + std::to_string(static_cast<int>(c.st)) + " group " +
                                 std::to_string(c.group) + " rows " + std::to_string(c.rows) + " cols " +
                                 std::to_string(c.cols) + " tokens " + std::to_string(tokens) +
                                 " silu " + std::to_string(c.silu);
        EXPECT_LT(relative_error(ref, got), 2e-3) << what;
        if (run == 0) first = got;
        else ASSERT_EQ(0, std::memcmp(first.data(), got.data(), got.size() * sizeof(float))) << what;
      }
    }
  }
}

// The residual stream fused into the projections (the decoder's path on
// the GPU): y = rms_norm(x)·w · partsᵀ over separate q/k/v parts, x += o·in
// + bias, x += down·silu(gate)·up, against the scalar reference (f64 norm,
// matmul_ref), for decode rows (the int8 gemv: its x rounding), many
// streams (the tensor-core gemm) and a prompt (cuBLAS or the built-in gemm;
// f16 operands). (The CPU backend is no reference here: its integer
// kernels round x to int8.)
TEST_F(CudaBackendTest, ResidualFusedIntoTheProjectionsMatchesTheReference) {
  constexpr int64_t kDim = 384, kQd = 256, kI = 512;
  constexpr float kEps = 1e-5f;
  for (const int64_t tokens : {1, 3, 8, 20, 70}) {
    HostWeight wq = random_weight(rng_, WeightFormat::affine4, ScaleType::bf16, 64, 200, kDim);
    HostWeight wk = random_weight(rng_, WeightFormat::affine4, ScaleType::bf16, 64, 64, kDim);
    HostWeight wv = random_weight(rng_, WeightFormat::affine4, ScaleType::bf16, 64, 64, kDim);
    HostWeight wo = random_weight(rng_, WeightFormat::affine4, ScaleType::f16, 64, kDim, kQd);
    HostWeight wd = random_weight(rng_, WeightFormat::affine4, ScaleType::bf16, 64, kDim, kI);
    const std::vector<float> x0 = random_floats(rng_, static_cast<size_t>(tokens * kDim));
    std::vector<float> norm = random_floats(rng_, kDim, 0.2f);
    for (auto& v : norm) v += 1.f;
    const std::vector<float> bias = random_floats(rng_, kDim, 0.1f);
    const std::vector<float> in = random_floats(rng_, static_cast<size_t>(tokens * kQd));
    const std::vector<float> gu = random_floats(rng_, static_cast<size_t>(tokens * 2 * kI));
    constexpr int64_t ldy = 200 + 64 + 64;
    // The reference: normed rows, then each product by matmul_ref.
    std::vector<float> normed(x0.size());
    const std::vector<float> act = reference_input(gu, tokens, kI, /*silu=*/true);
    for (int64_t t = 0; t < tokens; ++t) {
      double ss = 0;
      for (int64_t c = 0; c < kDim; ++c) ss += double(x0[t * kDim + c]) * x0[t * kDim + c];
      const double inv = 1.0 / std::sqrt(ss / kDim + kEps);
      for (int64_t c = 0; c < kDim; ++c) normed[t * kDim + c] = static_cast<float>(norm[c] * (x0[t * kDim + c] * inv));
    }
    std::vector<float> y_ref(static_cast<size_t>(tokens * ldy)), o_ref(x0.size()), d_ref(x0.size());
    kernels::matmul_ref(wq.w, normed.data(), kDim, tokens, y_ref.data(), ldy);
    kernels::matmul_ref(wk.w, normed.data(), kDim, tokens, y_ref.data() + 200, ldy);
    kernels::matmul_ref(wv.w, normed.data(), kDim, tokens, y_ref.data() + 264, ldy);
    kernels::matmul_ref(wo.w, in.data(), kQd, tokens, o_ref.data(), kDim);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t c = 0; c < kDim; ++c) o_ref[t * kDim + c] += bias[c];
    kernels::matmul_ref(wd.w, act.data(), kI, tokens, d_ref.data(), kDim);

    StepPlan plan;
    plan.tokens.assign(static_cast<size_t>(tokens), 0);
    plan.slots.assign(static_cast<size_t>(tokens), 0);
    gpu_->begin_step(plan);  // no logits wanted: nothing is captured as a graph
    const WeightMatrix q = gpu_->upload(wq.w), kk = gpu_->upload(wk.w), v = gpu_->upload(wv.w);
    const WeightMatrix o = gpu_->upload(wo.w), down = gpu_->upload(wd.w);
    const WeightMatrix* parts[] = {&q, &kk, &v};
    float* x = on_gpu(x0);
    float* y = gpu_zeros(static_cast<size_t>(tokens * ldy));
    float* h = gpu_zeros(x0.size());
    float* tmp = gpu_zeros(x0.size());
    float* act_scratch = gpu_zeros(act.size());
    gpu_->norm_matmul(parts, x, gpu_->upload(norm), kEps, tokens, kDim, h, y, ldy);
    const std::vector<float> y_got = from_gpu(y, y_ref.size());
    gpu_->matmul_add(o, on_gpu(in), kQd, tokens, gpu_->upload(bias), x, kDim, tmp);
    const std::vector<float> after_o = from_gpu(x, x0.size());
    gpu_->silu_mul_matmul_add(on_gpu(gu), kI, act_scratch, down, x, kDim, tokens, tmp);
    const std::vector<float> after_down = from_gpu(x, x0.size());
    // What each add added (x itself is much larger than its increments).
    std::vector<float> o_got(x0.size()), d_got(x0.size());
    for (size_t i = 0; i < x0.size(); ++i) {
      o_got[i] = after_o[i] - x0[i];
      d_got[i] = after_down[i] - after_o[i];
    }
    const double tol = tokens <= 8 ? 2e-4 : 3e-3;
    EXPECT_LT(relative_error(y_ref, y_got), tol) << "norm + q/k/v, tokens " << tokens;
    EXPECT_LT(relative_error(o_ref, o_got), tol) << "x += o + bias, tokens " << tokens;
    EXPECT_LT(relative_error(d_ref, d_got), tol) << "x += down, tokens " << tokens;
  }
}

// A step with several sequences (block tables out of order, prompts in
// chunks after cached positions, single decode rows over long contexts),
// through qkv_post and attention on both backends.
struct AttnCase {
  int64_t n_heads, n_kv_heads, head_dim, window;
  bool bias, qk_norm;
};

TEST_F(CudaBackendTest, QkvPostAndAttentionMatchTheCpu) {
  const AttnCase cases[] = {
      {4, 4, 16, 0, false, false},  {8, 2, 64, 0, true, false},  {6, 3, 96, 0, false, true},
      {4, 1, 128, 0, false, false}, {8, 8, 96, 40, false, false}, {2, 2, 256, 0, true, true},
      {4, 2, 20, 7, false, false},
  };
  // (n_past, n_new) per sequence: a fresh prompt, a chunk after a cached
  // prefix, decode rows at short and long depth.
  const std::vector<std::pair<int64_t, int64_t>> seq_shapes = {
      {0, 37}, {50, 21}, {100, 150}, {17, 1}, {3000, 1}, {1234, 2}};
  // Pass 2 decodes one more position of the last three: a step of 3 rows
  // (the decode path: one row per warp, keys split over warps).
  for (KvType type : {KvType::f16, KvType::q8}) {
  for (const AttnCase& c : cases) {
    const int64_t hd = c.head_dim, qd = c.n_heads * hd, kvd = c.n_kv_heads * hd;
    const int64_t ld = qd + 2 * kvd, rot = hd;  // full rotary
    if (type == KvType::q8 && kv_q8_group(hd) == 0) continue;
    KvGeometry g{.n_layers = 2, .n_kv_heads = c.n_kv_heads, .head_dim = hd, .type = type};
    int64_t n_blocks = 0;
    for (auto [past, n] : seq_shapes) n_blocks += kv_blocks_for(past + n + 1);
    cpu_->allocate_kv(g, n_blocks + 3);
    gpu_->allocate_kv(g, n_blocks + 3);
    // Block ids shuffled over the pool.
    std::vector<int32_t> ids(static_cast<size_t>(n_blocks + 3));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng_);
    std::vector<std::vector<int32_t>> tables;
    size_t next = 0;
    for (auto [past, n] : seq_shapes) {
      tables.emplace_back(ids.begin() + next, ids.begin() + next + kv_blocks_for(past + n + 1));
      next += tables.back().size();
    }
    // Three steps: first every position before n_past (as one prompt each),
    // then the new rows, then one decode row for the last three sequences;
    // attention is compared on the last two.
    std::vector<float> ref_out, got_out, ref_q;
    for (int pass = 0; pass < 3; ++pass) {
      StepPlan plan;
      plan.rot_dim = rot;
      int64_t r = 0;
      for (size_t si = 0; si < seq_shapes.size(); ++si) {
        const auto [past, n] = seq_shapes[si];
        int64_t from = pass == 0 ? 0 : past, to = pass == 0 ? past : past + n;
        if (pass == 2) {
          from = past + n;
          to = si >= 3 ? from + 1 : from;
        }
        if (to == from) continue;
        plan.seqs.push_back({tables[si], to, r, to - from});
        for (int64_t pos = from; pos < to; ++pos, ++r) {
          plan.tokens.push_back(0);
          plan.slots.push_back(tables[si][pos / kKvBlockTokens] * kKvBlockTokens + pos % kKvBlockTokens);
          for (int64_t i = 0; i < rot / 2; ++i) {
            const double a = pos * std::pow(10000.0, -2.0 * i / rot);
            plan.cos.push_back(static_cast<float>(std::cos(a)));
            plan.sin.push_back(static_cast<float>(std::sin(a)));
          }
        }
      }
      const int64_t T = plan.n_rows();
      // Prompt steps of head dims 32/64/96/128 run the tensor-core kernel:
      // f16 queries and probabilities.
      const bool flash = T > 8 && (hd == 32 || hd == 64 || hd == 96 || hd == 128);
      const std::vector<float> qkv = random_floats(rng_, static_cast<size_t>(T * ld));
      const std::vector<float> bias = random_floats(rng_, static_cast<size_t>(ld), 0.1f);
      std::vector<float> qn = random_floats(rng_, static_cast<size_t>(hd), 0.2f);
      std::vector<float> kn = random_floats(rng_, static_cast<size_t>(hd), 0.2f);
      for (auto& v : qn) v += 1.f;
      for (auto& v : kn) v += 1.f;
      const float scale = 1.f / std::sqrt(static_cast<float>(hd));
      for (Backend* be : {cpu_.get(), gpu_.get()}) {
        const bool on_cpu = be == cpu_.get();
        auto buf = [&](const std::vector<float>& v) {
          return on_cpu ? const_cast<float*>(v.data()) : on_gpu(v);
        };
        std::vector<float> qkv_copy = qkv, q_host(static_cast<size_t>(T * qd)),
                           out_host(static_cast<size_t>(T * qd));
        float* qkv_p = buf(qkv_copy);
        float* q_p = on_cpu ? q_host.data() : gpu_zeros(q_host.size());
        float* out_p = on_cpu ? out_host.data() : gpu_zeros(out_host.size());
        be->begin_step(plan);
        QkvPost p{.layer = 1, .n_heads = c.n_heads, .n_kv_heads = c.n_kv_heads, .head_dim = hd,
                  .bias = c.bias ? be->upload(bias) : nullptr,
                  .q_norm = c.qk_norm ? be->upload(qn) : nullptr,
                  .k_norm = c.qk_norm ? be->upload(kn) : nullptr, .eps = 1e-6f};
        be->qkv_post(p, qkv_p, q_p);
        be->attention(1, q_p, c.n_heads, scale, c.window, out_p);
        if (pass >= 1) {
          if (on_cpu) {
            ref_out = out_host;
            ref_q = q_host;
          } else {
            got_out = from_gpu(out_p, out_host.size());
            // q after bias, norm and rope.
            EXPECT_LT(relative_error(ref_q, from_gpu(q_p, q_host.size())), 1e-5);
            // q8: both quantize the same K and V, but a value that rounds
            // the other way on one of them moves by a whole int8 step.
            const double tol = type == KvType::q8 ? 5e-3 : flash ? 2e-3 : 1e-4;
            EXPECT_LT(relative_error(ref_out, got_out), tol)
                << kv_type_name(type) << " pass " << pass << " heads " << c.n_heads << "/" << c.n_kv_heads
                << " dim " << c.head_dim << " window " << c.window;
          }
        }
      }
    }
    // The cache itself: every block the steps wrote, copied out of each
    // backend (the disk tier's path), holds the same values up to an int8
    // step (q8) or a half-float rounding (f16).
    std::vector<std::byte> cpu_block(static_cast<size_t>(g.bytes_per_block())), gpu_block(cpu_block.size());
    std::vector<float> cpu_vals, gpu_vals, widened(static_cast<size_t>(hd * kKvBlockTokens));
    auto widen_all = [&](std::vector<std::byte>& block, std::vector<float>* out) {
      for (int64_t i = 0; i < g.n_layers; ++i) {
        kernels::KvLayerView view;
        view.n_kv_heads = g.n_kv_heads;
        view.head_dim = hd;
        view.type = type;
        view.k = reinterpret_cast<uint8_t*>(block.data()) + 2 * i * g.block_bytes();
        view.v = view.k + g.block_bytes();
        for (int64_t h = 0; h < g.n_kv_heads; ++h) {
          kernels::widen_k(view, 0, h, widened.data());
          out->insert(out->end(), widened.begin(), widened.end());
          kernels::widen_v(view, 0, h, widened.data());
          out->insert(out->end(), widened.begin(), widened.end());
        }
      }
    };
    for (int32_t b : ids) {
      ASSERT_TRUE(cpu_->read_kv_block(b, cpu_block.data()));
      ASSERT_TRUE(gpu_->read_kv_block(b, gpu_block.data()));
      widen_all(cpu_block, &cpu_vals);
      widen_all(gpu_block, &gpu_vals);
    }
    EXPECT_LT(relative_error(cpu_vals, gpu_vals), type == KvType::q8 ? 1e-2 : 1e-3)
        << kv_type_name(type) << " dim " << hd;
    // Written back into another block of the GPU pool, a block reads out the same.
    ASSERT_TRUE(gpu_->read_kv_block(ids[0], gpu_block.data()));
    ASSERT_TRUE(gpu_->write_kv_block(ids[1], gpu_block.data()));
    ASSERT_TRUE(gpu_->read_kv_block(ids[1], cpu_block.data()));
    EXPECT_EQ(cpu_block, gpu_block);
  }
  }
}

// Decode steps replay captured CUDA graphs: the logits of a greedy run are
// bit for bit those of the same run with graphs off, across context lengths
// that change attention's split count (buffers regrown, graphs recaptured).
TEST_F(CudaBackendTest, DecodeGraphsGiveTheSameLogitsAsPlainLaunches) {
  const std::string dir = test::data_path("models/qwen3-tiny-mlx-4bit");
  auto run = [&](const char* graphs) {
    setenv("PENSIEVE_CUDA_GRAPHS", graphs, 1);
    auto model = load_model(dir, {.device = "cuda"});
    unsetenv("PENSIEVE_CUDA_GRAPHS");
    Session session(*model, 700);
    std::vector<float> all = session.append(std::vector<int32_t>{1, 2, 3, 4, 5}, false);
    int32_t next = 7;
    for (int i = 0; i < 600; ++i) {
      const std::vector<float> l = session.append(std::vector<int32_t>{next}, false);
      all.insert(all.end(), l.begin(), l.end());
      next = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    }
    return all;
  };
  const std::vector<float> plain = run("0"), graphed = run("1");
  ASSERT_EQ(plain.size(), graphed.size());
  EXPECT_EQ(std::memcmp(plain.data(), graphed.data(), plain.size() * sizeof(float)), 0);
}

// Twenty sequences decoding together (one token each: the tensor-core gemm,
// captured as graphs) give the same bits with graphs on and off, and each
// one's logits match the same sequence decoded alone (one row: the int8
// gemv) to the GPU's path tolerance.
TEST_F(CudaBackendTest, ManyStreamsDecodeAsGraphsMatchEachAlone) {
  const std::string dir = test::data_path("models/llama3-tiny-mlx-4bit");
  constexpr int kSeqs = 20, kSteps = 24;
  auto token = [](int s, int i) { return static_cast<int32_t>((s * 131 + i * 17 + 5) % 200); };
  // Decode logits [step][seq][vocab]; together: all sequences in each step.
  auto run = [&](const char* graphs, bool together) {
    setenv("PENSIEVE_CUDA_GRAPHS", graphs, 1);
    auto model = load_model(dir, {.device = "cuda"});
    unsetenv("PENSIEVE_CUDA_GRAPHS");
    const int64_t vocab = model->config().vocab_size;
    const int64_t blocks_per_seq = (3 + kSeqs + kSteps + kKvBlockTokens - 1) / kKvBlockTokens;
    model->allocate_kv(kSeqs * blocks_per_seq);
    std::vector<std::vector<int32_t>> tables(kSeqs), prompts(kSeqs);
    for (int s = 0; s < kSeqs; ++s) {
      for (int64_t b = 0; b < blocks_per_seq; ++b) tables[s].push_back(static_cast<int32_t>(s * blocks_per_seq + b));
      for (int i = 0; i < 3 + s; ++i) prompts[s].push_back(token(s, i));
      ForwardSeq fs{prompts[s], tables[s].data(), 0, false};
      std::vector<float> out;
      model->forward(std::span<const ForwardSeq>(&fs, 1), &out);
    }
    std::vector<float> all;
    for (int step = 0; step < kSteps; ++step) {
      std::vector<std::vector<int32_t>> tok(kSeqs);
      std::vector<ForwardSeq> batch;
      for (int s = 0; s < kSeqs; ++s) {
        tok[s] = {token(s, 100 + step)};
        batch.push_back({tok[s], tables[s].data(), static_cast<int64_t>(prompts[s].size()) + step, false});
      }
      if (together) {
        model->forward(batch, &all);
      } else {
        for (const ForwardSeq& fs : batch) model->forward(std::span<const ForwardSeq>(&fs, 1), &all);
      }
    }
    EXPECT_EQ(all.size(), static_cast<size_t>(kSteps * kSeqs * vocab));
    return std::make_pair(all, vocab);
  };
  const auto [graphed, vocab] = run("1", true);
  const auto plain = run("0", true).first;
  const auto alone = run("1", false).first;
  ASSERT_EQ(graphed.size(), plain.size());
  EXPECT_EQ(0, std::memcmp(graphed.data(), plain.data(), graphed.size() * sizeof(float)));
  ASSERT_EQ(graphed.size(), alone.size());
  for (size_t row = 0; row < graphed.size() / vocab; ++row) {
    const float* a = alone.data() + row * vocab;
    const float* b = graphed.data() + row * vocab;
    const auto [lo, hi] = std::minmax_element(a, a + vocab);
    double diff = 0;
    for (int64_t v = 0; v < vocab; ++v) diff = std::max(diff, std::abs(double(a[v]) - b[v]));
    ASSERT_LT(diff / (*hi - *lo), 2e-3) << "step " << row / kSeqs << " sequence " << row % kSeqs;
  }
}

}  // namespace
}  // namespace pensieve
