#include "engine/kv_block_pool.h"

#include <algorithm>

#include "core/error.h"
#include "core/kv_geometry.h"

namespace pensieve {

KvBlockPool::KvBlockPool(int64_t n_blocks) : refcount_(n_blocks, 0), entries_(n_blocks) {
  free_.reserve(n_blocks);
  for (int64_t i = n_blocks - 1; i >= 0; --i) free_.push_back(static_cast<int32_t>(i));
}

void KvBlockPool::check(int32_t block) const {
  if (block < 0 || block >= n_total()) fail(ErrorKind::internal, "KV block {} out of range", block);
}

void KvBlockPool::lru_push_back(int32_t b) {
  Entry& e = entries_[b];
  e.prev = lru_tail_;
  e.next = kNone;
  if (lru_tail_ != kNone) entries_[lru_tail_].next = b;
  else lru_head_ = b;
  lru_tail_ = b;
  ++n_cached_idle_;
}

void KvBlockPool::lru_remove(int32_t b) {
  Entry& e = entries_[b];
  if (e.prev != kNone) entries_[e.prev].next = e.next;
  else lru_head_ = e.next;
  if (e.next != kNone) entries_[e.next].prev = e.prev;
  else lru_tail_ = e.prev;
  e.prev = e.next = kNone;
  --n_cached_idle_;
}

void KvBlockPool::unpublish(int32_t b) {
  Entry& e = entries_[b];
  if (!e.published) return;
  index_.erase(e.hash);
  e.published = false;
  e.tokens.clear();
}

std::optional<int32_t> KvBlockPool::allocate() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (lru_head_ != kNone) {
    b = lru_head_;
    lru_remove(b);
    unpublish(b);
    ++n_evictions_;
  } else {
    return std::nullopt;
  }
  refcount_[b] = 1;
  return b;
}

void KvBlockPool::retain(int32_t block) {
  check(block);
  if (refcount_[block] <= 0) fail(ErrorKind::internal, "retain of unused KV block {}", block);
  ++refcount_[block];
}

int KvBlockPool::release(int32_t block) {
  check(block);
  if (refcount_[block] <= 0) fail(ErrorKind::internal, "double release of KV block {}", block);
  if (--refcount_[block] == 0) {
    if (entries_[block].published) lru_push_back(block);
    else free_.push_back(block);
  }
  return refcount_[block];
}

int KvBlockPool::refcount(int32_t block) const {
  check(block);
  return refcount_[block];
}

bool KvBlockPool::publish(int32_t block, const BlockKey& key) {
  check(block);
  if (refcount_[block] <= 0) fail(ErrorKind::internal, "publish of unused KV block {}", block);
  Entry& e = entries_[block];
  if (e.published || index_.count(key.hash) != 0) return false;
  index_.emplace(key.hash, block);
  e.published = true;
  e.hash = key.hash;
  e.parent = key.parent;
  e.tokens.assign(key.tokens.begin(), key.tokens.end());
  return true;
}

std::optional<int32_t> KvBlockPool::acquire(const BlockKey& key) {
  auto it = index_.find(key.hash);
  if (it == index_.end()) return std::nullopt;
  const int32_t b = it->second;
  const Entry& e = entries_[b];
  if (e.parent != key.parent ||
      !std::equal(e.tokens.begin(), e.tokens.end(), key.tokens.begin(), key.tokens.end())) {
    return std::nullopt;  // a hash collision: not this prefix
  }
  if (refcount_[b] == 0) lru_remove(b);
  ++refcount_[b];
  return b;
}

bool KvBlockPool::published(int32_t block) const {
  check(block);
  return entries_[block].published;
}

void KvBlockPool::clear_cache() {
  while (lru_head_ != kNone) {
    const int32_t b = lru_head_;
    lru_remove(b);
    unpublish(b);
    free_.push_back(b);
  }
  for (int32_t b = 0; b < static_cast<int32_t>(entries_.size()); ++b) unpublish(b);
}

bool reserve_blocks(KvBlockPool& pool, KvSequence& seq, int64_t n_positions) {
  const int64_t need = (n_positions + kKvBlockTokens - 1) / kKvBlockTokens;
  const int64_t have = static_cast<int64_t>(seq.blocks.size());
  if (need <= have) return true;
  if (need - have > pool.n_available()) return false;
  for (int64_t i = have; i < need; ++i) seq.blocks.push_back(*pool.allocate());
  return true;
}

void release_blocks(KvBlockPool& pool, KvSequence& seq) {
  for (auto it = seq.blocks.rbegin(); it != seq.blocks.rend(); ++it) pool.release(*it);
  seq.blocks.clear();
  seq.n_tokens = 0;
}

}  // namespace pensieve
