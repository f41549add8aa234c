#include "server/hub_fake_hub.h"

#include <dirent.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace pensieve::test {
namespace {

constexpr size_t kChunkBytes = 64 << 10;

std::string hex_digest(const EVP_MD* md, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), out, &n, md, nullptr);
  static const char* const kHex = "0123456789abcdef";
  std::string text;
  for (unsigned int i = 0; i < n; ++i) {
    text += kHex[out[i] >> 4];
    text += kHex[out[i] & 15];
  }
  return text;
}

void not_found(httplib::Response& res, const std::string& code, const std::string& message) {
  res.status = 404;
  res.set_header("X-Error-Code", code);
  res.set_header("X-Error-Message", message);
  res.set_content(nlohmann::json{{"error", message}}.dump(), "application/json");
}

// The socket of this process whose local end is local_port and whose peer's
// port is peer_port (the server's side of a connection), or -1.
int find_server_socket(int local_port, int peer_port) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (dirent* entry = readdir(dir)) {
    const int fd = std::atoi(entry->d_name);
    if (fd <= 2 || fd == dirfd(dir)) continue;
    sockaddr_in local{}, peer{};
    socklen_t local_len = sizeof local, peer_len = sizeof peer;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0 ||
        local.sin_family != AF_INET) {
      continue;
    }
    if (ntohs(local.sin_port) == local_port && ntohs(peer.sin_port) == peer_port) {
      found = fd;
      break;
    }
  }
  closedir(dir);
  return found;
}

// Aborts a connection the hard way: SO_LINGER 0 makes the close send a TCP RST
// instead of a FIN. The socket is closed by putting /dev/null in its place
// (dup2 is atomic), so cpp-httplib's own later close() can't hit a reused fd.
bool reset_connection(int local_port, int peer_port) {
  const int fd = find_server_socket(local_port, peer_port);
  if (fd < 0) return false;
  linger hard{1, 0};
  if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard) != 0) return false;
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd < 0) return false;
  const bool replaced = ::dup2(null_fd, fd) == fd;
  ::close(null_fd);
  return replaced;
}

// Starts `server` on a random port of `host`; returns the port or -1.
int start(httplib::Server& server, const std::string& host, std::thread& thread) {
  const int port = server.bind_to_any_port(host);
  if (port <= 0) return -1;
  thread = std::thread([&server] { server.listen_after_bind(); });
  return port;
}

}  // namespace

std::string sha256_hex(const std::string& content) { return hex_digest(EVP_sha256(), content); }

std::string git_blob_sha1(const std::string& content) {
  std::string blob = "blob " + std::to_string(content.size());
  blob.push_back('\0');
  return hex_digest(EVP_sha1(), blob + content);
}

