#include "core/mmap_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "core/error.h"

namespace pensieve {

namespace {

std::atomic<int>& residency_flag() {
  static std::atomic<int> flag{[] {
    const char* env = std::getenv("PENSIEVE_MMAP");
    return static_cast<int>(env != nullptr && env[0] == '1' ? FileResidency::mapped
                                                            : FileResidency::copied);
  }()};
  return flag;
}

constexpr size_t kHugePage = size_t{2} << 20;

// Reads [0, size) of fd into dst with a few threads (each pread fills pages
// the first time they are touched, which is most of the cost in a VM).
void read_whole_file(int fd, const std::string& path, uint8_t* dst, size_t size) {
  constexpr size_t kChunk = size_t{32} << 20;
  const size_t n_chunks = (size + kChunk - 1) / kChunk;
  const size_t n_threads =
      std::clamp<size_t>(std::thread::hardware_concurrency(), 1, std::min<size_t>(4, n_chunks));
  std::atomic<size_t> next{0};
  std::atomic<int> error{0};
  std::atomic<bool> short_read{false};
  auto work = [&] {
    for (size_t c = next++; c < n_chunks && error == 0 && !short_read; c = next++) {
      size_t off = c * kChunk;
      const size_t end = std::min(size, off + kChunk);
      while (off < end) {
        const ssize_t n = ::pread(fd, dst + off, end - off, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          error = errno;
          return;
        }
        if (n == 0) {
          short_read = true;
          return;
        }
        off += static_cast<size_t>(n);
      }
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 1; i < n_threads; ++i) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  if (error != 0) fail(ErrorKind::resource, "{}: read failed: {}", path, std::strerror(error));
  if (short_read) fail("{}: file shrank while it was being read", path);
}

}  // namespace

FileResidency default_file_residency() {
  return static_cast<FileResidency>(residency_flag().load(std::memory_order_relaxed));
}
void set_default_file_residency(FileResidency residency) {
  residency_flag().store(static_cast<int>(residency));
}

MmapFile::MmapFile(const std::string& path, FileResidency residency)
    : path_(path), residency_(residency) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fail(errno == ENOENT ? ErrorKind::not_found : ErrorKind::invalid_input, "{}: cannot open: {}",
         path, std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", path, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0 && residency_ == FileResidency::copied) {
    // Large files in whole huge pages (the tail gets one too); small ones as they are.
    const bool huge = size_ >= 4 * kHugePage;
    mapped_bytes_ = huge ? (size_ + kHugePage - 1) / kHugePage * kHugePage : size_;
    void* p = ::mmap(nullptr, mapped_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      fail(ErrorKind::resource, "{}: cannot allocate {} bytes for it: {}", path, size_,
           std::strerror(e));
    }
    if (huge) ::madvise(p, mapped_bytes_, MADV_HUGEPAGE);  // a hint; fine where THP is off
    try {
      read_whole_file(fd, path, static_cast<uint8_t*>(p), size_);
    } catch (...) {
      ::munmap(p, mapped_bytes_);
      ::close(fd);
      throw;
    }
    ::mprotect(p, mapped_bytes_, PROT_READ);
    data_ = static_cast<const uint8_t*>(p);
  } else if (size_ > 0) {
    mapped_bytes_ = size_;
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      fail(ErrorKind::resource, "{}: mmap failed: {}", path, std::strerror(e));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MmapFile::~MmapFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), mapped_bytes_);
}

void MmapFile::advise_willneed(size_t offset, size_t length) const {
  if (data_ == nullptr || offset >= size_ || residency_ == FileResidency::copied) return;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t start = offset / page * page;
  const size_t end = std::min(size_, offset + length);
  ::madvise(const_cast<uint8_t*>(data_) + start, end - start, MADV_WILLNEED);
}

}  // namespace pensieve
