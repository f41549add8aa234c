#include "tokenizer/bpe.h"

#include <algorithm>
#include <functional>

#include "tokenizer/unicode.h"

namespace pensieve::tok {
namespace {

constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kCacheCapacity = 50000;
constexpr char32_t kSmallCharLimit = 0x800;
// Words at least this long are cut into independently merged parts.
constexpr size_t kCutWordBytes = 256;
constexpr char32_t kNotAChar = 0xFFFFFFFF;

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// A candidate merge: (rank << 32) | position of its left symbol. The smallest
// key is the best-ranked merge, leftmost on ties, as Hugging Face orders them.
using QueuedMerge = uint64_t;

QueuedMerge queued(uint32_t rank, uint32_t pos) { return (uint64_t{rank} << 32) | pos; }

}  // namespace

struct BpeModel::Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  uint32_t len;  // bytes of the word it covers; 0 once merged into its left neighbour
};

BpeModel::BpeModel(Vocab vocab, const Merges& merges, BpeOptions options, const JsonPath& at)
    : options_(std::move(options)) {
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0) at.key("vocab").invalid(fmt::format("has a negative id for '{}'", token));
    max_id = std::max(max_id, id);
  }
  // Ids are (nearly) dense: the tables below are sized by the largest one,
  // so a stray huge id would take gigabytes (a fuzz finding: 888888863 in a
  // 500-token vocabulary).
  if (int64_t{max_id} >= int64_t(vocab.size()) + kMaxIdGap)
    at.key("vocab").invalid(fmt::format("has id {}, far past its {} tokens", max_id, vocab.size()));
  id_to_token_.resize(static_cast<size_t>(max_id + 1));
  id_present_.assign(id_to_token_.size(), false);
  for (auto& [token, id] : vocab) {
    id_to_token_[id] = std::move(token);
    id_present_[id] = true;
  }
  size_t vocab_slots = 16;
  while (vocab_slots < vocab.size() * 2) vocab_slots *= 2;
  vocab_table_.assign(vocab_slots, VocabSlot{0, -1});
  vocab_mask_ = vocab_slots - 1;
  for (size_t id = 0; id < id_to_token_.size(); ++id) {
    if (!id_present_[id]) continue;
    const std::string& token = id_to_token_[id];
    const size_t h = StringViewHash{}(token);
    size_t slot = h & vocab_mask_;
    bool duplicate = false;
    while (vocab_table_[slot].id >= 0) {
      const VocabSlot& s = vocab_table_[slot];
      if (s.hash == static_cast<uint32_t>(h) && id_to_token_[s.id] == token) duplicate = true;
      if (duplicate) break;
      slot = (slot + 1) & vocab_mask_;
    }
    if (duplicate) continue;  // the same string under two ids: the lower id wins
    vocab_table_[slot] = VocabSlot{static_cast<uint32_t>(h), static_cast<int32_t>(id)};
    ++n_tokens_;
  }

  size_t table_size = 16;
  while (table_size < merges.size() * 2) table_size *= 2;
  merge_table_.assign(table_size, MergeEntry{kEmptyKey, 0, 0});
  merge_mask_ = table_size - 1;
  const size_t prefix_len = options_.continuing_subword_prefix.size();
  std::string merged;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const auto ia = token_to_id(a), ib = token_to_id(b);
    if (!ia || !ib) {
      at.key("merges").index(rank).invalid(
          fmt::format("uses '{}' which is not in the vocabulary", !ia ? a : b));
    }
    merged.assign(a);
    merged.append(b.size() >= prefix_len && b.compare(0, prefix_len, options_.continuing_subword_prefix) == 0
                      ? std::string_view(b).substr(prefix_len)
                      : std::string_view(b));
    const auto inew = token_to_id(merged);
    if (!inew) {
      at.key("merges").index(rank).invalid(
          fmt::format("makes '{}' which is not in the vocabulary", merged));
    }
    insert_merge(*ia, *ib, static_cast<uint32_t>(rank), *inew);
    if (is_merge_result_.empty()) is_merge_result_.assign(id_to_token_.size(), false);
    is_merge_result_[*inew] = true;
  }

  for (int b = 0; b < 256; ++b) {
    const auto id = token_to_id(fmt::format("<0x{:02X}>", b));
    byte_ids_[b] = id ? *id : -1;
  }
  if (options_.unk_token) {
    const auto id = token_to_id(*options_.unk_token);
    if (!id) {
      at.key("unk_token").invalid(
          fmt::format("'{}' is not in the vocabulary", *options_.unk_token));
    }
    unk_id_ = *id;
  }
  if (options_.continuing_subword_prefix.empty() && options_.end_of_word_suffix.empty()) {
    small_char_ids_.assign(kSmallCharLimit, -1);
    std::string ch;
    for (char32_t cp = 0; cp < kSmallCharLimit; ++cp) {
      ch.clear();
      append_utf8(ch, cp);
      if (auto id = token_to_id(ch)) small_char_ids_[cp] = *id;
    }
  }
}

