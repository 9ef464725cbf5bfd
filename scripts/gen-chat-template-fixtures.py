#!/usr/bin/env python3
"""Golden fixtures for tessera-lm's chat templates (crates/tessera-lm/tests/chat_template.rs).

Collects real chat templates (llama.cpp's models/templates/*.jinja and a few inline ones from its
tests/test-chat-template.cpp, both read from the llama-cpp-python sdist; SmolLM2's from its GGUF;
tessera's own built-in fallbacks from crates/tessera-lm/src/chat_template/builtin/), copies them
into crates/tessera-lm/tests/fixtures/chat_templates/, and renders each one on a set of
conversations with Python's jinja2 configured the way Hugging Face transformers configures it
(transformers/utils/chat_template_utils.py):

- ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
  extensions=[AssistantTracker ({% generation %}), jinja2.ext.loopcontrols]);
- globals raise_exception(msg) (raises TemplateError) and strftime_now(fmt);
- filter tojson = json.dumps(x, ensure_ascii=False, indent=indent, separators=separators,
  sort_keys=sort_keys);
- render(messages=..., tools=<tools or None>, documents=None, add_generation_prompt=...,
  **special_tokens, **extra_kwargs).

Two deliberate pins, mirrored by the Rust test:
- strftime_now uses a fixed instant (NOW_UNIX, in UTC) so outputs are reproducible; the Rust side
  pins the same instant with ChatTemplate::with_clock.
- Every JSON object that reaches the Rust renderer through serde_json::Value (tools, tool_calls,
  extra kwargs) has its keys sorted here, because the workspace's serde_json (no preserve_order)
  stores objects sorted by key. Messages keep tessera's field order: role, content, name,
  tool_calls, tool_call_id, then other keys sorted.

Outputs go to cases.json: for each template and case either "output" (the exact string) or
"error" ({"kind": "raise_exception" | "other", "message": ...}).

Usage: .cache/bench-venv/bin/python scripts/gen-chat-template-fixtures.py
       [--sdist PATH] [--gguf PATH] [--out DIR]
(needs jinja2 and, for the GGUF template, the gguf package: both are in .cache/bench-venv).
"""

import argparse
import json
import os
import re
import sys
import tarfile
from datetime import datetime, timezone

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILTIN_DIR = os.path.join(ROOT, "crates/tessera-lm/src/chat_template/builtin")
DEFAULT_OUT = os.path.join(ROOT, "crates/tessera-lm/tests/fixtures/chat_templates")
DEFAULT_SDIST = os.path.join(ROOT, ".cache/models/wheels/llama_cpp_python-0.3.36.tar.gz")
DEFAULT_GGUF = os.path.join(ROOT, ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")
SDIST_PREFIX = "llama_cpp_python-0.3.36/vendor/llama.cpp/"

# 2025-03-07 14:05:09 UTC: the instant strftime_now reports.
NOW_UNIX = 1741356309

LLAMA3 = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
QWEN = {"eos_token": "<|im_end|>"}
GEMMA = {"bos_token": "<bos>", "eos_token": "<eos>"}
MISTRAL = {"bos_token": "<s>", "eos_token": "</s>"}
DEEPSEEK = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}

