// Jinja2 features one at a time: each case's expected text was rendered by
// jinja2 3.1.6 set up as transformers' apply_chat_template sets it up
// (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
// tojson = json.dumps(ensure_ascii=False)).
#include <gtest/gtest.h>

#include "chat/chat_template.h"
#include "core/error.h"

namespace pensieve::chat {
namespace {

using nlohmann::ordered_json;

struct JinjaCase {
  const char* name;
  const char* source;
  const char* context;  // JSON object
  const char* expected;
};

const JinjaCase kCases[] = {
    {"ws_trim_lstrip",
     R"(  {% if true %}
  a
  {% else %}
  b
  {% endif %}
c
)",
     "{}",
     R"(  a
c)"},
    {"ws_minus",
     "{%- if true -%}\n  a\n{%- endif -%}\n  b  \n{{- 'c' -}}\n  d",
     "{}",
     "abcd"},
    {"ws_plus",
     R"(x
  {%+ if 1 %}y{% endif +%}
z)",
     "{}",
     R"(x
  y
z)"},
    {"ws_var_no_lstrip",
     R"(x
  {{ 1 }}
)",
     "{}",
     R"(x
  1)"},
    {"ws_comment",
     R"(a  {# c #}
b
  {# d #}
c)",
     "{}",
     R"(a  b
c)"},
    {"ws_raw",
     R"(a
  {% raw %}
 x {{ y }} {% if %}
  {% endraw %}
b)",
     "{}",
     R"(a

 x {{ y }} {% if %}