void BpeModel::insert_merge(int32_t left, int32_t right, uint32_t rank, int32_t new_id) {
  const uint64_t key = pair_key(left, right);
  size_t slot = mix(key) & merge_mask_;
  while (merge_table_[slot].key != kEmptyKey && merge_table_[slot].key != key) {
    slot = (slot + 1) & merge_mask_;
  }
  // A pair listed twice keeps its last rank, as Hugging Face's map does.
  merge_table_[slot] = MergeEntry{key, rank, new_id};
}

const BpeModel::MergeEntry* BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  size_t slot = mix(key) & merge_mask_;
  while (true) {
    const MergeEntry& e = merge_table_[slot];
    if (e.key == key) return &e;
    if (e.key == kEmptyKey) return nullptr;
    slot = (slot + 1) & merge_mask_;
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const size_t h = StringViewHash{}(token);
  size_t slot = h & vocab_mask_;
  while (true) {
    const VocabSlot& s = vocab_table_[slot];
    if (s.id < 0) return std::nullopt;
    if (s.hash == static_cast<uint32_t>(h) && id_to_token_[s.id] == token) return s.id;
    slot = (slot + 1) & vocab_mask_;
  }
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= id_end() || !id_present_[id]) return nullptr;
  return &id_to_token_[id];
}

int32_t BpeModel::symbol_id(std::string_view ch, bool first, bool last) const {
  if (!small_char_ids_.empty()) {
    size_t pos = 0;
    const char32_t cp = next_code_point(ch, pos);
    if (cp < kSmallCharLimit) return small_char_ids_[cp];
    auto id = token_to_id(ch);
    return id ? *id : -1;
  }
  std::string s;
  if (!first) s = options_.continuing_subword_prefix;
  s.append(ch);
  if (last) s.append(options_.end_of_word_suffix);
  auto id = token_to_id(s);
  return id ? *id : -1;
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() < kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first_new = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= kCacheCapacity) cache_.clear();
    cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + first_new, out.end()));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  // The character of each symbol that is exactly one vocabulary character.
  std::vector<char32_t> chars;
  chars.reserve(word.size());
  auto add = [&](int32_t id, uint32_t len, char32_t ch = kNotAChar) {
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, len});
    chars.push_back(ch);
    if (index > 0) symbols[index - 1].next = index;
  };
  // A pending unknown symbol, kept open so that consecutive unknowns can fuse.
  int32_t pending_unk_len = 0;
  auto flush_unk = [&] {
    if (pending_unk_len > 0) add(unk_id_, static_cast<uint32_t>(pending_unk_len));
    pending_unk_len = 0;
  };

  size_t pos = 0;
  while (pos < word.size()) {
    const size_t start = pos;
    pos += std::min(utf8_seq_len(static_cast<uint8_t>(word[pos])), word.size() - pos);
    const std::string_view ch = word.substr(start, pos - start);
    const int32_t id = symbol_id(ch, start == 0, pos == word.size());
    if (id >= 0) {
      flush_unk();
      size_t cp_pos = 0;
      add(id, static_cast<uint32_t>(ch.size()), next_code_point(ch, cp_pos));
      continue;
    }
    if (options_.byte_fallback) {
      std::string bytes;
      if (start != 0) bytes = options_.continuing_subword_prefix;
      bytes.append(ch);
      if (pos == word.size()) bytes.append(options_.end_of_word_suffix);
      const bool all_known = std::all_of(bytes.begin(), bytes.end(), [&](char b) {
        return byte_ids_[static_cast<uint8_t>(b)] >= 0;
      });
      if (all_known) {
        // Like Hugging Face, a pending unknown is not flushed before the bytes.
        for (char b : bytes) add(byte_ids_[static_cast<uint8_t>(b)], 1);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (pending_unk_len > 0 && !options_.fuse_unk) flush_unk();
      pending_unk_len += static_cast<int32_t>(ch.size());
    }
    // Without an unknown token the character is dropped, as Hugging Face does.
  }
  flush_unk();

  // Cut points: a symbol whose link to its left neighbour is removed.
  std::vector<size_t> part_starts = {0};
  if (word.size() >= kCutWordBytes && !small_char_ids_.empty()) {
    std::call_once(joinable_once_, [this] { build_joinable_pairs(); });
    for (size_t i = 1; i < symbols.size(); ++i) {
      if (chars[i - 1] == kNotAChar || chars[i] == kNotAChar) continue;
      if (joinable(chars[i - 1], chars[i])) continue;
      symbols[i - 1].next = -1;
      symbols[i].prev = -1;
      part_starts.push_back(i);
    }
  }
  part_starts.push_back(symbols.size());
  std::vector<QueuedMerge> queue;
  for (size_t p = 0; p + 1 < part_starts.size(); ++p) {
    merge_part(symbols, part_starts[p], part_starts[p + 1], queue);
  }
  for (const Symbol& s : symbols) {
    if (s.len > 0) out.push_back(s.id);
  }
}


