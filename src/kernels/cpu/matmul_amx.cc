// AMX int8 prefill kernel for MLX affine weights (Sapphire Rapids and later).
//
// The same arithmetic as the AVX-512 VNNI gemm (matmul_vnni_avx512.cc), with
// the integer dots on the tile unit: per weight group, 16 weight rows (u8,
// tile A, one row of the unpacked panel per tile row) times 16 tokens (s8,
// tile B: the activation tiles' layout, 4 consecutive columns of a token per
// 32-bit element, is exactly what TDPBUSD expects) into a 16x16 int32 tile,
// once per activation level (one by default, two with PENSIEVE_INT8_LEVELS=2).
// The group epilogue (levels combined, row scale times token scale, bias
// times Σx) runs in AVX-512 in the same order as the VNNI kernel's, so both
// give the same floats.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/aligned.h"
#include "core/error.h"
#include "kernels/cpu/matmul_impl.h"

namespace pensieve::kernels::amx {
namespace {

struct alignas(64) TileConfig {
  uint8_t palette_id = 0;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0-3: the int32 dots of two 16-row blocks x two levels; 4-5: the two
// blocks' weights (16 rows x kbytes); 6-7: the two levels' activations
// (kbytes/4 rows of 16 tokens x 4 bytes).
void configure(int kbytes) {
  thread_local int configured = 0;
  if (configured == kbytes) return;
  TileConfig cfg;
  cfg.palette_id = 1;
  for (int t = 0; t < 4; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  for (int t = 4; t < 6; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = static_cast<uint16_t>(kbytes);
  }
  for (int t = 6; t < 8; ++t) {
    cfg.rows[t] = static_cast<uint8_t>(kbytes / 4);
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  configured = kbytes;
}

// The VNNI kernel's combine: i1, or 254·i1 + i2, as f32.
template <int L>
inline __m512 combine(__m512i i1, __m512i i2) {
  if constexpr (L == 1) {
    return _mm512_cvtepi32_ps(i1);
  } else {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), _mm512_set1_ps(254.f), _mm512_cvtepi32_ps(i2));
  }
}

template <int L>
void gemm_i8_levels(const WeightMatrix& w, int64_t n_rows, int64_t padded, const uint8_t* wq,
                    const float* sc, const float* bi, const QuantizedActivationTiles& a, float* yt,
                    int64_t ldt, int kbytes) {
  const int64_t cols = w.cols, group = w.group_size, n_groups = w.n_groups();
  const int64_t quads = cols / 4, n_tiles = (a.n_tokens + 15) / 16;
  alignas(64) int32_t dots[4][16][16];  // [block·2 + level][row][token]
  alignas(64) float facc[32][16];
  for (int64_t tile = 0; tile < n_tiles; ++tile) {
    const int32_t* x1 = a.q1.data() + tile * quads * 16;
    const int32_t* x2 = L == 2 ? a.q2.data() + tile * quads * 16 : nullptr;
    const float* dx = a.scale.data() + tile * n_groups * 16;
    const float* xs = a.sum.data() + tile * n_groups * 16;
    for (int64_t rb = 0; rb < padded; rb += 32) {
      const uint8_t* wa = wq + rb * cols;
      const uint8_t* wb = wa + 16 * cols;
      for (int r = 0; r < 32; ++r) _mm512_store_ps(facc[r], _mm512_setzero_ps());
      for (int64_t g = 0; g < n_groups; ++g) {
        _tile_zero(0);
        _tile_zero(2);
        if constexpr (L == 2) {
          _tile_zero(1);
          _tile_zero(3);
        }
        for (int64_t c = g * group; c < (g + 1) * group; c += kbytes) {
          _tile_loadd(4, wa + c, cols);
          _tile_loadd(5, wb + c, cols);
          _tile_loadd(6, x1 + c / 4 * 16, 64);
          _tile_dpbusd(0, 4, 6);
          _tile_dpbusd(2, 5, 6);
          if constexpr (L == 2) {
            _tile_loadd(7, x2 + c / 4 * 16, 64);
            _tile_dpbusd(1, 4, 7);
            _tile_dpbusd(3, 5, 7);
          }
        }
        _tile_stored(0, dots[0], 64);
        _tile_stored(2, dots[2], 64);
        if constexpr (L == 2) {
          _tile_stored(1, dots[1], 64);
          _tile_stored(3, dots[3], 64);
        }
        const __m512 d = _mm512_loadu_ps(dx + g * 16);  // std::vector, not 64-byte aligned
        const __m512 s = _mm512_loadu_ps(xs + g * 16);
        const float* scg = sc + (rb * n_groups + g);
        const float* big = bi + (rb * n_groups + g);
        for (int r = 0; r < 32; ++r) {
          const int blk = r / 16 * 2, rr = r % 16;
          const __m512i i2 = L == 2 ? _mm512_load_si512(dots[blk + 1][rr]) : _mm512_setzero_si512();
          const __m512 v = combine<L>(_mm512_load_si512(dots[blk][rr]), i2);
          const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(scg[r * n_groups]), d);
          __m512 f = _mm512_fmadd_ps(v, scale, _mm512_load_ps(facc[r]));
          f = _mm512_fmadd_ps(_mm512_set1_ps(big[r * n_groups]), s, f);
          _mm512_store_ps(facc[r], f);
        }
      }
      const int64_t live = std::min<int64_t>(32, n_rows - rb);
      for (int64_t r = 0; r < live; ++r) _mm512_storeu_ps(yt + (rb + r) * ldt + tile * 16, _mm512_load_ps(facc[r]));
    }
  }
}

}  // namespace

bool request_permission() {
  // Linux hands out the 8 KiB of tile state only to processes that ask
  // (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, since 5.16).
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return ::syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

void gemm_i8(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivationTiles& a,
             float* yt, int64_t ldt) {
  const int64_t cols = w.cols, group = w.group_size, n_groups = w.n_groups();
  if (!handles(w)) {
    fail(ErrorKind::internal, "{}: group size {} has no AMX kernel", w.name, group);
  }
  const int kbytes = static_cast<int>(std::min<int64_t>(group, 64));
  const int64_t n_rows = r1 - r0, padded = (n_rows + 31) / 32 * 32;
  thread_local AlignedVector<uint8_t> wq;
  thread_local std::vector<float> sc, bi;
  wq.resize(static_cast<size_t>(padded * cols));
  sc.resize(static_cast<size_t>(padded * n_groups));
  bi.resize(static_cast<size_t>(padded * n_groups));
  avx512::unpack_panel(w, r0, n_rows, wq.data(), sc.data(), bi.data());
  // Rows past the panel are zero weights with zero scales: their sums are 0.
  std::fill(wq.begin() + n_rows * cols, wq.begin() + padded * cols, uint8_t{0});
  std::fill(sc.begin() + n_rows * n_groups, sc.begin() + padded * n_groups, 0.f);
  std::fill(bi.begin() + n_rows * n_groups, bi.begin() + padded * n_groups, 0.f);
  configure(kbytes);
  if (a.levels == 2) {
    gemm_i8_levels<2>(w, n_rows, padded, wq.data(), sc.data(), bi.data(), a, yt, ldt, kbytes);
  } else {
    gemm_i8_levels<1>(w, n_rows, padded, wq.data(), sc.data(), bi.data(), a, yt, ldt, kbytes);
  }
}

}  // namespace pensieve::kernels::amx
