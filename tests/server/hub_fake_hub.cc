#include "server/hub_fake_hub.h"

#include <httplib.h>
#include <openssl/evp.h>

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
    std::lock_guard<std::mutex> lock(mutex_);
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
    serve_file(path, copy, &res);
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
        return serve_file(path, copy, &res);
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
}

uint64_t FakeHub::bytes_served(const std::string& file) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = bytes_served_.find(file);
  return it == bytes_served_.end() ? 0 : it->second;
}

int FakeHub::n_gets(const std::string& file) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = n_gets_.find(file);
  return it == n_gets_.end() ? 0 : it->second;
}

void FakeHub::serve_file(const std::string& name, const FakeFile& file, void* response) {
  auto& res = *static_cast<httplib::Response*>(response);
  struct Plan {
    bool drop = false, stall = false, corrupt = false;
    size_t drop_after = 0, stall_after = 0, served = 0;
    std::chrono::milliseconds stall_for{0}, chunk_delay{0};
  };
  auto plan = std::make_shared<Plan>();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++n_gets_[name];
    if (name == faults_.file) {
      if (faults_.n_drops > 0) {
        --faults_.n_drops;
        plan->drop = true;
        plan->drop_after = faults_.drop_after;
      }
      if (faults_.n_stalls > 0) {
        --faults_.n_stalls;
        plan->stall = true;
        plan->stall_after = faults_.stall_after;
        plan->stall_for = faults_.stall_for;
      }
      if (faults_.n_corruptions > 0) {
        --faults_.n_corruptions;
        plan->corrupt = true;
      }
    }
    plan->chunk_delay = faults_.chunk_delay;
  }
  auto content = std::make_shared<const std::string>(file.content);
  res.set_content_provider(
      content->size(), "application/octet-stream",
      [this, plan, content, name](size_t offset, size_t length, httplib::DataSink& sink) {
        if (plan->stall && plan->served >= plan->stall_after) {
          const auto until = std::chrono::steady_clock::now() + plan->stall_for;
          while (!stopping_ && std::chrono::steady_clock::now() < until) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
          return false;
        }
        size_t n = std::min(kChunkBytes, length);
        if (plan->drop) {
          if (plan->served >= plan->drop_after) return false;
          n = std::min(n, plan->drop_after - plan->served);
        }
        if (plan->stall) n = std::min(n, plan->stall_after - plan->served);
        std::string chunk = content->substr(offset, n);
        if (plan->corrupt) {
          chunk[chunk.size() / 2] = static_cast<char>(chunk[chunk.size() / 2] ^ 0x5a);
          plan->corrupt = false;
        }
        if (!sink.write(chunk.data(), chunk.size())) return false;
        plan->served += n;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          bytes_served_[name] += n;
        }
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
