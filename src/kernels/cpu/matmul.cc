#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul_impl.h"

namespace pensieve::kernels {
namespace {

std::atomic<int> g_path{static_cast<int>(MatmulPath::automatic)};

constexpr int64_t kRowsPerTask = 24;
// The gemv kernels take up to 4 tokens at once; 5-8 tokens run as two blocks
// over the same rows, whose second pass finds the task's rows in cache.
constexpr int64_t kGemvBlockTokens = 4;

struct Task {
  const WeightMatrix* w;
  int64_t r0, r1;
  int64_t y_offset;
};

void scalar_rows(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t ldx,
                 int64_t n_tokens, float* y, int64_t ldy, std::vector<float>& row) {
  row.resize(w.cols);
  for (int64_t r = r0; r < r1; ++r) {
    dequantize_row_ref(w, r, row.data());
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * ldx;
      float acc = 0.f;
      for (int64_t c = 0; c < w.cols; ++c) acc += row[c] * xt[c];
      y[t * ldy + r] = acc;
    }
  }
}

}  // namespace

bool uses_permuted_x(const WeightMatrix& w) { return w.format == WeightFormat::affine4; }

void permute_x_for_q4(const float* x, int64_t cols, float* out) {
  for (int64_t c = 0; c < cols; c += 32) {
    for (int i = 0; i < 16; ++i) {
      out[c + i] = x[c + 2 * i];
      out[c + 16 + i] = x[c + 2 * i + 1];
    }
  }
}

void set_matmul_path_for_tests(MatmulPath path) { g_path.store(static_cast<int>(path)); }

namespace {
// 1 (on) unless the environment variable `name` starts with `off`.
int on_unless_env(const char* name, char off) {
  const char* env = std::getenv(name);
  return env != nullptr && env[0] == off ? 0 : 1;
}

std::atomic<int>& integer_flag() {
  static std::atomic<int> flag{on_unless_env("PENSIEVE_PRECISE", '1')};
  return flag;
}

std::atomic<int>& amx_flag() {
  static std::atomic<int> flag{on_unless_env("PENSIEVE_AMX", '0')};
  return flag;
}

std::atomic<int>& levels_flag() {
  static std::atomic<int> flag{[] {
    const char* env = std::getenv("PENSIEVE_INT8_LEVELS");
    return env != nullptr && env[0] == '2' ? 2 : 1;
  }()};
  return flag;
}
}  // namespace

int int8_activation_levels() { return levels_flag().load(std::memory_order_relaxed); }
void set_int8_activation_levels(int levels) {
  if (levels != 1 && levels != 2) fail(ErrorKind::internal, "int8 activation levels: {} (1 or 2)", levels);
  levels_flag().store(levels);
}

bool integer_kernels_enabled() {
  return integer_flag().load(std::memory_order_relaxed) != 0 && cpu_features().avx512vnni &&
         active_isa() == Isa::avx512;
}
void set_integer_kernels(bool enabled) { integer_flag().store(enabled ? 1 : 0); }

bool amx_kernels_enabled() {
  static const bool usable =
      cpu_features().amx_tile && cpu_features().amx_int8 && amx::request_permission();
  return usable && amx_flag().load(std::memory_order_relaxed) != 0 && integer_kernels_enabled();
}
void set_amx_kernels(bool enabled) { amx_flag().store(enabled ? 1 : 0); }

const char* prefill_kernel_name() {
  const bool two = int8_activation_levels() == 2;
  if (amx_kernels_enabled()) return two ? "amx-int8-2level" : "amx-int8";
  if (integer_kernels_enabled()) return two ? "avx512-vnni-2level" : "avx512-vnni";
  switch (active_isa()) {
    case Isa::avx512: return "avx512-f32";
    case Isa::avx2: return "avx2-f32";
    case Isa::scalar: return "scalar";
  }
  return "?";
}

void matmul_ref(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
                int64_t ldy) {
  std::vector<float> row;
  scalar_rows(w, 0, w.rows, x, ldx, n_tokens, y, ldy, row);
}

