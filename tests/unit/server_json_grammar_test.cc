// The forced-tool-call grammar: what it takes and refuses, byte by byte, and
// the token-level constraint on the real stories260K tokenizer.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "server/grammar_constraint.h"
#include "server/json_grammar.h"
#include "server/output_parser.h"
#include "support/test_support.h"
#include "tokenizer/tokenizer.h"

namespace pensieve::server {
namespace {

using json = nlohmann::ordered_json;

std::shared_ptr<const GrammarNode> value_grammar(const json& schema) {
  return std::make_shared<const GrammarNode>(schema_grammar(schema));
}

// Whether `text` is a complete match; `prefix` whether it is a valid start.
bool matches(const std::shared_ptr<const GrammarNode>& g, std::string_view text) {
  GrammarMatcher m(g);
  return m.feed(text) && m.complete();
}
bool prefix(const std::shared_ptr<const GrammarNode>& g, std::string_view text) {
  GrammarMatcher m(g);
  return m.feed(text);
}

// A value followed by a terminator, so numbers (which end only when the next
// byte is not theirs) can be checked as complete.
std::shared_ptr<const GrammarNode> in_array(const json& item_schema) {
  return value_grammar({{"type", "array"}, {"items", item_schema}});
}

TEST(JsonGrammar, ObjectWithRequiredPropertiesInOrder) {
  const json schema = {{"type", "object"},
                       {"properties",
                        {{"command", {{"type", "string"}}},
                         {"timeout", {{"type", "integer"}}},
                         {"verbose", {{"type", "boolean"}}}}},
                       {"required", {"command", "verbose"}}};
  auto g = value_grammar(schema);
  EXPECT_TRUE(matches(g, R"({"command":"ls -la","verbose":true})"));
  EXPECT_TRUE(matches(g, R"({"command":"say \"hi\"\n\u00e9","verbose":false})"));
  EXPECT_FALSE(prefix(g, R"({"verbose":)"));          // order of `required`
  EXPECT_FALSE(prefix(g, R"({"command": "ls")"));     // no whitespace outside strings
  EXPECT_FALSE(prefix(g, R"({"command":"ls","timeout")"));  // optional ones are left out
  EXPECT_FALSE(prefix(g, R"({"command":"a)" "\n"));   // raw control character in a string
  EXPECT_FALSE(prefix(g, R"({"command":"\q)"));       // bad escape
  EXPECT_FALSE(prefix(g, R"({"command":"\u12g)"));    // bad \u escape
  EXPECT_FALSE(matches(g, R"({"command":"ls","verbose":true)"));  // not closed
  GrammarMatcher done(g);
  ASSERT_TRUE(done.feed(R"({"command":"x","verbose":true})"));
  EXPECT_TRUE(done.complete());
  EXPECT_FALSE(done.feed('}'));  // nothing after the end
  EXPECT_TRUE(matches(value_grammar({{"type", "object"}, {"properties", json::object()}}), "{}"));
}

TEST(JsonGrammar, Numbers) {
  auto ints = in_array({{"type", "integer"}});
  EXPECT_TRUE(matches(ints, "[0,-7,42,1234567890123456]"));
  EXPECT_FALSE(prefix(ints, "[01"));                 // no leading zeros
  EXPECT_FALSE(prefix(ints, "[1.5"));                // integers have no fraction
  EXPECT_FALSE(prefix(ints, "[-"  "]"));
  EXPECT_FALSE(prefix(ints, "[12345678901234567"));  // 17 digits: past the cap
  auto reals = in_array({{"type", "number"}});
  EXPECT_TRUE(matches(reals, "[0.5,-3.25e10,1E-3,7e+2,0]"));
  EXPECT_FALSE(prefix(reals, "[1."  "]"));
  EXPECT_FALSE(prefix(reals, "[1e]"));
  EXPECT_FALSE(prefix(reals, "[.5"));
}

TEST(JsonGrammar, EnumsConstsAndAlternatives) {
  auto e = in_array({{"enum", {1, 10, "a", nullptr}}});
  EXPECT_TRUE(matches(e, "[1,10,\"a\",null,1]"));  // 1 next to 10: ends on the next byte
  EXPECT_FALSE(prefix(e, "[2"));
  EXPECT_FALSE(prefix(e, "[100"));
  EXPECT_FALSE(prefix(e, "[\"b"));
  EXPECT_TRUE(matches(value_grammar({{"const", "fixed"}}), "\"fixed\""));
  EXPECT_TRUE(matches(value_grammar({{"anyOf", {{{"type", "integer"}}, {{"type", "string"}}}}}),
                      "[0]") == false);
  EXPECT_TRUE(matches(in_array({{"anyOf", {{{"type", "integer"}}, {{"type", "string"}}}}}), "[5]"));
  EXPECT_TRUE(matches(in_array({{"type", {"null", "boolean"}}}), "[true,false]"));
  EXPECT_TRUE(matches(value_grammar({{"type", "null"}}), "null"));
}

TEST(JsonGrammar, ArraysAndFreeFormValues) {
  auto arr = value_grammar({{"type", "array"}, {"items", {{"type", "string"}}}});
  EXPECT_TRUE(matches(arr, "[]"));
  EXPECT_TRUE(matches(arr, R"(["a","b"])"));
  EXPECT_FALSE(prefix(arr, "[1"));
  EXPECT_FALSE(prefix(arr, R"(["a",])"));
  // No schema, a free-form object: any JSON (compact) fits.
  auto any = value_grammar(json::object());
  auto obj = value_grammar({{"type", "object"}});
  std::mt19937 rng(7);
  std::function<json(int)> random_value = [&](int depth) -> json {
    switch (rng() % (depth > 3 ? 5 : 7)) {
      case 0: return nullptr;
      case 1: return rng() % 2 == 0;
      case 2: return static_cast<int>(rng() % 2000) - 1000;
      case 3: return static_cast<double>(rng() % 100000) / 64.0 - 700.0;
      case 4: {
        const char* pieces[] = {"s", "\"", "\\", "\n", "\t", "\x01", "é", "😀", "/"};
        std::string s;
        for (unsigned i = rng() % 6; i > 0; --i) s += pieces[rng() % 9];
        return s;
      }
      case 5: {
        json a = json::array();
        for (unsigned i = rng() % 4; i > 0; --i) a.push_back(random_value(depth + 1));
        return a;
      }
      default: {
        json o = json::object();
        for (unsigned i = rng() % 4; i > 0; --i) o["k" + std::to_string(rng() % 9)] = random_value(depth + 1);
        return o;
      }
    }
  };
  for (int i = 0; i < 300; ++i) {
    const json v = random_value(0);
    const std::string text = "[" + v.dump() + "]";
    EXPECT_TRUE(matches(in_array(json::object()), text)) << text;
    json o = {{"v", v}};
    EXPECT_TRUE(matches(obj, o.dump())) << o.dump();
  }
  EXPECT_FALSE(prefix(any, "{\"a\" :"));
  EXPECT_FALSE(prefix(any, "tru3"));
  EXPECT_FALSE(prefix(any, "{1"));
  EXPECT_FALSE(prefix(any, "[1,]"));
}

TEST(JsonGrammar, ToolCallTakesOnlyTheAllowedToolsAndParses) {
  const std::vector<ForcedTool> tools = {
      {"Bash", {{"type", "object"}, {"properties", {{"command", {{"type", "string"}}}}}, {"required", {"command"}}}},
      {"BashOutput", {{"type", "object"}, {"properties", {{"id", {{"type", "integer"}}}}}, {"required", {"id"}}}},
  };
  auto g = tool_call_grammar(tools);
  const std::string bash = "<tool_call>\n{\"name\": \"Bash\", \"arguments\": {\"command\":\"ls\"}}\n</tool_call>";
  const std::string out = "<tool_call>\n{\"name\": \"BashOutput\", \"arguments\": {\"id\":12}}\n</tool_call>";
  EXPECT_TRUE(matches(g, bash));
  EXPECT_TRUE(matches(g, out));
  // Bash's arguments are not BashOutput's.
  EXPECT_FALSE(prefix(g, "<tool_call>\n{\"name\": \"Bash\", \"arguments\": {\"id\""));
  EXPECT_FALSE(prefix(g, "<tool_call>\n{\"name\": \"Read"));
  EXPECT_FALSE(prefix(g, "Sure! <tool_call>"));
  // What the grammar makes, the output parser turns into the call.
  for (const auto& text : {bash, out}) {
    OutputParser parser({.tool_calls = true});
    std::vector<OutputPiece> pieces;
    parser.feed(text, pieces);
    parser.finish(pieces);
    ASSERT_EQ(pieces.size(), 1u) << text;
    EXPECT_EQ(pieces[0].kind, OutputPiece::Kind::tool_call);
  }
}

// Whatever input_schema says, a call's arguments are an object: the output
// parser takes nothing else as a call. (A fuzz finding: an enum schema forced
// "arguments": "a", and the answer came back as text.)
TEST(JsonGrammar, ToolCallArgumentsAreAlwaysAnObject) {
  for (const json& schema : {json{{"enum", {"a", "ab", 1}}}, json{{"type", "string"}}, json{{"const", 3}},
                             json{{"type", "array"}}, json(nullptr)}) {
    auto g = tool_call_grammar({{"t", schema}});
    EXPECT_FALSE(prefix(g, "<tool_call>\n{\"name\": \"t\", \"arguments\": \"")) << schema.dump();
    EXPECT_FALSE(prefix(g, "<tool_call>\n{\"name\": \"t\", \"arguments\": 1")) << schema.dump();
    const std::string call = "<tool_call>\n{\"name\": \"t\", \"arguments\": {\"k\":[1]}}\n</tool_call>";
    EXPECT_TRUE(matches(g, call)) << schema.dump();
  }
}

// Strings are what a JSON parser takes: valid UTF-8 and paired surrogate
// escapes, refused at the first byte that cannot lead there (fuzz findings:
// 0xFF and a lone \ud800 made complete calls that did not parse).
TEST(JsonGrammar, StringsAreValidUtf8AndPairedSurrogates) {
  auto g = in_array({{"type", "string"}});
  EXPECT_TRUE(matches(g, "[\"a\u00e9\u20ac\U0001F600\"]"));
  EXPECT_TRUE(matches(g, "[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]"));
  EXPECT_TRUE(matches(g, R"(["\ud83d\ude00 \u0041"])"));
  for (const char* bad : {"[\"\xff", "[\"\xc0", "[\"\xc3\x28", "[\"\xe0\x80", "[\"\xed\xa0",
                          "[\"\xf4\x90", "[\"\xf5", "[\"\xc3\"", R"(["\udc)", R"(["\ud800")",
                          R"(["\ud800\u0041)", R"(["\ud800\ud8)"})
    EXPECT_FALSE(prefix(g, bad)) << bad;
  // Numbers stay finite doubles: exponents of two digits at most.
  auto numbers = in_array({{"type", "number"}});
  EXPECT_TRUE(matches(numbers, "[1e99,-2.5E-12]"));
  EXPECT_FALSE(matches(numbers, "[1e999]"));
  // Every accepted prefix can still be completed.
  EXPECT_TRUE(prefix(g, R"(["\ud800\udc)"));
  EXPECT_TRUE(prefix(g, "[\"\xf0\x9f"));
}

// On the real tokenizer: every step offers some token, the ones allowed keep
// the text a valid prefix, and following the highest allowed id (a stand-in
// for a model) reaches a complete call.
TEST(GrammarConstraint, StoriesTokenizerCompletesACall) {
  auto tokenizer = Tokenizer::load(test::data_path("../../models/stories260K"));
  auto texts = std::make_shared<const TokenTexts>(*tokenizer);
  EXPECT_EQ(texts->size(), tokenizer->vocab_size());
  // SentencePiece's ▁ reads as a space mid-sequence.
  int32_t word = -1;
  for (int32_t t = 0; t < tokenizer->vocab_size() && word < 0; ++t) {
    const auto piece = tokenizer->id_to_token(t);
    if (piece && piece->size() > 4 && piece->rfind("\u2581", 0) == 0) word = t;
  }
  ASSERT_GE(word, 0);
  EXPECT_EQ(texts->text(word), " " + tokenizer->id_to_token(word)->substr(3));
  const std::vector<int32_t> hello = {word};
  EXPECT_EQ(texts->text(*tokenizer->bos_id()), "");  // special: never allowed

  const std::vector<ForcedTool> tools = {
      {"get_weather",
       {{"type", "object"},
        {"properties", {{"city", {{"type", "string"}}}, {"days", {{"type", "integer"}}}}},
        {"required", {"city", "days"}}}}};
  GrammarConstraint c(texts, tool_call_grammar(tools));
  std::mt19937 rng(3);
  int steps = 0;
  while (!c.complete() && steps < 400) {
    std::vector<int32_t> allowed;
    for (int32_t t = 0; t < texts->size(); ++t)
      if (c.allows(t)) allowed.push_back(t);
    ASSERT_FALSE(allowed.empty()) << "stuck after: " << c.text();
    // Prefer closing tokens after a while so strings and numbers end.
    int32_t pick = allowed[rng() % allowed.size()];
    if (steps > 60) {
      for (char close : std::string("\"}7")) {
        auto it = std::find_if(allowed.begin(), allowed.end(), [&](int32_t t) {
          return texts->text(t).find(close) != std::string::npos;
        });
        if (it != allowed.end()) {
          pick = *it;
          break;
        }
      }
    }
    c.accept(pick);
    ++steps;
  }
  ASSERT_TRUE(c.complete()) << c.text();
  EXPECT_FALSE(c.allows(hello.back()));
  std::string name;
  json input;
  const std::string body = c.text().substr(std::string("<tool_call>\n").size());
  ASSERT_TRUE(parse_tool_call_json(body.substr(0, body.rfind("\n</tool_call>")), name, input)) << c.text();
  EXPECT_EQ(name, "get_weather");
  EXPECT_TRUE(input["city"].is_string());
  EXPECT_TRUE(input["days"].is_number_integer());
  EXPECT_THROW(c.accept(hello.back()), Error);
}

}  // namespace
}  // namespace pensieve::server
