#include "hub/repo_id.h"

#include <cctype>

#include "core/error.h"

namespace pensieve::hub {
namespace {

constexpr size_t kMaxRepoIdLength = 96;
constexpr size_t kMaxRevisionLength = 256;
constexpr size_t kMaxFileNameLength = 1024;

bool is_word_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

bool is_name_char(char c) { return is_word_char(c) || c == '-' || c == '.'; }

bool valid_name_part(const std::string& part) {
  if (part.empty() || !is_word_char(part.front()) || !is_word_char(part.back())) return false;
  for (char c : part) {
    if (!is_name_char(c)) return false;
  }
  return true;
}

bool has_control_char(const std::string& text) {
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return true;
  }
  return false;
}

// Splits on '/' and checks each component is a plain name.
bool safe_relative_path(const std::string& path) {
  if (path.empty() || path.front() == '/' || path.back() == '/') return false;
  if (path.find('\\') != std::string::npos || has_control_char(path)) return false;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    const std::string part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

bool is_valid_repo_id(const std::string& repo) {
  if (repo.size() > kMaxRepoIdLength) return false;
  const size_t slash = repo.find('/');
  if (slash == std::string::npos || repo.find('/', slash + 1) != std::string::npos) return false;
  if (repo.find("--") != std::string::npos || repo.find("..") != std::string::npos) return false;
  if (ends_with(repo, ".git")) return false;
  return valid_name_part(repo.substr(0, slash)) && valid_name_part(repo.substr(slash + 1));
}

void validate_repo_id(const std::string& repo) {
  if (!is_valid_repo_id(repo)) {
    fail("'{}' is not a valid Hugging Face repo id: expected ORG/NAME using letters, digits, "
         "'-', '_' and '.' (no '--' or '..', at most {} characters)",
         repo, kMaxRepoIdLength);
  }
}

void validate_revision(const std::string& revision) {
  if (revision.size() > kMaxRevisionLength || !safe_relative_path(revision)) {
    fail("'{}' is not a valid revision: expected a branch, tag or commit such as 'main'",
         revision);
  }
  size_t start = 0;
  while (start < revision.size()) {
    if (revision[start] == '.') fail("'{}' is not a valid revision: hidden component", revision);
    const size_t next = revision.find('/', start);
    if (next == std::string::npos) break;
    start = next + 1;
  }
}

RepoRef parse_repo_ref(const std::string& text) {
  RepoRef ref;
  const size_t at = text.find('@');
  ref.repo = text.substr(0, at);
  ref.revision = at == std::string::npos ? "main" : text.substr(at + 1);
  validate_repo_id(ref.repo);
  validate_revision(ref.revision);
  return ref;
}

void validate_repo_file_name(const std::string& repo, const std::string& name) {
  if (name.size() > kMaxFileNameLength || !safe_relative_path(name)) {
    fail("the Hub listed an unsafe file name '{}' in {}: refusing to download it", name, repo);
  }
}

void validate_etag(const std::string& etag, const std::string& file) {
  bool ok = !etag.empty() && etag.size() <= 128 && etag != "." && etag != "..";
  for (char c : etag) ok = ok && is_name_char(c);
  if (!ok) fail("the Hub sent an unusable etag '{}' for {}", etag, file);
}

bool is_commit_hash(const std::string& text) {
  if (text.size() != 40) return false;
  for (char c : text) {
    if (!std::isxdigit(static_cast<unsigned char>(c)) || std::isupper(static_cast<unsigned char>(c)))
      return false;
  }
  return true;
}

bool is_model_file(const std::string& name) {
  static const char* const kExact[] = {
      "config.json",          "generation_config.json",  "tokenizer.json",
      "tokenizer_config.json", "tokenizer.model",        "special_tokens_map.json",
      "chat_template.jinja",  "chat_template.json",      "model.safetensors.index.json",
  };
  if (name.find('/') != std::string::npos) return false;
  for (const char* exact : kExact) {
    if (name == exact) return true;
  }
  return ends_with(name, ".safetensors") && name.size() > 12;
}

std::string repo_folder_name(const std::string& repo) {
  std::string out = "models--";
  for (char c : repo) {
    if (c == '/') {
      out += "--";
    } else {
      out += c;
    }
  }
  return out;
}

std::string repo_from_folder_name(const std::string& folder) {
  const std::string prefix = "models--";
  if (folder.compare(0, prefix.size(), prefix) != 0) return "";
  std::string rest = folder.substr(prefix.size());
  const size_t sep = rest.find("--");
  if (sep == std::string::npos) return "";
  std::string repo = rest.substr(0, sep) + "/" + rest.substr(sep + 2);
  return is_valid_repo_id(repo) ? repo : "";
}

std::string url_escape(const std::string& text, bool keep_slash) {
  static const char* const kHex = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

}  // namespace pensieve::hub