void matmul(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
            int64_t ldy, ThreadPool& pool) {
  const WeightMatrix* parts[1] = {&w};
  matmul(parts, x, ldx, n_tokens, y, ldy, pool);
}

void matmul(std::span<const WeightMatrix* const> parts, const float* x, int64_t ldx,
            int64_t n_tokens, float* y, int64_t ldy, ThreadPool& pool) {
  if (n_tokens <= 0 || parts.empty()) return;
  const int64_t cols = parts[0]->cols;
  const auto path = static_cast<MatmulPath>(g_path.load());
  const bool use_gemv =
      path == MatmulPath::gemv || (path == MatmulPath::automatic && n_tokens <= kGemvMaxTokens);
  // AMX works on 16-row tiles, two at a time.
  const bool amx = !use_gemv && amx_kernels_enabled();
  const int64_t rows_per_task = amx ? 32 : kRowsPerTask;
  std::vector<Task> tasks;
  int64_t offset = 0;
  for (const WeightMatrix* w : parts) {
    if (w->cols != cols) fail(ErrorKind::internal, "matmul: parts disagree on input width");
    for (int64_t r = 0; r < w->rows; r += rows_per_task) {
      tasks.push_back({w, r, std::min(w->rows, r + rows_per_task), offset});
    }
    offset += w->rows;
  }
  if (offset > ldy) fail(ErrorKind::internal, "matmul: output row stride too small");
  if (active_isa() == Isa::avx2) {
    if (use_gemv) {
      pool.parallel_for(static_cast<int64_t>(tasks.size()), 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const Task& task = tasks[i];
          avx2::gemv_rows(*task.w, task.r0, task.r1, x, ldx, n_tokens, y + task.y_offset, ldy);
        }
      });
      return;
    }
    const int64_t n_tiles = (n_tokens + 15) / 16;
    std::vector<float> xt(static_cast<size_t>(n_tiles * cols * 16));
    pool.parallel_for(n_tiles, 1, [&](int64_t b, int64_t e) {
      transpose_tokens(x, ldx, n_tokens, cols, xt.data(), b, e);
    });
    pool.parallel_for(static_cast<int64_t>(tasks.size()), 1, [&](int64_t b, int64_t e) {
      thread_local std::vector<float> wbuf;
      for (int64_t i = b; i < e; ++i) {
        const Task& task = tasks[i];
        const int64_t n = task.r1 - task.r0;
        wbuf.resize(static_cast<size_t>(n * cols));
        avx2::dequant_rows(*task.w, task.r0, n, wbuf.data());
        avx2::gemm_f32(wbuf.data(), n, cols, xt.data(), n_tokens, y + task.y_offset + task.r0, ldy);
      }
    });
    return;
  }
  if (active_isa() != Isa::avx512) {
    pool.parallel_for(static_cast<int64_t>(tasks.size()), 1, [&](int64_t b, int64_t e) {
      std::vector<float> row;
      for (int64_t i = b; i < e; ++i) {
        const Task& task = tasks[i];
        scalar_rows(*task.w, task.r0, task.r1, x, ldx, n_tokens, y + task.y_offset, ldy, row);
      }
    });
    return;
  }

  const bool integer = integer_kernels_enabled();
  const int levels = int8_activation_levels();
  auto integer_ok = [&](const WeightMatrix& w) {
    // Groups of 32, 64 and 128; a GGUF Q6_K's groups of 16 in prompts too (the
    // tile kernels take any group of whole quads), in decode the f32 gemv.
    const bool group_ok = w.group_size == 32 || w.group_size == 64 || w.group_size == 128 ||
                          (w.group_size == 16 && !use_gemv);
    return integer && w.quantized() && group_ok && (!use_gemv || w.cols % 64 == 0);
  };

  // Prepare each input form the parts need, once for all rows.
  std::vector<float> x_perm;                   // f32 gemv, 4-bit: [even | odd] per 32
  std::vector<float> xt_natural, xt_perm;      // f32 gemm: transposed 16-token tiles
  // The quantized activation forms are kept per calling thread from call to
  // call: fresh buffers of a few MB each cost page faults and zeroing that
  // took a fifth of a prefill matmul's time. `ready` names those filled by
  // this call; the lambdas below reach the caller's buffers through the
  // references (a thread_local named inside them would be the worker's own).
  thread_local std::vector<std::pair<int64_t, QuantizedActivationTiles>> tile_cache;  // by group size
  thread_local std::vector<std::pair<int64_t, QuantizedActivations>> gemv_cache;  // by group*2 + nibble
  auto& tile_forms = tile_cache;
  auto& gemv_forms = gemv_cache;
  std::vector<int64_t> ready;
  auto slot = [&](auto& cache, int64_t key) -> auto& {
    for (auto& f : cache) if (f.first == key) return f.second;
    cache.emplace_back(key, typename std::remove_reference_t<decltype(cache)>::value_type::second_type{});
    return cache.back().second;
  };
  auto gemv_key = [](const WeightMatrix& w) {
    return w.group_size * 2 + (w.format == WeightFormat::affine4 ? 1 : 0);
  };
  for (const WeightMatrix* w : parts) {
    if (integer_ok(*w)) {
      const int64_t key = use_gemv ? 2 * gemv_key(*w) + 1 : 2 * w->group_size;
      if (std::find(ready.begin(), ready.end(), key) != ready.end()) continue;
      ready.push_back(key);
      if (use_gemv) {
        quantize_activations(x, ldx, n_tokens, cols, w->group_size, levels,
                             &slot(gemv_forms, gemv_key(*w)), w->format == WeightFormat::affine4);
      } else {
        quantize_activation_tiles(x, ldx, n_tokens, cols, w->group_size, levels,
                                  &slot(tile_forms, w->group_size), pool);
      }
    } else if (use_gemv) {
      if (uses_permuted_x(*w) && x_perm.empty()) {
        x_perm.resize(static_cast<size_t>(n_tokens * cols));
        for (int64_t t = 0; t < n_tokens; ++t) {
          permute_x_for_q4(x + t * ldx, cols, x_perm.data() + t * cols);
        }
      }
    } else {
      const int64_t n_tiles = (n_tokens + 15) / 16;
      const bool perm = uses_permuted_x(*w);
      std::vector<float>& dst = perm ? xt_perm : xt_natural;
      if (!dst.empty()) continue;
      if (perm && x_perm.empty()) {
        x_perm.resize(static_cast<size_t>(n_tokens * cols));
        for (int64_t t = 0; t < n_tokens; ++t) {
          permute_x_for_q4(x + t * ldx, cols, x_perm.data() + t * cols);
        }
      }
      const float* src = perm ? x_perm.data() : x;
      const int64_t ld = perm ? cols : ldx;
      dst.resize(static_cast<size_t>(n_tiles * cols * 16));
      pool.parallel_for(n_tiles, 1, [&](int64_t b, int64_t e) {
        transpose_tokens(src, ld, n_tokens, cols, dst.data(), b, e);
      });
    }
  }
  // The integer gemm writes each output row's tokens contiguously into yt
  // (see vnni_gemm); a transpose below moves them to y in token order.
  thread_local AlignedVector<float> yt_cache;
  auto& yt_buf = yt_cache;
  const int64_t ldt = (n_tokens + 15) / 16 * 16;
  const bool tiled =
      !use_gemv && std::any_of(parts.begin(), parts.end(), [&](const WeightMatrix* w) { return integer_ok(*w); });
  if (tiled) yt_buf.resize(static_cast<size_t>(offset * ldt));
  auto tile_form = [&](const WeightMatrix& w) -> const QuantizedActivationTiles& {
    for (auto& f : tile_forms) if (f.first == w.group_size) return f.second;
    fail(ErrorKind::internal, "matmul: missing activation tiles");
  };

  pool.parallel_for_contiguous(static_cast<int64_t>(tasks.size()), [&](int64_t b, int64_t e) {
    thread_local std::vector<float> wbuf;
    for (int64_t i = b; i < e; ++i) {
      const Task& task = tasks[i];
      const WeightMatrix& w = *task.w;
      float* yt = y + task.y_offset;
      if (integer_ok(w) && use_gemv) {
        const QuantizedActivations* qa = nullptr;
        for (auto& f : gemv_forms) if (f.first == gemv_key(w)) qa = &f.second;
        for (int64_t t0 = 0; t0 < n_tokens; t0 += kGemvBlockTokens) {
          avx512::vnni_gemv(w, task.r0, task.r1, *qa, t0, std::min(kGemvBlockTokens, n_tokens - t0),
                            yt, ldy);
        }
        continue;
      }
      if (integer_ok(w)) {
        float* out = yt_buf.data() + (task.y_offset + task.r0) * ldt;
        if (amx && amx::handles(w)) {
          amx::gemm_i8(w, task.r0, task.r1, tile_form(w), out, ldt);
        } else {
          avx512::vnni_gemm(w, task.r0, task.r1, tile_form(w), out, ldt);
        }
        continue;
      }
      const bool perm = uses_permuted_x(w);
      if (use_gemv) {
        const float* xs = perm ? x_perm.data() : x;
        const int64_t ldxs = perm ? cols : ldx;
        for (int64_t t0 = 0; t0 < n_tokens; t0 += kGemvBlockTokens) {
          avx512::gemv_rows(w, task.r0, task.r1, xs + t0 * ldxs, ldxs,
                            std::min(kGemvBlockTokens, n_tokens - t0), yt + t0 * ldy, ldy);
        }
      } else {
        const int64_t n = task.r1 - task.r0;
        wbuf.resize(static_cast<size_t>(n * cols));
        avx512::dequant_rows(w, task.r0, n, wbuf.data());
        avx512::gemm_f32(wbuf.data(), n, cols, perm ? xt_perm.data() : xt_natural.data(),
                         n_tokens, yt + task.r0, ldy);
      }
    }
  });
  if (!tiled) return;
  const int64_t n_tiles = (n_tokens + 15) / 16;
  pool.parallel_for(n_tiles, 1, [&](int64_t b, int64_t e) {
    int64_t part_offset = 0;
    for (const WeightMatrix* w : parts) {
      if (integer_ok(*w)) {
        avx512::transpose_rows_to_tokens(yt_buf.data() + part_offset * ldt, ldt, w->rows, 16 * b,
                                         std::min(n_tokens, 16 * e), y + part_offset, ldy);
      }
      part_offset += w->rows;
    }
  });
}

