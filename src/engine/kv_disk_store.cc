#include "engine/kv_disk_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "core/error.h"
#include "core/kv_geometry.h"
#include "core/log.h"

namespace pensieve {
namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'P', 'S', 'V', 'K', 'V', 'B', '1', '\0'};
constexpr uint32_t kVersion = 2;  // 2: XXH3-64 checksums (1: crc32)
constexpr const char* kSuffix = ".kvb";
constexpr const char* kTmpPrefix = ".tmp-";
constexpr auto kStaleTmp = std::chrono::minutes(10);
constexpr size_t kPage = 4096;  // O_DIRECT's alignment of buffers, offsets and sizes

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t n_tokens;
  uint64_t fingerprint_id;
  uint64_t hash;
  uint64_t parent;
  uint64_t payload_bytes;
  uint64_t payload_hash;  // XXH3-64 of the payload
  uint64_t header_hash;   // of everything above, then (as the seed) of the tokens
};
static_assert(sizeof(Header) == 64);

// XXH3 (libxxhash): tens of GB/s, so checking a block costs little next to
// reading it (zlib's crc32 was most of a read-back's time).
uint64_t header_hash(const Header& h, std::span<const int32_t> tokens) {
  return XXH3_64bits_withSeed(tokens.data(), tokens.size_bytes(), XXH3_64bits(&h, offsetof(Header, header_hash)));
}

bool write_all(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool is_kv_block_file(const fs::path& p) { return p.extension() == kSuffix; }

}  // namespace

uint64_t fingerprint_id(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

namespace {

// A file's bytes [at, at + n) (fewer where it ends) into the hash state.
void hash_file_range(std::ifstream& in, uint64_t at, uint64_t n, XXH3_state_t* state) {
  std::vector<char> buf(static_cast<size_t>(std::min<uint64_t>(n, 1 << 20)));
  in.clear();
  in.seekg(static_cast<std::streamoff>(at));
  while (n > 0 && in) {
    in.read(buf.data(), static_cast<std::streamsize>(std::min<uint64_t>(n, buf.size())));
    const auto got = static_cast<uint64_t>(in.gcount());
    if (got == 0) break;
    XXH3_64bits_update(state, buf.data(), got);
    n -= got;
  }
}

}  // namespace

std::string kv_fingerprint(const std::string& model_dir, const std::string& architecture,
                           int64_t sliding_window, const std::string& device, KvType kv_type) {
  std::string text = fmt::format("pensieve-kv layout 1; {}; block {}; {}; {}; window {}", kv_type_name(kv_type),
                                 kKvBlockTokens, device, architecture, sliding_window);
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(model_dir, ec)) {
    const std::string name = f.path().filename().string();
    if (name == "config.json" || f.path().extension() == ".safetensors") files.push_back(f.path());
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    const uint64_t size = fs::file_size(f, ec);
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(), &XXH3_freeState);
    XXH3_64bits_reset(state.get());
    if (f.extension() != ".safetensors") {
      hash_file_range(in, 0, size, state.get());
    } else {
      uint64_t header = 0;  // safetensors: an 8-byte length, then the JSON header
      in.read(reinterpret_cast<char*>(&header), 8);
      hash_file_range(in, 0, std::min<uint64_t>(8 + header, size), state.get());
      constexpr uint64_t kSample = 64 << 10, kStride = 64 << 20;
      for (uint64_t at = 0; at < size; at += kStride) hash_file_range(in, at, kSample, state.get());
      if (size > kSample) hash_file_range(in, size - kSample, kSample, state.get());
    }
    text += fmt::format("; {} {} {:016x}", f.filename().string(), size, XXH3_64bits_digest(state.get()));
  }
  return text;
}

KvDiskStore::KvDiskStore(std::string dir, std::string fingerprint, int64_t max_bytes)
    : fingerprint_id_(fingerprint_id(fingerprint)), max_bytes_(max_bytes) {
  folder_ = (fs::path(dir) / fmt::format("{:016x}", fingerprint_id_)).string();
  std::error_code ec;
  fs::create_directories(folder_, ec);
  if (ec) fail(ErrorKind::resource, "prefix cache folder {}: {}", folder_, ec.message());
  // The full fingerprint beside the blocks: for people, and to catch two
  // fingerprints with one id (then this store is refused, not mixed in).
  const fs::path named = fs::path(folder_) / "fingerprint.txt";
  std::ifstream in(named);
  if (in) {
    std::string there((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (there != fingerprint)
      fail(ErrorKind::resource, "prefix cache folder {} holds another fingerprint ({}), not {}", folder_, there,
           fingerprint);
  } else {
    const std::string tmp = folder_ + "/" + kTmpPrefix + "fingerprint-" + std::to_string(::getpid());
    std::ofstream(tmp) << fingerprint;
    fs::rename(tmp, named, ec);
    if (ec) fail(ErrorKind::resource, "prefix cache folder {}: {}", folder_, ec.message());
  }
  const auto now = fs::file_time_type::clock::now();
  for (const auto& f : fs::directory_iterator(folder_, ec)) {
    const std::string name = f.path().filename().string();
    if (name.rfind(kTmpPrefix, 0) == 0 && now - f.last_write_time(ec) > kStaleTmp) fs::remove(f.path(), ec);
  }
  counted_ = bytes_on_disk();
}

std::string KvDiskStore::path_of(uint64_t hash) const { return fmt::format("{}/{:016x}{}", folder_, hash, kSuffix); }

int64_t KvDiskStore::bytes_on_disk() const {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(folder_, ec))
    if (is_kv_block_file(f.path())) total += static_cast<int64_t>(f.file_size(ec));
  return total;
}

int64_t KvDiskStore::n_damaged() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return n_damaged_;
}