# (fixture name, origin, source, special tokens, extra kwargs for every case)
# origin: "sdist" = models/templates/<source>.jinja, "cpp" = test-chat-template.cpp case named
# <source>, "gguf" = tokenizer.chat_template of the GGUF, "builtin" = tessera's built-in <source>.
TEMPLATES = [
    ("llama-3.1-8b-instruct", "sdist", "meta-llama-Llama-3.1-8B-Instruct", LLAMA3, {}),
    ("llama-3.2-3b-instruct", "sdist", "meta-llama-Llama-3.2-3B-Instruct", LLAMA3, {}),
    ("llama-3-8b-instruct", "builtin", "llama3", LLAMA3, {}),
    ("qwen2.5-7b-instruct", "sdist", "Qwen-Qwen2.5-7B-Instruct", QWEN, {}),
    ("qwen3-0.6b", "sdist", "Qwen-Qwen3-0.6B", QWEN, {}),
    ("qwen3-0.6b-no-thinking", "sdist", "Qwen-Qwen3-0.6B", QWEN, {"enable_thinking": False}),
    ("qwq-32b", "sdist", "Qwen-QwQ-32B", QWEN, {}),
    ("gemma-7b-it", "cpp", "google/gemma-7b-it", GEMMA, {}),
    ("gemma-2-2b-it", "sdist", "google-gemma-2-2b-it", GEMMA, {}),
    ("gemma-3", "builtin", "gemma3", GEMMA, {}),
    ("phi-3-mini", "cpp", "Phi-3-mini", {"bos_token": "<s>", "eos_token": "<|endoftext|>"}, {}),
    (
        "phi-3.5-mini-instruct",
        "sdist",
        "microsoft-Phi-3.5-mini-instruct",
        {"bos_token": "<s>", "eos_token": "<|endoftext|>"},
        {},
    ),
    ("phi-4", "cpp", "phi-4", {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}, {}),
    (
        "mistral-7b-instruct-v0.2",
        "cpp",
        "mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1 without a system prompt)",
        MISTRAL,
        {},
    ),
    ("mistral-nemo-instruct-2407", "sdist", "mistralai-Mistral-Nemo-Instruct-2407", MISTRAL, {}),
    ("mistral-small-3.2-24b", "sdist", "Mistral-Small-3.2-24B-Instruct-2506", MISTRAL, {}),
    (
        "smollm2-135m-instruct",
        "gguf",
        "tokenizer.chat_template",
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"},
        {},
    ),
    ("smollm3-3b", "sdist", "HuggingFaceTB-SmolLM3-3B", {"eos_token": "<|im_end|>"}, {}),
    ("chatml", "builtin", "chatml", {"eos_token": "<|im_end|>"}, {}),
    ("deepseek-r1-distill-qwen-32b", "sdist", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", DEEPSEEK, {}),
    ("deepseek-r1-distill-llama-8b", "sdist", "deepseek-ai-DeepSeek-R1-Distill-Llama-8B", DEEPSEEK, {}),
    (
        "hermes-3-llama-3.1-8b-tool-use",
        "sdist",
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use",
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>"},
        {},
    ),
    (
        "granite-3.3-2b-instruct",
        "sdist",
        "ibm-granite-granite-3.3-2B-Instruct",
        {"bos_token": "<|end_of_text|>", "eos_token": "<|end_of_text|>"},
        {},
    ),
    (
        "lfm2.5-8b-a1b",
        "sdist",
        "LFM2.5-8B-A1B",
        {"bos_token": "<|startoftext|>", "eos_token": "<|im_end|>"},
        {},
    ),
    (
        "openchat-3.5",
        "cpp",
        "openchat/openchat-3.5-0106",
        {"bos_token": "<s>", "eos_token": "<|end_of_turn|>"},
        {},
    ),
    ("functionary-medium-v3.2", "sdist", "meetkai-functionary-medium-v3.2", LLAMA3, {}),
    (
        "gpt-oss-120b",
        "sdist",
        "openai-gpt-oss-120b",
        {"bos_token": "<|startoftext|>", "eos_token": "<|return|>"},
        {},
    ),
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
TOOL_CALL = {
    "id": "call0a1b2",  # nine alphanumerics: Mistral's templates insist on it
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}},
}

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = {
    "single": {"messages": [{"role": "user", "content": "Hello!"}]},
    "system_multi": {
        "messages": [
            SYSTEM,
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "What is 2+2?"},
        ]
    },
    "multi": {
        "messages": [
            {"role": "user", "content": "Who are you?"},
            {"role": "assistant", "content": "   I am an assistant.   "},
            {"role": "user", "content": "Another question"},
        ]
    },
    "unicode": {
        "messages": [
            {"role": "system", "content": "  Réponds en français. 🇫🇷\n"},
            {
                "role": "user",
                "content": "Grüße 🌍 — ¿qué tal? 日本語\n\"quoted\" 'single' \\ back\\slash\ttab <b>&amp;</b>  ",
            },
        ]
    },
    "bad_alternation": {
        "messages": [
            {"role": "user", "content": "First"},
            {"role": "user", "content": "Second, without an answer in between"},
        ]
    },
    "tools": {
        "messages": [SYSTEM, {"role": "user", "content": "What's the weather in Paris?"}],
        "extra": {"tools": [WEATHER_TOOL]},
    },
    "tool_result": {
        "messages": [
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
            {
                "role": "tool",
                "content": '{"temperature": 18, "condition": "sunny"}',
                "name": "get_weather",
                "tool_call_id": "call0a1b2",
            },
        ],
        "extra": {"tools": [WEATHER_TOOL]},
    },
    "thinking": {
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "<think>\nEasy: two plus two.\n</think>\n\nIt is 4."},
            {"role": "user", "content": "And 3+3?"},
        ]
    },
    "reasoning_content": {
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "It is 4.", "reasoning_content": "Two plus two is four."},
            {"role": "user", "content": "And 3+3?"},
        ]
    },
}