namespace {
// Scalar twins of avx512::quantize_group_i8 and _i8x2 (same rounding: to
// nearest, ties to even).
void quantize_group_scalar(const float* x, int64_t n, int8_t* q1, float* scale, float* sum) {
  float amax = 0.f;
  for (int64_t c = 0; c < n; ++c) amax = std::max(amax, std::abs(x[c]));
  const float d = amax / 127.f, inv = d > 0 ? 1.f / d : 0.f;
  int32_t qsum = 0;
  for (int64_t c = 0; c < n; ++c) {
    q1[c] = static_cast<int8_t>(std::clamp(std::nearbyint(x[c] * inv), -127.f, 127.f));
    qsum += q1[c];
  }
  *scale = d;
  *sum = d * static_cast<float>(qsum);
}

void quantize_group_scalar_x2(const float* x, int64_t n, int8_t* q1, int8_t* q2, float* scale,
                              float* sum) {
  float amax = 0.f, s = 0.f;
  for (int64_t c = 0; c < n; ++c) {
    amax = std::max(amax, std::abs(x[c]));
    s += x[c];
  }
  const float d1 = amax / 127.f, d = d1 / 254.f;
  const float inv1 = d1 > 0 ? 1.f / d1 : 0.f, inv = d > 0 ? 1.f / d : 0.f;
  *scale = d;
  *sum = s;
  for (int64_t c = 0; c < n; ++c) {
    const float a = std::nearbyint(x[c] * inv1);
    const float b = std::nearbyint((x[c] - a * d1) * inv);
    q1[c] = static_cast<int8_t>(std::clamp(a, -127.f, 127.f));
    q2[c] = static_cast<int8_t>(std::clamp(b, -127.f, 127.f));
  }
}

// One group of one token to `levels` int8 levels (q2 unused with one).
void quantize_group(const float* x, int64_t n, int levels, int8_t* q1, int8_t* q2, float* scale,
                    float* sum) {
  const bool fast = active_isa() == Isa::avx512 && n % 16 == 0;
  if (levels == 1) {
    if (fast) avx512::quantize_group_i8(x, n, q1, scale, sum);
    else quantize_group_scalar(x, n, q1, scale, sum);
  } else {
    if (fast) avx512::quantize_group_i8x2(x, n, q1, q2, scale, sum);
    else quantize_group_scalar_x2(x, n, q1, q2, scale, sum);
  }
}
}  // namespace

