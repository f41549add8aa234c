// UTF-8 helpers and the few Unicode properties the tokenizer needs. Character
// properties and normalization come from ICU; this file only adapts them to
// UTF-8 std::string, which is what every tokenizer stage passes around.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pensieve::tok {

// Length of the UTF-8 sequence that starts with `lead` (1 for stray bytes).
inline size_t utf8_seq_len(uint8_t lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

// Decodes the code point at `pos` of valid UTF-8 and advances `pos`.
char32_t next_code_point(std::string_view text, size_t& pos);
// Decodes the last code point of non-empty valid UTF-8; `start` gets its offset.
char32_t last_code_point(std::string_view text, size_t* start = nullptr);
void append_utf8(std::string& out, char32_t cp);

// Byte offset of the first byte that is not part of well-formed UTF-8, if any.
std::optional<size_t> find_invalid_utf8(std::string_view bytes);
// Well-formed UTF-8 with each maximal ill-formed subsequence replaced by U+FFFD
// (the same rule as Rust's String::from_utf8_lossy).
std::string utf8_lossy(std::string_view bytes);

// Rust's char::is_whitespace (the White_Space property).
bool is_whitespace(char32_t cp);
// Rust's char::is_alphanumeric (Alphabetic or Numeric).
bool is_alphanumeric(char32_t cp);
// Unicode punctuation (general category P*) or ASCII punctuation/symbols.
bool is_punctuation(char32_t cp);

enum class NormalForm { nfc, nfd, nfkc, nfkd };
// Returns `text` in the normal form; ASCII text is returned untouched.
void normalize_unicode(NormalForm form, std::string& text);
// Full Unicode lowercase mapping (root locale).
void lowercase_unicode(std::string& text);

// GPT-2's byte <-> printable character table used by byte-level BPE.
struct ByteLevelTable {
  std::array<std::string, 256> byte_to_utf8;  // each byte as its character's UTF-8
  std::array<int16_t, 324> char_to_byte;      // code point -> byte, -1 when not in the table
};
const ByteLevelTable& byte_level_table();

}  // namespace pensieve::tok
