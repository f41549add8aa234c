// Every fast kernel against its scalar reference on random inputs of awkward
// sizes (rows and token counts that are not multiples of any tile, every
// weight format and group size).
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "core/half.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/ops.h"

namespace pensieve::kernels {
namespace {

// Owns the bytes behind a random WeightMatrix.
struct RandomWeight {
  std::vector<uint8_t> data;
  std::vector<uint16_t> scales, biases;
  std::vector<float> scales32, biases32;
  std::vector<uint8_t> records;  // k4/k6
  WeightMatrix w;

  // f32_scales: scales and biases stored as f32 (a GGUF K-quant's), else bf16.
  // implied_bias: no biases stored, each is -8 times its scale (a GGUF Q4_0's).
  RandomWeight(WeightFormat format, int64_t rows, int64_t cols, int group, std::mt19937& rng,
               bool f32_scales = false, bool implied_bias = false, int k_record = 0) {
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::uniform_int_distribution<int> byte(0, 255);
    w.format = format;
    w.rows = rows;
    w.cols = cols;
    w.group_size = group;
    data.resize(static_cast<size_t>(w.row_bytes() * rows));
    if (format == WeightFormat::f32) {
      for (size_t i = 0; i < data.size(); i += 4) {
        const float v = u(rng);
        std::memcpy(&data[i], &v, 4);
      }
    } else if (format == WeightFormat::f16 || format == WeightFormat::bf16) {
      for (size_t i = 0; i < data.size(); i += 2) {
        const uint16_t h = format == WeightFormat::f16 ? f32_to_f16(u(rng)) : f32_to_bf16(u(rng));
        std::memcpy(&data[i], &h, 2);
      }
    } else {
      for (auto& b : data) b = static_cast<uint8_t>(byte(rng));
      const int64_t n = rows * (cols / group);
      for (int64_t i = 0; i < n; ++i) {
        scales.push_back(f32_to_bf16(0.01f + 0.05f * std::abs(u(rng))));
        biases.push_back(f32_to_bf16(0.3f * u(rng)));
      }
      w.scales = scales.data();
      w.biases = biases.data();
      w.scale_type = ScaleType::bf16;
      if (f32_scales) {
        for (int64_t i = 0; i < n; ++i) {
          scales32.push_back(bf16_to_f32(scales[i]) * (1.f + 1.f / 1024));  // not a bf16 value
          biases32.push_back(bf16_to_f32(biases[i]));
        }
        w.scales = scales32.data();
        w.biases = biases32.data();
        w.scale_type = ScaleType::f32;
      }
      if (implied_bias) {
        w.biases = nullptr;
        w.bias_factor = -8.f;
      }
      if (k_record != 0) {  // a GGUF K-quant's super-block scales (k4: Q4_K/Q5_K, k6: Q6_K)
        w.scale_type = k_record == 4 ? ScaleType::k4 : ScaleType::k6;
        w.biases = nullptr;
        records.resize(static_cast<size_t>(rows * w.scale_row_bytes()));
        std::uniform_real_distribution<float> d(0.0005f, 0.004f);
        for (size_t i = 0; i < records.size(); ++i) records[i] = static_cast<uint8_t>(byte(rng));
        const size_t rec = k_record == 4 ? kK4RecordBytes : kK6RecordBytes;
        for (size_t at = 0; at < records.size(); at += rec) {
          const uint16_t dh = f32_to_f16(d(rng)), mh = f32_to_f16(d(rng));
          std::memcpy(&records[at], &dh, 2);
          if (k_record == 4) {
            std::memcpy(&records[at + 2], &mh, 2);
            for (size_t j = 4; j < 20; ++j) records[at + j] &= 63;  // 6-bit scales and mins
          }
        }
        w.scales = records.data();
      }
    }
    w.data = data.data();
  }
};

// n_blocks blocks of one layer's K (or V) as the cache holds them: N(0, 1)
// halves, or for q8 random int8 values with each group's scale in
// [0.002, 0.02] (values up to about ±2.5).
std::vector<uint8_t> random_kv(const KvLayerView& kv, int64_t n_blocks, std::mt19937& rng) {
  std::vector<uint8_t> buf(static_cast<size_t>(n_blocks * kv.block_bytes()));
  const int64_t hb = kv.head_bytes(), vals = kv.head_dim * kKvBlockTokens;
  std::uniform_int_distribution<int> q(-127, 127);
  std::uniform_real_distribution<float> sc(0.002f, 0.02f);
  std::normal_distribution<float> d(0.f, 1.f);
  for (int64_t h = 0; h < n_blocks * kv.n_kv_heads; ++h) {
    uint8_t* p = buf.data() + h * hb;
    if (kv.type == KvType::f16) {
      for (int64_t i = 0; i < vals; ++i) reinterpret_cast<KvElem*>(p)[i] = f32_to_f16(d(rng));
      continue;
    }
    for (int64_t i = 0; i < vals; ++i) p[i] = static_cast<uint8_t>(static_cast<int8_t>(q(rng)));
    float* scales = reinterpret_cast<float*>(p + vals);
    for (int64_t i = 0; i < (hb - vals) / 4; ++i) scales[i] = sc(rng);
  }
  return buf;
}

std::vector<float> random_vector(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// max |a-b| / max |b|
double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, static_cast<double>(std::abs(a[i] - b[i])));
    den = std::max(den, static_cast<double>(std::abs(b[i])));
  }
  return num / den;
}

