#include "tokenizer/added_tokens.h"

#include "tokenizer/unicode.h"

namespace pensieve::tok {
namespace {

bool is_word_char(char32_t cp) { return cp == '_' || is_alphanumeric(cp); }

}  // namespace

void AddedTokenMatcher::add(std::string pattern, const AddedToken& token) {
  if (pattern.empty()) return;
  int32_t node = 0;
  for (char c : pattern) {
    const auto byte = static_cast<uint8_t>(c);
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | byte;
    auto it = edges_.find(key);
    if (it == edges_.end()) {
      nodes_.push_back(Node{});
      it = edges_.emplace(key, static_cast<int32_t>(nodes_.size() - 1)).first;
    }
    node = it->second;
  }
  first_byte_[static_cast<uint8_t>(pattern[0])] = true;
  if (nodes_[node].token >= 0) return;  // the same text twice: the first token wins
  tokens_.push_back(token);
  nodes_[node].token = static_cast<int32_t>(tokens_.size() - 1);
}

int32_t AddedTokenMatcher::child(int32_t node, uint8_t byte) const {
  auto it = edges_.find((static_cast<uint64_t>(node) << 8) | byte);
  return it == edges_.end() ? -1 : it->second;
}

std::vector<TextSplit> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<TextSplit> out;
  size_t emitted = 0;  // text before this offset is already in `out`
  size_t pos = 0;
  while (pos < text.size()) {
    if (!first_byte_[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    // Longest pattern starting at `pos`.
    int32_t best = -1;
    size_t best_end = 0;
    int32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      node = child(node, static_cast<uint8_t>(text[i]));
      if (node < 0) break;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        best_end = i + 1;
      }
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[best];
    size_t start = pos, stop = best_end;
    if (token.single_word) {
      const bool space_before = start == 0 || !is_word_char(last_code_point(text.substr(0, start)));
      size_t after = stop;
      const bool space_after = stop == text.size() || !is_word_char(next_code_point(text, after));
      if (!space_before || !space_after) {
        // The matcher moves past a rejected match, as Hugging Face's does.
        pos = stop;
        continue;
      }
    }
    if (token.lstrip) {
      size_t s = start;
      while (s > emitted) {
        size_t prev = 0;
        if (!is_whitespace(last_code_point(text.substr(0, s), &prev))) break;
        s = prev;
      }
      start = s;
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t next = stop;
        if (!is_whitespace(next_code_point(text, next))) break;
        stop = next;
      }
    }
    if (emitted < start) out.push_back({emitted, start, -1});
    out.push_back({start, stop, token.id});
    emitted = stop;
    pos = stop;
  }
  if (emitted < text.size()) out.push_back({emitted, text.size(), -1});
  return out;
}

}  // namespace pensieve::tok
