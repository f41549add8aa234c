// Jinja chat templates: the template source and the conversation given to it.
// Input: TEMPLATE #### CONTEXT_JSON (an object: messages, tools, ...).
// Contract: parse and render throw pensieve::Error or succeed; the step and
// output limits stop runaway templates (a hang is a finding).
#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "core/error.h"
#include "fuzz_support.h"

using namespace pensieve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parts = fuzz::split_parts(data, size, 2);
  nlohmann::ordered_json context = nlohmann::ordered_json::parse(parts[1], nullptr, false);
  if (context.is_discarded() || !context.is_object()) {
    context = {{"messages", {{{"role", "user"}, {"content", parts[1]}}}},
               {"add_generation_prompt", true}, {"bos_token", "<s>"}, {"eos_token", "</s>"}};
  }
  chat::TemplateLimits limits;  // small, so one input stays well under a second
  limits.max_steps = 200'000;
  limits.max_output_bytes = 1u << 20;
  limits.max_call_depth = 50;
  try {
    chat::ChatTemplate t = chat::ChatTemplate::parse(parts[0]);
    (void)t.render(context, limits);
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::contract_broken("a chat template threw a non-pensieve exception", e.what());
  }
  return 0;
}
