// The BPE model of tokenizer.json: vocabulary + ranked merges, applied to one
// pre-tokenized word at a time. Covers byte-level BPE (GPT-2, Llama 3, Qwen)
// and SentencePiece-style BPE (byte_fallback to <0xNN> pieces, unk fusing).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/json_path.h"

namespace pensieve::tok {

// How far past the number of tokens an id may be: vocabularies are dense up
// to a few gaps, and tables are sized by the largest id.
inline constexpr int64_t kMaxIdGap = 1 << 16;

struct BpeOptions {
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
};

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class BpeModel {
 public:
  using Vocab = std::vector<std::pair<std::string, int32_t>>;
  using Merges = std::vector<std::pair<std::string, std::string>>;

  // `at` locates "model" in tokenizer.json for error messages.
  BpeModel(Vocab vocab, const Merges& merges, BpeOptions options, const JsonPath& at);

  // Appends the ids of one word (a pre-tokenizer piece) to `out`.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // nullptr when the id is not in the vocabulary.
  const std::string* id_to_token(int32_t id) const;
  // One past the largest id in the vocabulary.
  int32_t id_end() const { return static_cast<int32_t>(id_to_token_.size()); }
  size_t size() const { return n_tokens_; }

 private:
  struct MergeEntry {
    uint64_t key;  // (left id << 32) | right id; kEmptyKey when unused
    uint32_t rank;
    int32_t new_id;
  };
  static constexpr uint64_t kEmptyKey = ~uint64_t{0};

  const MergeEntry* find_merge(int32_t left, int32_t right) const;
  void insert_merge(int32_t left, int32_t right, uint32_t rank, int32_t new_id);
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  struct Symbol;
  void merge_part(std::vector<Symbol>& symbols, size_t begin, size_t end,
                  std::vector<uint64_t>& queue) const;
  void build_joinable_pairs() const;
  bool joinable(char32_t left, char32_t right) const;
  int32_t symbol_id(std::string_view ch, bool first, bool last) const;

  BpeOptions options_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> id_present_;
  // token -> id: open addressing over (hash, id); strings live in id_to_token_.
  struct VocabSlot {
    uint32_t hash;
    int32_t id;  // -1 when unused
  };
  std::vector<VocabSlot> vocab_table_;
  uint64_t vocab_mask_ = 0;
  size_t n_tokens_ = 0;
  std::vector<MergeEntry> merge_table_;  // open addressing, power-of-two size
  uint64_t merge_mask_ = 0;
  std::vector<int32_t> small_char_ids_;  // code point < 0x800 -> id (-1: absent)
  int32_t byte_ids_[256];                // <0xNN> pieces for byte_fallback (-1: absent)
  int32_t unk_id_ = -1;
  std::vector<bool> is_merge_result_;  // by id

  // Long words (SentencePiece models have no pre-tokenizer: a whole prompt is
  // one word) are cut where no merge result spans the two characters, and
  // each part is merged on its own: same result, far smaller heaps. The set
  // of character pairs found inside merge results is built on first need.
  mutable std::once_flag joinable_once_;
  mutable std::vector<uint64_t> joinable_pairs_;  // open addressing; ~0 = empty
  mutable uint64_t joinable_mask_ = 0;

  // Words seen before; pre-tokenized text repeats words a lot.
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringViewHash, std::equal_to<>>
      cache_;
};

}  // namespace pensieve::tok
