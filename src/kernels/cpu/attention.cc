#include "kernels/cpu/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/half.h"
#include "kernels/cpu/cpu_features.h"

namespace pensieve::kernels {
namespace {

// One value of a cached K or V (position t of the block, dimension d).
inline float k_value(const KvLayerView& kv, int64_t block, int64_t h, int64_t t, int64_t d) {
  const uint8_t* p = kv.k_head(block, h);
  if (kv.type == KvType::f16) return f16_to_f32(reinterpret_cast<const KvElem*>(p)[d * kKvBlockTokens + t]);
  const int64_t g = kv_q8_group(kv.head_dim);
  const float* sc = reinterpret_cast<const float*>(p + kv.head_dim * kKvBlockTokens);
  return static_cast<float>(static_cast<int8_t>(p[d * kKvBlockTokens + t])) * sc[(d / g) * kKvBlockTokens + t];
}

inline float v_value(const KvLayerView& kv, int64_t block, int64_t h, int64_t t, int64_t d) {
  const uint8_t* p = kv.v_head(block, h);
  const int64_t hd = kv.head_dim;
  if (kv.type == KvType::f16) return f16_to_f32(reinterpret_cast<const KvElem*>(p)[t * hd + d]);
  const int64_t g = kv_q8_group(hd);
  const float* sc = reinterpret_cast<const float*>(p + hd * kKvBlockTokens);
  return static_cast<float>(static_cast<int8_t>(p[t * hd + d])) * sc[t * (hd / g) + d / g];
}

inline float k_at(const KvLayerView& kv, const int32_t* table, int64_t pos, int64_t h, int64_t d) {
  return k_value(kv, table[pos / kKvBlockTokens], h, pos % kKvBlockTokens, d);
}
inline float v_at(const KvLayerView& kv, const int32_t* table, int64_t pos, int64_t h, int64_t d) {
  return v_value(kv, table[pos / kKvBlockTokens], h, pos % kKvBlockTokens, d);
}

// Scalar online-softmax attention for one query head.
void attention_one_scalar(const float* q, const KvLayerView& kv, const int32_t* table,
                          int64_t kv_head, int64_t pos, int64_t first_pos, float scale,
                          float* out) {
  const int64_t hd = kv.head_dim;
  float m = -std::numeric_limits<float>::infinity(), l = 0.f;
  std::vector<float> acc(hd, 0.f);
  for (int64_t p = first_pos; p <= pos; ++p) {
    float s = 0.f;
    for (int64_t d = 0; d < hd; ++d) s += q[d] * k_at(kv, table, p, kv_head, d);
    s *= scale;
    const float m_new = std::max(m, s);
    const float corr = std::exp(m - m_new);
    const float e = std::exp(s - m_new);
    l = l * corr + e;
    for (int64_t d = 0; d < hd; ++d) acc[d] = acc[d] * corr + e * v_at(kv, table, p, kv_head, d);
    m = m_new;
  }
  for (int64_t d = 0; d < hd; ++d) out[d] = acc[d] / l;
}

}  // namespace

void quantize_q8(const float* x, int64_t n, int64_t g, int8_t* q, float* scales) {
  for (int64_t i0 = 0; i0 < n; i0 += g) {
    float amax = 0.f;
    for (int64_t i = i0; i < i0 + g; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float scale = amax / 127.f;
    const float inv = amax > 0.f ? 127.f / amax : 0.f;
    for (int64_t i = i0; i < i0 + g; ++i) {
      const float r = std::nearbyint(x[i] * inv);  // |r| <= 127 up to rounding
      q[i] = static_cast<int8_t>(std::clamp(r, -127.f, 127.f));
    }
    scales[i0 / g] = scale;
  }
}

void widen_k(const KvLayerView& kv, int64_t block, int64_t h, float* out) {
  if (active_isa() != Isa::scalar) return avx2::widen_head(kv, block, h, false, out);
  for (int64_t d = 0; d < kv.head_dim; ++d)
    for (int64_t t = 0; t < kKvBlockTokens; ++t) out[d * kKvBlockTokens + t] = k_value(kv, block, h, t, d);
}

void widen_v(const KvLayerView& kv, int64_t block, int64_t h, float* out) {
  if (active_isa() != Isa::scalar) return avx2::widen_head(kv, block, h, true, out);
  for (int64_t t = 0; t < kKvBlockTokens; ++t)
    for (int64_t d = 0; d < kv.head_dim; ++d) out[t * kv.head_dim + d] = v_value(kv, block, h, t, d);
}

void kv_write(const KvLayerView& kv, const int32_t* block_table, int64_t pos, const float* k,
              const float* v) {
  const int64_t block = block_table[pos / kKvBlockTokens];
  const int64_t slot = pos % kKvBlockTokens;
  const int64_t hd = kv.head_dim;
  const int64_t n = kv.n_kv_heads * hd;
  if (kv.type == KvType::q8) {
    const int64_t g = kv_q8_group(hd), ng = hd / g;
    thread_local std::vector<int8_t> kq, vq;
    thread_local std::vector<float> ks, vs;
    kq.resize(static_cast<size_t>(n));
    vq.resize(static_cast<size_t>(n));
    ks.resize(static_cast<size_t>(n / g));
    vs.resize(static_cast<size_t>(n / g));
    quantize_q8(k, n, g, kq.data(), ks.data());
    quantize_q8(v, n, g, vq.data(), vs.data());
    for (int64_t h = 0; h < kv.n_kv_heads; ++h) {
      uint8_t* kb = kv.k_head(block, h);
      uint8_t* vb = kv.v_head(block, h);
      float* ksc = reinterpret_cast<float*>(kb + hd * kKvBlockTokens);
      float* vsc = reinterpret_cast<float*>(vb + hd * kKvBlockTokens);
      for (int64_t d = 0; d < hd; ++d) kb[d * kKvBlockTokens + slot] = static_cast<uint8_t>(kq[h * hd + d]);
      for (int64_t j = 0; j < ng; ++j) ksc[j * kKvBlockTokens + slot] = ks[h * ng + j];
      std::memcpy(vb + slot * hd, vq.data() + h * hd, static_cast<size_t>(hd));
      std::memcpy(vsc + slot * ng, vs.data() + h * ng, static_cast<size_t>(ng) * sizeof(float));
    }
    return;
  }
  const bool f16c = active_isa() != Isa::scalar;
  thread_local std::vector<KvElem> kh;
  kh.resize(static_cast<size_t>(n));
  auto convert = [&](const float* x, int64_t count, KvElem* out) {
    if (f16c) {
      avx2::to_half(x, count, out);
    } else {
      for (int64_t i = 0; i < count; ++i) out[i] = f32_to_f16(x[i]);
    }
  };
  convert(k, n, kh.data());
  for (int64_t h = 0; h < kv.n_kv_heads; ++h) {
    KvElem* kb = kv.k16(block, h);
    for (int64_t d = 0; d < hd; ++d) kb[d * kKvBlockTokens + slot] = kh[h * hd + d];
    convert(v + h * hd, hd, kv.v16(block, h) + slot * hd);
  }
}

void attention_ref(const float* q, const KvLayerView& kv, std::span<const AttentionSeq> seqs,
                   int64_t n_heads, float scale, int64_t sliding_window, float* out) {
  const int64_t hd = kv.head_dim, group = n_heads / kv.n_kv_heads, row = n_heads * hd;
  std::vector<double> scores;
  for (const AttentionSeq& s : seqs) {
    for (int64_t i = 0; i < s.n_q; ++i) {
      const int64_t pos = s.n_ctx - s.n_q + i;
      const int64_t first = sliding_window > 0 ? std::max<int64_t>(0, pos - sliding_window + 1) : 0;
      for (int64_t h = 0; h < n_heads; ++h) {
        const float* qh = q + (s.q_row + i) * row + h * hd;
        const int64_t kvh = h / group;
        scores.assign(pos - first + 1, 0.0);
        double mx = -1e300;
        for (int64_t p = first; p <= pos; ++p) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) dot += static_cast<double>(qh[d]) * k_at(kv, s.block_table, p, kvh, d);
          scores[p - first] = dot * scale;
          mx = std::max(mx, scores[p - first]);
        }
        double sum = 0;
        for (double& x : scores) sum += (x = std::exp(x - mx));
        float* o = out + (s.q_row + i) * row + h * hd;
        for (int64_t d = 0; d < hd; ++d) {
          double acc = 0;
          for (int64_t p = first; p <= pos; ++p) {
            acc += scores[p - first] * v_at(kv, s.block_table, p, kvh, d);
          }
          o[d] = static_cast<float>(acc / sum);
        }
      }
    }
  }
}

