// ggml's tensor types as GGUF files store them: block sizes, bytes, and the
// scalar dequantization of each (the reference the loader's repacking and
// the tests are checked against).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace pensieve {

// ggml's type numbers (the ones GGUF files store). Only the types a GGUF
// model of the supported families holds: what Q4_0, Q4_K_M, Q5_K_M, Q6_K
// and Q8_0 files are made of.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
  Q4_K = 12, Q5_K = 13, Q6_K = 14, BF16 = 30,
};

// The type for a stored number, or nullopt for one this build cannot read.
std::optional<GgmlType> ggml_type_from(uint32_t v);
const char* ggml_type_name(GgmlType type);  // "Q4_K"
// The name of any stored type number (ggml's names for the ones this build
// does not read, e.g. "IQ2_XXS"), for error messages.
const char* ggml_type_name_of(uint32_t v);

int64_t ggml_block_elements(GgmlType type);  // 1, 32 or 256
size_t ggml_block_bytes(GgmlType type);
// Bytes of one row of n elements (n a multiple of the type's block; throws otherwise).
size_t ggml_row_bytes(GgmlType type, int64_t n);

// Row data (n elements of `type`, n whole blocks) to f32, as ggml computes
// each value: f16 scales widened to f32, then the block's formula in f32.
void ggml_dequantize_row(GgmlType type, const uint8_t* data, int64_t n, float* out);

// One block of a quantized type (ggml_block_elements values) as unsigned
// codes q[] and the scale s[g] and bias b[g] of each group of 32 (16 for
// Q6_K), value = s·q + b exactly (K-quant scales are f16 times 6- or 8-bit
// integers, exact in f32): what the GGUF loader repacks.
void ggml_block_codes(GgmlType type, const uint8_t* block, uint8_t* q, float* s, float* b);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block's
// 12 packed scale bytes.
void ggml_k_scale_min(const uint8_t* scales12, int j, int* scale, int* min);

}  // namespace pensieve