bool KvDiskStore::put(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens,
                      std::span<const std::byte> payload) {
  const std::string path = path_of(hash);
  if (::access(path.c_str(), F_OK) == 0) return true;
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kVersion;
  h.n_tokens = static_cast<uint32_t>(tokens.size());
  h.fingerprint_id = fingerprint_id_;
  h.hash = hash;
  h.parent = parent;
  h.payload_bytes = payload.size();
  h.payload_hash = XXH3_64bits(payload.data(), payload.size());
  h.header_hash = header_hash(h, tokens);
  uint64_t n = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    n = ++n_tmp_;
  }
  const std::string tmp = fmt::format("{}/{}{}-{}-{:016x}", folder_, kTmpPrefix, ::getpid(), n, hash);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    spdlog::warn("prefix cache: cannot write {}: {}", tmp, std::strerror(errno));
    return false;
  }
  const bool ok = write_all(fd, &h, sizeof h) && write_all(fd, tokens.data(), tokens.size_bytes()) &&
                  write_all(fd, payload.data(), payload.size());
  const int saved = errno;
  const bool closed = ::close(fd) == 0;
  if (!ok || !closed || ::rename(tmp.c_str(), path.c_str()) != 0) {
    spdlog::warn("prefix cache: cannot write {}: {}", path, std::strerror(ok ? errno : saved));
    ::unlink(tmp.c_str());
    return false;
  }
  bool over = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    written_since_trim_ += static_cast<int64_t>(sizeof h + tokens.size_bytes() + payload.size());
    over = counted_ + written_since_trim_ > max_bytes_;
  }
  if (over) trim();
  return true;
}

// read_file()'s checks, through a page-aligned scratch buffer (the
// engine's rare synchronous read; the reader threads keep their own).
bool KvDiskStore::get(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens,
                      std::span<std::byte> out) {
  const size_t n = file_buffer_bytes(tokens.size(), out.size());
  const std::unique_ptr<std::byte, void (*)(void*)> file{static_cast<std::byte*>(std::aligned_alloc(kPage, n)),
                                                         std::free};
  if (!file) throw std::bad_alloc();
  bool direct = false;
  const std::byte* payload = read_file(hash, parent, tokens, out.size(), {file.get(), n}, &direct);
  if (payload == nullptr) return false;
  std::memcpy(out.data(), payload, out.size());
  return true;
}

void KvDiskStore::damaged(const std::string& path, const std::string& why) {
  spdlog::warn("prefix cache: {} is damaged ({}): removed", path, why);
  ::unlink(path.c_str());
  std::lock_guard<std::mutex> lock(mutex_);
  ++n_damaged_;
}

// The file's bytes rounded up to whole pages, and a page more: a read that
// fills it finds a file longer than its header says.
size_t KvDiskStore::file_buffer_bytes(size_t n_tokens, size_t payload_bytes) {
  const size_t file = sizeof(Header) + n_tokens * sizeof(int32_t) + payload_bytes;
  return (file / kPage + 2) * kPage;
}

