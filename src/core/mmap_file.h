// Read-only memory map of a whole file. Model weights are used in place from
// the page cache, so resident memory stays close to the file size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pensieve {

class MmapFile {
 public:
  explicit MmapFile(const std::string& path);  // throws Error (not_found / invalid_input)
  ~MmapFile();
  MmapFile(const MmapFile&) = delete;
  MmapFile& operator=(const MmapFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Hints the kernel to read ahead the range (used before a sequential pass).
  void advise_willneed(size_t offset, size_t length) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace pensieve