// x (n_tokens rows of cols) quantized for the integer kernels, in the gemv
// layout and as the gemm's 16-token tiles.
std::pair<QuantizedActivations, QuantizedActivationTiles> quantized_input(
    const std::vector<float>& x, int64_t cols, int64_t n_tokens, int group, int levels) {
  std::pair<QuantizedActivations, QuantizedActivationTiles> q;
  quantize_activations(x.data(), cols, n_tokens, cols, group, levels, &q.first);
  tile_activations(q.first, &q.second);
  return q;
}

// What one int8 level may move y[t][r] by: each activation is rounded to
// the nearest step of its group's max|x| / 127, so by at most max|x| / 254,
// and the kernels compute exactly Σ_c w[r][c]·(rounded x) (the bias term
// takes the sum of the rounded activations, see matmul_impl.h), so y moves
// by at most Σ_c |w[r][c]| times that. [t][r], rows apart by ldy.
std::vector<double> one_level_bound(const WeightMatrix& w, const float* x, int64_t ldx,
                                    int64_t n_tokens, int64_t ldy) {
  std::vector<double> bound(static_cast<size_t>(n_tokens * ldy), 0.0);
  std::vector<float> row(w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row_ref(w, r, row.data());
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t c0 = 0; c0 < w.cols; c0 += w.group_size) {
        double amax = 0, wsum = 0;
        for (int64_t c = c0; c < c0 + w.group_size; ++c) {
          amax = std::max(amax, static_cast<double>(std::abs(x[t * ldx + c])));
          wsum += std::abs(row[c]);
        }
        bound[t * ldy + r] += wsum * amax / 254;
      }
    }
  }
  return bound;
}

struct MatmulCase {
  WeightFormat format;
  int group;
  bool f32_scales = false;
  bool implied_bias = false;
  int k_record = 0;  // 4 or 6: the k4 / k6 scale records
};

class MatmulVsReference : public ::testing::TestWithParam<MatmulCase> {
 protected:
  void TearDown() override {
    set_matmul_path_for_tests(MatmulPath::automatic);
    set_integer_kernels(true);
    set_amx_kernels(true);
    set_int8_activation_levels(1);
    set_active_isa(best_isa());
  }
};

