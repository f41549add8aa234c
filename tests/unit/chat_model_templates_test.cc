// Real model chat templates (Llama 3.1/3.2, Mistral v1 and Large 2,
// DeepSeek-R1 distills, Gemma 3 style content parts, Hermes tool calling) on
// conversations with system prompts, tools, tool calls and tool results.
// Expected texts were rendered by jinja2 3.1.6 configured as transformers'
// apply_chat_template configures it.
#include <gtest/gtest.h>

#include <ctime>
#include <functional>

#include "chat/chat_config.h"
#include "support/test_support.h"
#include "core/error.h"

namespace pensieve::chat {
namespace {

using nlohmann::ordered_json;

struct TemplateSource {
  const char* name;
  const char* source;
};

struct RealCase {
  const char* template_name;
  const char* conversation;
  const char* messages;
  const char* tools;  // "" when none
  const char* vars;   // extra template variables
  bool add_generation_prompt;
  const char* expected;
};

const TemplateSource kTemplates[] = {
    {"llama32",
     R"({{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
)"},
    {"llama31_builtin",
     R"J({{- bos_token }}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
)J"},
    {"mistral_large2",
     R"({%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{%- for message in loop_messages | rejectattr("role", "equalto", "tool") | rejectattr("role", "equalto", "tool_results") | selectattr("tool_calls", "undefined") %}
    {%- if (message["role"] == "user") != (loop.index0 % 2 == 0) %}
        {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
        {%- set tool = tool.function %}
        {{- '{"type": "function", "function": {' }}
        {%- for key, val in tool.items() if key != "return" %}
            {%- if val is string %}
            {{- '"' + key + '": "' + val + '"' }}
            {%- else %}
            {{- '"' + key + '": ' + val|tojson }}
            {%- endif %}
            {%- if not loop.last %}
            {{- ", " }}
            {%- endif %}
        {%- endfor %}
        {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message["role"] == "tool_calls" or message.tool_calls is defined %}
        {%- if message.tool_calls is defined %}
            {%- set tool_calls = message.tool_calls %}
        {%- else %}
            {%- set tool_calls = message.content %}
        {%- endif %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"] + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
)"},
    {"mistral_v1",
     R"({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}
)"},
    {"deepseek_r1",
     R"({% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\n'}}{% endif %}
)"},
    {"gemma_parts",
     R"({{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
)"},
    {"hermes_tools",
     R"J({%- macro json_to_python_type(json_spec) %}
{%- set basic_type_map = {
    "string": "str",
    "number": "float",
    "integer": "int",
    "boolean": "bool"
} %}

{%- if basic_type_map[json_spec.type] is defined %}
    {{- basic_type_map[json_spec.type] }}
{%- elif json_spec.type == "array" %}
    {{- "list[" +  json_to_python_type(json_spec['items']) + "]"}}
{%- elif json_spec.type == "object" %}
    {%- if json_spec.additionalProperties is defined %}
        {{- "dict[str, " + json_to_python_type(json_spec.additionalProperties) + ']'}}
    {%- else %}
        {{- "dict" }}
    {%- endif %}
{%- elif json_spec.type is iterable %}
    {{- "Union[" }}
    {%- for t in json_spec.type %}
      {{- json_to_python_type({"type": t}) }}
      {%- if not loop.last %}
        {{- "," }}
    {%- endif %}
    {%- endfor %}
    {{- "]" }}
{%- else %}
    {{- "Any" }}
{%- endif %}
{%- endmacro %}

{{- bos_token }}
{{- '<|im_start|>system\n' }}
{{- "You are a function calling AI model. Here are the available tools: <tools> " }}
{%- for tool in tools %}
    {%- if tool.function is defined %}
        {%- set tool = tool.function %}
    {%- endif %}
    {{- '{"type": "function", "function": ' }}
    {{- '{"name": "' + tool.name + '", ' }}
    {{- '"description": "' + tool.name + '(' }}
    {%- for param_name, param_fields in tool.parameters.properties|items %}
        {{- param_name + ": " + json_to_python_type(param_fields) }}
        {%- if not loop.last %}
            {{- ", " }}
        {%- endif %}
    {%- endfor %}
    {{- ")" }}
    {%- if tool.return is defined %}
        {{- " -> " + json_to_python_type(tool.return) }}
    {%- endif %}
    {{- " - " + tool.description + "\n\n" }}
    {%- for param_name, param_fields in tool.parameters.properties|items %}
        {%- if loop.first %}
            {{- "    Args:\n" }}
        {%- endif %}
        {{- "        " + param_name + "(" + json_to_python_type(param_fields) + "): " + param_fields.description|trim }}
    {%- endfor %}
    {{- '", "parameters": ' }}
    {%- if tool.parameters.properties | length == 0 %}
        {{- "{}" }}
    {%- else %}
        {{- tool.parameters|tojson }}
    {%- endif %}
    {{- "}" }}
    {%- if not loop.last %}
        {{- "\n" }}
    {%- endif %}
{%- endfor %}
{{- " </tools><|im_end|>\n" }}
{%- for message in messages %}
    {%- if message.role == "user" or message.role == "system" or (message.role == "assistant" and message.tool_calls is not defined) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
    {%- for tool_call in message.tool_calls %}
       {{- '\n<tool_call>\n' }}           {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '{' }}
            {{- '"name": "' }}
            {{- tool_call.name }}
            {{- '"' }}
            {{- ', '}}
            {%- if tool_call.arguments is defined %}
                {{- '"arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments|tojson }}
                {%- endif %}
            {%- endif %}
             {{- '}' }}
            {{- '\n</tool_call>' }}
    {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.previtem and loop.previtem.role != "tool" %}
            {{- '<|im_start|>tool\n' }}
        {%- endif %}
        {{- '<tool_response>\n' }}
        {{- message.content }}
        {%- if not loop.last %}
            {{- '\n</tool_response>\n' }}
        {%- else %}
            {{- '\n</tool_response>' }}
        {%- endif %}
        {%- if not loop.last and loop.nextitem.role != "tool" %}
            {{- '<|im_end|>' }}
        {%- elif loop.last %}
            {{- '<|im_end|>' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)J"},
};

const RealCase kRealCases[] = {
    {"llama32", "single",
     "[{\"role\": \"user\", \"content\": \"Hello\"}]",
     "",
     "{\"date_string\": \"26 Jul 2024\"}", true,
     R"(<s><|start_header_id|>system<|end_header_id|>

Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

<|eot_id|><|start_header_id|>user<|end_header_id|>

Hello<|eot_id|><|start_header_id|>assistant<|end_header_id|>

)"},
    {"llama32", "sys",
     "[{\"role\": \"system\", \"content\": \"  Be brief.  \"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}, {\"role\": \"user\", \"content\": \"Prime? ünï 😀\"}]",
     "",
     "{\"date_string\": \"26 Jul 2024\"}", true,
     R"(<s><|start_header_id|>system<|end_header_id|>

Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>

Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>

Hello!<|eot_id|><|start_header_id|>user<|end_header_id|>

Prime? ünï 😀<|eot_id|><|start_header_id|>assistant<|end_header_id|>

)"},
    {"llama32", "tools",
     "[{\"role\": \"system\", \"content\": \"Sys\"}, {\"role\": \"user\", \"content\": \"Weather in Paris?\"}, {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"abcdefghi\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}]}, {\"role\": \"tool\", \"tool_call_id\": \"abcdefghi\", \"content\": \"{\\\"temp\\\": 20}\"}, {\"role\": \"assistant\", \"content\": \"It is 20.\"}, {\"role\": \"user\", \"content\": \"Thanks\"}]",
     "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather.\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}, \"days\": {\"type\": \"integer\", \"description\": \" Days \"}, \"units\": {\"type\": [\"string\", \"integer\"], \"description\": \"u\"}, \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}, \"description\": \"t\"}}, \"required\": [\"city\"]}}}, {\"type\": \"function\", \"function\": {\"name\": \"search\", \"description\": \"Search — the web\", \"parameters\": {\"type\": \"object\", \"properties\": {}}}}]",
     "{\"date_string\": \"26 Jul 2024\"}", true,
     R"(<s><|start_header_id|>system<|end_header_id|>

Environment: ipython
Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

Sys<|eot_id|><|start_header_id|>user<|end_header_id|>

Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.

{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {
                    "type": "string",
                    "description": "City name"
                },
                "days": {
                    "type": "integer",
                    "description": " Days "
                },
                "units": {
                    "type": [
                        "string",
                        "integer"
                    ],
                    "description": "u"
                },
                "tags": {
                    "type": "array",
                    "items": {
                        "type": "string"
                    },
                    "description": "t"
                }
            },
            "required": [
                "city"
            ]
        }
    }
}

{
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search — the web",
        "parameters": {
            "type": "object",
            "properties": {}
        }
    }
}

Weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>

"{\"temp\": 20}"<|eot_id|><|start_header_id|>assistant<|end_header_id|>

It is 20.<|eot_id|><|start_header_id|>user<|end_header_id|>

Thanks<|eot_id|><|start_header_id|>assistant<|end_header_id|>

)"},
    {"llama32", "tools_not_in_user",
     "[{\"role\": \"user\", \"content\": \"Weather?\"}]",
     "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather.\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}, \"days\": {\"type\": \"integer\", \"description\": \" Days \"}, \"units\": {\"type\": [\"string\", \"integer\"], \"description\": \"u\"}, \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}, \"description\": \"t\"}}, \"required\": [\"city\"]}}}]",
     "{\"tools_in_user_message\": false, \"date_string\": \"01 Jan 2025\"}", true,
     R"(<s><|start_header_id|>system<|end_header_id|>

Environment: ipython
Cutting Knowledge Date: December 2023
Today Date: 01 Jan 2025

You have access to the following functions. To call a function, please respond with JSON for a function call.Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.

{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {
                    "type": "string",
                    "description": "City name"
                },
                "days": {
                    "type": "integer",
                    "description": " Days "
                },
                "units": {
                    "type": [
                        "string",
                        "integer"
                    ],
                    "description": "u"
                },
                "tags": {
                    "type": "array",
                    "items": {
                        "type": "string"
                    },
                    "description": "t"
                }
            },
            "required": [
                "city"
            ]
        }
    }
}

<|eot_id|><|start_header_id|>user<|end_header_id|>

Weather?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

)"},
    {"llama32", "no_gen",
     "[{\"role\": \"user\", \"content\": \"Hello\"}, {\"role\": \"assistant\", \"content\": \"Hi\"}]",
     "",
     "{\"date_string\": \"26 Jul 2024\"}", false,
     R"(<s><|start_header_id|>system<|end_header_id|>

Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

<|eot_id|><|start_header_id|>user<|end_header_id|>

Hello<|eot_id|><|start_header_id|>assistant<|end_header_id|>

Hi<|eot_id|>)"},
    {"llama31_builtin", "builtin",
     "[{\"role\": \"user\", \"content\": \"Search x\"}, {\"role\": \"assistant\", \"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"brave_search\", \"arguments\": {\"query\": \"x\"}}}]}, {\"role\": \"ipython\", \"content\": {\"r\": [1, 2]}}]",
     "",
     "{\"builtin_tools\": [\"brave_search\", \"code_interpreter\", \"wolfram_alpha\"], \"date_string\": \"26 Jul 2024\"}", true,
     R"(<s><|start_header_id|>system<|end_header_id|>

Environment: ipython
Tools: brave_search, wolfram_alpha

Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

<|eot_id|><|start_header_id|>user<|end_header_id|>

Search x<|eot_id|><|start_header_id|>assistant<|end_header_id|>

<|python_tag|>brave_search.call(query="x")<|eom_id|><|start_header_id|>ipython<|end_header_id|>

{"r": [1, 2]}<|eot_id|><|start_header_id|>assistant<|end_header_id|>

)"},
    {"llama31_builtin", "sys",
     "[{\"role\": \"system\", \"content\": \"  Be brief.  \"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}, {\"role\": \"user\", \"content\": \"Prime? ünï 😀\"}]",
     "",
     "{\"date_string\": \"26 Jul 2024\"}", true,
     R"(<s><|start_header_id|>system<|end_header_id|>

Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>

Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>

Hello!<|eot_id|><|start_header_id|>user<|end_header_id|>

Prime? ünï 😀<|eot_id|><|start_header_id|>assistant<|end_header_id|>

)"},
    {"mistral_large2", "sys",
     "[{\"role\": \"system\", \"content\": \"  Be brief.  \"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}, {\"role\": \"user\", \"content\": \"Prime? ünï 😀\"}]",
     "",
     "{}", true,
     "<s>[INST] Hi[/INST] Hello!</s>[INST]   Be brief.  \n\nPrime? ünï 😀[/INST]"},
    {"mistral_large2", "tools",
     "[{\"role\": \"system\", \"content\": \"Sys\"}, {\"role\": \"user\", \"content\": \"Weather in Paris?\"}, {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"abcdefghi\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}]}, {\"role\": \"tool\", \"tool_call_id\": \"abcdefghi\", \"content\": \"{\\\"temp\\\": 20}\"}, {\"role\": \"assistant\", \"content\": \"It is 20.\"}, {\"role\": \"user\", \"content\": \"Thanks\"}]",
     "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather.\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}, \"days\": {\"type\": \"integer\", \"description\": \" Days \"}, \"units\": {\"type\": [\"string\", \"integer\"], \"description\": \"u\"}, \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}, \"description\": \"t\"}}, \"required\": [\"city\"]}}}, {\"type\": \"function\", \"function\": {\"name\": \"search\", \"description\": \"Search — the web\", \"parameters\": {\"type\": \"object\", \"properties\": {}}}}]",
     "{}", true,
     R"(<s>[INST] Weather in Paris?[/INST][TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcdefghi"}]</s>[TOOL_RESULTS] {"content": {"temp": 20}, "call_id": "abcdefghi"}[/TOOL_RESULTS] It is 20.</s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather.", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}, "days": {"type": "integer", "description": " Days "}, "units": {"type": ["string", "integer"], "description": "u"}, "tags": {"type": "array", "items": {"type": "string"}, "description": "t"}}, "required": ["city"]}}}, {"type": "function", "function": {"name": "search", "description": "Search — the web", "parameters": {"type": "object", "properties": {}}}}][/AVAILABLE_TOOLS][INST] Sys