// Applies the merges to symbols [begin, end), which link only among themselves.
void BpeModel::merge_part(std::vector<Symbol>& symbols, size_t begin, size_t end,
                          std::vector<uint64_t>& queue) const {
  queue.clear();
  for (size_t i = begin; i + 1 < end; ++i) {
    if (const MergeEntry* m = find_merge(symbols[i].id, symbols[i + 1].id)) {
      queue.push_back(queued(m->rank, static_cast<uint32_t>(i)));
    }
  }
  const auto later = std::greater<QueuedMerge>();
  std::make_heap(queue.begin(), queue.end(), later);
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), later);
    const QueuedMerge top = queue.back();
    queue.pop_back();
    const uint32_t rank = static_cast<uint32_t>(top >> 32);
    const uint32_t pos = static_cast<uint32_t>(top);
    Symbol& left = symbols[pos];
    if (left.len == 0 || left.next < 0) continue;
    const int32_t right_pos = left.next;
    const Symbol right = symbols[right_pos];
    // Skip entries made stale by an earlier merge around this position: a
    // changed neighbour makes a longer pair, which never has the same rank.
    const MergeEntry* m = find_merge(left.id, right.id);
    if (m == nullptr || m->rank != rank) continue;
    left.id = m->new_id;
    left.len += right.len;
    left.next = right.next;
    symbols[right_pos].len = 0;
    if (right.next >= 0) symbols[right.next].prev = static_cast<int32_t>(pos);
    if (left.prev >= 0) {
      if (const MergeEntry* pm = find_merge(symbols[left.prev].id, left.id)) {
        queue.push_back(queued(pm->rank, static_cast<uint32_t>(left.prev)));
        std::push_heap(queue.begin(), queue.end(), later);
      }
    }
    if (left.next >= 0) {
      if (const MergeEntry* nm = find_merge(left.id, symbols[left.next].id)) {
        queue.push_back(queued(nm->rank, pos));
        std::push_heap(queue.begin(), queue.end(), later);
      }
    }
  }
}

void BpeModel::build_joinable_pairs() const {
  std::vector<uint64_t> pairs;
  std::vector<char32_t> cps;
  for (size_t id = 0; id < is_merge_result_.size(); ++id) {
    if (!is_merge_result_[id]) continue;
    const std::string& token = id_to_token_[id];
    cps.clear();
    for (size_t pos = 0; pos < token.size();) cps.push_back(next_code_point(token, pos));
    for (size_t i = 1; i < cps.size(); ++i) pairs.push_back((uint64_t{cps[i - 1]} << 32) | cps[i]);
  }
  size_t table_size = 16;
  while (table_size < pairs.size() * 2) table_size *= 2;
  joinable_pairs_.assign(table_size, kEmptyKey);
  joinable_mask_ = table_size - 1;
  for (uint64_t key : pairs) {
    size_t slot = mix(key) & joinable_mask_;
    while (joinable_pairs_[slot] != kEmptyKey && joinable_pairs_[slot] != key) {
      slot = (slot + 1) & joinable_mask_;
    }
    joinable_pairs_[slot] = key;
  }
}

bool BpeModel::joinable(char32_t left, char32_t right) const {
  const uint64_t key = (uint64_t{left} << 32) | right;
  size_t slot = mix(key) & joinable_mask_;
  while (true) {
    if (joinable_pairs_[slot] == key) return true;
    if (joinable_pairs_[slot] == kEmptyKey) return false;
    slot = (slot + 1) & joinable_mask_;
  }
}

}  // namespace pensieve::tok
