#include "engine/kv_block_pool.h"

#include "core/error.h"
#include "kernels/cpu/attention.h"

namespace pensieve {

KvBlockPool::KvBlockPool(int64_t n_blocks) : refcount_(n_blocks, 0) {
  free_.reserve(n_blocks);
  for (int64_t i = n_blocks - 1; i >= 0; --i) free_.push_back(static_cast<int32_t>(i));
}

void KvBlockPool::check(int32_t block) const {
  if (block < 0 || block >= n_total()) fail(ErrorKind::internal, "KV block {} out of range", block);
}

std::optional<int32_t> KvBlockPool::allocate() {
  if (free_.empty()) return std::nullopt;
  const int32_t b = free_.back();
  free_.pop_back();
  refcount_[b] = 1;
  return b;
}

void KvBlockPool::retain(int32_t block) {
  check(block);
  if (refcount_[block] <= 0) fail(ErrorKind::internal, "retain of free KV block {}", block);
  ++refcount_[block];
}

int KvBlockPool::release(int32_t block) {
  check(block);
  if (refcount_[block] <= 0) fail(ErrorKind::internal, "double release of KV block {}", block);
  if (--refcount_[block] == 0) free_.push_back(block);
  return refcount_[block];
}

int KvBlockPool::refcount(int32_t block) const {
  check(block);
  return refcount_[block];
}

bool reserve_blocks(KvBlockPool& pool, KvSequence& seq, int64_t n_positions) {
  const int64_t need = (n_positions + kernels::kKvBlockTokens - 1) / kernels::kKvBlockTokens;
  const int64_t have = static_cast<int64_t>(seq.blocks.size());
  if (need <= have) return true;
  if (need - have > pool.n_free()) return false;
  for (int64_t i = have; i < need; ++i) seq.blocks.push_back(*pool.allocate());
  return true;
}

void release_blocks(KvBlockPool& pool, KvSequence& seq) {
  for (int32_t b : seq.blocks) pool.release(b);
  seq.blocks.clear();
  seq.n_tokens = 0;
}

}  // namespace pensieve
