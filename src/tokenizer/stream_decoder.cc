#include "tokenizer/tokenizer.h"

namespace pensieve {
namespace {

bool ends_with_replacement_char(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

}  // namespace

// The window holds the ids that produced the last emitted text plus any
// still held back. Decoding the window with and without the new id and
// emitting the difference keeps decoder rules that look at neighbours
// (SentencePiece's leading-space strip, byte-fallback runs, multi-token UTF-8
// characters) exactly as decode() applies them to the whole sequence.
StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

std::string StreamDecoder::step(int32_t id) {
  window_.push_back(id);
  std::string text = tokenizer_.decode(window_, skip_special_);
  // Hold back while the text ends inside a character or a byte-fallback run.
  if (text.size() <= prefix_.size() || ends_with_replacement_char(text)) return {};
  std::string added;
  if (text.compare(0, prefix_.size(), prefix_) == 0) {
    added = text.substr(prefix_.size());
  } else {
    // Not expected with the supported decoders; emit what differs rather than fail.
    size_t common = 0;
    while (common < prefix_.size() && prefix_[common] == text[common]) ++common;
    added = text.substr(common);
  }
  // Keep only the ids after the previous emission as context for the next step.
  window_.erase(window_.begin(), window_.begin() + static_cast<std::ptrdiff_t>(prefix_len_));
  prefix_ = tokenizer_.decode(window_, skip_special_);
  prefix_len_ = window_.size();
  return added;
}

std::string StreamDecoder::finish() {
  std::string text = tokenizer_.decode(window_, skip_special_);
  std::string rest;
  if (text.size() > prefix_.size() && text.compare(0, prefix_.size(), prefix_) == 0) {
    rest = text.substr(prefix_.size());
  }
  window_.clear();
  prefix_.clear();
  prefix_len_ = 0;
  return rest;
}

}  // namespace pensieve
