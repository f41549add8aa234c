// The chat template interpreter's behaviour on bad input and at its limits:
// syntax errors name line and column, runtime errors name the line,
// raise_exception() surfaces the template's message, and no template can
// hang, recurse without bound or exhaust memory.
#include "chat/chat_template.h"

#include <gtest/gtest.h>

#include <ctime>
#include <random>

#include "core/error.h"

namespace pensieve::chat {
namespace {

using nlohmann::ordered_json;

std::string render(const std::string& source, const ordered_json& context = ordered_json::object(),
                   const TemplateLimits& limits = {}) {
  return ChatTemplate::parse(source).render(context, limits);
}

// The message of the Error that parsing or rendering `source` throws.
std::string error_of(const std::string& source,
                     const ordered_json& context = ordered_json::object(),
                     const TemplateLimits& limits = {}) {
  try {
    render(source, context, limits);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for: " << source;
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(ChatTemplateErrors, SyntaxErrorsNameLineAndColumn) {
  EXPECT_EQ(error_of("line one\n{{ 'abc }}"),
            "chat template: line 2, column 4: unterminated string literal");
  EXPECT_TRUE(contains(error_of("a\nb\n  {% if %}"), "line 3, column 9:"));
  EXPECT_TRUE(
      contains(error_of("{{ 1 + }}"), "line 1, column 8: unexpected end of print statement"));
  EXPECT_TRUE(contains(error_of("{% for x in [1] %}"), "expected 'endfor' or 'else'"));
  EXPECT_TRUE(contains(error_of("{% endif %}"), "unknown tag 'endif'"));
  EXPECT_TRUE(contains(error_of("{% if true %}x{% endfor %}"), "unknown tag 'endfor'"));
  EXPECT_TRUE(
      contains(error_of("x {# never closed"), "line 1, column 3: missing end of comment tag"));
  EXPECT_TRUE(contains(error_of("{% raw %} no end"), "missing end of raw directive"));
  EXPECT_TRUE(contains(error_of("{{ x "), "unexpected end of template, expected '}}'"));
  EXPECT_TRUE(contains(error_of("{% if x "), "expected '%}'"));
  EXPECT_TRUE(contains(error_of("{{ (1 }}"), "expected ')'"));
  EXPECT_TRUE(contains(error_of("{{ [1) }}"), "unexpected ')', expected ']'"));
  EXPECT_TRUE(contains(error_of("{{ 1 } }}"), "unexpected '}'"));
  EXPECT_TRUE(contains(error_of("{{ a ? b }}"), "unexpected char '?'"));
  EXPECT_TRUE(contains(error_of("{% break %}"), "'break' outside of a loop"));
  EXPECT_TRUE(contains(error_of("{% include 'x.jinja' %}"), "'include' is not supported"));
  EXPECT_TRUE(contains(error_of("{% set x %}unterminated"), "expected 'endset'"));
  EXPECT_TRUE(contains(error_of("{% macro m(1) %}{% endmacro %}"), "expected a name"));
}

TEST(ChatTemplateErrors, UnknownFiltersAndTestsFailAtParseTime) {
  EXPECT_EQ(error_of("\n  {{ x | nosuchfilter }}"),
            "chat template: line 2, column 10: unknown filter 'nosuchfilter'");
  EXPECT_EQ(error_of("{{ 1 is nosuchtest }}"),
            "chat template: line 1, column 9: unknown test 'nosuchtest'");
  // Even in a branch that never runs, as in jinja2.
  EXPECT_TRUE(contains(error_of("{% if false %}{{ x|bogus }}{% endif %}"), "unknown filter"));
}

TEST(ChatTemplateErrors, RaiseExceptionCarriesTheTemplatesMessage) {
  const std::string tmpl =
      "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
      "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
      "{% endif %}{% endfor %}ok";
  const ordered_json good = {{"messages", {{{"role", "user"}}, {{"role", "assistant"}}}}};
  const ordered_json bad = {{"messages", {{{"role", "user"}}, {{"role", "user"}}}}};
  EXPECT_EQ(render(tmpl, good), "ok");
  EXPECT_EQ(error_of(tmpl, bad),
            "chat template: Conversation roles must alternate user/assistant/user/assistant/...");
}

TEST(ChatTemplateErrors, UndefinedIsSoftUntilUsedStrictly) {
  // Printing, testing, iterating and defaulting an undefined value is fine...
  EXPECT_EQ(render("[{{ x }}{{ x is defined }}{% for a in x %}{% endfor %}{{ x|default(1) }}]"),
            "[False1]");
  EXPECT_EQ(render("{{ d.missing }}|{{ d.missing is defined }}", {{"d", ordered_json::object()}}),
            "|False");
  // ...but attributes of it, arithmetic and calls are errors naming the line.
  EXPECT_EQ(error_of("\n{{ x.y }}"), "chat template: line 2: 'x' is undefined");
  EXPECT_EQ(error_of("{{ d.a.b }}", {{"d", ordered_json::object()}}),
            "chat template: line 1: 'dict object' has no attribute 'a'");
  EXPECT_TRUE(contains(error_of("{{ x + 1 }}"), "'x' is undefined"));
  EXPECT_TRUE(contains(error_of("{{ x() }}"), "'x' is undefined"));
  EXPECT_TRUE(contains(error_of("{{ x|tojson }}"), "'x' is undefined"));
}

TEST(ChatTemplateErrors, TypeErrorsAreReported) {
  EXPECT_TRUE(
      contains(error_of("{{ 'a' + 1 }}"), "unsupported operand type(s) for +: 'str' and 'int'"));
  EXPECT_TRUE(contains(error_of("{{ 1 < 'a' }}"), "'<' not supported"));
  EXPECT_TRUE(contains(error_of("{{ 1 / 0 }}"), "division by zero"));
  EXPECT_TRUE(contains(error_of("{% for x in 5 %}{% endfor %}"), "'int' object is not iterable"));
  EXPECT_TRUE(contains(error_of("{{ 'a'.nosuchmethod() }}"), "has no attribute 'nosuchmethod'"));
  EXPECT_TRUE(contains(error_of("{{ 'x'.split('') }}"), "empty separator"));
  EXPECT_TRUE(contains(error_of("{% set x = 1 %}{% set x.a = 2 %}"), "non-namespace"));
  EXPECT_TRUE(contains(error_of("{% set a, b = [1] %}"), "cannot unpack"));
  EXPECT_TRUE(contains(error_of("{{ [1]|tojson(indent='x', bogus=1) }}"),
                       "unexpected keyword argument 'bogus'"));
}

TEST(ChatTemplateErrors, ListsAreImmutableAsInTransformersSandbox) {
  EXPECT_TRUE(
      contains(error_of("{% set l = [1] %}{{ l.append(2) }}"), "list.append() is not allowed"));
  EXPECT_TRUE(contains(error_of("{% set d = {} %}{{ d.update({'a': 1}) }}"), "not allowed"));
}

TEST(ChatTemplateLimits, HugeNestedLoopsStopWithAnError) {
  const std::string tmpl =
      "{% for a in range(100000) %}{% for b in range(100000) %}{{ b }}{% endfor %}{% endfor %}";
  const auto start = std::clock();
  EXPECT_EQ(error_of(tmpl, ordered_json::object(), TemplateLimits{1'000'000, 64u << 20, 100}),
            "chat template: exceeded 1000000 steps");
  EXPECT_LT(static_cast<double>(std::clock() - start) / CLOCKS_PER_SEC, 5.0);
  // The default budget stops it too.
  EXPECT_TRUE(contains(error_of(tmpl), "exceeded 20000000 steps"));
}

TEST(ChatTemplateLimits, RangeIsCappedLikeJinja2Sandbox) {
  EXPECT_EQ(render("{{ range(100000)|length }}"), "100000");
  EXPECT_TRUE(contains(error_of("{{ range(100001)|length }}"), "range too big"));
}

TEST(ChatTemplateLimits, OutputAndStringGrowthAreBounded) {
  TemplateLimits small;
  small.max_output_bytes = 1000;
  EXPECT_TRUE(
      contains(error_of("{% for i in range(2000) %}x{% endfor %}", ordered_json::object(), small),
               "output exceeds 1000 bytes"));
  EXPECT_TRUE(contains(error_of("{{ 'x' * 100000000000 }}"), "string repetition exceeds"));
  // Doubling a string in a loop hits the size limit, not the machine's memory.
  EXPECT_TRUE(contains(error_of("{% set ns = namespace(s='ab') %}{% for i in range(100) %}"
                                "{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
                       "string too large"));
}

TEST(ChatTemplateLimits, RecursionAndNestingAreBounded) {
  EXPECT_TRUE(contains(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
                       "macro calls nested deeper than 100"));
  EXPECT_TRUE(
      contains(error_of("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"),
               "nested too deeply"));
  EXPECT_TRUE(contains(error_of("{{ " + std::string(100000, '-') + "1 }}"), "nested too deeply"));
  std::string chain = "{{ 1";
  for (int i = 0; i < 100000; ++i) chain += " + 1";
  EXPECT_TRUE(contains(error_of(chain + " }}"), "expression nested too deeply"));
  std::string ifs;
  for (int i = 0; i < 1000; ++i) ifs += "{% if true %}";
  EXPECT_TRUE(contains(error_of(ifs), "nested too deeply"));
}

TEST(ChatTemplateGlobals, StrftimeNowFormatsTheLocalDate) {
  char year[8];
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::strftime(year, sizeof(year), "%Y", &local);
  const std::string out = render("{{ strftime_now('%d %b %Y') }}");
  EXPECT_EQ(out.size(), 11u) << out;
  EXPECT_EQ(out.substr(7), year);
  // Llama 3.1's guard: strftime_now is defined, so its date wins over the fallback.
  EXPECT_EQ(render("{% if strftime_now is defined %}yes{% endif %}"), "yes");
}

TEST(ChatTemplateGlobals, GenerationBlocksRenderTheirBody) {
  EXPECT_EQ(render("{% for m in ['a', 'b'] %}{% generation %}<{{ m }}>{% endgeneration %}"
                   "{% endfor %}"),
            "<a><b>");
}

TEST(ChatTemplate, KeepsJsonKeyOrderAndUnicodeInTojson) {
  const ordered_json ctx = ordered_json::parse(
      R"({"tool": {"name": "Bash", "zeta": 1, "alpha": {"é": "→ ok", "n": 9007199254740991}}})");
  EXPECT_EQ(render("{{ tool|tojson }}", ctx),
            R"({"name": "Bash", "zeta": 1, "alpha": {"é": "→ ok", "n": 9007199254740991}})");
}

TEST(ChatTemplate, RenderRequiresAnObjectContext) {
  const ChatTemplate t = ChatTemplate::parse("x");
  EXPECT_THROW(t.render(ordered_json::array()), Error);
  EXPECT_EQ(t.source(), "x");
}

TEST(ChatTemplate, TemplatesAreReusableAcrossRenders) {
  const ChatTemplate t = ChatTemplate::parse(
      "{% set ns = namespace(n=0) %}{% for x in xs %}{% set ns.n = ns.n + x %}{% endfor %}"
      "{{ ns.n }}");
  EXPECT_EQ(t.render({{"xs", {1, 2}}}), "3");
  EXPECT_EQ(t.render({{"xs", {5}}}), "5");  // no state leaks between renders
}

// Random byte soup and mutated real templates: parse or fail with an Error,
// never crash or hang.
TEST(ChatTemplate, SurvivesGarbageInput) {
  const std::string seed =
      "{%- for m in messages %}{% if m.role == 'user' %}{{ '<|u|>' + m.content|trim }}"
      "{% elif m.role is defined %}{{ m | tojson(indent=2) }}{% endif %}{# c #}{% endfor %}"
      "{% set ns = namespace(a=[1, 2.5, 'x']) %}{{ ns.a[::-1] }}{% raw %}{{x}}{% endraw %}";
  const char alphabet[] = "{}%#-+()[]|.,:'\"~=!<>*/ \n abcdefxyz0123456789_";
  std::mt19937 rng(1234);
  const ordered_json ctx = {{"messages", {{{"role", "user"}, {"content", " hi "}}}}};
  TemplateLimits limits;
  limits.max_steps = 100000;
  int n_parsed = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s = seed;
    const int n_edits = 1 + static_cast<int>(rng() % 6);
    for (int k = 0; k < n_edits; ++k) {
      const size_t pos = rng() % (s.size() + 1);
      switch (rng() % 3) {
        case 0:
          s.insert(pos, 1, alphabet[rng() % (sizeof(alphabet) - 1)]);
          break;
        case 1:
          if (pos < s.size()) s.erase(pos, 1 + rng() % 4);
          break;
        default:
          if (pos < s.size()) s[pos] = static_cast<char>(rng() % 256);
          break;
      }
    }
    try {
      const ChatTemplate t = ChatTemplate::parse(s);
      ++n_parsed;
      t.render(ctx, limits);
    } catch (const Error&) {
    }
  }
  EXPECT_GT(n_parsed, 100);  // the mutations still exercise rendering
}

}  // namespace
}  // namespace pensieve::chat
