// A model directory's JSON files: config.json, generation_config.json and
// tokenizer_config.json (chat template, special tokens).
// Input: CONFIG #### GENERATION_CONFIG #### TOKENIZER_CONFIG.
// Contract: pensieve::Error (which names the file) or success, never another
// exception or a crash.
#include "chat/chat_config.h"
#include "core/error.h"
#include "format/hf_config.h"
#include "fuzz_support.h"

using namespace pensieve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parts = fuzz::split_parts(data, size, 3);
  const std::string dir = fuzz::scratch_dir();
  fuzz::write_file(dir + "/config.json", parts[0]);
  if (!parts[1].empty()) fuzz::write_file(dir + "/generation_config.json", parts[1]);
  if (!parts[2].empty()) fuzz::write_file(dir + "/tokenizer_config.json", parts[2]);
  try {
    ModelConfig config = load_model_config(dir);
    (void)config;
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::contract_broken("load_model_config threw a non-pensieve exception", e.what());
  }
  try {
    chat::ChatConfig chat = chat::load_chat_config(dir);
    (void)chat;
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::contract_broken("load_chat_config threw a non-pensieve exception", e.what());
  }
  return 0;
}