TEST_P(MatmulVsReference, AllPathsAgreeOnAwkwardSizes) {
  const auto [format, group, f32_scales, implied_bias, k_record] = GetParam();
  const bool quant = format == WeightFormat::affine4 || format == WeightFormat::affine8;
  std::mt19937 rng(1234 + static_cast<int>(format) * 7 + group);
  ThreadPool pool(2);
  const int64_t unit = k_record != 0 ? 256 : group;  // K records cover 256 columns
  const int64_t col_options_q[] = {unit, 4L * unit, 5L * unit};
  const int64_t col_options_f[] = {17, 64, 173};
  for (int64_t rows : {1, 7, 25, 50}) {
    for (int ci = 0; ci < 3; ++ci) {
      const int64_t cols = quant ? col_options_q[ci] : col_options_f[ci];
      RandomWeight rw(format, rows, cols, group, rng, f32_scales, implied_bias, k_record);
      for (int64_t n_tokens : {1, 3, 5, 8, 9, 17, 38}) {
        const int64_t ldx = cols + 3, ldy = rows + 2;
        const auto x = random_vector(static_cast<size_t>(n_tokens * ldx), rng);
        std::vector<float> ref(n_tokens * ldy, 0.f);
        matmul_ref(rw.w, x.data(), ldx, n_tokens, ref.data(), ldy);
        // Errors are measured against the size of the terms (Σ|w·x|), not of
        // the result, which can cancel to near zero.
        double magnitude = 1e-30;
        {
          std::vector<float> row(cols);
          for (int64_t r = 0; r < rows; ++r) {
            dequantize_row_ref(rw.w, r, row.data());
            for (int64_t t = 0; t < n_tokens; ++t) {
              double m = 0;
              for (int64_t c = 0; c < cols; ++c) m += std::abs(row[c] * x[t * ldx + c]);
              magnitude = std::max(magnitude, m);
            }
          }
        }
        // One int8 level is held to what its rounding can move each output
        // by (one_level_bound) plus f32 rounding; the other paths to a
        // fraction of the magnitude.
        const std::vector<double> bound =
            quant ? one_level_bound(rw.w, x.data(), ldx, n_tokens, ldy) : std::vector<double>();
        struct Variant { Isa isa; MatmulPath path; bool integer; bool amx; int levels; double tol; };
        const Variant variants[] = {
            {Isa::scalar, MatmulPath::automatic, false, false, 1, 1e-6},
            {Isa::avx2, MatmulPath::gemv, false, false, 1, 1e-6},
            {Isa::avx2, MatmulPath::gemm, false, false, 1, 1e-6},
            {Isa::avx512, MatmulPath::gemv, false, false, 1, 1e-6},
            {Isa::avx512, MatmulPath::gemm, false, false, 1, 1e-6},
            {Isa::avx512, MatmulPath::gemm, true, false, 2, 1e-4},  // int16 activations, VNNI
            {Isa::avx512, MatmulPath::gemm, true, true, 2, 1e-4},   // the same on AMX tiles
            {Isa::avx512, MatmulPath::gemv, true, false, 2, 1e-4},
            {Isa::avx512, MatmulPath::gemm, true, false, 1, 1e-5},  // int8 activations (the default)
            {Isa::avx512, MatmulPath::gemm, true, true, 1, 1e-5},
            {Isa::avx512, MatmulPath::gemv, true, false, 1, 1e-5},
        };
        for (const Variant& v : variants) {
          if (set_active_isa(v.isa) != v.isa) continue;
          set_matmul_path_for_tests(v.path);
          set_integer_kernels(v.integer);
          set_amx_kernels(v.amx);
          set_int8_activation_levels(v.levels);
          if (v.amx && !amx_kernels_enabled()) continue;  // no AMX here
          const bool one_level = v.integer && v.levels == 1 && quant;
          std::vector<float> got(n_tokens * ldy, 0.f);
          matmul(rw.w, x.data(), ldx, n_tokens, got.data(), ldy, pool);
          double err = 0, over_bound = 0;
          for (int64_t t = 0; t < n_tokens; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
              double e = std::abs(got[t * ldy + r] - ref[t * ldy + r]);
              if (one_level) {
                over_bound = std::max(over_bound, e - bound[t * ldy + r]);
                e = std::max(0.0, e - bound[t * ldy + r]);
              }
              err = std::max(err, e);
            }
          }
          EXPECT_LT(err / magnitude, v.tol)
              << weight_format_name(format) << " group " << group << " rows " << rows << " cols "
              << cols << " tokens " << n_tokens << " isa " << isa_name(v.isa) << " path "
              << static_cast<int>(v.path) << " integer " << v.integer << " amx " << v.amx
              << " levels " << v.levels << (one_level ? " (error past the rounding bound)" : "");
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Formats, MatmulVsReference,
    ::testing::Values(MatmulCase{WeightFormat::f32, 0}, MatmulCase{WeightFormat::f16, 0},
                      MatmulCase{WeightFormat::bf16, 0}, MatmulCase{WeightFormat::affine4, 32},
                      MatmulCase{WeightFormat::affine4, 64}, MatmulCase{WeightFormat::affine4, 128},
                      MatmulCase{WeightFormat::affine8, 32}, MatmulCase{WeightFormat::affine8, 64},
                      MatmulCase{WeightFormat::affine8, 128},
                      // GGUF's forms: K-quants with f32 scales, Q6_K's 8-bit groups of 16.
                      MatmulCase{WeightFormat::affine4, 32, true}, MatmulCase{WeightFormat::affine8, 32, true},
                      MatmulCase{WeightFormat::affine8, 16, true},
                      // GGUF Q4_0 / Q8_0: biases implied by the scales (bias_factor).
                      MatmulCase{WeightFormat::affine4, 32, false, true}, MatmulCase{WeightFormat::affine8, 32, true, true},
                      // GGUF K-quants' own scales: k4 (Q4_K 4-bit, Q5_K 8-bit), k6 (Q6_K).
                      MatmulCase{WeightFormat::affine4, 32, false, false, 4},
                      MatmulCase{WeightFormat::affine8, 32, false, false, 4},
                      MatmulCase{WeightFormat::affine8, 16, false, false, 6}));

// Several weights behind one input (the fused q|k|v and gate|up calls) with
// different formats and group sizes: each part lands at its offset in y, and
// the activation buffers that matmul keeps from call to call never leak one
// call's numbers into the next (sizes go down as well as up).
// The kernels' vector decoding of K-quant scale records gives the scalar
// decoding's floats, bit for bit.
TEST(KScales, VectorDecodingEqualsScalar) {
  if (!cpu_features().avx512f) GTEST_SKIP() << "no AVX-512";
  std::mt19937 rng(21);
  for (int k : {4, 6}) {
    RandomWeight rw(k == 4 ? WeightFormat::affine4 : WeightFormat::affine8, 3, 5 * 256, k == 4 ? 32 : 16, rng,
                    false, false, k);
    const int64_t n = rw.w.n_groups();
    for (int64_t r = 0; r < 3; ++r) {
      std::vector<float> a(n), b(n), va(n), vb(n);
      decode_k_scales(rw.w, r, a.data(), b.data());
      avx512::decode_k_scales(rw.w, r, va.data(), vb.data());
      for (int64_t g = 0; g < n; ++g) {
        ASSERT_EQ(std::memcmp(&a[g], &va[g], 4), 0) << "k" << k << " row " << r << " group " << g;
        ASSERT_EQ(std::memcmp(&b[g], &vb[g], 4), 0) << "k" << k << " row " << r << " group " << g;
      }
    }
  }
}

TEST(MatmulParts, MixedFormatsLandAtTheirOffsets) {
  std::mt19937 rng(4242);
  ThreadPool pool(2);
  const int64_t cols = 256;
  RandomWeight a(WeightFormat::affine4, 37, cols, 64, rng), b(WeightFormat::affine8, 19, cols, 32, rng),
      c(WeightFormat::bf16, 11, cols, 0, rng), d(WeightFormat::affine4, 26, cols, 128, rng);
  const WeightMatrix* parts[] = {&a.w, &b.w, &c.w, &d.w};
  const int64_t total = 37 + 19 + 11 + 26, ldy = total + 5;
  for (int64_t n_tokens : {45, 3, 70, 17, 8, 33}) {
    const int64_t ldx = cols + 1;
    const auto x = random_vector(static_cast<size_t>(n_tokens * ldx), rng);
    std::vector<float> want(n_tokens * ldy, 0.f), got(n_tokens * ldy, 7.f);
    std::vector<float> size(n_tokens * ldy, 0.f);  // Σ|w·x|, what the error is measured against
    int64_t offset = 0;
    std::vector<float> row(cols);
    for (const WeightMatrix* w : parts) {
      matmul_ref(*w, x.data(), ldx, n_tokens, want.data() + offset, ldy);
      for (int64_t r = 0; r < w->rows; ++r) {
        dequantize_row_ref(*w, r, row.data());
        for (int64_t t = 0; t < n_tokens; ++t)
          for (int64_t k = 0; k < cols; ++k) size[t * ldy + offset + r] += std::abs(row[k] * x[t * ldx + k]);
      }
      offset += w->rows;
    }
    // The rounding bound of one int8 level where a part's weights take it
    // (zero for the bf16 part and under two levels).
    std::vector<double> bound(n_tokens * ldy, 0.0);
    offset = 0;
    for (const WeightMatrix* w : parts) {
      if (w->quantized()) {
        const auto b = one_level_bound(*w, x.data(), ldx, n_tokens, ldy);
        for (int64_t t = 0; t < n_tokens; ++t)
          for (int64_t r = 0; r < w->rows; ++r) bound[t * ldy + offset + r] = b[t * ldy + r];
      }
      offset += w->rows;
    }
    for (int levels : {1, 2}) {
      set_int8_activation_levels(levels);
      const bool one = levels == 1 && integer_kernels_enabled();
      std::fill(got.begin(), got.end(), 7.f);
      matmul(parts, x.data(), ldx, n_tokens, got.data(), ldy, pool);
      for (int64_t t = 0; t < n_tokens; ++t) {
        for (int64_t r = 0; r < total; ++r) {
          ASSERT_NEAR(got[t * ldy + r], want[t * ldy + r],
                      1e-4f * size[t * ldy + r] + (one ? bound[t * ldy + r] : 0.0))
              << "tokens " << n_tokens << " token " << t << " row " << r << " levels " << levels;
        }
        for (int64_t r = total; r < ldy; ++r) ASSERT_EQ(got[t * ldy + r], 7.f) << "past the parts";
      }
    }
  }
  set_int8_activation_levels(1);
}

// The integer kernel reproduces the scalar model of its own arithmetic
// (same quantized activations, exact integer dots) to f32 rounding.
// Both level counts: the same integers, so the same floats up to the order
// of the f32 additions.
TEST(IntegerKernel, MatchesItsScalarModel) {
  if (!cpu_features().avx512vnni) GTEST_SKIP() << "no AVX-512 VNNI";
  std::mt19937 rng(99);
  for (int levels : {1, 2})
  for (auto format : {WeightFormat::affine4, WeightFormat::affine8}) {
    for (int group : {32, 64, 128}) {
      const int64_t rows = 13, cols = 11 * group, n_tokens = 37;  // several K blocks, 3 token tiles
      RandomWeight rw(format, rows, cols, group, rng);
      const auto [qa, tiles] = quantized_input(random_vector(static_cast<size_t>(n_tokens * cols), rng),
                                               cols, n_tokens, group, levels);
      std::vector<float> want(n_tokens * rows), got(n_tokens * rows, -1.f);
      vnni_reference_rows(rw.w, 0, rows, qa, want.data(), rows);
      const int64_t ldt = 48 + 5;  // 3 tiles of tokens, rows spaced wider than needed
      std::vector<float> yt(rows * ldt);
      avx512::vnni_gemm(rw.w, 0, rows, tiles, yt.data(), ldt);
      // Transposed to token order in two token ranges, one past a tile edge.
      avx512::transpose_rows_to_tokens(yt.data(), ldt, rows, 0, 19, got.data(), rows);
      avx512::transpose_rows_to_tokens(yt.data(), ldt, rows, 19, n_tokens, got.data(), rows);
      EXPECT_LT(rel_error(got, want), 1e-5)
          << weight_format_name(format) << " group " << group << " levels " << levels;
    }
  }
}

// The AMX kernel does the VNNI kernel's arithmetic on the tile unit: the
// same floats, bit for bit, on row counts that are not multiples of its 16-
// and 32-row tiles and token counts that are not multiples of 16. Runs only
// where the CPU has AMX-INT8 (the CI machine has not; see docs/benchmarks.md
// for where it ran).
TEST(IntegerKernel, AmxEqualsVnniBitForBit) {
  if (!amx_kernels_enabled()) GTEST_SKIP() << "no AMX-INT8 here";
  std::mt19937 rng(314);
  for (int levels : {1, 2})
  for (auto format : {WeightFormat::affine4, WeightFormat::affine8}) {
    for (int group : {32, 64, 128}) {
      for (int64_t rows : {13, 37, 64}) {
        for (int64_t n_tokens : {5, 16, 37}) {
          const int64_t cols = 7 * group;
          RandomWeight rw(format, rows, cols, group, rng);
          const auto [qa, tiles] = quantized_input(
              random_vector(static_cast<size_t>(n_tokens * cols), rng), cols, n_tokens, group, levels);
          const int64_t ldt = (n_tokens + 15) / 16 * 16;
          std::vector<float> vnni(rows * ldt, 0.f), tile(rows * ldt, 0.f);
          avx512::vnni_gemm(rw.w, 0, rows, tiles, vnni.data(), ldt);
          // Two calls over row ranges that split a 32-row pair of tiles.
          amx::gemm_i8(rw.w, 0, 5, tiles, tile.data(), ldt);
          amx::gemm_i8(rw.w, 5, rows, tiles, tile.data() + 5 * ldt, ldt);
          std::vector<float> want(n_tokens * rows);
          vnni_reference_rows(rw.w, 0, rows, qa, want.data(), rows);
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t t = 0; t < n_tokens; ++t) {
              ASSERT_EQ(tile[r * ldt + t], vnni[r * ldt + t])
                  << weight_format_name(format) << " group " << group << " rows " << rows
                  << " tokens " << n_tokens << " levels " << levels << " at " << r << "," << t;
              ASSERT_NEAR(tile[r * ldt + t], want[t * rows + r], 1e-4f * (1.f + std::abs(want[t * rows + r])));
            }
          }
        }
      }
    }
  }
}

// The parallel one-step tiling gives exactly the serial two-step result,
// padding lanes of the last tile included, on any number of threads.
TEST(IntegerKernel, ParallelTileQuantizationEqualsTheSerialSteps) {
  std::mt19937 rng(7);
  for (int threads : {1, 3}) {
    ThreadPool pool(threads);
    for (int group : {32, 64, 128}) {
      for (int64_t n_tokens : {1, 16, 37}) {
        // 2 then 1: a second level left over from an earlier call must go.
        for (int levels : {2, 1}) {
        const int64_t cols = 5 * group, ldx = cols + 3;
        const auto x = random_vector(static_cast<size_t>(n_tokens * ldx), rng);
        QuantizedActivations qa;
        quantize_activations(x.data(), ldx, n_tokens, cols, group, levels, &qa);
        QuantizedActivationTiles want, got;
        tile_activations(qa, &want);
        got.q1.assign(want.q1.size(), 99);  // stale contents must be overwritten
        got.q2.assign(want.q1.size(), 99);
        got.scale.assign(want.scale.size(), 5.f);
        quantize_activation_tiles(x.data(), ldx, n_tokens, cols, group, levels, &got, pool);
        const std::string what = "threads " + std::to_string(threads) + " group " +
                                 std::to_string(group) + " tokens " + std::to_string(n_tokens) +
                                 " levels " + std::to_string(levels);
        EXPECT_EQ(got.n_tokens, n_tokens) << what;
        EXPECT_EQ(got.levels, levels) << what;
        EXPECT_EQ(got.q1, want.q1) << what;
        EXPECT_EQ(got.q2, want.q2) << what;
        EXPECT_EQ(got.scale, want.scale) << what;
        EXPECT_EQ(got.sum, want.sum) << what;
        }
      }
    }
  }
}

// The decode kernel against the same scalar model, every token count it
// handles at once (1-4), row counts that leave remainders, both bit widths.
TEST(IntegerKernel, GemvMatchesItsScalarModel) {
  if (!cpu_features().avx512vnni) GTEST_SKIP() << "no AVX-512 VNNI";
  std::mt19937 rng(77);
  for (int levels : {1, 2})
  for (auto format : {WeightFormat::affine4, WeightFormat::affine8}) {
    for (int group : {32, 64, 128}) {
      for (int64_t n_tokens = 1; n_tokens <= 4; ++n_tokens) {
        const int64_t rows = 11, cols = 3 * std::max(group, 64);
        RandomWeight rw(format, rows, cols, group, rng);
        const auto x = random_vector(static_cast<size_t>(n_tokens * cols), rng);
        QuantizedActivations natural, ordered;
        quantize_activations(x.data(), cols, n_tokens, cols, group, levels, &natural);
        quantize_activations(x.data(), cols, n_tokens, cols, group, levels, &ordered,
                             format == WeightFormat::affine4);
        std::vector<float> want(n_tokens * rows), got(n_tokens * rows, -1.f);
        vnni_reference_rows(rw.w, 0, rows, natural, want.data(), rows);
        avx512::vnni_gemv(rw.w, 0, rows, ordered, 0, n_tokens, got.data(), rows);
        EXPECT_LT(rel_error(got, want), 1e-5) << weight_format_name(format) << " group " << group
                                              << " tokens " << n_tokens << " levels " << levels;
      }
    }
  }
}

// Two int8 levels reproduce each activation to within half of 1/(127·254) of its group's maximum.
TEST(IntegerKernel, TwoLevelQuantizationIsSixteenBitAccurate) {
  std::mt19937 rng(3);
  for (Isa isa : {Isa::scalar, Isa::avx512}) {
    if (set_active_isa(isa) != isa) continue;
    for (int group : {32, 64, 128}) {
      auto x = random_vector(static_cast<size_t>(5 * group), rng);
      x[7] = 40.f;  // an outlier channel
      QuantizedActivations q;
      quantize_activations(x.data(), 5 * group, 1, 5 * group, group, 2, &q);
      for (int64_t g = 0; g < 5; ++g) {
        float amax = 0.f, sum = 0.f;
        for (int64_t c = g * group; c < (g + 1) * group; ++c) {
          amax = std::max(amax, std::abs(x[c]));
          sum += x[c];
        }
        EXPECT_NEAR(q.sum[g], sum, 1e-5f * group * amax);
        for (int64_t c = g * group; c < (g + 1) * group; ++c) {
          const float back = q.scale[g] * (254.f * q.q1[c] + q.q2[c]);
          EXPECT_LE(std::abs(back - x[c]), amax / (127.f * 254.f) * 0.51f)
              << isa_name(isa) << " group " << group << " column " << c;
        }
      }
    }
  }
  set_active_isa(best_isa());
}

// One int8 level reproduces each activation to within half a step, max|x| / 254 of its group's max.
TEST(IntegerKernel, OneLevelQuantizationIsHalfAStepAccurate) {
  std::mt19937 rng(4);
  for (Isa isa : {Isa::scalar, Isa::avx512}) {
    if (set_active_isa(isa) != isa) continue;
    for (int group : {32, 64, 128}) {
      auto x = random_vector(static_cast<size_t>(5 * group), rng);
      x[7] = 40.f;  // an outlier channel
      QuantizedActivations q;
      quantize_activations(x.data(), 5 * group, 1, 5 * group, group, 1, &q);
      EXPECT_TRUE(q.q2.empty());
      for (int64_t g = 0; g < 5; ++g) {
        float amax = 0.f, sum = 0.f;
        for (int64_t c = g * group; c < (g + 1) * group; ++c) {
          amax = std::max(amax, std::abs(x[c]));
          sum += x[c];
        }
        EXPECT_FLOAT_EQ(q.scale[g], amax / 127.f);
        int32_t qsum = 0;
        for (int64_t c = g * group; c < (g + 1) * group; ++c) {
          EXPECT_LE(std::abs(q.scale[g] * q.q1[c] - x[c]), amax / 254.f * 1.001f)
              << isa_name(isa) << " group " << group << " column " << c;
          EXPECT_GE(q.q1[c], -127);
          qsum += q.q1[c];
        }
        // The bias term's sum is that of the rounded values, exactly.
        EXPECT_EQ(q.sum[g], q.scale[g] * static_cast<float>(qsum)) << isa_name(isa) << " group " << group;
        EXPECT_NEAR(q.sum[g], sum, group * amax / 254.f);
      }
    }
  }
  set_active_isa(best_isa());
}

TEST(IntegerKernel, ZeroActivationsGiveZeroNotNan) {
  std::mt19937 rng(5);
  RandomWeight rw(WeightFormat::affine4, 9, 64, 64, rng);
  std::vector<float> x(20 * 64, 0.f), y(20 * 9, 1.f);
  ThreadPool pool(1);
  for (int levels : {1, 2}) {
    set_int8_activation_levels(levels);
    for (MatmulPath path : {MatmulPath::gemm, MatmulPath::gemv}) {
      set_matmul_path_for_tests(path);
      std::fill(y.begin(), y.end(), 1.f);
      matmul(rw.w, x.data(), 64, 20, y.data(), 9, pool);
      for (float v : y) EXPECT_EQ(v, 0.f) << "levels " << levels;
    }
  }
  set_matmul_path_for_tests(MatmulPath::automatic);
  set_int8_activation_levels(1);
}

// Attention over a paged cache with scattered block tables, several
// sequences, GQA, odd head dims, a sliding window: SIMD vs scalar.
// Prefill-sized query counts take the lane kernel (32 query heads per pass),
// short ones the row kernel; head dims cover whole, half and odd 16-float
// tails and dims that are not a multiple of 8.
TEST(Attention, SimdMatchesReference) {
  std::mt19937 rng(7);
  for (KvType type : {KvType::f16, KvType::q8}) {
   for (int64_t head_dim : {8, 20, 24, 40, 48, 64, 96, 128}) {
    if (type == KvType::q8 && kv_q8_group(head_dim) == 0) continue;
    for (int64_t window : {0, 13, 100}) {
     for (auto [n_kv, n_heads] : {std::pair<int64_t, int64_t>{2, 6}, {3, 3}}) {
      const int64_t n_blocks = 48;
      KvLayerView kv;
      kv.n_kv_heads = n_kv;
      kv.head_dim = head_dim;
      kv.type = type;
      std::vector<uint8_t> kbuf = random_kv(kv, n_blocks, rng);
      std::vector<uint8_t> vbuf = random_kv(kv, n_blocks, rng);
      kv.k = kbuf.data();
      kv.v = vbuf.data();
      // Three sequences: (context, new queries), with shuffled block tables.
      const int64_t shapes[4][2] = {{1, 1}, {37, 5}, {150, 17}, {300, 71}};
      std::vector<int32_t> order(n_blocks);
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<AttentionSeq> seqs;
      int64_t row = 0, next_block = 0;
      std::vector<std::vector<int32_t>> tables;
      for (auto& s : shapes) {
        std::vector<int32_t> t;
        for (int64_t b = 0; b < (s[0] + 15) / 16; ++b) t.push_back(order[next_block++]);
        tables.push_back(t);
      }
      for (size_t i = 0; i < 4; ++i) {
        seqs.push_back({tables[i].data(), shapes[i][0], row, shapes[i][1]});
        row += shapes[i][1];
      }
      const auto q = random_vector(row * n_heads * head_dim, rng);
      std::vector<float> want(q.size()), got(q.size(), -1.f);
      const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      attention_ref(q.data(), kv, seqs, n_heads, scale, window, want.data());
      ThreadPool pool(2);
      attention(q.data(), kv, seqs, n_heads, scale, window, got.data(), pool);
      EXPECT_LT(rel_error(got, want), 1e-5) << kv_type_name(type) << " head_dim " << head_dim << " window "
                                            << window << " heads " << n_heads << "/" << n_kv;
      for (Isa isa : {Isa::avx2, Isa::scalar}) {
        if (set_active_isa(isa) != isa) continue;
        std::fill(got.begin(), got.end(), -1.f);
        attention(q.data(), kv, seqs, n_heads, scale, window, got.data(), pool);
        EXPECT_LT(rel_error(got, want), 1e-5)
            << isa_name(isa) << " path, " << kv_type_name(type) << " head_dim " << head_dim;
      }
      set_active_isa(best_isa());
     }
    }
   }
  }
}

// widen_k / widen_v on every ISA against the layout read value by value.
TEST(Attention, WidenMatchesTheLayout) {
  std::mt19937 rng(11);
  for (KvType type : {KvType::f16, KvType::q8}) {
    for (int64_t hd : {8, 24, 40, 48, 96, 128}) {
      KvLayerView kv;
      kv.n_kv_heads = 2;
      kv.head_dim = hd;
      kv.type = type;
      std::vector<uint8_t> kbuf = random_kv(kv, 3, rng), vbuf = random_kv(kv, 3, rng);
      kv.k = kbuf.data();
      kv.v = vbuf.data();
      std::vector<float> want_k(hd * 16), want_v(hd * 16), got(hd * 16);
      const uint8_t* kp = kv.k_head(2, 1);
      const uint8_t* vp = kv.v_head(2, 1);
      for (int64_t d = 0; d < hd; ++d) {
        for (int64_t t = 0; t < 16; ++t) {
          if (type == KvType::f16) {
            want_k[d * 16 + t] = f16_to_f32(reinterpret_cast<const KvElem*>(kp)[d * 16 + t]);
            want_v[t * hd + d] = f16_to_f32(reinterpret_cast<const KvElem*>(vp)[t * hd + d]);
          } else {
            const int64_t g = kv_q8_group(hd);
            const float* ks = reinterpret_cast<const float*>(kp + hd * 16);
            const float* vs = reinterpret_cast<const float*>(vp + hd * 16);
            want_k[d * 16 + t] = static_cast<int8_t>(kp[d * 16 + t]) * ks[(d / g) * 16 + t];
            want_v[t * hd + d] = static_cast<int8_t>(vp[t * hd + d]) * vs[t * (hd / g) + d / g];
          }
        }
      }
      for (Isa isa : {Isa::avx512, Isa::avx2, Isa::scalar}) {
        if (set_active_isa(isa) != isa) continue;
        widen_k(kv, 2, 1, got.data());
        EXPECT_EQ(got, want_k) << isa_name(isa) << " " << kv_type_name(type) << " hd " << hd;
        widen_v(kv, 2, 1, got.data());
        EXPECT_EQ(got, want_v) << isa_name(isa) << " " << kv_type_name(type) << " hd " << hd;
      }
      set_active_isa(best_isa());
    }
  }
}

// The q8 rule: per group, scale = max|x| / 127 and q = round(x / scale); a
// value comes back within half a step; an all-zero group has scale 0.
TEST(KvWrite, Q8QuantizesPerGroupWithinHalfAStep) {
  std::mt19937 rng(5);
  std::vector<float> x = random_vector(96, rng);
  for (int i = 32; i < 64; ++i) x[i] = 0.f;
  x[70] = -9.f;  // the largest of its group: -127 exactly
  std::vector<int8_t> q(96);
  std::vector<float> s(3);
  quantize_q8(x.data(), 96, 32, q.data(), s.data());
  EXPECT_EQ(s[1], 0.f);
  EXPECT_FLOAT_EQ(s[2], 9.f / 127.f);
  EXPECT_EQ(q[70], -127);
  for (int i = 0; i < 96; ++i) {
    EXPECT_LE(std::abs(q[i]), 127);
    EXPECT_LE(std::abs(q[i] * s[i / 32] - x[i]), 0.5001f * s[i / 32]) << i;
  }
}

// silu(g)·u with the vector exp, against libm, on lengths around the
// 16-lane tail and on arguments from deep negative (exp overflows) to large.
TEST(SiluMul, SimdMatchesReference) {
  if (!cpu_features().avx512f) GTEST_SKIP() << "no AVX-512";
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> wide(-120.f, 90.f);
  for (int64_t n : {1, 15, 16, 17, 33, 8192 + 5}) {
    std::vector<float> g = random_vector(static_cast<size_t>(n), rng), u = random_vector(static_cast<size_t>(n), rng);
    for (int64_t i = 0; i < n; i += 3) g[i] = wide(rng);
    std::vector<float> want(n), got(n + 1, 42.f);
    silu_mul_ref(g.data(), u.data(), n, want.data());
    avx512::silu_mul(g.data(), u.data(), n, got.data());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(got[i], want[i], 1e-6f * (1.f + std::abs(want[i]))) << "n " << n << " i " << i << " g " << g[i];
    }
    EXPECT_EQ(got[n], 42.f) << "wrote past the end";
  }
}

