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
  if (quantized()) n += (biases != nullptr ? 2 : 1) * rows * scale_row_bytes();
  return n;
}

int64_t WeightMatrix::scale_row_bytes() const {
  switch (scale_type) {
    case ScaleType::f32: return n_groups() * 4;
    case ScaleType::f16:
    case ScaleType::bf16: return n_groups() * 2;
    case ScaleType::k4: return n_groups() / kK4GroupsPerRecord * kK4RecordBytes;
    case ScaleType::k6: return n_groups() / kK6GroupsPerRecord * kK6RecordBytes;
  }
  return 0;
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
    default: return 0.f;  // k4/k6: records, read below
  }
}

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Group g's record of row r (k4/k6) and g's index inside it.
const uint8_t* k_record(const WeightMatrix& w, int64_t r, int64_t g, int64_t* in) {
  const int per = w.scale_type == ScaleType::k4 ? kK4GroupsPerRecord : kK6GroupsPerRecord;
  *in = g % per;
  return static_cast<const uint8_t*>(w.scales) + r * w.scale_row_bytes() +
         (g / per) * (w.scale_type == ScaleType::k4 ? kK4RecordBytes : kK6RecordBytes);
}
}  // namespace

void decode_k_scales(const WeightMatrix& w, int64_t r, float* sc, float* bi) {
  const int64_t n = w.n_groups();
  const uint8_t* rec = static_cast<const uint8_t*>(w.scales) + r * w.scale_row_bytes();
  if (w.scale_type == ScaleType::k4) {
    for (int64_t g0 = 0; g0 < n; g0 += kK4GroupsPerRecord, rec += kK4RecordBytes) {
      const float d = half_at(rec), dmin = half_at(rec + 2);
      for (int i = 0; i < kK4GroupsPerRecord; ++i) {
        sc[g0 + i] = d * static_cast<float>(rec[4 + i]);
        bi[g0 + i] = -(dmin * static_cast<float>(rec[12 + i]));
      }
    }
  } else {
    for (int64_t g0 = 0; g0 < n; g0 += kK6GroupsPerRecord, rec += kK6RecordBytes) {
      const float d = half_at(rec);
      for (int i = 0; i < kK6GroupsPerRecord; ++i) {
        sc[g0 + i] = d * static_cast<float>(static_cast<int8_t>(rec[2 + i]));
        bi[g0 + i] = -32.f * sc[g0 + i];
      }
    }
  }
}

float WeightMatrix::scale(int64_t r, int64_t g) const {
  if (is_k_record(scale_type)) {
    int64_t i;
    const uint8_t* rec = k_record(*this, r, g, &i);
    return scale_type == ScaleType::k4 ? half_at(rec) * static_cast<float>(rec[4 + i])
                                       : half_at(rec) * static_cast<float>(static_cast<int8_t>(rec[2 + i]));
  }
  return load_scale(scales, scale_type, r * n_groups() + g);
}
float WeightMatrix::bias(int64_t r, int64_t g) const {
  if (scale_type == ScaleType::k4) {
    int64_t i;
    const uint8_t* rec = k_record(*this, r, g, &i);
    return -(half_at(rec + 2) * static_cast<float>(rec[12 + i]));
  }
  if (scale_type == ScaleType::k6) return -32.f * scale(r, g);
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
