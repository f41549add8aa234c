#include "tokenizer/post_processor.h"

namespace pensieve::tok {
namespace {

class SequenceProcessor : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> steps)
      : steps_(std::move(steps)) {}
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& step : steps_) step->process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

// Byte-level post-processing only trims offsets; ids stay as they are.
class NoopProcessor : public PostProcessor {
 public:
  void process(std::vector<int32_t>&) const override {}
};

// The "single" template: special-token id lists around the sequence.
class TemplateProcessor : public PostProcessor {
 public:
  explicit TemplateProcessor(std::vector<std::vector<int32_t>> items) : items_(std::move(items)) {}
  void process(std::vector<int32_t>& ids) const override {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const auto& item : items_) {
      if (item.empty()) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), item.begin(), item.end());
      }
    }
    ids = std::move(out);
  }

 private:
  std::vector<std::vector<int32_t>> items_;  // empty item = the sequence itself
};

std::unique_ptr<PostProcessor> make_template(const json& spec, const JsonPath& at) {
  const json& single = get_array(spec, "single", at);
  const json& specials = required(spec, "special_tokens", at);
  std::vector<std::vector<int32_t>> items;
  for (size_t i = 0; i < single.size(); ++i) {
    const JsonPath item_at = at.key("single").index(i);
    const json& item = single[i];
    if (item.is_object() && item.contains("Sequence")) {
      items.emplace_back();
      continue;
    }
    if (!item.is_object() || !item.contains("SpecialToken")) {
      item_at.invalid("must hold \"Sequence\" or \"SpecialToken\"");
    }
    const std::string name = get_string(item["SpecialToken"], "id", item_at.key("SpecialToken"));
    auto sp = specials.find(name);
    if (sp == specials.end()) {
      at.key("special_tokens").invalid(fmt::format("has no entry for '{}'", name));
    }
    const JsonPath sp_at = at.key("special_tokens").key(name);
    std::vector<int32_t> ids;
    for (const json& id : get_array(*sp, "ids", sp_at)) {
      if (!id.is_number_integer()) sp_at.key("ids").invalid("must hold integers");
      ids.push_back(id.get<int32_t>());
    }
    if (ids.empty()) continue;
    items.push_back(std::move(ids));
  }
  return std::make_unique<TemplateProcessor>(std::move(items));
}

// BertProcessing / RobertaProcessing: [cls] sequence [sep].
std::unique_ptr<PostProcessor> make_cls_sep(const json& spec, const JsonPath& at) {
  auto id_of = [&](const char* key) {
    const json& pair = required(spec, key, at);
    if (!pair.is_array() || pair.size() != 2 || !pair[1].is_number_integer()) {
      at.key(key).invalid("must be [token, id]");
    }
    return pair[1].get<int32_t>();
  };
  return std::make_unique<TemplateProcessor>(
      std::vector<std::vector<int32_t>>{{id_of("cls")}, {}, {id_of("sep")}});
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const json& spec, const JsonPath& at) {
  if (spec.is_null()) return nullptr;
  const std::string type = type_of(spec, at);
  if (type == "Sequence") {
    const json& list = get_array(spec, "processors", at);
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto p = make_post_processor(list[i], at.key("processors").index(i))) {
        steps.push_back(std::move(p));
      }
    }
    return std::make_unique<SequenceProcessor>(std::move(steps));
  }
  if (type == "TemplateProcessing") return make_template(spec, at);
  if (type == "ByteLevel") return std::make_unique<NoopProcessor>();
  if (type == "BertProcessing" || type == "RobertaProcessing") return make_cls_sep(spec, at);
  at.unsupported_type(type);
}

}  // namespace pensieve::tok
