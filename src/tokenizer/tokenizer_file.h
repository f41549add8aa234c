// Reading tokenizer.json fast: the file may be gzipped, and the two huge
// members (model.vocab, model.merges: ~150k entries each for Qwen or Llama 3)
// are streamed straight into vectors by a SAX parser instead of being built
// as a JSON DOM first, which alone would take most of the load-time budget.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace pensieve::tok {

struct TokenizerFile {
  nlohmann::json rest;  // the document without model.vocab and model.merges
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  bool has_vocab = false;
  bool has_merges = false;
};

// Whole file contents; gzip-compressed files are inflated transparently.
// Throws Error (not_found) when the file cannot be read.
std::string read_file_maybe_gzipped(const std::string& path);

// Parses tokenizer.json text; `label` (the file name) prefixes error messages.
TokenizerFile parse_tokenizer_json(std::string_view text, const std::string& label);

}  // namespace pensieve::tok
