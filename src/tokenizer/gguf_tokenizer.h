// A GGUF file's vocabulary as a Tokenizer: the tokenizer.ggml.* metadata is
// turned into what a Hugging Face tokenizer.json of the same model says, and
// the existing BPE engine runs it.
//  - tokenizer.ggml.model "llama" (SentencePiece): byte fallback, "▁" for
//    spaces with one prepended to each run of text, and merges ranked by
//    the merged piece's score (SentencePiece's BPE order);
//  - "gpt2" (byte-level BPE): tokenizer.ggml.merges, with the pre-tokenizer
//    of tokenizer.ggml.pre (llama-bpe / llama3 / smaug-bpe for Llama 3,
//    qwen2 for Qwen 2/2.5/3, default/gpt-2 for GPT-2's own).
// Control, user-defined and unknown tokens (tokenizer.ggml.token_type) are
// added tokens; bos/eos come from their ids, add_bos_token/add_eos_token from
// tokenizer.ggml.add_bos_token / add_eos_token.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "format/gguf.h"
#include "tokenizer/tokenizer.h"

namespace pensieve {

std::unique_ptr<Tokenizer> tokenizer_from_gguf(const GgufFile& file);

// What tokenizer_config.json would hold: bos_token / eos_token (texts),
// add_bos_token, add_eos_token, and chat_template (tokenizer.chat_template)
// where the file has them.
nlohmann::json gguf_tokenizer_config(const GgufFile& file);

}  // namespace pensieve