void quantize_activations(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols,
                          int64_t group, int levels, QuantizedActivations* out, bool nibble_order) {
  const int64_t n_groups = cols / group;
  out->n_tokens = n_tokens;
  out->cols = cols;
  out->group = group;
  out->levels = levels;
  out->q1.resize(static_cast<size_t>(n_tokens * cols));
  out->q2.resize(levels == 2 ? static_cast<size_t>(n_tokens * cols) : 0);
  out->scale.resize(static_cast<size_t>(n_tokens * n_groups));
  out->sum.resize(static_cast<size_t>(n_tokens * n_groups));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xr = x + t * ldx;
    int8_t* q1 = out->q1.data() + t * cols;
    int8_t* q2 = levels == 2 ? out->q2.data() + t * cols : nullptr;
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t c = g * group;
      quantize_group(xr + c, group, levels, q1 + c, q2 != nullptr ? q2 + c : nullptr,
                     &out->scale[t * n_groups + g], &out->sum[t * n_groups + g]);
    }
    if (nibble_order) {  // per 64 columns: even ones first, then odd
      for (int8_t* q : {q1, q2}) {
        if (q == nullptr) continue;
        int8_t tmp[64];
        for (int64_t base = 0; base + 64 <= cols; base += 64) {
          for (int64_t i = 0; i < 32; ++i) {
            tmp[i] = q[base + 2 * i];
            tmp[32 + i] = q[base + 2 * i + 1];
          }
          std::memcpy(q + base, tmp, sizeof tmp);
        }
      }
    }
  }
}