void attention(const float* q, const KvLayerView& kv, std::span<const AttentionSeq> seqs,
               int64_t n_heads, float scale, int64_t sliding_window, float* out,
               ThreadPool& pool) {
  const int64_t hd = kv.head_dim, group = n_heads / kv.n_kv_heads, row = n_heads * hd;
  if (active_isa() == Isa::avx512) {
    // Tiles of up to kQueryTile queries x one KV head's group of heads, so K/V
    // blocks are read once per tile. Items are dealt round-robin; later tiles
    // (longer contexts) come first so the long ones don't finish last.
    constexpr int64_t kQueryTile = 32;
    struct Tile {
      int32_t seq;
      int32_t kv_head;
      int64_t i0, n;
    };
    std::vector<Tile> tiles;
    for (size_t s = 0; s < seqs.size(); ++s) {
      for (int64_t i0 = 0; i0 < seqs[s].n_q; i0 += kQueryTile) {
        for (int64_t h = 0; h < kv.n_kv_heads; ++h) {
          tiles.push_back({static_cast<int32_t>(s), static_cast<int32_t>(h), i0,
                           std::min(kQueryTile, seqs[s].n_q - i0)});
        }
      }
    }
    std::stable_sort(tiles.begin(), tiles.end(), [&](const Tile& a, const Tile& b) {
      return seqs[a.seq].n_ctx - seqs[a.seq].n_q + a.i0 > seqs[b.seq].n_ctx - seqs[b.seq].n_q + b.i0;
    });
    const int64_t n_tiles = static_cast<int64_t>(tiles.size());
    std::atomic<int64_t> next{0};
    auto work = [&](int, int) {
      for (;;) {
        const int64_t idx = next.fetch_add(1, std::memory_order_relaxed);
        if (idx >= n_tiles) return;
        const Tile& t = tiles[idx];
        const AttentionSeq& s = seqs[t.seq];
        const int64_t pos0 = s.n_ctx - s.n_q + t.i0;
        avx512::attention_tile(q + (s.q_row + t.i0) * row, row, out + (s.q_row + t.i0) * row, row,
                               kv, s.block_table, t.kv_head, t.kv_head * group, group, pos0, t.n,
                               sliding_window, scale);
      }
    };
    if (n_tiles < 2) {
      work(0, 1);
    } else {
      pool.run(work);
    }
    return;
  }
  // One work item per (sequence, head, query); items are dealt round-robin so
  // that late queries (longer contexts) spread over all threads.
  struct Item {
    int32_t seq;
    int32_t head;
    int64_t i;
  };
  std::vector<Item> items;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int64_t i = 0; i < seqs[s].n_q; ++i) {
      for (int64_t h = 0; h < n_heads; ++h) {
        items.push_back({static_cast<int32_t>(s), static_cast<int32_t>(h), i});
      }
    }
  }
  const Isa isa = active_isa();
  const int64_t n_items = static_cast<int64_t>(items.size());
  auto work = [&](int t, int nt) {
    for (int64_t idx = t; idx < n_items; idx += nt) {
      const Item& it = items[idx];
      const AttentionSeq& s = seqs[it.seq];
      const int64_t pos = s.n_ctx - s.n_q + it.i;
      const int64_t first = sliding_window > 0 ? std::max<int64_t>(0, pos - sliding_window + 1) : 0;
      const float* qh = q + (s.q_row + it.i) * row + it.head * hd;
      float* o = out + (s.q_row + it.i) * row + it.head * hd;
      if (isa == Isa::avx2) {
        avx2::attention_one(qh, kv, s.block_table, it.head / group, pos, first, scale, o);
      } else {
        attention_one_scalar(qh, kv, s.block_table, it.head / group, pos, first, scale, o);
      }
    }
  };
  if (n_items < 4) {
    work(0, 1);
  } else {
    pool.run(work);
  }
}

}  // namespace pensieve::kernels
