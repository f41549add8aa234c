// The JSON-schema -> forced tool-call grammar, and bytes fed to its matcher.
// Input: SCHEMA_JSON #### BYTES.
// Contract: building the grammar never crashes; the matcher takes any bytes;
// whenever it reports complete, what it took is the tool call the grammar
// promises: <tool_call>\n{"name": ..., "arguments": ...}\n</tool_call> whose
// arguments parse as JSON (so parse_tool_call_json accepts it).
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fuzz_support.h"
#include "server/json_grammar.h"
#include "server/output_parser.h"

using namespace pensieve;
using namespace pensieve::server;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parts = fuzz::split_parts(data, size, 2);
  nlohmann::ordered_json schema = nlohmann::ordered_json::parse(parts[0], nullptr, false);
  if (schema.is_discarded()) return 0;
  std::shared_ptr<const GrammarNode> grammar;
  try {
    grammar = tool_call_grammar({ForcedTool{"fuzz_tool", schema}, ForcedTool{"other", nullptr}});
  } catch (const Error&) {
    return 0;
  } catch (const std::exception& e) {
    fuzz::contract_broken("tool_call_grammar threw a non-pensieve exception", e.what());
  }
  GrammarMatcher matcher(grammar);
  std::string taken;
  for (unsigned char c : parts[1]) {
    GrammarMatcher next = matcher;
    if (!next.feed(c)) continue;  // refused: skip the byte, as the sampler would
    matcher = next;
    taken.push_back(static_cast<char>(c));
    if (matcher.complete()) break;
  }
  if (matcher.complete()) {
    constexpr std::string_view open = "<tool_call>\n", close = "\n</tool_call>";
    if (taken.rfind(open, 0) != 0 || taken.size() < open.size() + close.size() ||
        taken.compare(taken.size() - close.size(), close.size(), close) != 0)
      fuzz::contract_broken("grammar", "a complete call without its tags: " + taken);
    std::string body = taken.substr(open.size(), taken.size() - open.size() - close.size());
    std::string name;
    nlohmann::ordered_json input;
    if (!parse_tool_call_json(body, name, input))
      fuzz::contract_broken("grammar", "a complete call that does not parse: " + taken);
    if (name != "fuzz_tool" && name != "other")
      fuzz::contract_broken("grammar", "a call to an unknown tool: " + taken);
  }
  return 0;
}