const std::byte* KvDiskStore::read_file(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens,
                                        size_t payload_bytes, std::span<std::byte> file, bool* direct) {
  const std::string path = path_of(hash);
  const size_t want = file_buffer_bytes(tokens.size(), payload_bytes);
  if (file.size() < want || (reinterpret_cast<uintptr_t>(file.data()) % kPage) != 0)
    fail(ErrorKind::internal, "KvDiskStore::read_file: a buffer of {} bytes (need {}, page-aligned)", file.size(),
         want);
  int fd = -1;
  bool unbuffered = *direct;
  if (unbuffered) {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (fd < 0 && errno == EINVAL) unbuffered = false;  // a file system without O_DIRECT
  }
  if (!unbuffered) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  size_t got = 0;
  for (;;) {
    const ssize_t r = ::read(fd, file.data() + got, want - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EINVAL && unbuffered && got == 0) {
      // Opened unbuffered but cannot read so: read it the usual way.
      ::close(fd);
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return nullptr;
      unbuffered = false;
      continue;
    }
    if (r <= 0) {
      if (r < 0) {
        spdlog::warn("prefix cache: reading {}: {}", path, std::strerror(errno));
        ::close(fd);
        return nullptr;
      }
      break;
    }
    got += static_cast<size_t>(r);
    if (got == want) break;
    // Unbuffered, a read that ends off a page boundary ended at the end of
    // the file (another read there would be unaligned, which some file
    // systems refuse); buffered, the next read says 0 there.
    if (unbuffered && got % kPage != 0) break;
  }
  ::close(fd);
  if (*direct && !unbuffered) *direct = false;

  Header h{};
  std::string damage;
  bool match = false;
  const std::byte* payload = nullptr;
  if (got < sizeof h) {
    damage = "shorter than its header";
  } else {
    std::memcpy(&h, file.data(), sizeof h);
    if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.version != kVersion) {
      damage = "not a block file of this version";
    } else if (h.n_tokens > (1u << 20)) {
      damage = "an impossible token count";
    } else if (got < sizeof h + h.n_tokens * sizeof(int32_t)) {
      damage = "truncated in its tokens";
    } else {
      std::vector<int32_t> stored(h.n_tokens);
      std::memcpy(stored.data(), file.data() + sizeof h, stored.size() * sizeof(int32_t));
      if (header_hash(h, stored) != h.header_hash) {
        damage = "a header checksum mismatch";
      } else {
        match = h.fingerprint_id == fingerprint_id_ && h.hash == hash && h.parent == parent &&
                h.payload_bytes == payload_bytes &&
                std::equal(stored.begin(), stored.end(), tokens.begin(), tokens.end());
        const size_t start = sizeof h + stored.size() * sizeof(int32_t);
        if (match) {
          if (got < start + payload_bytes) damage = "truncated in its payload";
          else if (XXH3_64bits(file.data() + start, payload_bytes) != h.payload_hash)
            damage = "a payload checksum mismatch";
          else if (got > start + payload_bytes) damage = "longer than its header says";
          else payload = file.data() + start;
        }
      }
    }
  }
  if (!damage.empty()) {
    damaged(path, damage);
    return nullptr;
  }
  if (payload != nullptr) ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);  // most recently used now
  return payload;
}

bool KvDiskStore::has(uint64_t hash) const { return ::access(path_of(hash).c_str(), F_OK) == 0; }

bool KvDiskStore::prefetch(uint64_t hash) const {
  const int fd = ::open(path_of(hash).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);  // the kernel reads it ahead, asynchronously
  ::close(fd);
  return true;
}

void KvDiskStore::trim() {
  struct File {
    fs::path path;
    fs::file_time_type used;
    int64_t bytes;
  };
  std::vector<File> files;
  int64_t total = 0;
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(folder_, ec)) {
    if (!is_kv_block_file(f.path())) continue;
    File file{f.path(), f.last_write_time(ec), static_cast<int64_t>(f.file_size(ec))};
    if (ec) continue;  // another writer's trim removed it
    total += file.bytes;
    files.push_back(std::move(file));
  }
  std::sort(files.begin(), files.end(), [](const File& a, const File& b) { return a.used < b.used; });
  for (const File& f : files) {
    if (total <= max_bytes_) break;
    fs::remove(f.path, ec);
    total -= f.bytes;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  counted_ = total;
  written_since_trim_ = 0;
}

KvDiskWriter::KvDiskWriter(KvDiskStore& store, int64_t max_queued_bytes)
    : store_(store), max_queued_bytes_(max_queued_bytes), thread_([this] { run(); }) {}

KvDiskWriter::~KvDiskWriter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool KvDiskWriter::enqueue(uint64_t hash, uint64_t parent, std::vector<int32_t> tokens,
                           std::vector<std::byte> payload) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t bytes = static_cast<int64_t>(payload.size());
    if (queued_bytes_ + bytes > max_queued_bytes_) {
      ++n_dropped_;
      return false;
    }
    queued_bytes_ += bytes;
    jobs_.push_back({hash, parent, std::move(tokens), std::move(payload)});
  }
  cv_.notify_all();
  return true;
}

bool KvDiskWriter::admits(int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (queued_bytes_ + bytes <= max_queued_bytes_) return true;
  ++n_dropped_;
  return false;
}

void KvDiskWriter::flush() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return jobs_.empty() && !busy_; });
}

int64_t KvDiskWriter::n_written() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return n_written_;
}
int64_t KvDiskWriter::n_dropped() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return n_dropped_;
}
int64_t KvDiskWriter::n_failed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return n_failed_;
}

