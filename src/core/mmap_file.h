// A whole file, read-only, in memory. Two ways, one resident size (the file's):
//  - copied (default): read into anonymous memory advised for transparent huge
//    pages. Measured on the 2-core cloud VMs we run on, a decode step streams
//    such memory ~8x faster than page-cache pages mapped from the file
//    (1.5 -> 11.5 tok/s on Phi-3-mini 4-bit, one thread; docs/benchmarks.md),
//    and huge pages cut TLB misses on bare metal too. Costs a copy at load.
//  - mapped (`--mmap`, PENSIEVE_MMAP=1): used in place from the page cache;
//    loads instantly and the kernel can drop clean pages under pressure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pensieve {

enum class FileResidency { copied, mapped };

// The process-wide choice for files opened without an explicit one: copied
// unless PENSIEVE_MMAP=1 is set or set_default_file_residency() says otherwise.
FileResidency default_file_residency();
void set_default_file_residency(FileResidency residency);

class MmapFile {
 public:
  // throws Error (not_found / invalid_input / resource)
  explicit MmapFile(const std::string& path) : MmapFile(path, default_file_residency()) {}
  MmapFile(const std::string& path, FileResidency residency);
  ~MmapFile();
  MmapFile(const MmapFile&) = delete;
  MmapFile& operator=(const MmapFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  FileResidency residency() const { return residency_; }

  // Hints the kernel to read ahead the range (used before a sequential pass).
  void advise_willneed(size_t offset, size_t length) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_bytes_ = 0;
  FileResidency residency_ = FileResidency::mapped;
};

}  // namespace pensieve
