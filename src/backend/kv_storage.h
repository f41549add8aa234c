// The CPU backend's KV pool: host memory reserved up front and committed
// only as blocks are written (or all at once by commit()).
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/backend.h"
#include "kernels/cpu/attention.h"

namespace pensieve {

class KvStorage {
 public:
  KvStorage(const KvGeometry& geometry, int64_t n_blocks);
  ~KvStorage();
  KvStorage(const KvStorage&) = delete;
  KvStorage& operator=(const KvStorage&) = delete;

  kernels::KvLayerView layer(int64_t i) const;
  int64_t n_blocks() const { return n_blocks_; }
  // Writes every page now (zeros), so that no later forward pays the page
  // faults: what a server's pool looks like once earlier requests have used
  // it, and what llama.cpp's cleared KV buffer looks like before its timings.
  void commit();
  size_t bytes() const { return bytes_; }
  const void* data() const { return base_; }
  // One block's K and V of every layer, to or from geometry.bytes_per_block()
  // laid out layer by layer, K then V (the prefix cache's disk tier).
  void read_block(int64_t block, std::byte* out) const;
  void write_block(int64_t block, const std::byte* in);

 private:
  KvGeometry g_;
  int64_t n_blocks_;
  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace pensieve
