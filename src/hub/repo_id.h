// Names that come from users and from the Hub: repo ids, revisions, file names
// inside a repo, etags. Everything here is validated before it becomes part of
// a URL or a path in the cache, so a hostile server or a typo can never write
// outside the cache.
#pragma once

#include <string>

namespace pensieve::hub {

struct RepoRef {
  std::string repo;      // "ORG/NAME"
  std::string revision;  // branch, tag or commit; "main" when not given
};

// "ORG/NAME" or "ORG/NAME@REVISION"; throws Error on a malformed id or revision.
RepoRef parse_repo_ref(const std::string& text);

// ORG/NAME where both parts use [A-Za-z0-9._-], start and end with a letter,
// digit or '_', contain no "--" or "..", and the whole is at most 96 chars
// (the Hub's own rules, as huggingface_hub checks them).
void validate_repo_id(const std::string& repo);
bool is_valid_repo_id(const std::string& repo);

// Branch/tag names may contain '/', e.g. "refs/pr/1"; no "..", no empty or
// hidden components, no control characters.
void validate_revision(const std::string& revision);

// A file name sent by the server: relative, '/'-separated, no "." / ".."
// components, no backslashes or control characters.
void validate_repo_file_name(const std::string& repo, const std::string& name);

// An etag names a blob file: [A-Za-z0-9._-] only, not "." or "..".
void validate_etag(const std::string& etag, const std::string& file);

// A full 40-hex-digit git commit id.
bool is_commit_hash(const std::string& text);

// The files of a repo that a model needs: configs, tokenizer files, chat
// templates and safetensors weights (top level only). Everything else
// (.bin, .pt, .gguf, .onnx, images, sub-folders such as original/) is skipped.
bool is_model_file(const std::string& name);

// "models--ORG--NAME" <-> "ORG/NAME"
std::string repo_folder_name(const std::string& repo);
// Returns "" when `folder` is not a model folder of the cache.
std::string repo_from_folder_name(const std::string& folder);

// Percent-encodes everything but unreserved characters (and '/' when keep_slash).
std::string url_escape(const std::string& text, bool keep_slash);

}  // namespace pensieve::hub
