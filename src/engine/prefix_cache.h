// Prefix cache over the paged KV blocks, by chained block hashes.
//
// A full block (kKvBlockTokens positions) is named by the hash of its tokens
// chained with its parent block's hash, so one 64-bit key stands for the
// whole prefix up to the block's end; the root of the chain is salted with
// the model's KV variant (Phi-3 longrope computes K with other factors once
// a sequence passes original_max_position_embeddings, so such blocks must
// not meet short sequences). Equal keys mean equal K/V: attention is causal
// and positions are absolute, so a block's contents depend only on the
// tokens before and in it.
//
// The index itself lives in KvBlockPool (publish / acquire, LRU eviction of
// unused published blocks); these functions walk a token sequence over it.
// Only full blocks are shared, and only blocks whose positions are all
// computed are published, so no sequence ever writes into a shared block.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "engine/kv_block_pool.h"

namespace pensieve {

uint64_t prefix_root(int64_t kv_variant);
uint64_t chain_block_hash(uint64_t parent, std::span<const int32_t> tokens);

// One sequence's walk over the cache: the hash of each of its full blocks so far.
struct PrefixChain {
  uint64_t root = 0;
  std::vector<uint64_t> hashes;
  uint64_t last() const { return hashes.empty() ? root : hashes.back(); }
};

// For a sequence with no blocks yet: acquires the longest run of published
// blocks that starts `tokens`, but never the block holding the last token,
// which the caller must compute to get logits. Appends them to seq.blocks,
// records their hashes in chain (root set from kv_variant) and returns how
// many tokens they cover (a multiple of kKvBlockTokens). A block not in the
// pool is asked of `on_miss` (the disk tier), which returns a block it
// filled and published under the key (retained once), or nothing: the walk
// stops there.
using MissedBlock = std::function<std::optional<int32_t>(const BlockKey&)>;
int64_t match_prefix(KvBlockPool& pool, std::span<const int32_t> tokens, int64_t kv_variant,
                     PrefixChain& chain, KvSequence& seq, const MissedBlock& on_miss = {});

// Hashes every full block of tokens[0, n_computed) that chain has not seen
// and publishes it (when `publish` is true), telling `on_published` of each
// block it published. Returns how many tokens below `count_below` went into
// blocks this call published (cache creation).
int64_t publish_prefix(KvBlockPool& pool, std::span<const int32_t> tokens, int64_t n_computed,
                       const KvSequence& seq, PrefixChain& chain, bool publish,
                       int64_t count_below,
                       const std::function<void(int32_t, const BlockKey&)>& on_published = {});

}  // namespace pensieve
