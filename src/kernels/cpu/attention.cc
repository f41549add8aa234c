#include "kernels/cpu/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "core/half.h"
#include "kernels/cpu/cpu_features.h"

namespace pensieve::kernels {
namespace {

inline const KvElem* k_at(const KvLayerView& kv, const int32_t* table, int64_t pos, int64_t h,
                          int64_t* stride) {
  *stride = kKvBlockTokens;
  const int64_t block = table[pos / kKvBlockTokens];
  return kv.k + block * kv.block_elems() + h * kv.head_dim * kKvBlockTokens +
         pos % kKvBlockTokens;
}

inline const KvElem* v_at(const KvLayerView& kv, const int32_t* table, int64_t pos, int64_t h) {
  const int64_t block = table[pos / kKvBlockTokens];
  return kv.v + block * kv.block_elems() + (h * kKvBlockTokens + pos % kKvBlockTokens) * kv.head_dim;
}

// Scalar online-softmax attention for one query head.
void attention_one_scalar(const float* q, const KvLayerView& kv, const int32_t* table,
                          int64_t kv_head, int64_t pos, int64_t first_pos, float scale,
                          float* out) {
  const int64_t hd = kv.head_dim;
  float m = -std::numeric_limits<float>::infinity(), l = 0.f;
  std::vector<float> acc(hd, 0.f);
  for (int64_t p = first_pos; p <= pos; ++p) {
    int64_t stride;
    const KvElem* k = k_at(kv, table, p, kv_head, &stride);
    float s = 0.f;
    for (int64_t d = 0; d < hd; ++d) s += q[d] * f16_to_f32(k[d * stride]);
    s *= scale;
    const float m_new = std::max(m, s);
    const float corr = std::exp(m - m_new);
    const float e = std::exp(s - m_new);
    l = l * corr + e;
    const KvElem* v = v_at(kv, table, p, kv_head);
    for (int64_t d = 0; d < hd; ++d) acc[d] = acc[d] * corr + e * f16_to_f32(v[d]);
    m = m_new;
  }
  for (int64_t d = 0; d < hd; ++d) out[d] = acc[d] / l;
}

}  // namespace

void kv_write(const KvLayerView& kv, const int32_t* block_table, int64_t pos, const float* k,
              const float* v) {
  const int64_t block = block_table[pos / kKvBlockTokens];
  const int64_t slot = pos % kKvBlockTokens;
  KvElem* kb = kv.k + block * kv.block_elems();
  KvElem* vb = kv.v + block * kv.block_elems();
  const int64_t n = kv.n_kv_heads * kv.head_dim;
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
    for (int64_t d = 0; d < kv.head_dim; ++d) {
      kb[(h * kv.head_dim + d) * kKvBlockTokens + slot] = kh[h * kv.head_dim + d];
    }
    convert(v + h * kv.head_dim, kv.head_dim, vb + (h * kKvBlockTokens + slot) * kv.head_dim);
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
          int64_t stride;
          const KvElem* k = k_at(kv, s.block_table, p, kvh, &stride);
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) dot += static_cast<double>(qh[d]) * f16_to_f32(k[d * stride]);
          scores[p - first] = dot * scale;
          mx = std::max(mx, scores[p - first]);
        }
        double sum = 0;
        for (double& x : scores) sum += (x = std::exp(x - mx));
        float* o = out + (s.q_row + i) * row + h * hd;
        for (int64_t d = 0; d < hd; ++d) {
          double acc = 0;
          for (int64_t p = first; p <= pos; ++p) {
            acc += scores[p - first] * f16_to_f32(v_at(kv, s.block_table, p, kvh)[d]);
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
