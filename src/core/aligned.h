// Cache-line-aligned storage for vectors that SIMD kernels stream.
//
// glibc returns large blocks (mmap'd, >= 128 KiB) 16 bytes past a page
// boundary, so every 64-byte load from a plain std::vector buffer of
// activations splits two cache lines; kernels keep theirs in AlignedVector.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace pensieve {

template <class T, std::size_t Align = 64>
struct AlignedAllocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{Align}));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{Align}); }
  template <class U>
  bool operator==(const AlignedAllocator<U, Align>&) const noexcept {
    return true;
  }
};

template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace pensieve
