// The KV block pool and the prefix cache index, without any model.
#include "engine/kv_block_pool.h"

#include <gtest/gtest.h>

#include <numeric>

#include "core/error.h"
#include "engine/prefix_cache.h"
#include "kernels/cpu/attention.h"

namespace pensieve {
namespace {

constexpr int64_t B = kKvBlockTokens;

std::vector<int32_t> tokens_from(int32_t start, int64_t n) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), start);
  return t;
}

BlockKey key_for(const std::vector<int32_t>& toks, uint64_t parent = 0) {
  BlockKey k;
  k.parent = parent;
  k.tokens = toks;
  k.hash = chain_block_hash(parent, toks);
  return k;
}

TEST(KvBlockPool, RefcountsAndFreeList) {
  KvBlockPool pool(4);
  EXPECT_EQ(pool.n_free(), 4);
  const int32_t a = *pool.allocate();
  EXPECT_EQ(pool.refcount(a), 1);
  pool.retain(a);
  EXPECT_EQ(pool.refcount(a), 2);
  EXPECT_EQ(pool.n_used(), 1);
  EXPECT_EQ(pool.release(a), 1);
  EXPECT_EQ(pool.release(a), 0);
  EXPECT_EQ(pool.n_free(), 4);  // unpublished: straight back to free
  EXPECT_EQ(pool.n_cached(), 0);
  EXPECT_THROW(pool.release(a), Error);
  EXPECT_THROW(pool.retain(a), Error);
  EXPECT_THROW(pool.refcount(4), Error);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(pool.allocate());
  EXPECT_FALSE(pool.allocate());
}

TEST(KvBlockPool, PublishedBlockIsCachedThenReacquired) {
  KvBlockPool pool(3);
  const auto toks = tokens_from(100, B);
  const int32_t a = *pool.allocate();
  ASSERT_TRUE(pool.publish(a, key_for(toks)));
  EXPECT_TRUE(pool.published(a));
  // Shared while both hold it.
  auto again = pool.acquire(key_for(toks));
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, a);
  EXPECT_EQ(pool.refcount(a), 2);
  pool.release(a);
  pool.release(a);
  EXPECT_EQ(pool.n_cached(), 1);
  EXPECT_EQ(pool.n_free(), 2);
  EXPECT_EQ(pool.n_available(), 3);
  // A cached block comes back used, and is no longer evictable.
  ASSERT_EQ(pool.acquire(key_for(toks)).value_or(-1), a);
  EXPECT_EQ(pool.n_cached(), 0);
  EXPECT_EQ(pool.refcount(a), 1);
  // Same hash, other tokens or other parent: not a hit.
  BlockKey wrong = key_for(toks);
  auto other = tokens_from(7, B);
  wrong.tokens = other;
  EXPECT_FALSE(pool.acquire(wrong));
  wrong = key_for(toks);
  wrong.parent = 99;
  EXPECT_FALSE(pool.acquire(wrong));
  EXPECT_EQ(pool.refcount(a), 1);
}

TEST(KvBlockPool, DuplicateKeyIsNotPublishedTwice) {
  KvBlockPool pool(3);
  const auto toks = tokens_from(0, B);
  const int32_t a = *pool.allocate(), b = *pool.allocate();
  EXPECT_TRUE(pool.publish(a, key_for(toks)));
  EXPECT_FALSE(pool.publish(b, key_for(toks)));
  EXPECT_FALSE(pool.publish(a, key_for(tokens_from(5, B))));  // already published
  EXPECT_FALSE(pool.published(b));
  pool.release(b);
  EXPECT_EQ(pool.n_free(), 2);  // b had no key: free, not cached
  pool.release(a);
  EXPECT_EQ(pool.n_cached(), 1);
  EXPECT_THROW(pool.publish(b, key_for(tokens_from(9, B))), Error);  // unused block
}

TEST(KvBlockPool, EvictsLeastRecentlyUsedAndNeverAUsedBlock) {
  KvBlockPool pool(4);
  std::vector<std::vector<int32_t>> toks;
  std::vector<int32_t> blocks;
  for (int i = 0; i < 4; ++i) {
    toks.push_back(tokens_from(1000 * i, B));
    blocks.push_back(*pool.allocate());
    ASSERT_TRUE(pool.publish(blocks[i], key_for(toks[i])));
  }
  // Released in the order 2, 0, 3; block 1 stays in use.
  pool.release(blocks[2]);
  pool.release(blocks[0]);
  pool.release(blocks[3]);
  EXPECT_EQ(pool.n_cached(), 3);
  EXPECT_EQ(pool.n_free(), 0);
  // Touching 2 (acquire + release) makes it the most recently used.
  ASSERT_TRUE(pool.acquire(key_for(toks[2])));
  pool.release(blocks[2]);
  // Eviction order: 0, 3, 2.
  EXPECT_EQ(pool.allocate().value_or(-1), blocks[0]);
  EXPECT_FALSE(pool.acquire(key_for(toks[0])));  // its key is gone
  EXPECT_EQ(pool.allocate().value_or(-1), blocks[3]);
  EXPECT_EQ(pool.allocate().value_or(-1), blocks[2]);
  EXPECT_EQ(pool.n_evictions(), 3);
  // Only block 1 is left and it is in use: nothing to hand out.
  EXPECT_FALSE(pool.allocate());
  EXPECT_EQ(pool.refcount(blocks[1]), 1);
  EXPECT_TRUE(pool.acquire(key_for(toks[1])));
}

