#include "format/ggml_types.h"

#include <cstring>

#include "core/error.h"
#include "core/half.h"

namespace pensieve {
namespace {

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

}  // namespace

std::optional<GgmlType> ggml_type_from(uint32_t v) {
  switch (v) {
    case 0: case 1: case 2: case 3: case 6: case 7: case 8: case 12: case 13: case 14: case 30:
      return static_cast<GgmlType>(v);
    default: return std::nullopt;
  }
}

const char* ggml_type_name(GgmlType type) { return ggml_type_name_of(static_cast<uint32_t>(type)); }

const char* ggml_type_name_of(uint32_t v) {
  // ggml.h's numbering (4 and 5 were Q4_2/Q4_3, long removed).
  static const char* const names[] = {
      "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
      "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
      "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
      "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8",
      "IQ4_NL_8_8", "MXFP4"};
  return v < sizeof names / sizeof names[0] ? names[v] : "unknown";
}

int64_t ggml_block_elements(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16: return 1;
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q8_0: return 32;
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K: return 256;
  }
  fail(ErrorKind::internal, "ggml type {}", static_cast<uint32_t>(type));
}

size_t ggml_block_bytes(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return 4;
    case GgmlType::F16:
    case GgmlType::BF16: return 2;
    case GgmlType::Q4_0: return 18;   // f16 d, 16 bytes of nibbles
    case GgmlType::Q4_1: return 20;   // f16 d, f16 m, 16 bytes
    case GgmlType::Q5_0: return 22;   // f16 d, 4 bytes of fifth bits, 16 bytes
    case GgmlType::Q5_1: return 24;   // f16 d, f16 m, 4 + 16 bytes
    case GgmlType::Q8_0: return 34;   // f16 d, 32 int8
    case GgmlType::Q4_K: return 144;  // f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes
    case GgmlType::Q5_K: return 176;  // as Q4_K and 32 bytes of fifth bits
    case GgmlType::Q6_K: return 210;  // 128 bytes low nibbles, 64 high pairs, 16 int8 scales, f16 d
  }
  fail(ErrorKind::internal, "ggml type {}", static_cast<uint32_t>(type));
}

size_t ggml_row_bytes(GgmlType type, int64_t n) {
  const int64_t block = ggml_block_elements(type);
  if (n <= 0 || n % block != 0)
    fail("GGUF: a row of {} elements is not whole blocks of {} ({})", n, block, ggml_type_name(type));
  return static_cast<size_t>(n / block) * ggml_block_bytes(type);
}

