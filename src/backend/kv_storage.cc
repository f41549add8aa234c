#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "backend/kv_storage.h"

namespace pensieve {

int64_t KvStorage::bytes_per_block(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim) {
  static_assert(sizeof(kernels::KvElem) == 2, "KvGeometry counts half floats");
  return KvGeometry{.n_layers = n_layers, .n_kv_heads = n_kv_heads, .head_dim = head_dim}
      .bytes_per_block();
}

KvStorage::KvStorage(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t n_blocks)
    : n_layers_(n_layers), n_kv_heads_(n_kv_heads), head_dim_(head_dim), n_blocks_(n_blocks) {
  bytes_ = static_cast<size_t>(bytes_per_block(n_layers, n_kv_heads, head_dim) * n_blocks);
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
  base_ = static_cast<kernels::KvElem*>(p);
}

void KvStorage::commit() {
  if (base_ != nullptr) std::memset(base_, 0, bytes_);
}

KvStorage::~KvStorage() {
  if (base_ != nullptr) ::munmap(base_, bytes_);
}

void KvStorage::read_block(int64_t block, std::byte* out) const {
  if (block < 0 || block >= n_blocks_) fail(ErrorKind::internal, "KV block {} of {}", block, n_blocks_);
  for (int64_t i = 0; i < n_layers_; ++i) {
    const kernels::KvLayerView v = layer(i);
    const size_t bytes = static_cast<size_t>(v.block_elems()) * sizeof(kernels::KvElem);
    std::memcpy(out, v.k + block * v.block_elems(), bytes);
    std::memcpy(out + bytes, v.v + block * v.block_elems(), bytes);
    out += 2 * bytes;
  }
}

void KvStorage::write_block(int64_t block, const std::byte* in) {
  if (block < 0 || block >= n_blocks_) fail(ErrorKind::internal, "KV block {} of {}", block, n_blocks_);
  for (int64_t i = 0; i < n_layers_; ++i) {
    const kernels::KvLayerView v = layer(i);
    const size_t bytes = static_cast<size_t>(v.block_elems()) * sizeof(kernels::KvElem);
    std::memcpy(v.k + block * v.block_elems(), in, bytes);
    std::memcpy(v.v + block * v.block_elems(), in + bytes, bytes);
    in += 2 * bytes;
  }
}

kernels::KvLayerView KvStorage::layer(int64_t i) const {
  kernels::KvLayerView v;
  v.n_kv_heads = n_kv_heads_;
  v.head_dim = head_dim_;
  const int64_t per_layer = v.block_elems() * n_blocks_;
  v.k = base_ + 2 * i * per_layer;
  v.v = v.k + per_layer;
  return v;
}

}  // namespace pensieve