// K and V land in their slots as half floats, rounded to nearest even the
// same way on every ISA (F16C and the scalar conversion), over lengths past
// the 8-wide conversion's tail and values that need rounding or overflow.
TEST(KvWrite, RoundTripsThroughTheLayout) {
  for (Isa isa : {Isa::avx512, Isa::avx2, Isa::scalar}) {
    if (set_active_isa(isa) != isa) continue;
    KvLayerView kv;
    kv.n_kv_heads = 3;
    kv.head_dim = 7;
    std::vector<KvElem> kb(4 * kv.block_bytes() / 2), vb(4 * kv.block_bytes() / 2);
    kv.k = reinterpret_cast<uint8_t*>(kb.data());
    kv.v = reinterpret_cast<uint8_t*>(vb.data());
    const int32_t table[] = {2, 0, 3};
    std::vector<float> k(21), v(21);
    for (int i = 0; i < 21; ++i) {
      k[i] = static_cast<float>(i) + 1.f / 3.f;  // not representable: rounds
      v[i] = i == 20 ? 1e6f : static_cast<float>(100 + i) * -0.001f;  // 1e6 overflows to inf
    }
    kv_write(kv, table, 20, k.data(), v.data());  // block table[1] = 0, slot 4
    for (int h = 0; h < 3; ++h) {
      for (int d = 0; d < 7; ++d) {
        EXPECT_EQ(kb[(h * 7 + d) * kKvBlockTokens + 4], f32_to_f16(k[h * 7 + d])) << isa_name(isa);
        EXPECT_EQ(vb[(h * kKvBlockTokens + 4) * 7 + d], f32_to_f16(v[h * 7 + d])) << isa_name(isa);
      }
    }
    EXPECT_TRUE(std::isinf(f16_to_f32(vb[(2 * kKvBlockTokens + 4) * 7 + 6])));
    EXPECT_NEAR(f16_to_f32(kb[(0 * 7 + 1) * kKvBlockTokens + 4]), 4.f / 3.f, 1e-3f);
  }
  set_active_isa(best_isa());
}