void ggml_k_scale_min(const uint8_t* q, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void ggml_dequantize_row(GgmlType type, const uint8_t* p, int64_t n, float* y) {
  const int64_t nb = n / ggml_block_elements(type);
  const size_t bb = ggml_block_bytes(type);
  switch (type) {
    case GgmlType::F32: std::memcpy(y, p, static_cast<size_t>(n) * 4); return;
    case GgmlType::F16:
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        y[i] = type == GgmlType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return;
    default: break;
  }
  const int64_t per = ggml_block_elements(type);
  const int group = type == GgmlType::Q6_K ? 16 : 32;
  // Codes with an offset (value = d·(q - offset)): ggml computes them so.
  const int offset = type == GgmlType::Q4_0 ? 8 : type == GgmlType::Q5_0 ? 16 : type == GgmlType::Q8_0 ? 128
                     : type == GgmlType::Q6_K ? 32 : 0;
  uint8_t q[256];
  float s[16], bi[16];
  for (int64_t b = 0; b < nb; ++b, p += bb, y += per) {
    ggml_block_codes(type, p, q, s, bi);
    for (int64_t j = 0; j < per; ++j) {
      const float sc = s[j / group];
      y[j] = offset != 0 ? sc * static_cast<float>(static_cast<int>(q[j]) - offset)
                         : sc * static_cast<float>(q[j]) + bi[j / group];
    }
  }
}

void ggml_block_codes(GgmlType t, const uint8_t* p, uint8_t* q, float* s, float* b) {
  switch (t) {
    case GgmlType::Q4_0:
    case GgmlType::Q4_1: {
      const bool one = t == GgmlType::Q4_1;
      const float d = f16_at(p);
      s[0] = d;
      b[0] = one ? f16_at(p + 2) : -8.f * d;
      const uint8_t* qs = p + (one ? 4 : 2);
      for (int j = 0; j < 16; ++j) {
        q[j] = qs[j] & 0xF;
        q[j + 16] = qs[j] >> 4;
      }
      return;
    }
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      const bool one = t == GgmlType::Q5_1;
      const float d = f16_at(p);
      s[0] = d;
      b[0] = one ? f16_at(p + 2) : -16.f * d;
      uint32_t qh;
      std::memcpy(&qh, p + (one ? 4 : 2), 4);
      const uint8_t* qs = p + (one ? 8 : 6);
      for (int j = 0; j < 16; ++j) {
        q[j] = static_cast<uint8_t>((qs[j] & 0xF) | (((qh >> j) & 1u) << 4));
        q[j + 16] = static_cast<uint8_t>((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
      }
      return;
    }
    case GgmlType::Q8_0: {
      const float d = f16_at(p);
      s[0] = d;
      b[0] = -128.f * d;
      for (int j = 0; j < 32; ++j) q[j] = static_cast<uint8_t>(static_cast<int8_t>(p[2 + j]) + 128);
      return;
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool five = t == GgmlType::Q5_K;
      const float d = f16_at(p), dmin = f16_at(p + 2);
      const uint8_t* scales = p + 4;
      const uint8_t* qh = p + 16;
      const uint8_t* qs = p + (five ? 48 : 16);
      for (int sb = 0; sb < 8; ++sb) {
        int sc, mn;
        ggml_k_scale_min(scales, sb, &sc, &mn);
        s[sb] = d * static_cast<float>(sc);      // f16 times 6 bits: exact in f32
        b[sb] = -(dmin * static_cast<float>(mn));
      }
      for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) {
          const int h1 = five && (qh[l] >> (2 * c)) & 1 ? 16 : 0;
          const int h2 = five && (qh[l] >> (2 * c + 1)) & 1 ? 16 : 0;
          q[64 * c + l] = static_cast<uint8_t>((qs[32 * c + l] & 0xF) + h1);
          q[64 * c + 32 + l] = static_cast<uint8_t>((qs[32 * c + l] >> 4) + h2);
        }
      }
      return;
    }
    case GgmlType::Q6_K: {
      const uint8_t* ql = p;
      const uint8_t* qh = p + 128;
      const int8_t* sc = reinterpret_cast<const int8_t*>(p + 192);
      const float d = f16_at(p + 208);
      for (int g = 0; g < 16; ++g) {
        s[g] = d * static_cast<float>(sc[g]);  // f16 times 8 bits: exact in f32
        b[g] = -32.f * s[g];
      }
      for (int half = 0; half < 2; ++half) {
        const uint8_t* l0 = ql + 64 * half;
        const uint8_t* h0 = qh + 32 * half;
        uint8_t* o = q + 128 * half;
        for (int l = 0; l < 32; ++l) {
          o[l] = static_cast<uint8_t>((l0[l] & 0xF) | (((h0[l] >> 0) & 3) << 4));
          o[l + 32] = static_cast<uint8_t>((l0[l + 32] & 0xF) | (((h0[l] >> 2) & 3) << 4));
          o[l + 64] = static_cast<uint8_t>((l0[l] >> 4) | (((h0[l] >> 4) & 3) << 4));
          o[l + 96] = static_cast<uint8_t>((l0[l + 32] >> 4) | (((h0[l] >> 6) & 3) << 4));
        }
      }
      return;
    }
    default: fail(ErrorKind::internal, "{} is not a block type", ggml_type_name(t));
  }
}

}  // namespace pensieve
