#include "tokenizer/tokenizer.h"

namespace pensieve {
namespace {

// A UTF-8 character is at most this many bytes, and every id that decode()
// does not drop adds at least one byte.
constexpr size_t kMaxCharBytes = 4;

bool ends_with_replacement_char(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

// The window holds the ids that produced the last emitted text plus any
// still held back. Decoding the window with and without the new id and
// emitting the difference keeps decoder rules that look at neighbours
// (SentencePiece's leading-space strip, byte-fallback runs, multi-token UTF-8
// characters) exactly as decode() applies them to the whole sequence.
StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

std::string StreamDecoder::decode_window(size_t begin, size_t end) const {
  return tokenizer_.decode(std::span<const int32_t>(window_).subspan(begin, end - begin),
                           skip_special_);
}

// Whether decode() turns `id` into at least one byte (it drops ids outside
// the vocabulary, and special tokens when skipping them).
bool StreamDecoder::adds_bytes(int32_t id) const {
  if (skip_special_ && tokenizer_.is_special(id)) return false;
  return tokenizer_.id_to_token(id).has_value();
}

std::string StreamDecoder::step(int32_t id) {
  window_.push_back(id);
  std::string text = decode_window(0, window_.size());
  if (text.size() > prefix_.size() && !ends_with_replacement_char(text)) {
    return emit_through(window_.size(), text);
  }
  // Held back: the text ends inside a character or a byte-fallback run (or
  // the id added nothing). Only the last kMaxCharBytes - 1 bytes can still
  // become part of a character; before them the replacement characters are
  // final (a byte-fallback run that is already invalid stays invalid: every
  // byte of it is one U+FFFD). So once more ids are held than a character
  // has bytes, settle all but the last three where the text splits there;
  // otherwise a long run of invalid bytes would be held to the end and
  // re-decoded in an ever longer window.
  size_t cut = window_.size(), n_after = 0, n_held = 0;
  for (size_t i = window_.size(); i > prefix_len_; --i) {
    if (!adds_bytes(window_[i - 1])) continue;
    ++n_held;
    if (n_after < kMaxCharBytes - 1) {
      ++n_after;
      cut = i - 1;
    }
  }
  if (n_held <= kMaxCharBytes) return {};
  const std::string head = decode_window(0, cut);
  if (!starts_with(text, head)) return {};
  // The settled ids become the start of the window, so they must decode on
  // their own as they do in the whole sequence: a byte-fallback run cut in
  // two must still read as invalid from its first kept byte.
  const std::string settled = decode_window(prefix_len_, cut);
  if (settled.empty() || !starts_with(decode_window(prefix_len_, window_.size()), settled)) return {};
  if (starts_with(head, prefix_) && head.compare(prefix_.size(), std::string::npos, settled) != 0) {
    return {};
  }
  return emit_through(cut, head);
}

// Emits the text of window_[0, end) (`text`) beyond what was emitted before,
// and makes window_[prefix_len_, end) the context for the next steps.
std::string StreamDecoder::emit_through(size_t end, const std::string& text) {
  std::string added;
  if (starts_with(text, prefix_)) {
    added = text.substr(prefix_.size());
  } else {
    // An invalid byte arrived in a byte-fallback run whose valid start was
    // already emitted: decode() now shows that whole run as U+FFFDs. What was
    // sent cannot be taken back; send the new ids' own text.
    added = decode_window(prefix_len_, end);
  }
  window_.erase(window_.begin(), window_.begin() + static_cast<std::ptrdiff_t>(prefix_len_));
  prefix_len_ = end - prefix_len_;
  prefix_ = decode_window(0, prefix_len_);
  return added;
}

std::string StreamDecoder::finish() {
  std::string rest;
  if (window_.size() > prefix_len_) {
    const std::string text = decode_window(0, window_.size());
    if (starts_with(text, prefix_)) {
      rest = text.substr(prefix_.size());
    } else {
      rest = decode_window(prefix_len_, window_.size());
    }
  }
  window_.clear();
  prefix_.clear();
  prefix_len_ = 0;
  return rest;
}

}  // namespace pensieve