# Small templates that probe one Python/jinja2 behaviour each, rendered with messages=[],
# add_generation_prompt=False and PROBE_VARS (tools/documents None, as transformers passes them).
PROBE_VARS = {
    "d": {"b": 1, "a": [1, 2.5, None, True, "x"], "u": "é✓"},
    "s": "  Hello, World! hello  ",
    "f": 0.1,
    "big": 1e16,
    "n": None,
    "t": True,
    "lst": [3, 1, 2, 1],
    "msgs": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    "text": "line1\nline2\r\n\ttab 'q' \"dq\" \\ </s> ü 🌍",
}
PROBES = [
    ("print_scalars", "{{ n }}|{{ t }}|{{ false }}|{{ f }}|{{ big }}|{{ 2.0 }}|{{ 1/3 }}|{{ 7 // 2 }}|{{ 2 ** 10 }}|{{ -0.0 }}"),
    ("print_containers", "{{ lst }}|{{ d }}|{{ msgs[0] }}|{{ (1, 'a') }}|{{ [] }}|{{ {} }}"),
    ("print_undefined", "[{{ missing }}][{{ d.missing }}][{{ d['missing'] }}]"),
    ("string_filter", "{{ t | string }}|{{ n | string }}|{{ lst | string }}|{{ f | string }}"),
    ("concat_tilde", "{{ 'a' ~ 1 ~ 'b' }}|{{ 'x' ~ s }}"),
    ("concat_tilde_bool", "{{ 'a' ~ t }}"),
    ("concat_tilde_none", "{{ 'a' ~ n }}"),
    ("concat_tilde_list", "{{ 'a' ~ lst }}"),
    ("concat_tilde_float", "{{ 'a' ~ big }}"),
    ("tojson_default", "{{ d | tojson }}"),
    ("tojson_indent", "{{ d | tojson(indent=2) }}"),
    ("tojson_indent_str", "{{ lst | tojson(indent='\\t') }}"),
    ("tojson_separators", "{{ d | tojson(separators=(',', ':')) }}"),
    ("tojson_sort_keys", "{{ d | tojson(sort_keys=true) }}"),
    ("tojson_ensure_ascii", "{{ d | tojson(ensure_ascii=true) }}|{{ text | tojson(ensure_ascii=true) }}"),
    ("tojson_text", "{{ text | tojson }}"),
    ("tojson_scalars", "{{ n | tojson }}|{{ t | tojson }}|{{ f | tojson }}|{{ big | tojson }}|{{ 'x' | tojson }}"),
    ("tojson_tools_none", "{{ tools | tojson }}"),
    ("tojson_undefined", "{{ missing | tojson }}"),
    ("tojson_empty_indent", "{{ [] | tojson(indent=4) }}|{{ {} | tojson(indent=4) }}|{{ [[]] | tojson(indent=1) }}"),
    ("str_strip", "[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ s.strip(' Hd') }}][{{ '\\n\\nx\\n'.strip('\\n') }}]"),
    ("str_split", "{{ s.split() }}|{{ s.split(',') }}|{{ 'a,b,c'.split(',', 1) }}|{{ 'a b'.split(' ')[-1] }}"),
    ("str_case", "{{ s.upper() }}|{{ s.lower() }}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}"),
    ("str_find", "{{ s.startswith('  He') }}|{{ s.endswith('lo  ') }}|{{ s.find('World') }}|{{ s.count('l') }}"),
    ("str_startswith_tuple", "{{ 'abc'.startswith(('x', 'a')) }}"),
    ("str_replace", "{{ s.replace('l', 'L') }}|{{ s.replace('l', 'L', 2) }}"),
    ("str_slice", "{{ 'abcdef'[1:3] }}|{{ 'abcdef'[::-1] }}|{{ 'abcdef'[-2:] }}|{{ 'héllo'[1] }}"),
    ("str_format_method", "{{ '{} and {}'.format('a', 1) }}"),
    ("str_percent", "{{ '%s-%d' % ('a', 3) }}"),
    ("str_join_method", "{{ ', '.join(['a', 'b']) }}"),
    ("str_in", "{{ 'ell' in s }}|{{ 'x' in s }}|{{ 'b' in d }}|{{ 1 in lst }}"),
    ("str_mul", "{{ '-' * 3 }}"),
    ("str_isdigit", "{{ '123'.isdigit() }}|{{ 'a1'.isalnum() }}|{{ ' '.isspace() }}"),
    ("dict_methods", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{{ d.keys() | list }}|{{ d.get('b') }}|{{ d.get('z', 'dflt') }}|{{ d.get('z') }}"),
    ("dict_iter", "{% for k in d %}{{ k }},{% endfor %}"),
    ("dict_literal_order", "{{ {'z': 1, 'a': 2} }}|{{ {'z': 1, 'a': 2} | tojson }}|{% for k in {'z': 1, 'a': 2} %}{{ k }}{% endfor %}"),
    ("tests_types", "{{ s is string }}|{{ lst is sequence }}|{{ s is sequence }}|{{ d is sequence }}|{{ d is mapping }}|{{ lst is iterable }}|{{ s is iterable }}|{{ d is iterable }}|{{ n is iterable }}|{{ missing is iterable }}"),
    ("tests_numbers", "{{ 1 is number }}|{{ f is number }}|{{ t is number }}|{{ 1 is integer }}|{{ t is integer }}|{{ f is float }}|{{ n is none }}|{{ t is boolean }}|{{ 4 is divisibleby 2 }}"),
    ("tests_defined", "{{ missing is defined }}|{{ n is defined }}|{{ tools is defined }}|{{ tools is none }}|{{ documents is not none }}|{{ missing is undefined }}"),
    ("tests_true_false", "{{ t is true }}|{{ 1 is true }}|{{ false is false }}|{{ 0 is false }}"),
    ("truthiness", "{{ 'y' if '' else 'n' }}{{ 'y' if [] else 'n' }}{{ 'y' if {} else 'n' }}{{ 'y' if 0.0 else 'n' }}{{ 'y' if n else 'n' }}{{ 'y' if missing else 'n' }}{{ 'y' if ' ' else 'n' }}"),
    ("compare", "{{ 1 == 1.0 }}|{{ 'a' < 'b' }}|{{ [1, 2] == [1, 2] }}|{{ n == none }}|{{ t == 1 }}"),
    ("filters_basic", "{{ s | trim }}|{{ lst | length }}|{{ d | length }}|{{ s | length }}|{{ lst | first }}|{{ lst | last }}|{{ lst | sum }}|{{ lst | max }}|{{ lst | min }}"),
    ("filters_list", "{{ lst | sort }}|{{ lst | unique | list }}|{{ lst | reverse | list }}|{{ lst | join(', ') }}|{{ lst | map('string') | join }}|{{ range(3) | list }}"),
    ("filters_attr", "{{ msgs | map(attribute='role') | join(',') }}|{{ msgs | selectattr('role', 'equalto', 'user') | list | length }}|{{ msgs | rejectattr('role', 'eq', 'user') | map(attribute='content') | first }}|{{ msgs | join(', ', attribute='content') }}"),
    ("filters_default", "{{ missing | default('dflt') }}|{{ n | default('dflt') }}|{{ '' | default('dflt', true) }}|{{ missing | d('x') }}"),
    ("filters_numbers", "{{ '42' | int }}|{{ '3.5' | float }}|{{ 3.14159 | round(2) }}|{{ 2.5 | round }}|{{ -3 | abs }}|{{ 'x' | int }}"),
    ("filters_strings", "{{ 'hello world' | title }}|{{ 'hello' | capitalize }}|{{ 'Hi' | upper }}|{{ 'a-b' | replace('-', '+') }}|{{ 'abc' | list }}"),
    ("filters_dictsort", "{% for k, v in d | dictsort %}{{ k }}{% endfor %}|{% for k, v in d | items %}{{ k }}{% endfor %}"),
    ("filters_indent", "{{ 'a\\nb\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}"),
    ("filters_truncate", "{{ 'hello world foo' | truncate(9) }}"),
    ("filters_wordcount", "{{ 'a b c' | wordcount }}"),
    ("filters_escape", "{{ '<a>&' | e }}|{{ '<a>' | safe }}"),
    ("loop_vars", "{% for x in lst %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{% if not loop.first %}{{ loop.previtem }}{% endif %}{% if not loop.last %}{{ loop.nextitem }}{% endif %};{% endfor %}"),
    ("loop_controls", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
    ("loop_else_filter", "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}|{% for x in lst if x > 1 %}{{ x }}{% endfor %}|{{ loop is defined }}"),
    ("loop_cycle", "{% for x in range(4) %}{{ loop.cycle('a', 'b') }}{% endfor %}"),
    ("loop_over_none", "{% for x in n %}{{ x }}{% endfor %}done"),
    ("namespace", "{% set ns = namespace(a=1, b='x') %}{% for x in lst %}{% set ns.a = ns.a + x %}{% endfor %}{{ ns.a }}{{ ns.b }}"),
    ("scoping", "{% set v = 1 %}{% for x in lst %}{% set v = x %}{% endfor %}{{ v }}{% if true %}{% set w = 2 %}{% endif %}{{ w }}"),
    ("macro", "{% macro m(a, b='d') %}[{{ a }}{{ b }}{{ kwargs is defined }}]{% endmacro %}{{ m(1) }}{{ m(1, b=2) }}{{ m('x', 'y') }}"),
    ("macro_caller", "{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}inner{% endcall %}"),
    ("set_block", "{% set x %}a{{ 1 + 1 }}b{% endset %}{{ x }}|{{ x | length }}"),
    ("filter_block", "{% filter upper %}abc{% endfilter %}"),
    ("if_expr", "{{ 'a' if t else 'b' }}|{{ 'a' if n }}|{{ 1 if n is none else 2 }}"),
    ("math", "{{ 1 + 2 * 3 }}|{{ 7 % 3 }}|{{ -7 // 2 }}|{{ 10 / 4 }}|{{ 2 ** 0.5 }}|{{ 3 - 5.5 }}"),
    ("list_ops", "{{ lst + [9] }}|{{ lst[1:] }}|{{ lst[-1] }}|{{ lst[::-1] }}|{{ lst[10] }}|{{ lst | count }}"),
    ("list_index_method", "{{ lst.index(2) }}"),
    ("list_count_method", "{{ lst.count(1) }}"),
    ("dict_dot_vs_item", "{{ msgs[0].role }}|{{ msgs[0]['content'] }}|{{ d.items | length if false else 'x' }}"),
    ("string_escapes", "{{ 'a\\tb\\\\c\\'d\"e' }}|{{ \"x\\ny\" }}|{{ '\\u00e9' }}"),
    ("raw_block", "{% raw %}{{ not rendered }}{% endraw %}"),
    ("comments_ws", "a\n  {# comment #}\nb\n    {%- if true %}\nc\n  {% endif %}\nd"),
    ("ws_trim_lstrip", "<\n  {% if true %}\n    x\n  {% endif %}\n>\n{% for i in range(2) %}\n  {{ i }}\n{% endfor %}\nend"),
    ("ws_plus", "a\n  {%+ if true %}b{% endif +%}\nc"),
    ("ws_dash_vars", "a  {{- 'b' -}}  c\n\n{{ 'd' }}\n  {{- 'e' }}"),
    ("trailing_newline", "x\n"),
    ("trailing_newlines", "x\n\n"),
    ("unicode_trim", "[{{ '\\u3000x\\xa0' | trim }}][{{ '\\x1fx\\x1c'.strip() }}]"),
    ("raise_in_macro", "{% macro f() %}{{ raise_exception('from macro: ' ~ 1) }}{% endmacro %}{{ f() }}"),
    ("undefined_attr_error", "{{ missing.attr }}"),
    ("none_attr_error", "{{ n.attr }}"),
    ("add_type_error", "{{ 'a' + 1 }}"),
    ("add_none_error", "{{ 'a' + n }}"),
    ("length_none_error", "{{ n | length }}"),
    ("unknown_filter", "{{ 'a' | nosuchfilter }}"),
    ("strftime_formats", "{{ strftime_now('%Y-%m-%d %H:%M:%S') }}|{{ strftime_now('%d %B %Y, %A') }}|{{ strftime_now('%b %-d %I%p %j %y') }}"),
    ("dict_global", "{{ dict(a=1, b=2) }}|{{ dict(a=1) | tojson }}"),
    ("safe_concat", "{{ 'a<' | safe + '<b>' }}|{{ '<c>' + 'd' | safe }}"),
    ("tojson_generator", "{{ msgs | map(attribute='role') | tojson }}"),
    ("tojson_range", "{{ range(3) | tojson }}"),
    ("tojson_items", "{{ d.items() | tojson }}"),
    ("tojson_list_of_generator", "{{ msgs | map(attribute='role') | list | tojson }}|{{ msgs | selectattr('role') | list | tojson }}"),
    ("reverse_kinds", "{{ 'abc' | reverse }}|{{ lst | reverse | list }}|{{ lst | reverse | join(',') }}"),
    ("generation_tag", "a{% generation %}b{{ 1 }}{% endgeneration %}c\n  {%- generation -%}\n d \n{%- endgeneration %}"),
]

# (conversation, add_generation_prompt) rendered for every template.
CASES = [
    ("single", True),
    ("single", False),
    ("system_multi", True),
    ("system_multi", False),
    ("multi", True),
    ("unicode", True),
    ("bad_alternation", True),
    ("tools", True),
    ("tool_result", True),
    ("thinking", True),
    ("reasoning_content", True),
]


def sort_keys(v):
    if isinstance(v, dict):
        return {k: sort_keys(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [sort_keys(x) for x in v]
    return v


def canon_message(m):
    """The message as tessera's Message serializes it into the template context."""
    out = {"role": m["role"], "content": m["content"]}
    for k in ("name", "tool_calls", "tool_call_id"):
        if k in m:
            out[k] = sort_keys(m[k])
    for k in sorted(m):
        if k not in out:
            out[k] = sort_keys(m[k])
    return out


class RaisedByTemplate(jinja2.exceptions.TemplateError):
    """What raise_exception raises (transformers raises TemplateError; same behaviour)."""


class AssistantTracker(jinja2.ext.Extension):
    # transformers' {% generation %} ... {% endgeneration %}: renders its body unchanged.
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise RaisedByTemplate(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.fromtimestamp(NOW_UNIX, tz=timezone.utc).strftime(format)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def c_string(literal):
    """Decodes one C++ string literal body (escapes only, no adjacent-literal concatenation)."""
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
    out, i = [], 0
    while i < len(literal):
        c = literal[i]
        if c == "\\":
            out.append(escapes[literal[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def cpp_templates(cpp_source):
    found = {}
    pattern = re.compile(
        r'/\* \.name= \*/ "((?:[^"\\]|\\.)*)",\s*\n(?:\s*//[^\n]*\n)*\s*/\* \.template_str= \*/ (?:U8C\()?"((?:[^"\\]|\\.)*)"'
    )
    for m in pattern.finditer(cpp_source):
        found[c_string(m.group(1))] = c_string(m.group(2))
    return found


def gguf_template(path, key):
    from gguf import GGUFReader

    field = GGUFReader(path).fields[key]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdist", default=DEFAULT_SDIST)
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument(
        "--all-sdist",
        action="store_true",
        help="also every other models/templates/*.jinja of the sdist (a wider one-off check: "
        "write it to another --out and point TESSERA_CHAT_TEMPLATE_FIXTURES there)",
    )
    args = ap.parse_args()
    templates = list(TEMPLATES)
    os.makedirs(args.out, exist_ok=True)

    with tarfile.open(args.sdist) as tar:

        def member(path):
            return tar.extractfile(SDIST_PREFIX + path).read().decode("utf-8")

        cpp = cpp_templates(member("tests/test-chat-template.cpp"))
        if args.all_sdist:
            listed = {src for _, origin, src, _, _ in templates if origin == "sdist"}
            prefix = SDIST_PREFIX + "models/templates/"
            for m in sorted(tar.getnames()):
                if m.startswith(prefix) and m.endswith(".jinja"):
                    src = m[len(prefix) : -len(".jinja")]
                    if src not in listed:
                        templates.append((src, "sdist", src, MISTRAL, {}))
        sources = {}
        for name, origin, src, _, _ in templates:
            if origin == "sdist":
                sources[name] = (member(f"models/templates/{src}.jinja"), f"llama.cpp models/templates/{src}.jinja")
            elif origin == "cpp":
                sources[name] = (cpp[src], f"llama.cpp tests/test-chat-template.cpp case {src!r}")
            elif origin == "gguf":
                sources[name] = (gguf_template(args.gguf, src), f"{os.path.basename(args.gguf)} metadata {src}")
            elif origin == "builtin":
                with open(os.path.join(BUILTIN_DIR, f"{src}.jinja"), encoding="utf-8") as f:
                    sources[name] = (f.read(), f"tessera built-in {src!r}")
            else:
                sys.exit(f"unknown origin {origin}")

    env = make_env()
    out_templates = []
    written = set()
    for name, origin, src, special, extra in templates:
        source, described = sources[name]
        entry = {"name": name, "origin": described}
        if origin == "builtin":
            entry["builtin"] = src
        else:
            file = f"{src if origin == 'sdist' else name}.jinja"
            entry["file"] = file
            if file not in written:
                with open(os.path.join(args.out, file), "w", encoding="utf-8", newline="") as f:
                    f.write(source)
                written.add(file)
        entry["special_tokens"] = special
        entry["extra"] = extra
        template = env.from_string(source)
        cases = []
        for conv_name, agp in CASES:
            conv = CONVERSATIONS[conv_name]
            messages = [canon_message(m) for m in conv["messages"]]
            kwargs = {**special, **sort_keys(conv.get("extra", {})), **sort_keys(extra)}
            tools = kwargs.pop("tools", None)
            case = {"conversation": conv_name, "add_generation_prompt": agp}
            try:
                case["output"] = template.render(
                    messages=messages, tools=tools, documents=None, add_generation_prompt=agp, **kwargs
                )
            except RaisedByTemplate as e:
                case["error"] = {"kind": "raise_exception", "message": str(e)}
            except Exception as e:  # noqa: BLE001 - any jinja2/Python error is recorded as "other"
                case["error"] = {"kind": "other", "message": f"{type(e).__name__}: {e}"}
            cases.append(case)
        entry["cases"] = cases
        out_templates.append(entry)

    probes = []
    for name, source in PROBES:
        probe = {"name": name, "source": source}
        try:
            probe["output"] = env.from_string(source).render(
                messages=[], tools=None, documents=None, add_generation_prompt=False, **sort_keys(PROBE_VARS)
            )
        except RaisedByTemplate as e:
            probe["error"] = {"kind": "raise_exception", "message": str(e)}
        except Exception as e:  # noqa: BLE001
            probe["error"] = {"kind": "other", "message": f"{type(e).__name__}: {e}"}
        probes.append(probe)

    fixture = {
        "generated_by": "scripts/gen-chat-template-fixtures.py",
        "jinja2_version": jinja2.__version__,
        "now_unix": NOW_UNIX,
        "probe_vars": sort_keys(PROBE_VARS),
        "probes": probes,
        "conversations": {
            k: {"messages": [canon_message(m) for m in v["messages"]], "extra": sort_keys(v.get("extra", {}))}
            for k, v in CONVERSATIONS.items()
        },
        "templates": out_templates,
    }
    with open(os.path.join(args.out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    errors = sum("error" in c for t in out_templates for c in t["cases"])
    print(f"{len(out_templates)} templates, {sum(len(t['cases']) for t in out_templates)} cases ({errors} errors)")


if __name__ == "__main__":
    main()
