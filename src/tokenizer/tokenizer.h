// A Hugging Face tokenizer.json (+ tokenizer_config.json) tokenizer: BPE
// models (byte-level and SentencePiece-style), added/special tokens,
// normalizers, pre-tokenizers, post-processors and decoders. Matches what
// the Hugging Face `tokenizers` library computes. Thread-safe: one instance
// can encode and decode from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/added_tokens.h"

#include "tokenizer/tokenizer_file.h"

namespace pensieve {

namespace tok {
class BpeModel;
class Normalizer;
class PreTokenizer;
class PostProcessor;
class Decoder;
}  // namespace tok

class Tokenizer {
 public:
  // `path` is a model directory (tokenizer.json or tokenizer.json.gz, plus an
  // optional tokenizer_config.json) or a tokenizer.json file itself. Gzipped
  // files load transparently. Throws Error naming the file and JSON path.
  static std::unique_ptr<Tokenizer> load(const std::string& path);
  // From tokenizer.json text; `config` is tokenizer_config.json (or null).
  static std::unique_ptr<Tokenizer> from_json(std::string_view tokenizer_json,
                                              const std::string& label,
                                              const nlohmann::json& config = nullptr);
  // From tokenizer.json already parsed (or built: a GGUF file's vocabulary,
  // tokenizer/gguf_tokenizer.h).
  static std::unique_ptr<Tokenizer> from_parsed(tok::TokenizerFile file, const std::string& label,
                                                const nlohmann::json& config = nullptr);
  ~Tokenizer();

  // Token ids of `text` (UTF-8; invalid UTF-8 throws Error naming the byte
  // offset). Added tokens in the text are always recognized; the
  // post-processor (e.g. BOS) runs only when `add_special_tokens` is true.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // Text of `ids`. Ids outside the vocabulary are skipped, as Hugging Face does.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The token string (model vocabulary form, e.g. "Ġhello" or "▁hello"); nullopt if unknown.
  std::optional<std::string> id_to_token(int32_t id) const;
  // True for added tokens marked "special" (<|im_end|>, <s>, ...).
  bool is_special(int32_t id) const;
  // One past the largest id of the vocabulary and the added tokens.
  int32_t vocab_size() const { return vocab_size_; }
  const std::vector<tok::AddedToken>& added_tokens() const { return added_; }

  // From tokenizer_config.json (`bos_token` / `eos_token` as strings or
  // {"content": ...} objects); nullopt when absent or not in the vocabulary.
  const std::optional<std::string>& bos_token() const { return bos_token_; }
  const std::optional<std::string>& eos_token() const { return eos_token_; }
  std::optional<int32_t> bos_id() const { return bos_token_ ? token_to_id(*bos_token_) : std::nullopt; }
  std::optional<int32_t> eos_id() const { return eos_token_ ? token_to_id(*eos_token_) : std::nullopt; }
  // tokenizer_config.json as loaded (an empty object when there was none).
  const nlohmann::json& config() const { return config_; }

 private:
  Tokenizer();
  void encode_text(std::string_view text, bool at_origin, std::vector<int32_t>& ids) const;

  std::unique_ptr<tok::BpeModel> model_;
  std::unique_ptr<tok::Normalizer> normalizer_;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<tok::PostProcessor> post_processor_;
  std::unique_ptr<tok::Decoder> decoder_;
  std::vector<tok::AddedToken> added_;
  std::unordered_map<int32_t, size_t> added_by_id_;        // id -> index in added_
  std::unordered_map<std::string, int32_t> added_by_content_;
  tok::AddedTokenMatcher raw_matcher_;         // tokens matched before normalization
  tok::AddedTokenMatcher normalized_matcher_;  // tokens matched in normalized text
  int32_t vocab_size_ = 0;
  std::optional<std::string> bos_token_, eos_token_;
  nlohmann::json config_ = nlohmann::json::object();
};

// Turns ids into text one id at a time, for streaming generated tokens. Each
// step returns only newly completed text: never a partial UTF-8 character or
// an unfinished run of byte-fallback pieces. The concatenation of everything
// step() and finish() return equals tokenizer.decode(all ids) (one exception,
// see docs/tokenizer.md: an invalid byte right after valid ones in a single
// byte-fallback run). Long runs of invalid bytes stream out as U+FFFDs as
// they come, each step decoding a window of a few ids.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
  std::string step(int32_t id);
  // Text still held back at the end of the stream (an incomplete character
  // comes out as U+FFFD, as decode() would render it).
  std::string finish();

 private:
  std::string decode_window(size_t begin, size_t end) const;
  bool adds_bytes(int32_t id) const;
  std::string emit_through(size_t end, const std::string& text);

  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> window_;  // ids since before the last emitted text
  std::string prefix_;           // decode of window_[0, prefix_len_)
  size_t prefix_len_ = 0;
};

}  // namespace pensieve