Thanks[/INST])"},
    {"mistral_v1", "no_gen",
     "[{\"role\": \"user\", \"content\": \"Hello\"}, {\"role\": \"assistant\", \"content\": \"Hi\"}]",
     "",
     "{}", false,
     "<s>[INST] Hello [/INST]Hi</s>"},
    {"mistral_v1", "single",
     "[{\"role\": \"user\", \"content\": \"Hello\"}]",
     "",
     "{}", true,
     "<s>[INST] Hello [/INST]"},
    {"deepseek_r1", "think",
     "[{\"role\": \"user\", \"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"<think>\\nadd\\n</think>\\n\\n4\"}, {\"role\": \"user\", \"content\": \"3+3?\"}]",
     "",
     "{}", true,
     R"(<s><｜User｜>2+2?<｜Assistant｜>

4<｜end▁of▁sentence｜><｜User｜>3+3?<｜Assistant｜><think>
)"},
    {"deepseek_r1", "tools_str_args",
     "[{\"role\": \"user\", \"content\": \"Q\"}, {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"abcdefghi\", \"type\": \"function\", \"function\": {\"name\": \"search\", \"arguments\": \"{\\\"q\\\": 1}\"}}]}, {\"role\": \"tool\", \"tool_call_id\": \"abcdefghi\", \"content\": \"r1\"}, {\"role\": \"tool\", \"tool_call_id\": \"abcdefghi\", \"content\": \"r2\"}]",
     "[{\"type\": \"function\", \"function\": {\"name\": \"search\", \"description\": \"Search — the web\", \"parameters\": {\"type\": \"object\", \"properties\": {}}}}]",
     "{}", true,
     R"(<s><｜User｜>Q<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>search
```json
{"q": 1}
```<｜tool▁call▁end｜><｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>r1<｜tool▁output▁end｜>
<｜tool▁output▁begin｜>r2<｜tool▁output▁end｜><｜tool▁outputs▁end｜>)"},
    {"gemma_parts", "parts",
     "[{\"role\": \"system\", \"content\": [{\"type\": \"text\", \"text\": \"SysPart\"}]}, {\"role\": \"user\", \"content\": [{\"type\": \"image\"}, {\"type\": \"text\", \"text\": \" look \"}]}, {\"role\": \"assistant\", \"content\": \"ok\"}, {\"role\": \"user\", \"content\": \"more\"}]",
     "",
     "{}", true,
     R"(<s><start_of_turn>user
SysPart

<start_of_image>look<end_of_turn>
<start_of_turn>model
ok<end_of_turn>
<start_of_turn>user
more<end_of_turn>
<start_of_turn>model
)"},
    {"hermes_tools", "tools",
     "[{\"role\": \"system\", \"content\": \"Sys\"}, {\"role\": \"user\", \"content\": \"Weather in Paris?\"}, {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"abcdefghi\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}]}, {\"role\": \"tool\", \"tool_call_id\": \"abcdefghi\", \"content\": \"{\\\"temp\\\": 20}\"}, {\"role\": \"assistant\", \"content\": \"It is 20.\"}, {\"role\": \"user\", \"content\": \"Thanks\"}]",
     "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather.\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}, \"days\": {\"type\": \"integer\", \"description\": \" Days \"}, \"units\": {\"type\": [\"string\", \"integer\"], \"description\": \"u\"}, \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}, \"description\": \"t\"}}, \"required\": [\"city\"]}}}, {\"type\": \"function\", \"function\": {\"name\": \"search\", \"description\": \"Search — the web\", \"parameters\": {\"type\": \"object\", \"properties\": {}}}}]",
     "{}", true,
     R"(<s><|im_start|>system
You are a function calling AI model. Here are the available tools: <tools> {"type": "function", "function": {"name": "get_weather", "description": "get_weather(city: str, days: int, units: Union[str,int], tags: list[str]) - Get the weather.

    Args:
        city(str): City name        days(int): Days        units(Union[str,int]): u        tags(list[str]): t", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}, "days": {"type": "integer", "description": " Days "}, "units": {"type": ["string", "integer"], "description": "u"}, "tags": {"type": "array", "items": {"type": "string"}, "description": "t"}}, "required": ["city"]}}
{"type": "function", "function": {"name": "search", "description": "search() - Search — the web

", "parameters": {}} </tools><|im_end|>
<|im_start|>system
Sys<|im_end|>
<|im_start|>user
Weather in Paris?<|im_end|>
<|im_start|>assistant
<tool_call>
{"name": "get_weather", "arguments": {"city": "Paris"}}
</tool_call><|im_end|>
<|im_start|>tool
<tool_response>
{"temp": 20}
</tool_response>
<|im_end|><|im_start|>assistant
It is 20.<|im_end|>
<|im_start|>user
Thanks<|im_end|>
<|im_start|>assistant
)"},
};

ChatConfig config_for(const std::string& template_name) {
  ChatConfig config;
  for (const auto& t : kTemplates)
    if (template_name == t.name) config.template_source = t.source;
  EXPECT_FALSE(config.template_source.empty()) << template_name;
  config.bos_token = "<s>";
  config.eos_token = "</s>";
  config.source_file = template_name;
  config.prepare();
  return config;
}

std::string render_case(const std::string& template_name, const ordered_json& messages,
                        const ordered_json* tools = nullptr,
                        const ordered_json& vars = ordered_json::object()) {
  return render_chat(config_for(template_name), messages, tools, true, vars);
}

class RealTemplates : public ::testing::TestWithParam<RealCase> {};

TEST_P(RealTemplates, RenderLikeTransformers) {
  const RealCase& c = GetParam();
  const ChatConfig config = config_for(c.template_name);
  const ordered_json messages = ordered_json::parse(c.messages);
  const ordered_json tools = *c.tools ? ordered_json::parse(c.tools) : ordered_json();
  const std::string out = render_chat(config, messages, *c.tools ? &tools : nullptr,
                                      c.add_generation_prompt, ordered_json::parse(c.vars));
  EXPECT_EQ(out, c.expected);
}

INSTANTIATE_TEST_SUITE_P(Cases, RealTemplates, ::testing::ValuesIn(kRealCases),
                         [](const ::testing::TestParamInfo<RealCase>& info) {
                           return std::string(info.param.template_name) + "_" +
                                  info.param.conversation;
                         });

using test::error_of;

TEST(RealTemplates, MistralRejectsBadRoleAlternation) {
  const ordered_json messages = ordered_json::parse(
      R"([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])");
  EXPECT_EQ(error_of([&] { render_case("mistral_v1", messages); }),
            "chat template: Conversation roles must alternate user/assistant/user/assistant/...");
  EXPECT_EQ(error_of([&] { render_case("mistral_large2", messages); }),
            "chat template: After the optional system message, conversation roles must "
            "alternate user/assistant/user/assistant/...");
}

TEST(RealTemplates, TemplateChecksOnToolCallsSurface) {
  const ordered_json two_calls = ordered_json::parse(R"([
    {"role": "user", "content": "q"},
    {"role": "assistant", "tool_calls": [
      {"type": "function", "function": {"name": "a", "arguments": {}}},
      {"type": "function", "function": {"name": "b", "arguments": {}}}]}])");
  EXPECT_EQ(error_of([&] { render_case("llama32", two_calls); }),
            "chat template: This model only supports single tool-calls at once!");
  const ordered_json bad_id = ordered_json::parse(R"([
    {"role": "user", "content": "q"},
    {"role": "assistant", "tool_calls": [
      {"id": "short", "type": "function", "function": {"name": "a", "arguments": {}}}]}])");
  EXPECT_EQ(error_of([&] { render_case("mistral_large2", bad_id); }),
            "chat template: Tool call IDs should be alphanumeric strings with length 9!");
  const ordered_json tools = ordered_json::parse(R"([{"type": "function", "function": {}}])");
  const ordered_json system_only =
      ordered_json::parse(R"([{"role": "system", "content": "s"}])");
  EXPECT_EQ(error_of([&] { render_case("llama32", system_only, &tools); }),
            "chat template: Cannot put tools in the first user message when there's no first "
            "user message!");
}

TEST(RealTemplates, Llama32UsesTodaysDateFromStrftimeNow) {
  const ordered_json messages = ordered_json::parse(R"([{"role": "user", "content": "Hi"}])");
  const std::string out = render_case("llama32", messages);
  char today[32];
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::strftime(today, sizeof(today), "%d %b %Y", &local);
  EXPECT_NE(out.find(std::string("Today Date: ") + today + "\n\n"), std::string::npos) << out;
  // A caller-supplied date_string wins, as the template intends.
  const std::string pinned = render_case("llama32", messages, nullptr,
                                         ordered_json{{"date_string", "01 Jan 2030"}});
  EXPECT_NE(pinned.find("Today Date: 01 Jan 2030\n\n"), std::string::npos);
}

}  // namespace
}  // namespace pensieve::chat
