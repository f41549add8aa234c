#include "format/local_models.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace pensieve {
namespace fs = std::filesystem;
namespace {

constexpr const char* kDefaultHost = "registry.ollama.ai";
constexpr const char* kModelLayer = "application/vnd.ollama.image.model";

std::string home() {
  const char* h = std::getenv("HOME");
  return h != nullptr ? h : "";
}

// The model layer's blob of one manifest file, or "" when it has none.
std::string model_blob(const fs::path& manifest, const fs::path& root) {
  std::ifstream in(manifest);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("layers") || !j["layers"].is_array()) return {};
  for (const auto& layer : j["layers"]) {
    if (!layer.is_object() || layer.value("mediaType", "") != kModelLayer) continue;
    std::string digest = layer.value("digest", "");
    const size_t colon = digest.find(':');
    if (colon == std::string::npos || digest.find('/') != std::string::npos) return {};
    digest[colon] = '-';  // blobs are named sha256-HEX
    return (root / "blobs" / digest).string();
  }
  return {};
}

// Ollama's short name for manifests/HOST/NS/MODEL/TAG.
std::string short_name(const std::string& host, const std::string& ns, const std::string& model,
                       const std::string& tag) {
  std::string name = host == kDefaultHost ? (ns == "library" ? model : ns + "/" + model) : host + "/" + ns + "/" + model;
  return name + ":" + tag;
}

}  // namespace

std::string ollama_models_dir() {
  if (const char* e = std::getenv("OLLAMA_MODELS"); e != nullptr && *e != '\0') return e;
  std::error_code ec;
  const std::string user = home().empty() ? "" : home() + "/.ollama/models";
  if (!user.empty() && fs::is_directory(user, ec)) return user;
  if (fs::is_directory("/usr/share/ollama/.ollama/models", ec)) return "/usr/share/ollama/.ollama/models";
  return user;
}

std::vector<LocalGguf> list_ollama_models() {
  std::vector<LocalGguf> out;
  const fs::path root = ollama_models_dir();
  const fs::path manifests = root / "manifests";
  std::error_code ec;
  if (root.empty() || !fs::is_directory(manifests, ec)) return out;
  for (auto it = fs::recursive_directory_iterator(manifests, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const fs::path rel = fs::relative(it->path(), manifests, ec);
    std::vector<std::string> parts;
    for (const auto& p : rel) parts.push_back(p.string());
    if (parts.size() != 4) continue;  // HOST/NS/MODEL/TAG
    const std::string blob = model_blob(it->path(), root);
    if (blob.empty() || !fs::is_regular_file(blob, ec)) continue;
    out.push_back({"ollama", "ollama:" + short_name(parts[0], parts[1], parts[2], parts[3]), blob,
                   static_cast<uint64_t>(fs::file_size(blob, ec))});
  }
  std::sort(out.begin(), out.end(), [](const LocalGguf& a, const LocalGguf& b) { return a.name < b.name; });
  return out;
}

std::vector<LocalGguf> list_lmstudio_models() {
  std::vector<LocalGguf> out;
  if (home().empty()) return out;
  std::error_code ec;
  for (const std::string& dir : {home() + "/.lmstudio/models", home() + "/.cache/lm-studio/models"}) {
    if (!fs::is_directory(dir, ec)) continue;
    for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_regular_file(ec) || it->path().extension() != ".gguf") continue;
      const std::string file = it->path().filename().string();
      if (file.find("mmproj") != std::string::npos) continue;  // vision projectors
      // Split models: list only the first part.
      const size_t of = file.find("-of-");
      if (of != std::string::npos && of >= 6 && file.compare(of - 6, 6, "-00001") != 0) continue;
      out.push_back({"lmstudio", it->path().string(), it->path().string(),
                     static_cast<uint64_t>(it->file_size(ec))});
    }
    break;  // the first folder that exists
  }
  std::sort(out.begin(), out.end(), [](const LocalGguf& a, const LocalGguf& b) { return a.name < b.name; });
  return out;
}

std::string resolve_ollama_ref(const std::string& ref) {
  std::string name = ref.substr(ref.find(':') + 1);
  std::string tag = "latest";
  const size_t colon = name.rfind(':');
  if (colon != std::string::npos && name.find('/', colon) == std::string::npos) {
    tag = name.substr(colon + 1);
    name = name.substr(0, colon);
  }
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t slash = name.find('/', start);
    parts.push_back(name.substr(start, slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (parts.size() == 1) parts.insert(parts.begin(), {kDefaultHost, "library"});
  else if (parts.size() == 2) parts.insert(parts.begin(), kDefaultHost);
  for (const std::string& p : parts)
    if (p.empty() || p == "." || p == ".." || tag.empty() || tag.find('/') != std::string::npos)
      fail("{}: not an Ollama model name (ollama:NAME[:TAG])", ref);
  if (parts.size() != 3) fail("{}: not an Ollama model name (ollama:NAME[:TAG])", ref);
  const fs::path root = ollama_models_dir();
  const fs::path manifest = root / "manifests" / parts[0] / parts[1] / parts[2] / tag;
  std::error_code ec;
  if (root.empty() || !fs::is_regular_file(manifest, ec)) {
    std::string have;
    for (const LocalGguf& m : list_ollama_models()) have += (have.empty() ? "" : ", ") + m.name;
    fail(ErrorKind::not_found, "{}: no such model in Ollama's store {} ({})", ref, root.string(),
         have.empty() ? "it holds none" : "it holds " + have);
  }
  const std::string blob = model_blob(manifest, root);
  if (blob.empty()) fail(ErrorKind::not_found, "{}: its manifest {} names no model layer", ref, manifest.string());
  if (!fs::is_regular_file(blob, ec))
    fail(ErrorKind::not_found, "{}: the model's blob {} is missing from Ollama's store", ref, blob);
  return blob;
}

}  // namespace pensieve