void tile_activations(const QuantizedActivations& a, QuantizedActivationTiles* out) {
  const int64_t n_tiles = (a.n_tokens + 15) / 16, quads = a.cols / 4, n_groups = a.cols / a.group;
  const bool two = a.levels == 2;
  out->n_tokens = a.n_tokens;
  out->cols = a.cols;
  out->group = a.group;
  out->levels = a.levels;
  out->q1.assign(static_cast<size_t>(n_tiles * quads * 16), 0);
  out->q2.assign(two ? static_cast<size_t>(n_tiles * quads * 16) : 0, 0);
  out->scale.assign(static_cast<size_t>(n_tiles * n_groups * 16), 0.f);
  out->sum.assign(static_cast<size_t>(n_tiles * n_groups * 16), 0.f);
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    const int64_t tile = t / 16, lane = t % 16;
    for (int64_t k4 = 0; k4 < quads; ++k4) {
      int32_t quad;
      std::memcpy(&quad, a.q1.data() + t * a.cols + 4 * k4, 4);
      out->q1[(tile * quads + k4) * 16 + lane] = quad;
      if (!two) continue;
      std::memcpy(&quad, a.q2.data() + t * a.cols + 4 * k4, 4);
      out->q2[(tile * quads + k4) * 16 + lane] = quad;
    }
    for (int64_t g = 0; g < n_groups; ++g) {
      out->scale[(tile * n_groups + g) * 16 + lane] = a.scale[t * n_groups + g];
      out->sum[(tile * n_groups + g) * 16 + lane] = a.sum[t * n_groups + g];
    }
  }
}

