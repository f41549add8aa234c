// tokenizer.json "pre_tokenizer": cuts normalized text into the words the
// model encodes one by one (and, for byte-level BPE, maps bytes to symbols).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/json_path.h"
#include "tokenizer/regex.h"

namespace pensieve::tok {

struct Piece {
  std::string text;
  // True when the piece starts at byte 0 of the caller's input; Metaspace's
  // prepend_scheme "first" only adds its marker there.
  bool at_origin = false;
};

// How the parts matched by a pattern are kept (Hugging Face's SplitDelimiterBehavior).
enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` with their pre-tokenized parts; never yields empty pieces.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& spec, const JsonPath& at);

}  // namespace pensieve::tok