FakeHub::FakeHub() : hub_(std::make_unique<httplib::Server>()), cdn_(std::make_unique<httplib::Server>()) {
  for (auto* server : {hub_.get(), cdn_.get()}) {
    server->new_task_queue = [] { return new httplib::ThreadPool(8); };
    server->set_keep_alive_timeout(1);
  }

  hub_->Get(R"(/api/models/([^/]+)/([^/]+)/revision/(.+))",
            [this](const httplib::Request& req, httplib::Response& res) {
    ++n_api_requests_;
    const std::string name = req.matches[1].str() + "/" + req.matches[2].str();
    const std::string revision = req.matches[3].str();
    std::unique_lock<std::mutex> lock(mutex_);
    if (faults_.n_api_stalls > 0) {
      --faults_.n_api_stalls;
      const auto until = std::chrono::steady_clock::now() + faults_.stall_for;
      lock.unlock();
      while (!stopping_ && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      res.status = 500;  // too late: the client has given up by now
      return;
    }
    if (faults_.n_api_errors > 0) {
      --faults_.n_api_errors;
      res.status = 500;
      res.set_content("internal error", "text/plain");
      return;
    }
    if (!faults_.api_body.empty()) {
      res.set_content(faults_.api_body, "text/html");
      return;
    }
    auto it = repos_.find(name);
    if (it == repos_.end()) return not_found(res, "RepoNotFound", "Repository not found");
    const FakeRepo& fake = it->second;
    if (fake.gated && req.get_header_value("Authorization") != "Bearer " + token) {
      res.status = 401;
      res.set_header("X-Error-Code", "GatedRepo");
      res.set_header("X-Error-Message", "Access to model " + name + " is restricted.");
      res.set_content("{\"error\":\"gated\"}", "application/json");
      return;
    }
    std::string commit;
    if (revision == "main" || revision == fake.commit) commit = fake.commit;
    if (auto ref = fake.refs.find(revision); ref != fake.refs.end()) commit = ref->second;
    if (commit.empty()) return not_found(res, "RevisionNotFound", "Invalid rev id: " + revision);
    nlohmann::json siblings = nlohmann::json::array();
    for (const auto& [file, content] : fake.files) siblings.push_back({{"rfilename", file}});
    for (const auto& file : fake.extra_siblings) siblings.push_back({{"rfilename", file}});
    res.set_content(nlohmann::json{{"id", name}, {"sha", commit}, {"siblings", siblings}}.dump(),
                    "application/json");
  });

  hub_->Get(R"(/([^/]+)/([^/]+)/resolve/([^/]+)/(.+))",
            [this](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1].str() + "/" + req.matches[2].str();
    const std::string revision = req.matches[3].str();
    const std::string path = req.matches[4].str();
    std::unique_lock<std::mutex> lock(mutex_);
    auto it = repos_.find(name);
    if (it == repos_.end()) return not_found(res, "RepoNotFound", "Repository not found");
    const FakeRepo& fake = it->second;
    if (fake.gated && req.get_header_value("Authorization") != "Bearer " + token) {
      res.status = 401;
      res.set_header("X-Error-Code", "GatedRepo");
      return;
    }
    if (revision != fake.commit) return not_found(res, "RevisionNotFound", "unknown revision");
    auto file = fake.files.find(path);
    if (file == fake.files.end()) return not_found(res, "EntryNotFound", path + " not found");
    const std::string etag =
        faults_.etag_override.empty() || path != faults_.file ? file->second.etag
                                                              : faults_.etag_override;
    res.set_header("X-Repo-Commit", fake.commit);
    if (file->second.lfs) {
      res.set_header("ETag", "\"pointer-" + git_blob_sha1(file->second.etag) + "\"");
      res.set_header("X-Linked-Etag", "\"" + etag + "\"");
      res.set_header("X-Linked-Size", faults_.linked_size.empty() || path != faults_.file
                                          ? std::to_string(file->second.content.size())
                                          : faults_.linked_size);
      res.set_redirect(cdn_origin_ + "/cdn/" + name + "/" + file->second.etag, 302);
      return;
    }
    res.set_header("ETag", "\"" + etag + "\"");
    const FakeFile copy = file->second;
    lock.unlock();
    serve_file(path, copy, &req, &res);
  });

  cdn_->Get(R"(/cdn/([^/]+)/([^/]+)/([0-9a-f]{64}))",
            [this](const httplib::Request& req, httplib::Response& res) {
    ++n_cdn_requests_;
    if (req.has_header("Authorization")) ++n_cdn_auth_;
    const std::string name = req.matches[1].str() + "/" + req.matches[2].str();
    std::unique_lock<std::mutex> lock(mutex_);
    auto it = repos_.find(name);
    if (it == repos_.end()) return not_found(res, "RepoNotFound", "no such repo");
    for (const auto& [path, file] : it->second.files) {
      if (file.lfs && file.etag == req.matches[3].str()) {
        const FakeFile copy = file;
        lock.unlock();
        return serve_file(path, copy, &req, &res);
      }
    }
    res.status = 404;
  });

  const int hub_port = start(*hub_, "127.0.0.1", hub_thread_);
  // Another address, as a real CDN is another host; 127.0.0.0/8 is all loopback on Linux.
  std::string cdn_host = "127.0.0.2";
  int cdn_port = start(*cdn_, cdn_host, cdn_thread_);
  if (cdn_port <= 0) {
    cdn_host = "127.0.0.1";
    cdn_port = start(*cdn_, cdn_host, cdn_thread_);
  }
  if (hub_port <= 0 || cdn_port <= 0) throw std::runtime_error("fake hub: cannot bind");
  endpoint_ = "http://127.0.0.1:" + std::to_string(hub_port);
  cdn_origin_ = "http://" + cdn_host + ":" + std::to_string(cdn_port);
}

