#include "tokenizer/tokenizer.h"

#include <filesystem>

#include "core/error.h"
#include "format/gguf.h"
#include "tokenizer/gguf_tokenizer.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/json_path.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer_file.h"
#include "tokenizer/unicode.h"

namespace pensieve {

using tok::JsonPath;
using nlohmann::json;

namespace {

std::unique_ptr<tok::BpeModel> make_model(tok::TokenizerFile& file, const JsonPath& root) {
  const JsonPath at = root.key("model");
  const json& spec = tok::required(file.rest, "model", root);
  if (!spec.is_object()) at.invalid("must be an object");
  const std::string type = tok::get_string_or(spec, "type", "BPE", at);
  if (type != "BPE") at.unsupported_type(type);
  if (!file.has_vocab) at.key("vocab").invalid("is missing");
  tok::BpeOptions options;
  if (auto it = spec.find("unk_token"); it != spec.end() && !it->is_null()) {
    if (!it->is_string()) at.key("unk_token").invalid("must be a string or null");
    options.unk_token = it->get<std::string>();
  }
  options.fuse_unk = tok::get_bool_or(spec, "fuse_unk", false, at);
  options.byte_fallback = tok::get_bool_or(spec, "byte_fallback", false, at);
  options.ignore_merges = tok::get_bool_or(spec, "ignore_merges", false, at);
  options.continuing_subword_prefix = tok::get_string_or(spec, "continuing_subword_prefix", "", at);
  options.end_of_word_suffix = tok::get_string_or(spec, "end_of_word_suffix", "", at);
  auto model = std::make_unique<tok::BpeModel>(std::move(file.vocab), file.merges,
                                               std::move(options), at);
  file.merges.clear();
  file.merges.shrink_to_fit();
  return model;
}

std::vector<tok::AddedToken> parse_added_tokens(const json& doc, const JsonPath& root) {
  std::vector<tok::AddedToken> out;
  auto it = doc.find("added_tokens");
  if (it == doc.end() || it->is_null()) return out;
  const JsonPath at = root.key("added_tokens");
  if (!it->is_array()) at.invalid("must be an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    const JsonPath t_at = at.index(i);
    if (!t.is_object()) t_at.invalid("must be an object");
    tok::AddedToken token;
    const int64_t id = tok::get_int_or(t, "id", -1, t_at);
    if (id < 0 || id > INT32_MAX) t_at.key("id").invalid("is missing or out of range");
    token.id = static_cast<int32_t>(id);
    token.content = tok::get_string(t, "content", t_at);
    if (auto bad = tok::find_invalid_utf8(token.content)) {
      t_at.key("content").invalid(fmt::format("is not valid UTF-8 at byte {}", *bad));
    }
    token.special = tok::get_bool_or(t, "special", false, t_at);
    token.lstrip = tok::get_bool_or(t, "lstrip", false, t_at);
    token.rstrip = tok::get_bool_or(t, "rstrip", false, t_at);
    token.normalized = tok::get_bool_or(t, "normalized", !token.special, t_at);
    token.single_word = tok::get_bool_or(t, "single_word", false, t_at);
    out.push_back(std::move(token));
  }
  return out;
}

// "<s>" or {"content": "<s>", ...} or null.
std::optional<std::string> config_token(const json& config, const char* key,
                                        const std::string& label) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  fail("{}: {} must be a string or an object with \"content\"", label, key);
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (const std::string gguf = find_gguf(path); !gguf.empty()) return tokenizer_from_gguf(GgufFile(gguf));
  std::string file = path;
  fs::path dir = fs::path(path).parent_path();
  if (fs::is_directory(path, ec)) {
    dir = path;
    file = (dir / "tokenizer.json").string();
    if (!fs::exists(file, ec) && fs::exists(file + ".gz", ec)) file += ".gz";
    if (!fs::exists(file, ec)) {
      fail(ErrorKind::not_found, "{}: no tokenizer.json in this directory", path);
    }
  }
  const std::string text = tok::read_file_maybe_gzipped(file);
  json config = nullptr;
  const fs::path config_path = dir / "tokenizer_config.json";
  if (fs::is_regular_file(config_path, ec)) {
    const std::string config_text = tok::read_file_maybe_gzipped(config_path.string());
    try {
      config = json::parse(config_text);
    } catch (const json::exception& e) {
      fail("{}: malformed JSON: {}", config_path.string(), e.what());
    }
    if (!config.is_object()) fail("{}: the top level must be a JSON object", config_path.string());
  }
  return from_json(text, file, config);
}

std::unique_ptr<Tokenizer> Tokenizer::from_json(std::string_view tokenizer_json,
                                                const std::string& label, const json& config) {
  return from_parsed(tok::parse_tokenizer_json(tokenizer_json, label), label, config);
}

std::unique_ptr<Tokenizer> Tokenizer::from_parsed(tok::TokenizerFile file, const std::string& label,
                                                  const json& config) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  const JsonPath root{label, ""};
  const json& doc = file.rest;
  t->model_ = make_model(file, root);
  auto member = [&](const char* key) -> const json& {
    static const json null_json = nullptr;
    auto it = doc.find(key);
    return it == doc.end() ? null_json : *it;
  };
  t->normalizer_ = tok::make_normalizer(member("normalizer"), root.key("normalizer"));
  t->pre_tokenizer_ = tok::make_pre_tokenizer(member("pre_tokenizer"), root.key("pre_tokenizer"));
  t->post_processor_ =
      tok::make_post_processor(member("post_processor"), root.key("post_processor"));
  t->decoder_ = tok::make_decoder(member("decoder"), root.key("decoder"));