b)"},
    {"ws_raw_minus",
     "a\n  {%- raw -%}\n x \n  {%- endraw %}  \nb",
     "{}",
     "ax  \nb"},
    {"ws_for_lines",
     R"({% for m in xs %}
  {{ m }}
{% endfor %}
)",
     "{\"xs\": [1, 2]}",
     R"(  1
  2
)"},
    {"ws_crlf",
     "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\n",
     "{}",
     R"(a
b
)"},
    {"print_floats",
     "{{ 1.0 }} {{ 0.1 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 3.14159 }} {{ 1/3 }} {{ 2.5e-10 }} {{ 123456789.123 }} {{ -1.5 }}",
     "{}",
     "1.0 0.1 1e+16 1000000000000000.0 0.0001 1e-05 3.14159 0.3333333333333333 2.5e-10 123456789.123 -1.5"},
    {"print_python_repr",
     "{{ [1, 'a', none, true, 1.5, {'k': [false]}] }}|{{ (1,) }}|{{ () }}|{{ (1, 'b') }}|{{ none }}|{{ true }}",
     "{}",
     "[1, 'a', None, True, 1.5, {'k': [False]}]|(1,)|()|(1, 'b')|None|True"},
    {"print_quotes",
     "{{ [\"a'b\", 'a\"b', 'a\\'b\"c', 'x\\ny\\t\\\\'] }}",
     "{}",
     "[\"a'b\", 'a\"b', 'a\\'b\"c', 'x\\ny\\t\\\\']"},
    {"print_json_values",
     "{{ x }}",
     "{\"x\": {\"b\": 1, \"a\": [1.0, null, true, \"s\"]}}",
     "{'b': 1, 'a': [1.0, None, True, 's']}"},
    {"number_literals",
     "{{ 1.5e3 }} {{ 1_000 }} {{ 0x1f }} {{ 0b101 }} {{ 0o17 }} {{ [1,2].0 }}",
     "{}",
     "1500.0 1000 31 5 15 1"},
    {"string_escapes",
     "{{ 'a\\x41\\u00e9\\d\\n' }}{{ 'it''s' }}{{ \"it's\" }}",
     "{}",
     R"(aAé\d
itsit's)"},
    {"arith",
     "{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 10 / 5 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ -2 ** 2 }} {{ 2 ** 3 ** 2 }} {{ 10.5 % 3 }} {{ 7 // 2.0 }} {{ true + 1 }} {{ 1 + 2.5 }}",
     "{}",
     "3 -4 2 3.5 2.0 1024 0.5 4 64 1.5 3.0 2 3.5"},
    {"concat_repeat",
     "{{ 1 ~ 2 ~ none ~ true }}|{{ 'ab' * 2 }}|{{ [1] * 3 }}|{{ [1] + [2] }}|{{ 'a' + 'b' }}",
     "{}",
     "12NoneTrue|abab|[1, 1, 1]|[1, 2]|ab"},
    {"logic",
     "{{ x or 'default' }}|{{ x and 'no' }}|{{ 0 or [] }}|{{ 1 and 2 }}|{{ not 1 == 2 }}|{{ not x }}",
     "{}",
     "default||[]|2|True|True"},
    {"compare",
     "{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}{{ 'a' in 'abc' }}{{ 1 not in [1] }}{{ 'k' in {'k': 1} }}{{ 1 == 1.0 }}{{ true == 1 }}{{ [1] == [1] }}{{ none == none }}{{ 'a' != 1 }}{{ 'abc' < 'abd' }}{{ [1, 2] < [1, 3] }}{{ 2 >= 2.0 }}",
     "{}",
     "TrueFalseTrueFalseTrueTrueTrueTrueTrueTrueTrueTrueTrue"},
    {"ternary",
     "{{ 'x' if y else 'z' }}|{{ 1 if 0 }}|{{ 2 if 1 }}|{{ 'a' if false else 'b' if true else 'c' }}",
     "{\"y\": true}",
     "x||2|b"},
    {"subscript",
     "{{ d.a }}{{ d['a'] }}{{ d.b[0] }}{{ d.b.0 }}{{ d.missing }}|{{ none.y }}|{{ xs[-1] }}{{ xs[5] }}|{{ 'abc'[-1] }}",
     "{\"d\": {\"a\": 1, \"b\": [2]}, \"xs\": [1, 2, 3]}",
     "1122||3|c"},
    {"slices",
     "{{ xs[1:] }}{{ xs[:-1] }}{{ xs[::2] }}{{ xs[::-1] }}{{ xs[-2::-2] }}{{ xs[10:] }}{{ 'hello'[1:-1] }}{{ 'abc'[::-1] }}{{ 'héllo😀'[1:3] }}{{ 'héllo😀'[-1] }}",
     "{\"xs\": [1, 2, 3, 4, 5]}",
     "[2, 3, 4, 5][1, 2, 3, 4][1, 3, 5][5, 4, 3, 2, 1][4, 2][]ellcbaél😀"},
    {"messages_slice",
     "{% if messages[0]['role'] == 'system' %}{% set rest = messages[1:] %}{% else %}{% set rest = messages %}{% endif %}{% for m in rest %}{{ m.role }}:{{ m.content }};{% endfor %}",
     "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"U\"}, {\"role\": \"assistant\", \"content\": \"A\"}]}",
     "user:U;assistant:A;"},
    {"f_trim_length",
     "{{ '  hi  ' | trim }}|{{ 'xxhixx'|trim('x') }}|{{ 'abc'|length }}{{ [1,2]|count }}{{ 'héllo'|length }}{{ {'a': 1}|length }}",
     "{}",
     "hi|hi|3251"},
    {"f_first_last_join",
     "{{ [1,2,3]|first }}{{ [1,2,3]|last }}{{ 'abc'|first }}{{ 'abc'|last }}{{ []|first }}|{{ [1,2,3]|join('-') }}|{{ [{'a':1},{'a':2}]|join(',', attribute='a') }}|{{ ['x', 'y']|join }}",
     "{}",
     "13ac|1-2-3|1,2|xy"},
    {"f_case",
     "{{ 'hello world'|upper }}|{{ 'HeLLo'|lower }}|{{ 'hello WORLD'|capitalize }}|{{ 'hello world-foo (bar)'|title }}",
     "{}",
     "HELLO WORLD|hello|Hello world|Hello World-Foo (Bar)"},
    {"f_replace",
     "{{ 'hello'|replace('l', 'L') }}|{{ 'hello'|replace('l', 'L', 1) }}|{{ 'ab'|replace('', '-') }}",
     "{}",
     "heLLo|heLlo|-a-b-"},
    {"f_default",
     "{{ x|default('d') }}|{{ none|default('d') }}|{{ ''|default('d', true) }}|{{ x|d('e') }}|{{ 0|d(5) }}|{{ 0|d(5, true) }}",
     "{}",
     "d|None|d|e|0|5"},
    {"f_conversions",
     "{{ 42|string }}|{{ '42'|int + 1 }}|{{ '3.7'|int }}|{{ 'abc'|int }}|{{ 'abc'|int(7) }}|{{ '3.5'|float }}|{{ 3|float }}|{{ 'x'|float }}|{{ 4.9|int }}|{{ '0x1A'|int(0, 16) }}",
     "{}",
     "42|43|3|0|7|3.5|3.0|0.0|4|26"},
    {"f_list_items_dictsort",
     "{{ 'abc'|list }}{{ {'a':1,'b':2}|list }}{{ {'b':1,'a':2}|items|list }}{{ {'b':1,'a':2, 'C': 3}|dictsort }}{{ {'b':1,'a':2}|dictsort(by='value', reverse=true) }}",
     "{}",
     "['a', 'b', 'c']['a', 'b'][('b', 1), ('a', 2)][('a', 2), ('b', 1), ('C', 3)][('a', 2), ('b', 1)]"},
    {"f_selectattr",
     "{{ xs|selectattr('type','equalto','text')|map(attribute='text')|join(' ') }}|{{ xs|rejectattr('type','equalto','text')|list }}|{{ xs|selectattr('text')|list|length }}|{{ xs|selectattr('type', '==', 'image')|list|length }}",
     "{\"xs\": [{\"type\": \"text\", \"text\": \"a\"}, {\"type\": \"image\"}, {\"type\": \"text\", \"text\": \"b\"}]}",
     "a b|[{'type': 'image'}]|2|1"},
    {"f_select_map",
     "{{ [1,2,3,4]|select('odd')|list }}{{ [1,2,3,4]|reject('odd')|list }}{{ [1,2,3,4]|select('divisibleby', 2)|list }}{{ ['a','B']|map('upper')|list }}{{ [1,2]|map('string')|join }}{{ [[1,2],[3]]|map('length')|list }}{{ [0, 1, '', 'a']|select|list }}",
     "{}",
     "[1, 3][2, 4][2, 4]['A', 'B']12[2, 1][1, 'a']"},
    {"f_map_attribute",
     "{{ [{'a':{'b':3}}]|map(attribute='a.b')|list }}{{ [{'a':1},{}]|map(attribute='a', default=0)|list }}{{ [[1, 2], [3, 4]]|map(attribute='1')|list }}",
     "{}",
     "[3][1, 0][2, 4]"},
    {"f_unique_reverse_sort",
     "{{ [3,1,2,1]|unique|list }}{{ ['a','A','b']|unique|list }}{{ [1,2,3]|reverse|list }}{{ 'abc'|reverse }}{{ ['b','A','c']|sort }}{{ ['b','A','c']|sort(case_sensitive=true) }}{{ [3,1,2]|sort(reverse=true) }}{{ [{'n':2},{'n':1}]|sort(attribute='n') }}",
     "{}",
     "[3, 1, 2]['a', 'b'][3, 2, 1]cba['A', 'b', 'c']['A', 'b', 'c'][3, 2, 1][{'n': 1}, {'n': 2}]"},
    {"f_escape_safe",
     "{{ '<a href=\"x\">&\\'</a>'|e }}|{{ '<a>'|escape }}|{{ '<a>'|safe }}",
     "{}",
     "&lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt;|&lt;a&gt;|<a>"},
    {"f_indent",
     R"({{ 'a
b

c'|indent }}|{{ 'a
b

c'|indent(2, true) }}|{{ 'a
b

c'|indent(2, first=true, blank=true) }}|{{ 'a
b'|indent('> ') }})",
     "{}",
     "a\n    b\n\n    c|  a\n  b\n\n  c|  a\n  b\n  \n  c|a\n> b"},
    {"f_numbers",
     "{{ -3|abs }}{{ (-3.5)|abs }}|{{ 2.5|round }}{{ 3.5|round }}{{ 2.567|round(2) }}{{ 2.5|round(0, 'floor') }}{{ 2.1|round(0, 'ceil') }}{{ 7|round }}|{{ [3,1,2]|min }}{{ [3,1,2]|max }}{{ [1,2,3]|sum }}{{ [{'a':1},{'a':2}]|sum(attribute='a') }}",
     "{}",
     "33.5|2.04.02.572.03.07|1363"},
    {"f_wordcount_batch",
     "{{ 'hello big world_x 12'|wordcount }}|{{ [1,2,3,4,5]|batch(2)|list }}|{{ [1,2,3]|batch(2, 'x')|list }}|{{ 'abc'|center(7) }}|",
     "{}",
     "4|[[1, 2], [3, 4], [5]]|[[1, 2], [3, 'x']]|  abc  |"},
    {"f_format",
     "{{ '%s-%d'|format('a', 3) }}|{{ '%5s|%-5s|%05d|%.2f|%x|%r|%%' % ('a', 'b', 42, 3.14159, 255, 'q') }}|{{ '%(n)s!' % {'n': 1} }}",
     "{}",
     "a-3|    a|b    |00042|3.14|ff|'q'|%|1!"},
    {"f_tojson",
     "{{ x|tojson }}",
     "{\"x\": {\"b\": 1, \"a\": [1, 2.5, null, true, \"é\\n\\\"<>&'\\u0001\"], \"c\": {}, \"d\": []}}",
     "{\"b\": 1, \"a\": [1, 2.5, null, true, \"é\\n\\\"<>&'\\u0001\"], \"c\": {}, \"d\": []}"},
    {"f_tojson_indent",
     R"({{ x|tojson(indent=4) }}
{{ x|tojson(indent=2, sort_keys=true) }})",
     "{\"x\": {\"b\": 1, \"a\": [1, 2.5, null, true, \"é\"], \"c\": {}, \"d\": [], \"e\": {\"z\": [{\"y\": 1}]}}}",
     R"({
    "b": 1,
    "a": [
        1,
        2.5,
        null,
        true,
        "é"
    ],
    "c": {},
    "d": [],
    "e": {
        "z": [
            {
                "y": 1
            }
        ]
    }
}
{
  "a": [
    1,
    2.5,
    null,
    true,
    "é"
  ],
  "b": 1,
  "c": {},
  "d": [],
  "e": {
    "z": [
      {
        "y": 1
      }
    ]
  }
})"},
    {"f_tojson_options",
     "{{ x|tojson(separators=(',', ':')) }}|{{ x|tojson(ensure_ascii=true) }}|{{ 'str'|tojson }}|{{ 1.0|tojson }}|{{ none|tojson }}|{{ [1e20, 1e-7, 100]|tojson }}",
     "{\"x\": {\"b\": 1, \"a\": \"é😀\"}}",
     "{\"b\":1,\"a\":\"é😀\"}|{\"b\": 1, \"a\": \"\\u00e9\\ud83d\\ude00\"}|\"str\"|1.0|null|[1e+20, 1e-07, 100]"},
    {"tests_types",
     "{{ x is defined }}{{ y is undefined }}{{ none is none }}{{ 'a' is string }}{{ 1 is number }}{{ 1.5 is number }}{{ 1 is integer }}{{ 1.5 is integer }}{{ 1.5 is float }}{{ true is boolean }}{{ 1 is boolean }}{{ true is number }}{{ true is integer }}{{ {} is mapping }}{{ [] is mapping }}{{ [] is iterable }}{{ 'a' is sequence }}{{ 3 is iterable }}",
     "{\"x\": 5}",
     "TrueTrueTrueTrueTrueTrueTrueFalseTrueTrueFalseTrueFalseTrueFalseTrueTrueFalse"},
    {"tests_values",
     "{{ true is true }}{{ 1 is true }}{{ false is false }}{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(2) }}{{ 'a' is equalto 'a' }}{{ 'a' is eq 'b' }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ 'aBc' is lower }}{{ x is not none }}{{ 2 is in [1, 2] }}{{ 3 is gt 2 }}{{ 3 is le 2 }}",
     "{\"x\": 5}",
     "TrueFalseTrueTrueTrueTrueFalseTrueFalseTrueTrueFalseTrueTrueTrueFalse"},
    {"m_split_strip",
     R"({{ '  a b  c '.split() }}{{ 'a,b,,c'.split(',') }}{{ 'a,b,c'.split(',', 1) }}{{ 'a,b,c'.rsplit(',', 1) }}{{ '  a  b  '.split(None, 1) }}{{ ''.split(',') }}|{{ '  x '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'xxaxx'.rstrip('x') }}|{{ '

x
'.strip('
') }})",
     "{}",
     "['a', 'b', 'c']['a', 'b', '', 'c']['a', 'b,c']['a,b', 'c']['a', 'b  ']['']|x|axx|xxa|x"},
    {"m_affix_case",
     "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'abc'.startswith('b', 1) }}|{{ 'Hello'.upper() }}{{ 'Hello'.lower() }}{{ 'hello world'.title() }}{{ 'hELLO'.capitalize() }}",
     "{}",
     "TrueTrueTrue|HELLOhelloHello WorldHello"},
    {"m_find_replace",
     "{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'héllo'.find('l') }}|{{ 'abc'.find('z') }}|{{ 'abcabc'.rfind('b') }}|{{ 'abcabc'.count('bc') }}|{{ '-'.join(['a', 'b']) }}|{{ 'a\nb\r\nc'.splitlines() }}",
     "{}",
     "bba|2|-1|4|2|a-b|['a', 'b', 'c']"},
    {"m_format",
     "{{ '{}={}'.format('a', 1) }}|{{ '{0}{0}'.format('x') }}|{{ '{n}!'.format(n='k') }}|{{ '{{lit}}'.format() }}|{{ '{!r}'.format('q') }}",
     "{}",
     "a=1|xx|k!|{lit}|'q'"},
    {"m_misc",
     "{{ 'abc'.center(9, '*') }}|{{ 'abc'.ljust(5) }}|{{ 'abc'.rjust(5) }}|{{ '42'.zfill(5) }}{{ '-42'.zfill(5) }}|{{ '1a'.isdigit() }}{{ '12'.isdigit() }}{{ 'ab'.isalpha() }}{{ '  '.isspace() }}",
     "{}",
     "***abc***|abc  |  abc|00042-0042|FalseTrueTrueTrue"},
    {"m_dict",
     "{{ d.get('a') }}|{{ d.get('z') }}|{{ d.get('z', 5) }}|{{ d.keys()|list }}|{{ d.values()|list }}|{{ d.items()|list }}|{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{% for k in d %}{{ k }}{% endfor %}",
     "{\"d\": {\"b\": 1, \"a\": [2]}}",
     "[2]|None|5|['b', 'a']|[1, [2]]|[('b', 1), ('a', [2])]|b=1;a=[2];|ba"},
    {"for_loop_vars",
     "{% for x in [1,2,3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }}{{ loop.cycle('a','b') }}|{% endfor %}",
     "{}",
     "1032TrueFalse32a|2121FalseFalse313b|3210FalseTrue32a|"},
    {"for_filter_else",
     "{% for x in [1,2,3] if x > 1 %}{{ loop.index }}/{{ loop.length }} {% else %}none{% endfor %}|{% for x in [] %}a{% else %}none{% endfor %}|{% for x in [1] if x > 5 %}a{% else %}filtered{% endfor %}",
     "{}",
     "1/2 2/2 |none|filtered"},
    {"for_unpack",
     "{% for a, b in [(1, 2), (3, 4)] %}{{ a }}{{ b }}{% endfor %}|{% for k, v in {'x': 1, 'y': 2}|dictsort %}{{ k }}={{ v }};{% endfor %}|{% for c in 'héllo' %}{{ c }}.{% endfor %}",
     "{}",
     "1234|x=1;y=2;|h.é.l.l.o."},
    {"for_break_continue",
     "{% for x in [1,2,3,4,5] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
     "{}",
     "13"},
    {"for_nested_loop",
     "{% for x in [1,2] %}{% for y in 'ab' %}{{ loop.index }}{{ x }}{{ y }} {% endfor %}{{ loop.index }}|{% endfor %}",
     "{}",
     "11a 21b 1|12a 22b 2|"},
    {"for_scoping",
     "{% set y = 1 %}{% for x in [1,2] %}{{ y }}{% set y = x * 10 %}{{ y }} {% endfor %}{{ y }}",
     "{}",
     "110 120 1"},
    {"namespace",
     "{% set ns = namespace(found=false, n=0) %}{% for x in [1,2,3] %}{% if x == 2 %}{% set ns.found = true %}{% endif %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.found }} {{ ns.n }} {{ ns.missing is defined }}",
     "{}",
     "True 6 False"},
    {"namespace_reverse_scan",
     "{%- set ns = namespace(last_user=-1) %}{%- for m in messages[::-1] %}{%- set i = (messages|length - 1) - loop.index0 %}{%- if ns.last_user == -1 and m.role == 'user' %}{%- set ns.last_user = i %}{%- endif %}{%- endfor %}{{ ns.last_user }}",
     "{\"messages\": [{\"role\": \"user\"}, {\"role\": \"assistant\"}, {\"role\": \"user\"}, {\"role\": \"tool\"}]}",
     "2"},
    {"set_tuple_and_block",
     "{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% set x %}hello {{ 1 + 1 }}{% endset %}[{{ x }}]|{% set z | upper %}abc{% endset %}{{ z }}",
     "{}",
     "12|[hello 2]|ABC"},
    {"filter_block",
     "{% filter upper %}hello {{ 'x' }}{% endfilter %}|{% filter trim|upper %}  pad  {% endfilter %}",
     "{}",
     "HELLO X|PAD"},
    {"macro_defaults",
     R"({% macro greet(name, greeting='Hi') -%}
{{ greeting }}, {{ name }}!
{%- endmacro %}
{{ greet('Bob') }} {{ greet('Al', greeting='Yo') }} {{ greet(name='Cy') }})",
     "{}",
     "Hi, Bob! Yo, Al! Hi, Cy!"},
    {"macro_varargs",
     "{% macro m(a, b=2) %}{{ a }}{{ b }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1) }}|{{ m(1,3,4,c=5) }}",
     "{}",
     "12(){}|13(4,){'c': 5}"},
    {"macro_recursive",
     "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * (fact(n - 1)|int) }}{% endif %}{% endmacro %}{{ fact(6) }}",
     "{}",
     "720"},
    {"call_block",
     "{% macro wrap(x) %}[{{ caller(x * 2) }}]{% endmacro %}{% call(v) wrap(3) %}got {{ v }}{% endcall %}",
     "{}",
     "[got 6]"},
    {"with_block",
     "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]",
     "{}",
     "3[]"},
    {"globals",
     "{{ range(3)|list }}{{ range(1, 10, 3)|list }}{{ range(5, 0, -2)|list }}{{ dict(a=1, b='x') }}{{ namespace(a=1).a }}{% set j = joiner('+') %}{% for x in [1, 2, 3] %}{{ j() }}{{ x }}{% endfor %}",
     "{}",
     "[0, 1, 2][1, 4, 7][5, 3, 1]{'a': 1, 'b': 'x'}11+2+3"},
    {"undefined_soft",
     "[{{ x }}][{{ x|length }}][{{ x|join(',') }}][{{ x|list }}][{{ x|default('u') }}][{% for a in x %}no{% endfor %}][{{ x ~ 'cat' }}][{{ 'k' in x }}]",
     "{}",
     "[][0][][[]][u][][cat][False]"},
};

class JinjaCompat : public ::testing::TestWithParam<JinjaCase> {};

TEST_P(JinjaCompat, RendersLikeJinja2) {
  const JinjaCase& c = GetParam();
  const ChatTemplate t = ChatTemplate::parse(c.source);
  EXPECT_EQ(t.render(ordered_json::parse(c.context)), c.expected) << c.source;
}

INSTANTIATE_TEST_SUITE_P(Cases, JinjaCompat, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<JinjaCase>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace pensieve::chat
