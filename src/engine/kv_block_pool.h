// Bookkeeping for the paged KV cache: which blocks are free, how many holders
// each used block has, and which blocks hold a cached prompt prefix. Pure CPU
// data structure; the storage itself lives in the model (KvStorage) and is
// indexed by the same block ids.
//
// A block is in one of three states:
//   used    refcount > 0: one or more sequences read it through their block tables
//   cached  refcount 0, but its K/V are published under a BlockKey (prefix
//           cache) and kept until the pool needs the memory: evictable, LRU
//   free    refcount 0 and no content anyone can find
// allocate() takes a free block first and otherwise evicts the least recently
// used cached block. A used block is never evicted.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace pensieve {

// What a full block holds: the chained hash of every token up to and
// including its own (see prefix_cache.h), its parent's hash and its own
// tokens. Lookups compare all three, so a 64-bit hash collision alone
// cannot hand a sequence another prefix's K/V.
struct BlockKey {
  uint64_t hash = 0;
  uint64_t parent = 0;
  std::span<const int32_t> tokens;  // kKvBlockTokens ids
};

class KvBlockPool {
 public:
  explicit KvBlockPool(int64_t n_blocks);

  int64_t n_total() const { return static_cast<int64_t>(refcount_.size()); }
  int64_t n_free() const { return static_cast<int64_t>(free_.size()); }
  int64_t n_cached() const { return n_cached_idle_; }           // evictable
  int64_t n_available() const { return n_free() + n_cached(); }  // what allocate() can hand out
  int64_t n_used() const { return n_total() - n_available(); }
  int64_t n_published() const { return static_cast<int64_t>(index_.size()); }
  int64_t n_evictions() const { return n_evictions_; }

  // A block with refcount 1: a free one, else the least recently used
  // cached one (its key is forgotten); nullopt when every block is used.
  std::optional<int32_t> allocate();
  void retain(int32_t block);
  // Drops one reference. At zero a published block becomes cached (most
  // recently used end of the LRU list), any other block free. Returns the new count.
  int release(int32_t block);
  int refcount(int32_t block) const;

  // Makes a used block findable under key. False (and no change) when the
  // key already names a block, or this block is already published.
  bool publish(int32_t block, const BlockKey& key);
  // The block published under key, retained (a cached block becomes used
  // again); nullopt when there is none.
  std::optional<int32_t> acquire(const BlockKey& key);
  bool published(int32_t block) const;
  // Whether some block is published under this hash (no retain, no LRU touch).
  bool indexed(uint64_t hash) const { return index_.count(hash) > 0; }
  // Forgets every key: cached blocks become free, used ones stay used.
  void clear_cache();

 private:
  static constexpr int32_t kNone = -1;
  struct Entry {
    uint64_t hash = 0, parent = 0;
    bool published = false;
    std::vector<int32_t> tokens;
    int32_t prev = kNone, next = kNone;  // LRU links while cached
  };
  void check(int32_t block) const;
  void lru_push_back(int32_t block);
  void lru_remove(int32_t block);
  void unpublish(int32_t block);

  std::vector<int32_t> refcount_;
  std::vector<int32_t> free_;  // used as a stack: recently freed blocks are reused first
  std::vector<Entry> entries_;
  std::unordered_map<uint64_t, int32_t> index_;  // key hash -> block
  int32_t lru_head_ = kNone, lru_tail_ = kNone;   // head = least recently used
  int64_t n_cached_idle_ = 0;
  int64_t n_evictions_ = 0;
};

// A sequence's view of the cache: its block table and how many positions hold K/V.
struct KvSequence {
  std::vector<int32_t> blocks;
  int64_t n_tokens = 0;
};

// Grows seq's block table to hold n_positions; false (and no change) if the pool is short.
bool reserve_blocks(KvBlockPool& pool, KvSequence& seq, int64_t n_positions);
// Releases every block of seq, the last one first: the tail of a prefix
// becomes older in the LRU order than its head, so it is evicted first and a
// cached chain is never cut in the middle before its end is gone.
void release_blocks(KvBlockPool& pool, KvSequence& seq);

}  // namespace pensieve
