#include "kernels/cpu/ops.h"

#include <cmath>

#include "kernels/cpu/cpu_features.h"

namespace pensieve::kernels {

void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  // Blocked partial sums keep the f32 rounding error of long rows small.
  float partial[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) partial[j] += x[i + j] * x[i + j];
  float sum = 0.f;
  for (int j = 0; j < 8; ++j) sum += partial[j];
  for (; i < n; ++i) sum += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(sum / static_cast<float>(n) + eps);
  for (int64_t k = 0; k < n; ++k) out[k] = weight[k] * (x[k] * inv);
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  if (active_isa() == Isa::avx512) return avx512::silu_mul(gate, up, n, out);
  silu_mul_ref(gate, up, n, out);
}

void silu_mul_ref(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void rope_apply(float* head, const float* cos, const float* sin, int64_t rot_dim) {
  const int64_t half = rot_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = head[i], b = head[i + half];
    head[i] = a * cos[i] - b * sin[i];
    head[i + half] = b * cos[i] + a * sin[i];
  }
}

}  // namespace pensieve::kernels
