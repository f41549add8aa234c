#include "tokenizer/tokenizer_file.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace pensieve::tok {

using nlohmann::json;

std::string read_file_maybe_gzipped(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    fail(ErrorKind::not_found, "{}: no such file", path);
  }
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files unchanged
  if (f == nullptr) fail(ErrorKind::not_found, "{}: cannot open: {}", path, std::strerror(errno));
  gzbuffer(f, 1 << 20);
  std::string out;
  char buf[1 << 16];
  while (true) {
    const int n = gzread(f, buf, sizeof(buf));
    if (n < 0) {
      int code = 0;
      const std::string msg = gzerror(f, &code);
      gzclose(f);
      fail("{}: cannot read (corrupt gzip data?): {}", path, msg);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  gzclose(f);
  return out;
}

namespace {

// Builds a DOM like nlohmann's own SAX DOM parser, except that the members
// model.vocab and model.merges go into TokenizerFile's vectors.
class Sax : public nlohmann::json_sax<json> {
 public:
  explicit Sax(TokenizerFile& out) : out_(out) {}

  std::string error;

  bool null() override { return value(nullptr); }
  bool boolean(bool v) override { return value(v); }
  bool number_integer(number_integer_t v) override {
    if (mode_ == Mode::vocab) return vocab_id(v);
    return value(v);
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (mode_ == Mode::vocab) {
      return vocab_id(v > static_cast<number_unsigned_t>(INT32_MAX) ? -1 : static_cast<int64_t>(v));
    }
    return value(v);
  }
  bool number_float(number_float_t v, const string_t&) override { return value(v); }
  bool string(string_t& v) override {
    if (mode_ == Mode::merges) {
      if (in_pair_) {
        pair_.push_back(std::move(v));
        return true;
      }
      // "a b": exactly one space separates the two sides.
      const size_t space = v.find(' ');
      if (space == std::string::npos || v.find(' ', space + 1) != std::string::npos) {
        return bad(fmt::format("model.merges[{}] '{}' is not two tokens separated by one space",
                               out_.merges.size(), v));
      }
      out_.merges.emplace_back(v.substr(0, space), v.substr(space + 1));
      return true;
    }
    if (mode_ == Mode::vocab) return bad("model.vocab values must be integer ids");
    return value(std::move(v));
  }
  bool binary(binary_t&) override { return bad("binary values are not JSON"); }

  bool start_object(std::size_t) override {
    if (mode_ == Mode::merges) return bad("model.merges entries must be strings or pairs");
    if (mode_ == Mode::vocab) return bad("model.vocab values must be integer ids");
    if (at_model_member("vocab")) {
      mode_ = Mode::vocab;
      out_.has_vocab = true;
      return true;
    }
    json* j = place(json::value_t::object);
    stack_.push_back(j);
    keys_.emplace_back();
    return true;
  }
  bool key(string_t& k) override {
    if (mode_ == Mode::vocab) {
      vocab_key_ = std::move(k);
      return true;
    }
    keys_.back() = k;
    member_ = &(*stack_.back())[k];
    return true;
  }
  bool end_object() override {
    if (mode_ == Mode::vocab) {
      mode_ = Mode::none;
      return true;
    }
    stack_.pop_back();
    keys_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override {
    if (mode_ == Mode::merges) {
      if (in_pair_) return bad("model.merges entries must be strings or pairs");
      in_pair_ = true;
      pair_.clear();
      return true;
    }
    if (mode_ == Mode::vocab) return bad("model.vocab values must be integer ids");
    if (at_model_member("merges")) {
      mode_ = Mode::merges;
      out_.has_merges = true;
      return true;
    }
    json* j = place(json::value_t::array);
    stack_.push_back(j);
    keys_.emplace_back();
    return true;
  }
  bool end_array() override {
    if (mode_ == Mode::merges) {
      if (in_pair_) {
        in_pair_ = false;
        if (pair_.size() != 2) {
          return bad(fmt::format("model.merges[{}] must be a pair of tokens", out_.merges.size()));
        }
        out_.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
        return true;
      }
      mode_ = Mode::none;
      return true;
    }
    stack_.pop_back();
    keys_.pop_back();
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    error = fmt::format("malformed JSON at byte {}: {}", position, ex.what());
    return false;
  }

 private:
  enum class Mode { none, vocab, merges };

  bool at_model_member(const char* name) const {
    return stack_.size() == 2 && stack_[0]->is_object() && stack_[1]->is_object() &&
           keys_[0] == "model" && keys_[1] == name;
  }

  template <typename V>
  bool value(V&& v) {
    if (mode_ != Mode::none) return bad("unexpected value inside model.vocab or model.merges");
    place(json(std::forward<V>(v)));
    return true;
  }

  json* place(json v) {
    if (stack_.empty()) {
      out_.rest = std::move(v);
      return &out_.rest;
    }
    if (stack_.back()->is_array()) {
      stack_.back()->push_back(std::move(v));
      return &stack_.back()->back();
    }
    *member_ = std::move(v);
    return member_;
  }

  bool vocab_id(int64_t v) {
    if (v < 0 || v > INT32_MAX) {
      return bad(fmt::format("model.vocab id of '{}' is out of range", vocab_key_));
    }
    out_.vocab.emplace_back(std::move(vocab_key_), static_cast<int32_t>(v));
    return true;
  }

  bool bad(std::string message) {
    if (error.empty()) error = std::move(message);
    return false;
  }

  TokenizerFile& out_;
  std::vector<json*> stack_;
  std::vector<std::string> keys_;  // the current key at each open object
  json* member_ = nullptr;
  Mode mode_ = Mode::none;
  std::string vocab_key_;
  bool in_pair_ = false;
  std::vector<std::string> pair_;
};

}  // namespace

TokenizerFile parse_tokenizer_json(std::string_view text, const std::string& label) {
  TokenizerFile out;
  out.vocab.reserve(text.size() / 40);
  out.merges.reserve(text.size() / 40);
  Sax sax(out);
  const bool ok = json::sax_parse(text.begin(), text.end(), &sax);
  if (!ok) fail("{}: {}", label, sax.error.empty() ? "malformed JSON" : sax.error);
  if (!out.rest.is_object()) fail("{}: the top level must be a JSON object", label);
  return out;
}

}  // namespace pensieve::tok
