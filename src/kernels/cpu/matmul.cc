#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <atomic>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul_impl.h"

namespace pensieve::kernels {
namespace {

std::atomic<int> g_path{static_cast<int>(MatmulPath::automatic)};

constexpr int64_t kRowsPerTask = 24;

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
  std::vector<Task> tasks;
  int64_t offset = 0;
  bool any_permuted = false, any_natural = false;
  for (const WeightMatrix* w : parts) {
    if (w->cols != cols) fail(ErrorKind::internal, "matmul: parts disagree on input width");
    (uses_permuted_x(*w) ? any_permuted : any_natural) = true;
    for (int64_t r = 0; r < w->rows; r += kRowsPerTask) {
      tasks.push_back({w, r, std::min(w->rows, r + kRowsPerTask), offset});
    }
    offset += w->rows;
  }
  if (offset > ldy) fail(ErrorKind::internal, "matmul: output row stride too small");

  const Isa isa = active_isa();
  if (isa != Isa::avx512) {
    pool.parallel_for(static_cast<int64_t>(tasks.size()), 1, [&](int64_t b, int64_t e) {
      std::vector<float> row;
      for (int64_t i = b; i < e; ++i) {
        const Task& task = tasks[i];
        scalar_rows(*task.w, task.r0, task.r1, x, ldx, n_tokens, y + task.y_offset, ldy, row);
      }
    });
    return;
  }

  const auto path = static_cast<MatmulPath>(g_path.load());
  const bool use_gemv =
      path == MatmulPath::gemv || (path == MatmulPath::automatic && n_tokens <= kGemvMaxTokens);

  // The permuted copy of x for 4-bit weights (packed, ld = cols).
  std::vector<float> x_perm;
  if (any_permuted) {
    x_perm.resize(static_cast<size_t>(n_tokens * cols));
    for (int64_t t = 0; t < n_tokens; ++t) {
      permute_x_for_q4(x + t * ldx, cols, x_perm.data() + t * cols);
    }
  }

  if (use_gemv) {
    pool.parallel_for(static_cast<int64_t>(tasks.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const Task& task = tasks[i];
        const bool perm = uses_permuted_x(*task.w);
        const float* xs = perm ? x_perm.data() : x;
        const int64_t ldxs = perm ? cols : ldx;
        for (int64_t t0 = 0; t0 < n_tokens; t0 += kGemvMaxTokens) {
          avx512::gemv_rows(*task.w, task.r0, task.r1, xs + t0 * ldxs, ldxs,
                            std::min(kGemvMaxTokens, n_tokens - t0), y + task.y_offset + t0 * ldy,
                            ldy);
        }
      }
    });
    return;
  }

  // Activations transposed into 16-token tiles, once per call for all rows.
  const int64_t n_tiles = (n_tokens + 15) / 16;
  std::vector<float> xt_natural, xt_perm;
  auto transpose_all = [&](const float* src, int64_t ld, std::vector<float>& dst) {
    dst.resize(static_cast<size_t>(n_tiles * cols * 16));
    pool.parallel_for(n_tiles, 1, [&](int64_t b, int64_t e) {
      transpose_tokens(src, ld, n_tokens, cols, dst.data(), b, e);
    });
  };
  if (any_natural) transpose_all(x, ldx, xt_natural);
  if (any_permuted) transpose_all(x_perm.data(), cols, xt_perm);

  pool.parallel_for(static_cast<int64_t>(tasks.size()), 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> wbuf;
    for (int64_t i = b; i < e; ++i) {
      const Task& task = tasks[i];
      const float* xt = uses_permuted_x(*task.w) ? xt_perm.data() : xt_natural.data();
      const int64_t n = task.r1 - task.r0;
      wbuf.resize(static_cast<size_t>(n * cols));
      avx512::dequant_rows(*task.w, task.r0, n, wbuf.data());
      avx512::gemm_f32(wbuf.data(), n, cols, xt, n_tokens, y + task.y_offset + task.r0, ldy);
    }
  });
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
