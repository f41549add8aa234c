// AVX-512 versions of the per-token operations that cost more than a memory
// pass: silu needs an exp per element, which the scalar loop gets from libm
// one call at a time (2% of a prefill before this).
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math_avx512.h"

namespace pensieve::kernels::avx512 {

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff)
                                    : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 u = _mm512_maskz_loadu_ps(m, up + i);
    // exp_ps clamps its argument, so a very negative g gives g / inf = -0, as libm does.
    const __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(s, u));
  }
}

}  // namespace pensieve::kernels::avx512
