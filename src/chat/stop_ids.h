// Which token ids end a reply. One rule for `pensieve serve` and
// `pensieve generate`; docs/chat-templates.md ("Stop tokens") spells it out.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "chat/chat_config.h"
#include "tokenizer/tokenizer.h"

namespace pensieve::chat {

// The special token the chat template writes right after an assistant
// message's content (Phi-3: <|end|>, ChatML/Qwen: <|im_end|>, Llama 3:
// <|eot_id|>, Mistral: </s>, Gemma: <end_of_turn>). Found by rendering
// user / assistant / user, the assistant turn holding a marker, and reading
// the special added token that follows the marker (after any whitespace).
// Empty when the model has no template, the template fails on that
// conversation, or no special token closes the turn.
std::vector<int32_t> template_turn_end_ids(const ChatConfig& chat, const Tokenizer& tokenizer);

// Sorted, without duplicates: `config_eos_ids` (config.json and
// generation_config.json's eos_token_id), the tokenizer's eos_token
// (tokenizer_config.json), the template's turn end, and the well-known
// end-of-text and end-of-turn tokens of the common families where the
// vocabulary has them as special tokens.
std::vector<int32_t> collect_stop_ids(std::span<const int64_t> config_eos_ids,
                                      const Tokenizer& tokenizer, const ChatConfig& chat);

}  // namespace pensieve::chat
