// Added tokens (special tokens such as <|im_start|>, and extra vocabulary such
// as <think>): found in the text before the model runs, leftmost match first,
// the longest match at a position winning, with Hugging Face's lstrip /
// rstrip / single_word rules.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pensieve::tok {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool single_word = false;
};

// A part of the text: either an added token (`id` >= 0) or text to encode.
struct TextSplit {
  size_t start = 0, end = 0;
  int32_t id = -1;
};

// Finds a set of added tokens in text.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `patterns[i]` is what to look for (the content, normalized where the token
  // says so); `tokens[i]` gives its id and matching rules.
  void add(std::string pattern, const AddedToken& token);
  bool empty() const { return tokens_.empty(); }

  // Cuts `text` into added tokens and the text around them (no empty parts).
  std::vector<TextSplit> split(std::string_view text) const;

 private:
  struct Node {
    int32_t token = -1;  // index into tokens_ when a pattern ends here
  };
  int32_t child(int32_t node, uint8_t byte) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_{Node{}};
  std::unordered_map<uint64_t, int32_t> edges_;  // (node << 8 | byte) -> node
  bool first_byte_[256] = {};
};

}  // namespace pensieve::tok
