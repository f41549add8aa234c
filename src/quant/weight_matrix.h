// A 2-D weight (out_features x in_features, row-major) in the format it was
// stored in. Nothing is converted at load: kernels read the mapped bytes.
#pragma once

#include <cstdint>
#include <string>

namespace pensieve {

enum class WeightFormat { f32, f16, bf16, affine4, affine8 };  // affine = MLX affine quantization

// How the group scales and biases are stored: f32/f16/bf16 arrays
// ([row][group], MLX's), or a GGUF K-quant's own super-block scales, read
// as they are and decoded per group by the kernels (no biases array):
//  - k4 (Q4_K, Q5_K; groups of 32): per 8 groups, 20 bytes: f16 d, f16 dmin,
//    8 unsigned 6-bit scales, 8 unsigned 6-bit mins; scale = d·sc,
//    bias = -(dmin·min);
//  - k6 (Q6_K; groups of 16): per 16 groups, 18 bytes: f16 d, 16 int8
//    scales; scale = d·sc, bias = -32·scale.
enum class ScaleType { f32, f16, bf16, k4, k6 };
constexpr int kK4GroupsPerRecord = 8, kK4RecordBytes = 20;
constexpr int kK6GroupsPerRecord = 16, kK6RecordBytes = 18;
inline bool is_k_record(ScaleType t) { return t == ScaleType::k4 || t == ScaleType::k6; }

const char* weight_format_name(WeightFormat f);

struct WeightMatrix {
  WeightFormat format = WeightFormat::f32;
  int64_t rows = 0;  // out_features
  int64_t cols = 0;  // in_features
  const uint8_t* data = nullptr;
  // MLX affine: w[r][c] = scales[r][c/group] * q[r][c] + biases[r][c/group]
  const void* scales = nullptr;
  const void* biases = nullptr;
  ScaleType scale_type = ScaleType::bf16;
  // biases == nullptr: every group's bias is bias_factor · its scale (a GGUF
  // Q4_0's -8·d, Q8_0's -128·d, Q5_0's -16·d), so none is stored.
  float bias_factor = 0.f;
  int group_size = 0;
  std::string name;  // for error messages

  bool quantized() const { return format == WeightFormat::affine4 || format == WeightFormat::affine8; }
  int bits() const { return format == WeightFormat::affine4 ? 4 : 8; }
  int64_t n_groups() const { return group_size > 0 ? cols / group_size : 0; }
  // Bytes of one row of `data`.
  int64_t row_bytes() const;
  // Bytes the weight occupies (data + scales + biases).
  int64_t total_bytes() const;
  // Scale/bias of group g of row r as float.
  float scale(int64_t r, int64_t g) const;
  float bias(int64_t r, int64_t g) const;
  // Bytes of one row's scales (f32/f16/bf16 values, or k4/k6 records).
  int64_t scale_row_bytes() const;
};

// Row r's group scales and biases of a k4/k6 weight as f32 (sc[n_groups], bi[n_groups]).
void decode_k_scales(const WeightMatrix& w, int64_t r, float* sc, float* bi);

// Scalar reference: dequantizes/converts row r into out[cols].
void dequantize_row_ref(const WeightMatrix& w, int64_t r, float* out);

}  // namespace pensieve
