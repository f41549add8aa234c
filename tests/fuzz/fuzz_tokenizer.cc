// tokenizer.json (+ tokenizer_config.json), then text through it.
// Input: TOKENIZER_JSON #### TOKENIZER_CONFIG #### TEXT.
// Contract: loading throws pensieve::Error or gives a tokenizer that encodes
// valid UTF-8 to ids inside its vocabulary, decodes them, and streams them.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fuzz_support.h"
#include "tokenizer/tokenizer.h"

using namespace pensieve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parts = fuzz::split_parts(data, size, 3);
  nlohmann::json config = nlohmann::json::parse(parts[1], nullptr, false);
  if (config.is_discarded()) config = nullptr;
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = Tokenizer::from_json(parts[0], "tokenizer.json", config);
  } catch (const Error&) {
    return 0;
  } catch (const std::exception& e) {
    fuzz::contract_broken("Tokenizer::from_json threw a non-pensieve exception", e.what());
  }
  std::vector<int32_t> ids;
  try {
    ids = tok->encode(parts[2], true);
  } catch (const Error&) {
    return 0;  // invalid UTF-8 is refused with an Error
  } catch (const std::exception& e) {
    fuzz::contract_broken("encode threw a non-pensieve exception", e.what());
  }
  for (int32_t id : ids)
    if (id < 0 || id >= tok->vocab_size()) fuzz::contract_broken("encode", "id outside the vocabulary");
  try {
    (void)tok->decode(ids);
    StreamDecoder stream(*tok);
    for (int32_t id : ids) (void)stream.step(id);
    (void)stream.finish();
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::contract_broken("decode threw a non-pensieve exception", e.what());
  }
  return 0;
}
