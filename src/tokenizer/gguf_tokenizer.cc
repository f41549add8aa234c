#include "tokenizer/gguf_tokenizer.h"

#include <algorithm>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/tokenizer_file.h"

namespace pensieve {
namespace {

using nlohmann::json;

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum TokenType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// Pre-tokenizer patterns of the `tokenizer.ggml.pre` types of the supported
// families, as their tokenizer.json files write them.
const char* const kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", use_regex}};
}

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<int> types;
  std::vector<float> scores;
};

Vocab read_vocab(const GgufFile& f) {
  Vocab v;
  const GgufValue* tokens = f.get_array("tokenizer.ggml.tokens", true);
  if (tokens == nullptr) fail("{}: no tokenizer in the file (metadata 'tokenizer.ggml.tokens' is missing)", f.path());
  const size_t n = tokens->strs.size();
  if (n == 0 || n > (1u << 24)) fail("{}: tokenizer.ggml.tokens has {} entries", f.path(), n);
  v.tokens.reserve(n);
  for (std::string_view s : tokens->strs) v.tokens.emplace_back(s);
  v.types.assign(n, kNormal);
  if (const GgufValue* types = f.get_array("tokenizer.ggml.token_type", false)) {
    if (types->count != n)
      fail("{}: tokenizer.ggml.token_type has {} entries, tokenizer.ggml.tokens {}", f.path(), types->count, n);
    for (size_t i = 0; i < n; ++i) v.types[i] = static_cast<int>(types->number_at(i));
  }
  if (const GgufValue* scores = f.get_array("tokenizer.ggml.scores", false)) {
    if (scores->count != n)
      fail("{}: tokenizer.ggml.scores has {} entries, tokenizer.ggml.tokens {}", f.path(), scores->count, n);
    v.scores.resize(n);
    for (size_t i = 0; i < n; ++i) v.scores[i] = static_cast<float>(scores->number_at(i));
  }
  return v;
}

std::optional<int64_t> token_id(const GgufFile& f, const char* key, size_t n) {
  auto id = f.get_int(key);
  if (!id) return std::nullopt;
  if (*id < 0 || *id >= static_cast<int64_t>(n))
    fail("{}: metadata '{}' is {}, outside the vocabulary of {} tokens", f.path(), key, *id, n);
  return id;
}

bool default_add_bos(const std::string& model, const std::string& pre) {
  if (model == "llama") return true;
  return pre == "llama-bpe" || pre == "llama3" || pre == "smaug-bpe";
}

// SentencePiece's BPE order as merges: every split of a piece into two
// pieces of the vocabulary, ranked by the merged piece's score (highest
// first), the splits of one piece by the ids of their halves.
std::vector<std::pair<std::string, std::string>> spm_merges(const Vocab& v) {
  std::unordered_map<std::string_view, int32_t> id_of;
  id_of.reserve(v.tokens.size());
  for (size_t i = 0; i < v.tokens.size(); ++i) id_of.emplace(v.tokens[i], static_cast<int32_t>(i));
  struct Merge {
    float score;
    int32_t left, right;
  };
  std::vector<Merge> merges;
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    if (v.types[i] != kNormal && v.types[i] != kUserDefined) continue;
    const std::string_view t = v.tokens[i];
    const size_t first = merges.size();
    for (size_t cut = 1; cut < t.size(); ++cut) {
      auto l = id_of.find(t.substr(0, cut));
      if (l == id_of.end()) continue;
      auto r = id_of.find(t.substr(cut));
      if (r == id_of.end()) continue;
      merges.push_back({v.scores.empty() ? -static_cast<float>(i) : v.scores[i], l->second, r->second});
    }
    std::sort(merges.begin() + static_cast<long>(first), merges.end(), [](const Merge& a, const Merge& b) {
      return a.left != b.left ? a.left < b.left : a.right < b.right;
    });
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) { return a.score > b.score; });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (const Merge& m : merges) out.emplace_back(v.tokens[static_cast<size_t>(m.left)], v.tokens[static_cast<size_t>(m.right)]);
  return out;
}

}  // namespace

json gguf_tokenizer_config(const GgufFile& f) {
  json config = json::object();
  const GgufValue* tokens = f.get_array("tokenizer.ggml.tokens", true);
  const size_t n = tokens != nullptr ? tokens->strs.size() : 0;
  const std::string model = f.get_string("tokenizer.ggml.model").value_or("");
  const std::string pre = f.get_string("tokenizer.ggml.pre").value_or("default");
  if (n > 0) {
    if (auto bos = token_id(f, "tokenizer.ggml.bos_token_id", n)) config["bos_token"] = std::string(tokens->strs[*bos]);
    auto eos = token_id(f, "tokenizer.ggml.eos_token_id", n);
    if (!eos) eos = token_id(f, "tokenizer.ggml.eot_token_id", n);
    if (eos) config["eos_token"] = std::string(tokens->strs[*eos]);
    if (auto pad = token_id(f, "tokenizer.ggml.padding_token_id", n)) config["pad_token"] = std::string(tokens->strs[*pad]);
    if (auto unk = token_id(f, "tokenizer.ggml.unknown_token_id", n)) config["unk_token"] = std::string(tokens->strs[*unk]);
  }
  config["add_bos_token"] = f.get_bool("tokenizer.ggml.add_bos_token").value_or(default_add_bos(model, pre));
  config["add_eos_token"] = f.get_bool("tokenizer.ggml.add_eos_token").value_or(false);
  if (auto t = f.get_string("tokenizer.chat_template")) config["chat_template"] = *t;
  return config;
}

