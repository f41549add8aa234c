#include "quant/weight_matrix.h"

#include <cstring>

#include "core/half.h"

namespace pensieve {

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::f32: return "f32";
    case WeightFormat::f16: return "f16";
    case WeightFormat::bf16: return "bf16";
    case WeightFormat::affine4: return "mlx-affine-4bit";
    case WeightFormat::affine8: return "mlx-affine-8bit";
  }
  return "?";
}

int64_t WeightMatrix::row_bytes() const {
  switch (format) {
    case WeightFormat::f32: return cols * 4;
    case WeightFormat::f16:
    case WeightFormat::bf16: return cols * 2;
    case WeightFormat::affine4: return cols / 2;
    case WeightFormat::affine8: return cols;
  }
  return 0;
}

int64_t WeightMatrix::total_bytes() const {
  int64_t n = row_bytes() * rows;
  if (quantized()) n += (biases != nullptr ? 2 : 1) * rows * n_groups() * (scale_type == ScaleType::f32 ? 4 : 2);
  return n;
}

namespace {
float load_scale(const void* base, ScaleType t, int64_t index) {
  switch (t) {
    case ScaleType::f32: {
      float f;
      std::memcpy(&f, static_cast<const uint8_t*>(base) + index * 4, 4);
      return f;
    }
    case ScaleType::f16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const uint8_t*>(base) + index * 2, 2);
      return f16_to_f32(h);
    }
    case ScaleType::bf16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const uint8_t*>(base) + index * 2, 2);
      return bf16_to_f32(h);
    }
  }
  return 0.f;
}
}  // namespace

float WeightMatrix::scale(int64_t r, int64_t g) const {
  return load_scale(scales, scale_type, r * n_groups() + g);
}
float WeightMatrix::bias(int64_t r, int64_t g) const {
  if (biases == nullptr) return bias_factor * scale(r, g);
  return load_scale(biases, scale_type, r * n_groups() + g);
}

void dequantize_row_ref(const WeightMatrix& w, int64_t r, float* out) {
  const uint8_t* row = w.data + r * w.row_bytes();
  switch (w.format) {
    case WeightFormat::f32:
      std::memcpy(out, row, w.cols * 4);
      return;
    case WeightFormat::f16:
    case WeightFormat::bf16:
      for (int64_t c = 0; c < w.cols; ++c) {
        uint16_t h;
        std::memcpy(&h, row + 2 * c, 2);
        out[c] = w.format == WeightFormat::f16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return;
    case WeightFormat::affine4:
    case WeightFormat::affine8: {
      const int bits = w.bits();
      const uint32_t mask = (1u << bits) - 1;
      const int per_word = 32 / bits;
      for (int64_t c = 0; c < w.cols; ++c) {
        uint32_t word;
        std::memcpy(&word, row + (c / per_word) * 4, 4);
        const uint32_t q = (word >> ((c % per_word) * bits)) & mask;
        const int64_t g = c / w.group_size;
        out[c] = w.scale(r, g) * static_cast<float>(q) + w.bias(r, g);
      }
      return;
    }
  }
}

}  // namespace pensieve
