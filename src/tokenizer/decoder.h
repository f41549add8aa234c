// tokenizer.json "decoder": turns the token strings of a sequence of ids back
// into text. Each step rewrites the list of token strings ("decode_chain");
// the final text is their concatenation.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/json_path.h"

namespace pensieve::tok {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

std::unique_ptr<Decoder> make_decoder(const json& spec, const JsonPath& at);

}  // namespace pensieve::tok
