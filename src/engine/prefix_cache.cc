#include "engine/prefix_cache.h"

#include <algorithm>

#include "core/error.h"
#include "core/kv_geometry.h"

namespace pensieve {
namespace {

constexpr int64_t kBlock = kKvBlockTokens;

// A 64-bit finaliser with full avalanche (every input bit flips about half
// of the output bits), so chained keys of different prefixes spread evenly.
uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

}  // namespace

uint64_t prefix_root(int64_t kv_variant) {
  return mix64(0x70656e7369657665ULL ^ static_cast<uint64_t>(kv_variant));
}

uint64_t chain_block_hash(uint64_t parent, std::span<const int32_t> tokens) {
  uint64_t h = mix64(parent + 0x9e3779b97f4a7c15ULL);
  for (int32_t t : tokens) h = mix64(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(t)) + 0x632be59bd9b4e019ULL));
  return mix64(h ^ static_cast<uint64_t>(tokens.size()));
}

int64_t match_prefix(KvBlockPool& pool, std::span<const int32_t> tokens, int64_t kv_variant,
                     PrefixChain& chain, KvSequence& seq, const MissedBlock& on_miss) {
  if (!seq.blocks.empty()) fail(ErrorKind::internal, "prefix lookup for a sequence that has blocks");
  chain.root = prefix_root(kv_variant);
  chain.hashes.clear();
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t max_blocks = n > 0 ? (n - 1) / kBlock : 0;
  for (int64_t i = 0; i < max_blocks; ++i) {
    BlockKey key;
    key.parent = chain.last();
    key.tokens = tokens.subspan(i * kBlock, kBlock);
    key.hash = chain_block_hash(key.parent, key.tokens);
    auto b = pool.acquire(key);
    if (!b && on_miss) b = on_miss(key);
    if (!b) break;
    seq.blocks.push_back(*b);
    chain.hashes.push_back(key.hash);
  }
  seq.n_tokens = static_cast<int64_t>(seq.blocks.size()) * kBlock;
  return seq.n_tokens;
}

int64_t publish_prefix(KvBlockPool& pool, std::span<const int32_t> tokens, int64_t n_computed,
                       const KvSequence& seq, PrefixChain& chain, bool publish,
                       int64_t count_below,
                       const std::function<void(int32_t, const BlockKey&)>& on_published) {
  const int64_t full = std::min<int64_t>(n_computed / kBlock, static_cast<int64_t>(seq.blocks.size()));
  int64_t created = 0;
  for (int64_t i = static_cast<int64_t>(chain.hashes.size()); i < full; ++i) {
    BlockKey key;
    key.parent = chain.last();
    key.tokens = tokens.subspan(i * kBlock, kBlock);
    key.hash = chain_block_hash(key.parent, key.tokens);
    chain.hashes.push_back(key.hash);
    if (publish && pool.publish(seq.blocks[i], key)) {
      created += std::clamp<int64_t>(count_below - i * kBlock, 0, kBlock);
      if (on_published) on_published(seq.blocks[i], key);
    }
  }
  return created;
}

}  // namespace pensieve
