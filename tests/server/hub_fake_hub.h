// A fake Hugging Face Hub for the hub tests: two cpp-httplib servers in
// threads of the test process (the Hub on 127.0.0.1 and a "CDN" on another
// address), speaking the endpoints pensieve uses:
//   GET  /api/models/ORG/NAME/revision/REV   {"sha": ..., "siblings": [{"rfilename": ...}]}
//   HEAD/GET /ORG/NAME/resolve/REV/FILE      200 + ETag (git files) or 302 to the CDN
//                                            with X-Linked-Etag / X-Linked-Size (LFS)
//   GET  /cdn/ORG/NAME/SHA256                the LFS bytes, with Range support (206)
// plus 401 for gated repos, 404s with X-Error-Code, and fault knobs.
// cpp-httplib sends HEAD to the GET handlers; HEADs are counted apart and
// never consume a fault, so a fault always hits a real body transfer.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Server;
}

namespace pensieve::test {

struct FakeFile {
  std::string content;
  bool lfs = false;
  std::string etag;  // computed by FakeHub::add_repo: SHA-256 (LFS) or git blob id
};

struct FakeRepo {
  std::string commit;                              // what "main" resolves to
  std::map<std::string, std::string> refs;         // other branches/tags -> commit
  std::map<std::string, FakeFile> files;
  std::vector<std::string> extra_siblings;         // listed in the API answer, not served
  bool gated = false;                              // needs "Authorization: Bearer <token>"
};

// Failure injection; applies to GET bodies of files named `file`. Each n_*
// counts the transfers (GETs) it still applies to.
struct FakeFaults {
  std::string file = "model.safetensors";
  int n_drops = 0;             // close the connection after `drop_after` body bytes
  size_t drop_after = 0;
  int n_resets = 0;            // after `reset_after` bytes, a TCP RST (SO_LINGER 0, close)
  size_t reset_after = 0;
  int n_stalls = 0;            // after `stall_after` bytes, send nothing for `stall_for`,
  size_t stall_after = 0;      // then close
  std::chrono::milliseconds stall_for{5000};
  int n_holds = 0;             // after `hold_after` bytes, wait for FakeHub::release_holds()
  size_t hold_after = 0;       // (then go on normally)
  int n_corruptions = 0;       // flip a byte of the body
  int n_ignore_ranges = 0;     // answer a Range request with 200 and the whole body
  int n_wrong_ranges = 0;      // answer "Range: bytes=N-" with the bytes from N + 4096
                               // (and a Content-Range that says so)
  int n_api_errors = 0;        // answer the revision API with 500
  int n_api_stalls = 0;        // the revision API sends nothing for `stall_for`
  std::string api_body;        // when set, the revision API answers 200 with this
  std::string linked_size;     // when set, replaces X-Linked-Size
  std::string etag_override;   // when set, replaces the etag of `file`
  std::chrono::milliseconds chunk_delay{0};  // between 64 KiB chunks (slow line)
};

class FakeHub {
 public:
  FakeHub();
  ~FakeHub();

  std::string endpoint() const { return endpoint_; }
  std::string cdn_origin() const { return cdn_origin_; }
  std::string token = "hf_test_token";  // the token gated repos accept

  // Computes etags; the repo keeps `commit` (40 hex) as main.
  void add_repo(const std::string& repo, FakeRepo fake);
  const FakeRepo& repo(const std::string& repo) const;
  void set_faults(const FakeFaults& faults);

  // What one GET of a file got: the Range start it asked for (0 = none), the
  // status and the body bytes written to its socket.
  struct Transfer {
    uint64_t range_start = 0;
    int status = 0;
    uint64_t bytes = 0;
  };

  uint64_t bytes_served(const std::string& file) const;  // body bytes sent
  int n_gets(const std::string& file) const;             // GETs that reached its bytes
  int n_heads(const std::string& file) const;            // HEADs answered with its metadata
  std::vector<Transfer> transfers(const std::string& file) const;  // its GETs, in order
  // Transfers waiting at their `hold_after` point now; release_holds() lets
  // them (and any later ones, until the next set_faults) go on.
  int n_held() const { return n_held_.load(); }
  void release_holds() { holds_released_ = true; }
  int n_api_requests() const { return n_api_requests_.load(); }
  int n_cdn_requests_with_auth() const { return n_cdn_auth_.load(); }
  int n_cdn_requests() const { return n_cdn_requests_.load(); }

 private:
  struct Impl;
  void serve_file(const std::string& name, const FakeFile& file, const void* request,
                  void* response);

  std::unique_ptr<httplib::Server> hub_, cdn_;
  std::thread hub_thread_, cdn_thread_;
  std::string endpoint_, cdn_origin_;
  mutable std::mutex mutex_;
  std::map<std::string, FakeRepo> repos_;
  FakeFaults faults_;
  std::map<std::string, uint64_t> bytes_served_;
  std::map<std::string, int> n_heads_;
  std::map<std::string, std::vector<Transfer>> transfers_;
  std::atomic<int> n_api_requests_{0}, n_cdn_auth_{0}, n_cdn_requests_{0}, n_held_{0};
  std::atomic<bool> stopping_{false}, holds_released_{false};
};

// The qwen2-tiny fixture as a repo, plus files a model doesn't need
// (README.md, pytorch_model.bin, onnx/, original/) that must not be fetched.
FakeRepo qwen2_tiny_repo();
std::string git_blob_sha1(const std::string& content);
std::string sha256_hex(const std::string& content);

}  // namespace pensieve::test