FakeHub::~FakeHub() {
  stopping_ = true;
  hub_->stop();
  cdn_->stop();
  if (hub_thread_.joinable()) hub_thread_.join();
  if (cdn_thread_.joinable()) cdn_thread_.join();
}

void FakeHub::add_repo(const std::string& name, FakeRepo fake) {
  for (auto& [path, file] : fake.files) {
    file.etag = file.lfs ? sha256_hex(file.content) : git_blob_sha1(file.content);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  repos_[name] = std::move(fake);
}

const FakeRepo& FakeHub::repo(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return repos_.at(name);
}

void FakeHub::set_faults(const FakeFaults& faults) {
  std::lock_guard<std::mutex> lock(mutex_);
  faults_ = faults;
  holds_released_ = false;
}

uint64_t FakeHub::bytes_served(const std::string& file) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = bytes_served_.find(file);
  return it == bytes_served_.end() ? 0 : it->second;
}

int FakeHub::n_gets(const std::string& file) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = transfers_.find(file);
  return it == transfers_.end() ? 0 : static_cast<int>(it->second.size());
}

int FakeHub::n_heads(const std::string& file) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = n_heads_.find(file);
  return it == n_heads_.end() ? 0 : it->second;
}

std::vector<FakeHub::Transfer> FakeHub::transfers(const std::string& file) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = transfers_.find(file);
  return it == transfers_.end() ? std::vector<Transfer>{} : it->second;
}