void KvDiskWriter::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping, and everything is written
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    busy_ = true;
    lock.unlock();
    const bool ok = store_.put(job.hash, job.parent, job.tokens, job.payload);
    lock.lock();
    busy_ = false;
    queued_bytes_ -= static_cast<int64_t>(job.payload.size());
    ++(ok ? n_written_ : n_failed_);
    cv_.notify_all();
  }
}

KvDiskReader::KvDiskReader(KvDiskStore& store, size_t payload_bytes, int block_tokens, int n_threads,
                           int n_buffers)
    : store_(store),
      payload_bytes_(payload_bytes),
      file_bytes_(KvDiskStore::file_buffer_bytes(static_cast<size_t>(block_tokens), payload_bytes)) {
  n_threads = std::max(n_threads, 1);
  buffers_.resize(static_cast<size_t>(std::max(n_buffers, n_threads + 1)));
  for (Buffer& b : buffers_) {
    b.file = {static_cast<std::byte*>(std::aligned_alloc(kPage, file_bytes_)), std::free};
    if (!b.file) throw std::bad_alloc();
  }
  for (int i = 0; i < n_threads; ++i) threads_.emplace_back([this] { run(); });
}

KvDiskReader::~KvDiskReader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void KvDiskReader::start(std::vector<Key> keys) {
  std::unique_lock<std::mutex> lock(mutex_);
  held_ = false;  // (a caller that threw before release())
  drop_rest();
  cv_.wait(lock, [&] { return in_flight_ == 0; });  // a read in flight may be writing any buffer
  keys_ = std::move(keys);
  state_.assign(keys_.size(), kPending);
  n_claimed_ = n_taken_ = prefetched_ = 0;
  first_failed_ = SIZE_MAX;
  lock.unlock();
  cv_.notify_all();
}

const std::byte* KvDiskReader::next(uint64_t hash, bool* off_list) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (held_) fail(ErrorKind::internal, "KvDiskReader::next with a block not released");
  if (off_list != nullptr) *off_list = false;
  if (n_taken_ >= keys_.size() || keys_[n_taken_].hash != hash) {
    if (off_list != nullptr) *off_list = true;
    drop_rest();  // off the list: the rest is of no use
    return nullptr;
  }
  const size_t i = n_taken_;
  cv_.wait(lock, [&] { return state_[i] != kPending; });
  if (state_[i] != kOk) return nullptr;
  held_ = true;
  return buffers_[i % buffers_.size()].payload;
}

void KvDiskReader::release() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!held_) return;
    held_ = false;
    ++n_taken_;
  }
  cv_.notify_all();
}

void KvDiskReader::cancel() {
  std::lock_guard<std::mutex> lock(mutex_);
  drop_rest();
}

bool KvDiskReader::direct() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return direct_;
}

// (mutex_ held) Nothing past the block handed out is handed out: the list
// ends there and reads in flight are discarded.
void KvDiskReader::drop_rest() {
  ++generation_;
  const size_t keep = std::min(keys_.size(), n_taken_ + (held_ ? 1 : 0));
  keys_.resize(keep);
  state_.resize(keep);
  n_claimed_ = std::min(n_claimed_, keep);
  prefetched_ = std::min(prefetched_, keep);
  if (first_failed_ >= keep) first_failed_ = SIZE_MAX;
}

// (mutex_ held) A block to read: the list goes on and has not broken, and
// its buffer is free (the block N before it was released).
bool KvDiskReader::can_claim() const {
  return n_claimed_ < keys_.size() && n_claimed_ < first_failed_ && n_claimed_ < n_taken_ + buffers_.size();
}

void KvDiskReader::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || can_claim(); });
    if (stop_) return;
    const size_t i = n_claimed_++;
    const uint64_t generation = generation_;
    const Key key = keys_[i];
    Buffer& buffer = buffers_[i % buffers_.size()];
    bool direct = direct_;
    // Buffered reads: the kernel reads the next files ahead meanwhile.
    std::vector<uint64_t> ahead;
    if (!direct) {
      const size_t window_end = std::min(keys_.size(), i + 1 + 4 * buffers_.size());
      for (size_t j = std::max(prefetched_, i + 1); j < window_end; ++j) ahead.push_back(keys_[j].hash);
      prefetched_ = std::max(prefetched_, window_end);
    }
    ++in_flight_;
    lock.unlock();
    for (const uint64_t h : ahead) store_.prefetch(h);
    const std::byte* payload = store_.read_file(key.hash, key.parent, key.tokens, payload_bytes_,
                                                std::span<std::byte>(buffer.file.get(), file_bytes_), &direct);
    lock.lock();
    --in_flight_;
    if (!direct) direct_ = false;
    if (generation == generation_) {
      buffer.payload = payload;
      state_[i] = payload != nullptr ? kOk : kFailed;
      if (payload == nullptr) first_failed_ = std::min(first_failed_, i);
    }
    cv_.notify_all();
  }
}

}  // namespace pensieve