std::unique_ptr<Tokenizer> tokenizer_from_gguf(const GgufFile& f) {
  const std::string model = f.get_string("tokenizer.ggml.model").value_or("");
  if (model.empty()) fail("{}: no tokenizer in the file (metadata 'tokenizer.ggml.model' is missing)", f.path());
  if (model != "llama" && model != "gpt2")
    fail(ErrorKind::unsupported, "{}: tokenizer type '{}' is not supported (llama and gpt2 are)", f.path(), model);
  const std::string pre = f.get_string("tokenizer.ggml.pre").value_or("default");
  Vocab v = read_vocab(f);
  const json config = gguf_tokenizer_config(f);

  tok::TokenizerFile file;
  file.has_vocab = true;
  file.vocab.reserve(v.tokens.size());
  for (size_t i = 0; i < v.tokens.size(); ++i) file.vocab.emplace_back(v.tokens[i], static_cast<int32_t>(i));
  json doc = json::object();
  json bpe = {{"type", "BPE"}, {"dropout", nullptr}, {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""}};

  if (model == "llama") {
    // SentencePiece's vocabulary: "▁" is the space, one goes before each run of text.
    file.merges = spm_merges(v);
    std::optional<std::string> unk;
    if (auto id = token_id(f, "tokenizer.ggml.unknown_token_id", v.tokens.size())) unk = v.tokens[static_cast<size_t>(*id)];
    for (size_t i = 0; !unk && i < v.types.size(); ++i)
      if (v.types[i] == kUnknown) unk = v.tokens[i];
    bpe["unk_token"] = unk ? json(*unk) : json(nullptr);
    bpe["fuse_unk"] = true;
    bpe["byte_fallback"] = true;
    const bool prefix = f.get_bool("tokenizer.ggml.add_space_prefix").value_or(true);
    json normalizers = json::array();
    if (prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}});
    normalizers.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}});
    doc["normalizer"] = {{"type", "Sequence"}, {"normalizers", normalizers}};
    doc["pre_tokenizer"] = nullptr;
    json decoders = json::array({{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
                                 {{"type", "ByteFallback"}},
                                 {{"type", "Fuse"}}});
    if (prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    doc["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
  } else {
    const GgufValue* merges = f.get_array("tokenizer.ggml.merges", true);
    if (merges == nullptr) fail("{}: a gpt2 tokenizer without 'tokenizer.ggml.merges'", f.path());
    file.merges.reserve(merges->strs.size());
    for (size_t i = 0; i < merges->strs.size(); ++i) {
      const std::string_view m = merges->strs[i];
      const size_t sp = m.find(' ', 1);
      if (sp == std::string_view::npos || sp + 1 >= m.size())
        fail("{}: tokenizer.ggml.merges[{}] '{}' is not two tokens separated by a space", f.path(), i, m);
      file.merges.emplace_back(std::string(m.substr(0, sp)), std::string(m.substr(sp + 1)));
    }
    file.has_merges = true;
    bpe["unk_token"] = nullptr;
    bpe["fuse_unk"] = false;
    bpe["byte_fallback"] = false;
    const char* pattern = nullptr;
    if (pre == "llama-bpe" || pre == "llama3" || pre == "smaug-bpe") {
      pattern = kLlama3Pattern;
      bpe["ignore_merges"] = true;  // Llama 3: a whole pre-token in the vocabulary is one token
      doc["normalizer"] = nullptr;
    } else if (pre == "qwen2") {
      pattern = kQwen2Pattern;
      doc["normalizer"] = {{"type", "NFC"}};
    } else if (pre == "default" || pre == "gpt-2" || pre == "gpt2") {
      doc["normalizer"] = nullptr;
    } else {
      fail(ErrorKind::unsupported,
           "{}: pre-tokenizer '{}' is not supported (llama-bpe, llama3, smaug-bpe, qwen2, gpt-2 and default are)",
           f.path(), pre);
    }
    if (pattern != nullptr) {
      doc["pre_tokenizer"] = {{"type", "Sequence"},
                              {"pretokenizers", json::array({{{"type", "Split"},
                                                              {"pattern", {{"Regex", pattern}}},
                                                              {"behavior", "Isolated"},
                                                              {"invert", false}},
                                                             byte_level(false)})}};
    } else {
      doc["pre_tokenizer"] = byte_level(true);
    }
    doc["decoder"] = byte_level(true);
  }
  doc["model"] = bpe;

  // Control, user-defined and unknown tokens are matched in the text as wholes.
  json added = json::array();
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    const int t = v.types[i];
    if (t != kControl && t != kUserDefined && t != kUnknown) continue;
    added.push_back({{"id", i}, {"content", v.tokens[i]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", t != kUserDefined}});
  }
  doc["added_tokens"] = added;

  // BOS/EOS around the text, as add_bos_token / add_eos_token say.
  json single = json::array(), specials = json::object();
  auto special = [&](const char* key) {
    const std::string tok = config[key].get<std::string>();
    const auto id = std::find(v.tokens.begin(), v.tokens.end(), tok) - v.tokens.begin();
    specials[tok] = {{"id", tok}, {"ids", {id}}, {"tokens", {tok}}};
    single.push_back({{"SpecialToken", {{"id", tok}, {"type_id", 0}}}});
  };
  if (config.value("add_bos_token", false) && config.contains("bos_token")) special("bos_token");
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  if (config.value("add_eos_token", false) && config.contains("eos_token")) special("eos_token");
  doc["post_processor"] = specials.empty() ? json(nullptr)
                                           : json{{"type", "TemplateProcessing"}, {"single", single},
                                                  {"pair", single}, {"special_tokens", specials}};
  file.rest = std::move(doc);
  try {
    return Tokenizer::from_parsed(std::move(file), f.path(), config);
  } catch (const json::exception& e) {
    fail("{}: the vocabulary cannot be read: {}", f.path(), e.what());
  }
}

}  // namespace pensieve