  t->added_ = parse_added_tokens(doc, root);
  t->vocab_size_ = t->model_->id_end();
  for (size_t i = 0; i < t->added_.size(); ++i) {
    const tok::AddedToken& a = t->added_[i];
    // Ids index tables sized by the vocabulary: one far past the model's
    // and the other added tokens would make them gigabytes (fuzz finding).
    const int64_t id_limit = int64_t{t->model_->id_end()} + int64_t(t->added_.size()) + tok::kMaxIdGap;
    if (a.id >= id_limit)
      root.key("added_tokens").index(i).key("id").invalid(fmt::format(
          "{} is far past the vocabulary ({} model tokens, {} added)", a.id,
          t->model_->id_end(), t->added_.size()));
    t->added_by_id_[a.id] = i;
    t->added_by_content_[a.content] = a.id;
    t->vocab_size_ = std::max(t->vocab_size_, a.id + 1);
    if (a.normalized && t->normalizer_) {
      std::string pattern = a.content;
      t->normalizer_->normalize(pattern);
      t->normalized_matcher_.add(std::move(pattern), a);
    } else if (a.normalized) {
      t->normalized_matcher_.add(a.content, a);
    } else {
      t->raw_matcher_.add(a.content, a);
    }
  }

  if (!config.is_null()) {
    if (!config.is_object()) fail("{}: tokenizer_config.json must be a JSON object", label);
    t->config_ = config;
    t->bos_token_ = config_token(config, "bos_token", "tokenizer_config.json");
    t->eos_token_ = config_token(config, "eos_token", "tokenizer_config.json");
  }
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (auto bad = tok::find_invalid_utf8(text)) {
    fail("tokenizer: input text is not valid UTF-8: byte {} (0x{:02X}) at offset {}",
         *bad, static_cast<uint8_t>(text[*bad]), *bad);
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (raw_matcher_.empty()) {
    encode_text(text, true, ids);
  } else {
    for (const tok::TextSplit& s : raw_matcher_.split(text)) {
      if (s.id >= 0) {
        ids.push_back(s.id);
      } else {
        encode_text(text.substr(s.start, s.end - s.start), s.start == 0, ids);
      }
    }
  }
  if (add_special_tokens && post_processor_) post_processor_->process(ids);
  return ids;
}

void Tokenizer::encode_text(std::string_view text, bool at_origin,
                            std::vector<int32_t>& ids) const {
  std::string normalized(text);
  if (normalizer_) normalizer_->normalize(normalized);
  if (normalized.empty()) return;
  std::vector<tok::TextSplit> splits;
  if (normalized_matcher_.empty()) {
    splits.push_back({0, normalized.size(), -1});
  } else {
    splits = normalized_matcher_.split(normalized);
  }
  std::vector<tok::Piece> pieces;
  for (const tok::TextSplit& s : splits) {
    if (s.id >= 0) {
      ids.push_back(s.id);
      continue;
    }
    pieces.clear();
    pieces.push_back({normalized.substr(s.start, s.end - s.start), at_origin && s.start == 0});
    if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
    for (const tok::Piece& p : pieces) model_->encode_word(p.text, ids);
  }
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
      const tok::AddedToken& a = added_[it->second];
      if (skip_special_tokens && a.special) continue;
      tokens.push_back(a.content);
    } else if (const std::string* s = model_->id_to_token(id)) {
      tokens.push_back(*s);
    }
  }
  if (!decoder_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  decoder_->decode_chain(tokens);
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = added_by_content_.find(std::string(token)); it != added_by_content_.end()) {
    return it->second;
  }
  return model_->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return added_[it->second].content;
  if (const std::string* s = model_->id_to_token(id)) return *s;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  auto it = added_by_id_.find(id);
  return it != added_by_id_.end() && added_[it->second].special;
}

}  // namespace pensieve
