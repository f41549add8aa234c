#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "backend/kv_storage.h"

namespace pensieve {

KvStorage::KvStorage(const KvGeometry& geometry, int64_t n_blocks) : g_(geometry), n_blocks_(n_blocks) {
  if (g_.type == KvType::q8 && kv_q8_group(g_.head_dim) == 0) {
    fail(ErrorKind::unsupported, "--kv-type q8 needs a head dimension that is a multiple of 8 (this model's is {})",
         g_.head_dim);
  }
  bytes_ = static_cast<size_t>(g_.bytes_per_block() * n_blocks);
  if (bytes_ == 0) return;
  // Anonymous memory: pages are committed when first written, so an unused
  // part of the pool costs nothing resident.
  void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
  if (p == MAP_FAILED) {
    fail(ErrorKind::resource, "cannot reserve {} bytes for the KV cache: {}", bytes_,
         std::strerror(errno));
  }
  // Huge pages: decode reads each (layer, KV head) as one short run per block,
  // scattered over the pool; with 4 KiB pages nearly every run starts with a
  // TLB miss, which in a VM costs a two-level page walk (measured: 1-thread
  // decode of the Phi-3-mini shape at 512 positions, docs/benchmarks.md).
  ::madvise(p, bytes_, MADV_HUGEPAGE);  // a hint; fine where THP is off
  base_ = static_cast<uint8_t*>(p);
}

void KvStorage::commit() {
  if (base_ != nullptr) std::memset(base_, 0, bytes_);
}

KvStorage::~KvStorage() {
  if (base_ != nullptr) ::munmap(base_, bytes_);
}

void KvStorage::read_block(int64_t block, std::byte* out) const {
  if (block < 0 || block >= n_blocks_) fail(ErrorKind::internal, "KV block {} of {}", block, n_blocks_);
  const size_t bytes = static_cast<size_t>(g_.block_bytes());
  for (int64_t i = 0; i < g_.n_layers; ++i) {
    const kernels::KvLayerView v = layer(i);
    std::memcpy(out, v.k + block * g_.block_bytes(), bytes);
    std::memcpy(out + bytes, v.v + block * g_.block_bytes(), bytes);
    out += 2 * bytes;
  }
}

void KvStorage::write_block(int64_t block, const std::byte* in) {
  if (block < 0 || block >= n_blocks_) fail(ErrorKind::internal, "KV block {} of {}", block, n_blocks_);
  const size_t bytes = static_cast<size_t>(g_.block_bytes());
  for (int64_t i = 0; i < g_.n_layers; ++i) {
    const kernels::KvLayerView v = layer(i);
    std::memcpy(v.k + block * g_.block_bytes(), in, bytes);
    std::memcpy(v.v + block * g_.block_bytes(), in + bytes, bytes);
    in += 2 * bytes;
  }
}

kernels::KvLayerView KvStorage::layer(int64_t i) const {
  kernels::KvLayerView v;
  v.n_kv_heads = g_.n_kv_heads;
  v.head_dim = g_.head_dim;
  v.type = g_.type;
  const int64_t per_layer = g_.block_bytes() * n_blocks_;
  v.k = base_ + 2 * i * per_layer;
  v.v = v.k + per_layer;
  return v;
}

}  // namespace pensieve