// q8: a position's K and V land as int8 in the same slots, each group's
// scale beside them, and read back (widen_k/widen_v) within half a step.
TEST(KvWrite, Q8RoundTripsThroughTheLayout) {
  KvLayerView kv;
  kv.n_kv_heads = 2;
  kv.head_dim = 48;  // groups of 16
  kv.type = KvType::q8;
  std::vector<uint8_t> kb(4 * kv.block_bytes()), vb(4 * kv.block_bytes());
  kv.k = kb.data();
  kv.v = vb.data();
  std::mt19937 rng(3);
  const std::vector<float> k = random_vector(96, rng), v = random_vector(96, rng);
  const int32_t table[] = {2, 0, 3};
  kv_write(kv, table, 21, k.data(), v.data());  // block 0, slot 5
  std::vector<float> wk(48 * 16), wv(48 * 16);
  for (int h = 0; h < 2; ++h) {
    widen_k(kv, 0, h, wk.data());
    widen_v(kv, 0, h, wv.data());
    const float* ks = reinterpret_cast<const float*>(kv.k_head(0, h) + 48 * 16);
    const float* vs = reinterpret_cast<const float*>(kv.v_head(0, h) + 48 * 16);
    for (int d = 0; d < 48; ++d) {
      EXPECT_LE(std::abs(wk[d * 16 + 5] - k[h * 48 + d]), 0.5001f * ks[(d / 16) * 16 + 5]) << h << " " << d;
      EXPECT_LE(std::abs(wv[5 * 48 + d] - v[h * 48 + d]), 0.5001f * vs[5 * 3 + d / 16]) << h << " " << d;
      EXPECT_EQ(wk[d * 16 + 4], 0.f);  // other slots untouched
    }
  }
}

}  // namespace
}  // namespace pensieve::kernels
