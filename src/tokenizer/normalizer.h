// tokenizer.json "normalizer": rewrites each piece of input text (the parts
// between added tokens) before pre-tokenization.
#pragma once

#include <memory>
#include <string>

#include "tokenizer/json_path.h"

namespace pensieve::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

// Builds the normalizer described at `at`; null JSON gives nullptr.
std::unique_ptr<Normalizer> make_normalizer(const json& spec, const JsonPath& at);

// A {"String": s} or {"Regex": r} pattern object as used by Replace and Split.
class Pattern;
std::unique_ptr<Pattern> make_pattern(const json& spec, const JsonPath& at);

}  // namespace pensieve::tok