void quantize_activation_tiles(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols,
                               int64_t group, int levels, QuantizedActivationTiles* out,
                               ThreadPool& pool) {
  const int64_t n_tiles = (n_tokens + 15) / 16, quads = cols / 4, n_groups = cols / group;
  const bool two = levels == 2;
  out->n_tokens = n_tokens;
  out->cols = cols;
  out->group = group;
  out->levels = levels;
  out->q1.resize(static_cast<size_t>(n_tiles * quads * 16));
  out->q2.resize(two ? static_cast<size_t>(n_tiles * quads * 16) : 0);
  out->scale.resize(static_cast<size_t>(n_tiles * n_groups * 16));
  out->sum.resize(static_cast<size_t>(n_tiles * n_groups * 16));
  pool.parallel_for(n_tiles, 1, [&](int64_t b, int64_t e) {
    thread_local AlignedVector<int8_t> q1, q2;
    q1.resize(static_cast<size_t>(cols));
    q2.resize(static_cast<size_t>(cols));
    for (int64_t tile = b; tile < e; ++tile) {
      int32_t* t1 = out->q1.data() + tile * quads * 16;
      int32_t* t2 = two ? out->q2.data() + tile * quads * 16 : nullptr;
      float* tsc = out->scale.data() + tile * n_groups * 16;
      float* tsm = out->sum.data() + tile * n_groups * 16;
      for (int64_t lane = 0; lane < 16; ++lane) {
        const int64_t t = tile * 16 + lane;
        if (t >= n_tokens) {  // padding tokens: zero activations, zero scale
          for (int64_t k4 = 0; k4 < quads; ++k4) {
            t1[k4 * 16 + lane] = 0;
            if (two) t2[k4 * 16 + lane] = 0;
          }
          for (int64_t g = 0; g < n_groups; ++g) tsc[g * 16 + lane] = tsm[g * 16 + lane] = 0.f;
          continue;
        }
        const float* xr = x + t * ldx;
        for (int64_t g = 0; g < n_groups; ++g) {
          const int64_t c = g * group;
          quantize_group(xr + c, group, levels, q1.data() + c, q2.data() + c, &tsc[g * 16 + lane],
                         &tsm[g * 16 + lane]);
        }
        for (int64_t k4 = 0; k4 < quads; ++k4) {
          std::memcpy(&t1[k4 * 16 + lane], q1.data() + 4 * k4, 4);
          if (two) std::memcpy(&t2[k4 * 16 + lane], q2.data() + 4 * k4, 4);
        }
      }
    }
  });
}

void vnni_reference_rows(const WeightMatrix& w, int64_t r0, int64_t r1,
                         const QuantizedActivations& a, float* y, int64_t ldy) {
  const int64_t n_groups = w.n_groups(), bits = w.bits(), per_word = 32 / bits;
  const uint32_t mask = (1u << bits) - 1;
  const bool two = a.levels == 2;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + r * w.row_bytes();
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      float acc = 0.f;
      for (int64_t g = 0; g < n_groups; ++g) {
        int64_t dot = 0;
        for (int64_t c = g * w.group_size; c < (g + 1) * w.group_size; ++c) {
          uint32_t word;
          std::memcpy(&word, row + (c / per_word) * 4, 4);
          const int32_t q = static_cast<int32_t>((word >> ((c % per_word) * bits)) & mask);
          const int32_t xq = two ? 254 * a.q1[t * a.cols + c] + a.q2[t * a.cols + c] : a.q1[t * a.cols + c];
          dot += q * xq;
        }
        acc += w.scale(r, g) * a.scale[t * n_groups + g] * static_cast<float>(dot) +
               w.bias(r, g) * a.sum[t * n_groups + g];
      }
      y[t * ldy + r] = acc;
    }
  }
}

void transpose_tokens(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols, float* xt,
                      int64_t tile0, int64_t tile1) {
  for (int64_t tile = tile0; tile < tile1; ++tile) {
    float* dst = xt + tile * cols * 16;
    for (int64_t i = 0; i < 16; ++i) {
      const int64_t t = tile * 16 + i;
      if (t < n_tokens) {
        const float* src = x + t * ldx;
        for (int64_t c = 0; c < cols; ++c) dst[c * 16 + i] = src[c];
      } else {
        for (int64_t c = 0; c < cols; ++c) dst[c * 16 + i] = 0.f;
      }
    }
  }
}

}  // namespace pensieve::kernels
