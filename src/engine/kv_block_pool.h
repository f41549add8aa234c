// Bookkeeping for the paged KV cache: which blocks are free and how many
// holders each used block has. Pure CPU data structure; the storage itself
// lives in the model (KvStorage) and is indexed by the same block ids.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace pensieve {

class KvBlockPool {
 public:
  explicit KvBlockPool(int64_t n_blocks);

  int64_t n_total() const { return static_cast<int64_t>(refcount_.size()); }
  int64_t n_free() const { return static_cast<int64_t>(free_.size()); }

  // A free block with refcount 1, or nullopt when none is left.
  std::optional<int32_t> allocate();
  void retain(int32_t block);
  // Drops one reference; the block is free again at zero. Returns the new count.
  int release(int32_t block);
  int refcount(int32_t block) const;

 private:
  void check(int32_t block) const;
  std::vector<int32_t> refcount_;
  std::vector<int32_t> free_;  // used as a stack: recently freed blocks are reused first
};

// A sequence's view of the cache: its block table and how many positions hold K/V.
struct KvSequence {
  std::vector<int32_t> blocks;
  int64_t n_tokens = 0;
};

// Grows seq's block table to hold n_positions; false (and no change) if the pool is short.
bool reserve_blocks(KvBlockPool& pool, KvSequence& seq, int64_t n_positions);
// Releases every block of seq.
void release_blocks(KvBlockPool& pool, KvSequence& seq);

}  // namespace pensieve
