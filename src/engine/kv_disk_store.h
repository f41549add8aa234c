// The prefix cache's disk tier: full KV blocks kept as files, named by the
// same chained hashes as in memory (prefix_cache.h), so that a prompt
// computed once can be read back after the block left memory, or after a
// restart, instead of computed again.
//
// Layout: DIR/<fingerprint id>/<hash>.kvb, where the fingerprint is what
// makes K/V comparable (the model's weights and config, the KV layout
// version and element type, the attention window): blocks of another model,
// layout or type live in another folder and are never read. Each file has a
// header (magic, version, fingerprint id, the block's hash, parent hash and
// tokens, payload size, XXH3-64 checksums) and the payload.
//
// Safety: a file is written under a temporary name and renamed into place,
// so a reader never sees half a file; a file that is torn, truncated or has
// flipped bytes fails its checksum and is removed with a warning, never
// returned. Two servers may share DIR. Disk errors are reported by return
// values and a warning, never thrown: the caller recomputes.
//
// Size: at most max_bytes of block files per store; past it the least
// recently used files (by modification time, which get() refreshes) go.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "core/kv_geometry.h"

namespace pensieve {

class KvDiskStore {
 public:
  // Creates DIR/<id of fingerprint>/ if needed and removes temporary files
  // that writers left more than ten minutes ago. Throws Error when the
  // folder cannot be made or belongs to another fingerprint.
  KvDiskStore(std::string dir, std::string fingerprint, int64_t max_bytes);

  // Stores a block (nothing to do when it is there already). False when it
  // could not be written (full disk, permissions): logged, nothing left behind.
  bool put(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens,
           std::span<const std::byte> payload);
  // Reads the block into `out` (whose size must be the payload's). False
  // when there is none for these hash, parent and tokens, or when its file
  // is damaged (then it is removed).
  bool get(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens, std::span<std::byte> out);

  // Reads the block's whole file into `file` with one read (unbuffered,
  // O_DIRECT, when *direct and the file system allows it; *direct turns
  // false where it does not) and checks it as get() does: the payload's
  // place in `file`, or nullptr. `file` must be 4096-aligned and at least
  // file_buffer_bytes(tokens, payload) long.
  const std::byte* read_file(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens,
                             size_t payload_bytes, std::span<std::byte> file, bool* direct);
  static size_t file_buffer_bytes(size_t n_tokens, size_t payload_bytes);

  // Asks the kernel to read the block's file ahead (a prompt's next blocks,
  // while the engine applies the ones it has): no effect when there is none.
  // True when the file is there.
  bool prefetch(uint64_t hash) const;
  bool has(uint64_t hash) const;  // whether the block's file is there

  const std::string& folder() const { return folder_; }
  // Bytes of block files in the folder (all writers'), counted now.
  int64_t bytes_on_disk() const;
  int64_t n_damaged() const;  // damaged files found and removed so far

 private:
  std::string path_of(uint64_t hash) const;
  void damaged(const std::string& path, const std::string& why);  // warns, removes, counts
  void trim();  // removes the least recently used files until within max_bytes_

  std::string folder_;
  uint64_t fingerprint_id_ = 0;
  int64_t max_bytes_ = 0;
  mutable std::mutex mutex_;
  int64_t written_since_trim_ = 0;  // bytes put since the folder was last counted
  int64_t counted_ = 0;             // bytes in the folder when last counted
  int64_t n_damaged_ = 0;
  uint64_t n_tmp_ = 0;
};

// Writes blocks to a store on its own thread, so that the engine only pays
// for copying them out of the KV pool. At most max_queued_bytes wait at
// once; a block that finds the queue full is not written (counted). The
// destructor writes what is queued, then joins.
class KvDiskWriter {
 public:
  KvDiskWriter(KvDiskStore& store, int64_t max_queued_bytes);
  ~KvDiskWriter();
  KvDiskWriter(const KvDiskWriter&) = delete;
  KvDiskWriter& operator=(const KvDiskWriter&) = delete;

