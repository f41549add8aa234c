// tokenizer.json "post_processor": adds special tokens (BOS, CLS/SEP, ...)
// around an encoded single sequence. Applied only when the caller asks for
// special tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tokenizer/json_path.h"

namespace pensieve::tok {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids) const = 0;
};

std::unique_ptr<PostProcessor> make_post_processor(const json& spec, const JsonPath& at);

}  // namespace pensieve::tok