void FakeHub::serve_file(const std::string& name, const FakeFile& file, const void* request,
                         void* response) {
  const auto& req = *static_cast<const httplib::Request*>(request);
  auto& res = *static_cast<httplib::Response*>(response);
  if (req.method == "HEAD") {
    // Headers only (cpp-httplib sends no body for HEAD): not a transfer, no faults.
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++n_heads_[name];
    }
    res.set_content_provider(file.content.size(), "application/octet-stream",
                             [](size_t, size_t, httplib::DataSink&) { return false; });
    return;
  }
  struct Plan {
    bool drop = false, reset = false, stall = false, hold = false, corrupt = false;
    size_t drop_after = 0, reset_after = 0, stall_after = 0, hold_after = 0, served = 0;
    std::chrono::milliseconds stall_for{0}, chunk_delay{0};
    size_t index = 0;  // in transfers_[name]
  };
  auto plan = std::make_shared<Plan>();
  const bool ranged = req.ranges.size() == 1 && req.ranges[0].first > 0;
  const size_t range_start = ranged ? static_cast<size_t>(req.ranges[0].first) : 0;
  bool ignore_range = false, wrong_range = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    plan->index = transfers_[name].size();
    transfers_[name].push_back({range_start, 0, 0});
    if (name == faults_.file) {
      auto take = [](int& n) { return n > 0 ? (--n, true) : false; };
      if (take(faults_.n_drops)) {
        plan->drop = true;
        plan->drop_after = faults_.drop_after;
      }
      if (take(faults_.n_resets)) {
        plan->reset = true;
        plan->reset_after = faults_.reset_after;
      }
      if (take(faults_.n_stalls)) {
        plan->stall = true;
        plan->stall_after = faults_.stall_after;
        plan->stall_for = faults_.stall_for;
      }
      if (take(faults_.n_holds)) {
        plan->hold = true;
        plan->hold_after = faults_.hold_after;
      }
      plan->corrupt = take(faults_.n_corruptions);
      if (ranged) {
        ignore_range = take(faults_.n_ignore_ranges);
        wrong_range = !ignore_range && take(faults_.n_wrong_ranges);
      }
    }
    plan->chunk_delay = faults_.chunk_delay;
  }
  // The body this GET sends, from `first` of the file's bytes.
  size_t first = 0;
  if (ignore_range || wrong_range) {
    // cpp-httplib cuts a Range out of the provider's body by itself; clearing
    // the parsed ranges (the Request is ours to change, only handed out const)
    // lets the answer be what a broken server or proxy sends.
    const_cast<httplib::Request&>(req).ranges.clear();
    if (wrong_range) {
      first = std::min(range_start + 4096, file.content.size());
      res.status = 206;
      res.set_header("Content-Range", "bytes " + std::to_string(first) + "-" +
                                          std::to_string(file.content.size() - 1) + "/" +
                                          std::to_string(file.content.size()));
    } else {
      res.status = 200;
    }
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    transfers_[name][plan->index].status = res.status > 0 ? res.status : ranged ? 206 : 200;
  }
  auto content = std::make_shared<const std::string>(file.content.substr(first));
  const int local_port = req.local_port, peer_port = req.remote_port;
  res.set_content_provider(
      content->size(), "application/octet-stream",
      [this, plan, content, name, local_port, peer_port](size_t offset, size_t length,
                                                         httplib::DataSink& sink) {
        if (plan->stall && plan->served >= plan->stall_after) {
          const auto until = std::chrono::steady_clock::now() + plan->stall_for;
          while (!stopping_ && std::chrono::steady_clock::now() < until) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
          return false;
        }
        if (plan->hold && plan->served >= plan->hold_after) {
          plan->hold = false;
          ++n_held_;
          // At most 30 s, so a test that forgets to release can't hang the suite.
          const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
          while (!stopping_ && !holds_released_ && std::chrono::steady_clock::now() < until) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
          --n_held_;
        }
        if (plan->reset && plan->served >= plan->reset_after) {
          // Let the client read what was sent, so the reset lands mid-body.
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          reset_connection(local_port, peer_port);
          return false;
        }
        size_t n = std::min(kChunkBytes, length);
        if (plan->drop) {
          if (plan->served >= plan->drop_after) return false;
          n = std::min(n, plan->drop_after - plan->served);
        }
        for (const auto& [active, after] : {std::pair{plan->stall, plan->stall_after},
                                            std::pair{plan->hold, plan->hold_after},
                                            std::pair{plan->reset, plan->reset_after}}) {
          if (active) n = std::min(n, after - plan->served);
        }
        std::string chunk = content->substr(offset, n);
        if (plan->corrupt && !chunk.empty()) {
          chunk[chunk.size() / 2] = static_cast<char>(chunk[chunk.size() / 2] ^ 0x5a);
          plan->corrupt = false;
        }
        // Counted before the write, so a client that has read these bytes
        // always finds them counted; taken back if the write fails.
        auto count = [&](bool sent) {
          std::lock_guard<std::mutex> lock(mutex_);
          uint64_t& total = bytes_served_[name];
          uint64_t& transfer = transfers_[name][plan->index].bytes;
          total = sent ? total + n : total - n;
          transfer = sent ? transfer + n : transfer - n;
        };
        count(true);
        if (!sink.write(chunk.data(), chunk.size())) {
          count(false);
          return false;
        }
        plan->served += n;
        if (plan->chunk_delay.count() > 0) std::this_thread::sleep_for(plan->chunk_delay);
        return true;
      });
}

FakeRepo qwen2_tiny_repo() {
  FakeRepo fake;
  fake.commit = "1111111111222222222233333333334444444444";
  fake.refs["v1.0"] = fake.commit;
  const std::string dir = data_path("models/qwen2-tiny");
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    FakeFile file;
    file.content = read_file(entry.path().string());
    file.lfs = name.size() > 12 && name.substr(name.size() - 12) == ".safetensors";
    fake.files[name] = file;
  }
  fake.files["tokenizer_config.json"] = {"{\"model_max_length\": 32768}\n", false, ""};
  fake.files["README.md"] = {"# qwen2-tiny\n", false, ""};
  fake.files["pytorch_model.bin"] = {std::string(5000, 'b'), true, ""};
  fake.files["onnx/model.onnx"] = {std::string(3000, 'o'), true, ""};
  fake.files["original/consolidated.safetensors"] = {std::string(4000, 'c'), true, ""};
  fake.files["images/logo.png"] = {std::string(100, 'p'), false, ""};
  return fake;
}

}  // namespace pensieve::test