  // Whether a block of `bytes` would be queued now (the engine asks before
  // copying one out); false counts it as dropped.
  bool admits(int64_t bytes);
  // False when the queue is full (the block is dropped).
  bool enqueue(uint64_t hash, uint64_t parent, std::vector<int32_t> tokens, std::vector<std::byte> payload);
  void flush();  // returns once everything queued so far is written (or failed)
  int64_t n_written() const;
  int64_t n_dropped() const;
  int64_t n_failed() const;

 private:
  struct Job {
    uint64_t hash, parent;
    std::vector<int32_t> tokens;
    std::vector<std::byte> payload;
  };
  void run();

  KvDiskStore& store_;
  const int64_t max_queued_bytes_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  int64_t queued_bytes_ = 0;
  bool busy_ = false;  // a job is being written
  bool stop_ = false;
  int64_t n_written_ = 0, n_dropped_ = 0, n_failed_ = 0;
  std::thread thread_;
};

// Reads a prompt's blocks from a store ahead of the engine, in chain
// order: several threads read whole files at once (unbuffered where the
// file system allows it, so that the disk has several requests to work on
// and no page-cache copy is made), check them and hand them out in order,
// a few buffers deep, so that the engine only copies each checked block
// into the KV pool while the next ones are read. Reading stops at the first
// block that is missing or damaged: the chain breaks there, so nothing
// after it could be used.
class KvDiskReader {
 public:
  struct Key {
    uint64_t hash = 0, parent = 0;
    std::vector<int32_t> tokens;
  };
  // Blocks of payload_bytes (and of block_tokens tokens), n_threads reads
  // at once into n_buffers buffers (at least n_threads + 1).
  KvDiskReader(KvDiskStore& store, size_t payload_bytes, int block_tokens, int n_threads = 4,
               int n_buffers = 8);
  ~KvDiskReader();
  KvDiskReader(const KvDiskReader&) = delete;
  KvDiskReader& operator=(const KvDiskReader&) = delete;

  // Starts reading these blocks, in order. Replaces the blocks of an
  // earlier start() (a block next() handed out counts as released).
  void start(std::vector<Key> keys);
  // The next block of the list, once read and checked: its payload (valid
  // until release()), or nullptr where the list is done, the block is
  // missing or damaged, or `hash` is not the next one (then the rest is
  // dropped, and *off_list says so: the caller may read it itself).
  const std::byte* next(uint64_t hash, bool* off_list = nullptr);
  void release();  // the block next() handed out is done with
  // Drops the rest of the list (reads in flight are discarded when they end).
  void cancel();
  bool direct() const;  // whether reads bypass the page cache

 private:
  enum : uint8_t { kPending, kOk, kFailed };
  struct Buffer {
    std::unique_ptr<std::byte, void (*)(void*)> file{nullptr, nullptr};
    const std::byte* payload = nullptr;
  };
  void run();
  void drop_rest();
  bool can_claim() const;

  KvDiskStore& store_;
  const size_t payload_bytes_, file_bytes_;
  std::vector<Buffer> buffers_;  // block i of the list goes to buffers_[i % size]
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Key> keys_;
  std::vector<uint8_t> state_;   // per block of keys_
  uint64_t generation_ = 0;      // bumped by start() and cancel()
  size_t n_claimed_ = 0;         // blocks of keys_ a thread took (read, failed or in flight)
  size_t n_taken_ = 0;           // blocks next() handed out and released so far
  size_t first_failed_ = SIZE_MAX;  // no block past a missing or damaged one is read
  size_t prefetched_ = 0;        // (buffered reads) files the kernel was asked to read ahead
  int in_flight_ = 0;            // reads under way (of any generation)
  bool held_ = false;            // next() handed out a buffer not yet released
  bool direct_ = true;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// FNV-1a 64 of text: the fingerprint's id (stable across runs and machines).
uint64_t fingerprint_id(const std::string& text);

// What makes KV blocks of one model comparable, as one line: the KV layout
// version, element type and block size, the device, the attention window,
// and checksums of config.json and of each weight file (its size, its
// safetensors header, and samples of its bytes: a changed or re-quantized
// checkpoint gets another fingerprint without reading gigabytes).
std::string kv_fingerprint(const std::string& model_dir, const std::string& architecture,
                           int64_t sliding_window, const std::string& device, KvType kv_type);

}  // namespace pensieve