TEST(KvBlockPool, ReleaseBlocksEvictsTheTailOfAChainFirst) {
  KvBlockPool pool(3);
  const auto toks = tokens_from(0, 3 * B);
  KvSequence seq;
  ASSERT_TRUE(reserve_blocks(pool, seq, 3 * B));
  PrefixChain chain;
  chain.root = prefix_root(0);
  EXPECT_EQ(publish_prefix(pool, toks, 3 * B, seq, chain, true, 3 * B), 3 * B);
  const auto blocks = seq.blocks;
  release_blocks(pool, seq);
  EXPECT_TRUE(seq.blocks.empty());
  EXPECT_EQ(pool.n_cached(), 3);
  EXPECT_EQ(pool.allocate().value_or(-1), blocks[2]);
  // The rest of the chain is still found.
  KvSequence again;
  PrefixChain chain2;
  EXPECT_EQ(match_prefix(pool, toks, 0, chain2, again), 2 * B);
  EXPECT_EQ(again.blocks, std::vector<int32_t>(blocks.begin(), blocks.begin() + 2));
}

TEST(PrefixCache, MatchLeavesTheLastTokenToCompute) {
  KvBlockPool pool(8);
  const auto toks = tokens_from(50, 2 * B);  // exactly two blocks
  KvSequence seq;
  ASSERT_TRUE(reserve_blocks(pool, seq, 2 * B));
  PrefixChain chain;
  chain.root = prefix_root(0);
  EXPECT_EQ(publish_prefix(pool, toks, 2 * B, seq, chain, true, 2 * B), 2 * B);
  // Same 32 tokens: only the first block, the last token must be computed.
  KvSequence a;
  PrefixChain ca;
  EXPECT_EQ(match_prefix(pool, toks, 0, ca, a), B);
  EXPECT_EQ(a.blocks.front(), seq.blocks.front());
  EXPECT_EQ(pool.refcount(seq.blocks[0]), 2);
  // One more token: both blocks.
  auto longer = toks;
  longer.push_back(7);
  KvSequence b;
  PrefixChain cb;
  EXPECT_EQ(match_prefix(pool, longer, 0, cb, b), 2 * B);
  EXPECT_EQ(b.blocks, seq.blocks);
  EXPECT_EQ(cb.hashes, chain.hashes);
  // A different first token changes every later key, even with equal later blocks.
  auto changed = longer;
  changed[0] = 9999;
  KvSequence c;
  PrefixChain cc;
  EXPECT_EQ(match_prefix(pool, changed, 0, cc, c), 0);
  // Another KV variant (e.g. long rope factors) never matches.
  KvSequence d;
  PrefixChain cd;
  EXPECT_EQ(match_prefix(pool, longer, 1, cd, d), 0);
  // Shorter than one block plus one token: nothing to match.
  KvSequence e;
  PrefixChain ce;
  EXPECT_EQ(match_prefix(pool, std::span<const int32_t>(toks).first(B), 0, ce, e), 0);
  EXPECT_THROW(match_prefix(pool, longer, 0, cb, b), Error);  // b already has blocks
}

TEST(PrefixCache, PublishCountsOnlyNewBlocksBelowTheLimit) {
  KvBlockPool pool(8);
  const auto toks = tokens_from(0, 3 * B + 5);
  KvSequence seq;
  ASSERT_TRUE(reserve_blocks(pool, seq, 3 * B + 5));
  PrefixChain chain;
  chain.root = prefix_root(0);
  // 20 tokens computed: one full block; the prompt ends at 40.
  EXPECT_EQ(publish_prefix(pool, toks, B + 4, seq, chain, true, 40), B);
  EXPECT_EQ(chain.hashes.size(), 1u);
  // Up to 3 full blocks: block 1 fully below 40, block 2 has 40-32 = 8 prompt tokens.
  EXPECT_EQ(publish_prefix(pool, toks, 3 * B + 5, seq, chain, true, 40), B + 8);
  EXPECT_EQ(publish_prefix(pool, toks, 3 * B + 5, seq, chain, true, 40), 0);  // nothing new
  EXPECT_EQ(pool.n_published(), 3);
  // publish = false: hashes advance, nothing becomes findable.
  KvBlockPool pool2(8);
  KvSequence seq2;
  ASSERT_TRUE(reserve_blocks(pool2, seq2, 2 * B));
  PrefixChain chain2;
  EXPECT_EQ(publish_prefix(pool2, toks, 2 * B, seq2, chain2, false, 2 * B), 0);
  EXPECT_EQ(chain2.hashes.size(), 2u);
  EXPECT_EQ(pool2.n_published(), 0);
}

TEST(KvBlockPool, ClearCacheFreesCachedBlocksOnly) {
  KvBlockPool pool(3);
  const int32_t a = *pool.allocate(), b = *pool.allocate();
  pool.publish(a, key_for(tokens_from(0, B)));
  pool.publish(b, key_for(tokens_from(B, B)));
  pool.release(a);
  pool.clear_cache();
  EXPECT_EQ(pool.n_cached(), 0);
  EXPECT_EQ(pool.n_free(), 2);
  EXPECT_FALSE(pool.published(b));
  EXPECT_EQ(pool.refcount(b), 1);
  pool.release(b);
  EXPECT_EQ(pool.n_free(), 3);
}

}  // namespace
}  // namespace pensieve
