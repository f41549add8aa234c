#include "chat/stop_ids.h"

#include <algorithm>
#include <exception>
#include <string>
#include <string_view>

namespace pensieve::chat {
namespace {

// A model may end a reply with its end-of-text token instead of its turn end
// (Qwen and Phi-3 list both in generation_config.json), and a directory may
// lack generation_config.json: these are stops wherever they are special tokens.
constexpr const char* kFamilyEndTokens[] = {"<|end|>",       "<|im_end|>",      "<|eot_id|>",
                                            "<|eom_id|>",    "<|endoftext|>",   "<|end_of_text|>",
                                            "<end_of_turn>"};

constexpr std::string_view kMarker = "pensieve-stop-probe-7f3a";

}  // namespace

std::vector<int32_t> template_turn_end_ids(const ChatConfig& chat, const Tokenizer& tokenizer) {
  if (!chat.has_template()) return {};
  // The assistant turn sits between two user turns so that templates which
  // leave the last message open (for continuing it) still close this one.
  const nlohmann::ordered_json messages = {
      {{"role", "user"}, {"content", "Hello"}},
      {{"role", "assistant"}, {"content", std::string(kMarker)}},
      {{"role", "user"}, {"content", "Thanks"}},
  };
  std::string text;
  try {
    text = render_chat(chat, messages, nullptr, false);
  } catch (const std::exception&) {
    return {};  // e.g. a template that insists on a system message; the other sources remain
  }
  size_t pos = text.find(kMarker);
  if (pos == std::string::npos) return {};
  pos += kMarker.size();
  while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\n' || text[pos] == '\t' ||
                               text[pos] == '\r')) {
    ++pos;
  }
  const tok::AddedToken* best = nullptr;
  for (const tok::AddedToken& t : tokenizer.added_tokens()) {
    if (!t.special || t.content.empty() || text.compare(pos, t.content.size(), t.content) != 0) {
      continue;
    }
    if (best == nullptr || t.content.size() > best->content.size()) best = &t;
  }
  if (best == nullptr) return {};
  return {best->id};
}

std::vector<int32_t> collect_stop_ids(std::span<const int64_t> config_eos_ids,
                                      const Tokenizer& tokenizer, const ChatConfig& chat) {
  std::vector<int32_t> ids;
  for (int64_t id : config_eos_ids) ids.push_back(static_cast<int32_t>(id));
  if (auto eos = tokenizer.eos_id()) ids.push_back(*eos);
  for (int32_t id : template_turn_end_ids(chat, tokenizer)) ids.push_back(id);
  for (const char* token : kFamilyEndTokens) {
    if (auto id = tokenizer.token_to_id(token); id && tokenizer.is_special(*id)) ids.push_back(*id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

}  // namespace pensieve::chat
