// Small per-token operations. They are O(tokens x hidden), a rounding error
// next to the matmuls, so most are plain loops the compiler vectorizes;
// silu_mul, which needs an exp per element, has an AVX-512 version.
#pragma once

#include <cstdint>

namespace pensieve::kernels {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]   (f32 throughout, as transformers does)
void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out);

// out[i] = silu(gate[i]) * up[i]
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
// Its scalar reference (libm exp).
void silu_mul_ref(const float* gate, const float* up, int64_t n, float* out);
namespace avx512 {
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
}

void add_inplace(float* y, const float* x, int64_t n);

// Rotates one head (rotate_half convention: pairs (i, i + rot_dim/2)) with
// cos/sin tables of rot_dim/2 entries; dims past rot_dim are left alone.
void rope_apply(float* head, const float* cos, const float* sin, int64_t rot_dim);

}  // namespace pensieve::kernels
