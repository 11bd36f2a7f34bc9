"""The Ollama template of ``sft export --format gguf``: Go templates derived from chat templates and
verified against them, the Go-template renderer the verification uses (checked against real Go where
``go`` is installed), refusals, and the Modelfile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from sft_core.engine.export.ollama import (CONVERSATIONS, TemplateUnsupported, derive_go_template, modelfile,
                                             render_go_template, verify_go_template)

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' "
          "+ '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\n" + SMOL_SYSTEM + "<|im_end|>\n' }}{% endif %}"
           "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}"
          "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
          "+ message['content'] | trim + '<|eot_id|>' %}"
          "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
          "{% endif %}")
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
#: Qwen2.5's template without its tool branches: the default system block sits before the loop.
QWEN25 = ("{%- if messages[0]['role'] == 'system' %}"
          "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
          "{%- else %}{{- '<|im_start|>system\n" + QWEN_SYSTEM + "<|im_end|>\n' }}{%- endif %}"
          "{%- for message in messages %}{%- if (message.role == 'user') or "
          "(message.role == 'system' and not loop.first) or (message.role == 'assistant') %}"
          "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endif %}{%- endfor %}"
          "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}")
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
          "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
          "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
          "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}"
          "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
          "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
          "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
          "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
         "{% endif %}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
         "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + "
         "message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")
NO_SYSTEM = CHATML.replace("{% for message in messages %}", "{% for message in messages %}"
                           "{% if message['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}")
#: ChatML that writes the system prompt into the first user turn, as Llama 2 does, with a generation prompt.
FOLDED = ("{% set ns = namespace(system='') %}{% for message in messages %}{% if message['role'] == 'system' %}"
          "{% set ns.system = message['content'] + '\n\n' %}{% else %}{{ '<|im_start|>' + message['role'] + '\n' + "
          "ns.system + message['content'] + '<|im_end|>\n' }}{% set ns.system = '' %}{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
#: Per-message in form, but one content transformation the markers cannot see: only verification can.
NEWLINES_FLATTENED = CHATML.replace("message['content']", "message['content'].replace('\\n', ' ')")
#: Trims the assistant's content only: neither matched by Go nor a uniform trim.
TRIMS_ASSISTANT = CHATML.replace("message['content']", "(message['content'] | trim if message['role'] == 'assistant' "
                                 "else message['content'])")
BRACES = CHATML.replace("'<|im_start|>'", "'{{'").replace("'<|im_end|>'", "'}}'").replace(
    "'<|im_start|>assistant\n'", "'{{assistant\n'")


def jinja(template: str):
    """``render`` as transformers' ``apply_chat_template`` renders (same environment and filters)."""
    def render(messages, generation_prompt):
        texts, _ = render_jinja_template([messages], chat_template=template, add_generation_prompt=generation_prompt,
                                         bos_token="<|begin_of_text|>", eos_token="</s>")
        return texts[0]
    return render


def derived(template: str) -> tuple[str, dict]:
    return derive_go_template(jinja(template))


# --- derivation and verification ---------------------------------------------------------------

def test_chatml_is_derived_and_verified():
    go, parts = derived(CHATML)
    assert verify_go_template(go, jinja(CHATML)) == len(CONVERSATIONS) > 0
    assert parts["default_system"] is None and parts["head"] == "" and parts["trims_content"] == []
    assert parts["prefix"]["user"] == "<|im_start|>user\n" and parts["suffix"]["assistant"] == "<|im_end|>\n"
    assert parts["generation_prompt"] == "<|im_start|>assistant\n"
    assert json.loads(json.dumps(parts)) == parts
    assert "{{-" not in go and "-}}" not in go  # trim markers would eat the pieces' newlines


def test_smollm2_default_system_prompt_is_found_and_written_only_without_a_system_message():
    go, parts = derived(SMOLLM2)
    assert verify_go_template(go, jinja(SMOLLM2)) == len(CONVERSATIONS)
    assert parts["default_system"] == SMOL_SYSTEM
    without = render_go_template(go, [{"role": "user", "content": "Hi"}])
    assert without == (f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n"
                       "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    with_system = render_go_template(go, [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Hi"}])
    assert SMOL_SYSTEM not in with_system and with_system.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    # a conversation ending with the assistant's turn gets no generation prompt (Ollama continues it)
    ended = render_go_template(go, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    assert ended.endswith("<|im_start|>assistant\nHello<|im_end|>\n")


def test_qwen25_default_system_prompt_written_before_the_loop_is_found():
    go, parts = derived(QWEN25)
    assert verify_go_template(go, jinja(QWEN25)) == len(CONVERSATIONS)
    assert parts["default_system"] == QWEN_SYSTEM and parts["head"] == ""


def test_llama3_is_derived_with_its_bos_head_and_its_trimming_reported():
    go, parts = derived(LLAMA3)
    assert verify_go_template(go, jinja(LLAMA3)) == len(CONVERSATIONS)
    assert parts["head"] == "<|begin_of_text|>" and parts["default_system"] is None
    assert parts["prefix"]["system"] == "<|start_header_id|>system<|end_header_id|>\n\n"
    assert parts["suffix"] == {role: "<|eot_id|>" for role in ("system", "user", "assistant")}
    # The decision: Go cannot trim, so the template matches Llama 3's for contents without surrounding
    # whitespace, and derivation says which roles are trimmed. Padded contents do differ:
    assert parts["trims_content"] == ["system", "user", "assistant"]
    padded = [{"role": "user", "content": "  hi\n"}]
    assert render_go_template(go, padded) != jinja(LLAMA3)(padded, True)
    assert render_go_template(go, [{"role": "user", "content": "hi"}]) == jinja(LLAMA3)(padded, True)


@pytest.mark.parametrize("template, reason", [
    (LLAMA2, "does not append a generation prompt"),
    (GEMMA, "does not name the role 'assistant' exactly once"),
    (NO_SYSTEM, "fails on a conversation of system, user, assistant, user: TemplateError: no system role"),
    (FOLDED, "system message is preceded by"),
    (BRACES, "'{{'"),
    ("{{ messages[0]['content'] }}{% if add_generation_prompt %}<|assistant|>{% endif %}", "once and in order"),
], ids=["llama2", "gemma", "refuses-system", "system-folded-into-user", "braces", "first-message-only"])
def test_templates_outside_the_per_message_form_are_refused_with_a_reason(template, reason):
    with pytest.raises(TemplateUnsupported) as info:
        derived(template)
    message = str(info.value)
    assert reason in message and "\n" not in message, message


def test_verification_catches_what_the_markers_cannot_see_and_shows_where():
    go, _ = derived(NEWLINES_FLATTENED)  # markers have no newline: derivation cannot tell
    with pytest.raises(TemplateUnsupported, match=r"conversation 2 \(system, user\) renders differently at "
                                                  r"character \d+: chat template .*Go template") as info:
        verify_go_template(go, jinja(NEWLINES_FLATTENED))
    assert "\n" not in str(info.value)


def test_a_template_that_trims_some_contents_only_is_refused_by_verification():
    go, parts = derived(TRIMS_ASSISTANT)
    assert parts["trims_content"] == ["assistant"]
    with pytest.raises(TemplateUnsupported, match="conversation 8"):
        verify_go_template(go, jinja(TRIMS_ASSISTANT))


def test_verification_reports_a_template_that_fails_to_render():
    with pytest.raises(TemplateUnsupported, match="Go template does not render: undefined variable"):
        verify_go_template("{{ $nope }}", jinja(CHATML))


def test_a_default_system_block_of_another_form_is_refused():
    template = CHATML.replace("{% for message in messages %}", "{% if messages[0]['role'] != 'system' %}Default.\n"
                              "{% endif %}{% for message in messages %}")
    with pytest.raises(TemplateUnsupported, match="without a system message renders as"):
        derived(template)


# --- the Go template renderer ------------------------------------------------------------------

MESSAGES = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"}]

#: (template, messages, expected output): each compared with real Go's text/template below.
RENDERER_CASES = [
    ("plain text, no actions\n", [], "plain text, no actions\n"),
    ('a {{- " b " -}} c', [], "a b c"),
    ("x\n\n  {{- 1 }}\n  y", [], "x1\n  y"),
    ("{{ 1 -}}\n\n z", [], "1z"),
    ("a {{-3}} b", [], "a -3 b"),  # a dash without a space is a number, not a trim marker
    ("a {{/* note */}} b", [], "a  b"),
    ("a {{- /* note */ -}} \n b", [], "ab"),
    ('{{ range .Messages }}{{ if eq .Role "system" }}S{{ else if eq .Role "user" }}U{{ else }}A{{ end }}{{ end }}',
     MESSAGES, "SUA"),
    (('{{ range .Messages }}{{ if eq .Role "x" }}1{{ else if eq .Role "y" }}2{{ else if eq .Role "assistant" }}3'
      '{{ end }}{{ end }}'), MESSAGES, "3"),
    ("{{ range $i, $m := .Messages }}{{ $i }}={{ $m.Role }};{{ end }}", MESSAGES, "0=system;1=user;2=assistant;"),
    ("{{ range $m := .Messages }}[{{ $m.Content }}|{{ .Content }}]{{ end }}", MESSAGES, "[S|S][hi|hi][yo|yo]"),
    ("{{ range .Messages }}x{{ else }}empty{{ end }}", [], "empty"),
    ("{{ range .Messages }}{{ len $.Messages }}{{ end }}", MESSAGES, "333"),
    ('{{ $x := "outer" }}{{ range .Messages }}{{ $x = .Role }}{{ end }}{{ $x }}', MESSAGES, "assistant"),
    ('{{ $x := "a" }}{{ if true }}{{ $x := "b" }}{{ $x = "c" }}{{ $x }}{{ end }}{{ $x }}', [], "ca"),
    ("{{ range .Messages }}{{ $y := .Role }}{{ $y }}{{ end }}", MESSAGES, "systemuserassistant"),
    ('{{ $first := true }}{{ range .Messages }}{{ if $first }}<{{ .Role }}>{{ $first = false }}{{ end }}{{ end }}',
     MESSAGES, "<system>"),
    (('{{ eq "b" "a" "b" }}|{{ eq 1 2 }}|{{ ne "a" "b" }}|{{ not "" }}|{{ not 0 }}|{{ not .Messages }}'
      '|{{ eq true true }}'), MESSAGES, "true|false|true|true|true|false|true"),
    ('{{ and 1 "x" }}|{{ and 0 "x" }}|{{ or "" "y" }}|{{ or "" 0 }}|{{ or "a" "b" }}', [], "x|0|y|0|a"),
    ("{{ and false (len 3) }}|{{ or true (len 3) }}", [], "false|true"),  # Go 1.18+ stops early
    ('{{ len "héllo" }}|{{ len .Messages }}|{{ len "" }}', MESSAGES, "6|3|0"),  # bytes, as Go counts
    ('{{ "a\\nb\\t\\"q\\" \\\\ \\u00e9" }}|{{ `raw\\n "x"` }}', [], 'a\nb\t"q" \\ é|raw\\n "x"'),
    (('{{ if "" }}1{{ else }}0{{ end }}{{ if 0 }}1{{ else }}0{{ end }}{{ if .Messages }}1{{ else }}0{{ end }}'
      '{{ if false }}1{{ else }}0{{ end }}{{ if "x" }}1{{ end }}{{ if -1 }}1{{ end }}'), [], "000011"),
    ('{{ .Messages | len }}|{{ "abc" | len | eq 3 }}|{{ (eq (len "ab") 2) }}', MESSAGES, "3|true|true"),
    ("{{ if $n := len .Messages }}{{ $n }}{{ end }}", MESSAGES, "3"),
    ("{{ true }}{{ false }}{{ 0 }}{{ +7 }}", [], "truefalse07"),
    ("é ✓ {{ range .Messages }}{{ .Content }}{{ end }}", [{"role": "user", "content": "{{ .Role }} \"q\" 日本"}],
     'é ✓ {{ .Role }} "q" 日本'),
    ("{{ range .Messages }}{{ if and (eq .Role \"user\") (ne .Content \"\") }}U:{{ .Content }}{{ end }}{{ end }}",
     MESSAGES, "U:hi"),
    ('{{\n  if eq (len .Messages) 3\n}}three{{ end }}', MESSAGES, "three"),
]

#: Templates that Go itself rejects (when parsing or executing): the renderer must reject them too.
GO_ERRORS = [
    "{{ $undefined }}",
    '{{ eq 1 "a" }}',
    "{{ ne 1 }}",
    "{{ eq 1 }}",
    "{{ not 1 2 }}",
    "{{ len 3 }}",
    "{{ if true }}x",
    "{{ end }}",
    "{{ else }}",
    "{{ if true }}{{ else }}{{ else }}{{ end }}",
    "{{ range .Messages }}{{ .Nope }}{{ end }}",
    '{{ "unterminated }}',
    "{{ range $i, $m, $k := .Messages }}{{ end }}",
    '{{ .Messages "x" }}',
    "{{ }}",
    "{{ nil }}",
    "{{ unknownfn 1 }}",
    "{{ if true }}{{ $x := 1 }}{{ end }}{{ $x }}",
    "{{ range .Messages }}{{ $y := 1 }}{{ end }}{{ $y }}",
    "{{ $x = 1 }}",
    "{{ range .Messages }}{{ . }}{{ end }}",  # printing a struct: Go can, this renderer refuses; see below
    "{{ range 3 }}{{ end }}",
    "{{ /* not a comment */ }}",
    "{{ 1 | 2 }}",
    "{{ .Messages.Role }}",
]
#: Printing a struct is valid Go (it prints {user hi}) but outside the subset: not compared with Go.
NOT_GO_ERRORS = {"{{ range .Messages }}{{ . }}{{ end }}"}

#: Valid Go outside the subset: refused, naming the construct, never rendered some other way.
UNSUPPORTED = [
    ("{{ with .Messages }}x{{ end }}", "with"),
    ('{{ printf "%d" 1 }}', "printf"),
    ("{{ index .Messages 0 }}", "index"),
    ('{{ define "x" }}{{ end }}', "define"),
    ("{{ 1.5 }}", "1.5"),
    ("{{ 010 }}", "010"),
    ("{{ 'a' }}", "'"),
    ("{{ lt 1 2 }}", "lt"),
    ("{{ range .Messages }}{{ break }}{{ end }}", "break"),
    ("{{ range .Messages }}{{ else if true }}{{ end }}{{ end }}", "else"),
    ("{{ (len .Messages).Foo }}", "field"),
]


@pytest.mark.parametrize("template, messages, expected", RENDERER_CASES)
def test_renderer(template, messages, expected):
    assert render_go_template(template, messages) == expected


@pytest.mark.parametrize("template", GO_ERRORS)
def test_renderer_rejects_what_go_rejects(template):
    with pytest.raises(ValueError):
        render_go_template(template, MESSAGES)


@pytest.mark.parametrize("template, name", UNSUPPORTED)
def test_renderer_names_unsupported_constructs(template, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.").replace("(", r"\(")):
        render_go_template(template, MESSAGES)


# --- against real Go -----------------------------------------------------------------------------

GO_PROGRAM = r"""
package main

import (
	"bytes"
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Case struct {
	Template string     `json:"template"`
	Messages []*Message `json:"messages"`
}

type Result struct {
	Out string `json:"out"`
	Err string `json:"err"`
}

func main() {
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	var cases []Case
	if err := json.Unmarshal(data, &cases); err != nil {
		panic(err)
	}
	results := []Result{}
	for _, c := range cases {
		var out bytes.Buffer
		// as Ollama executes a template: a map with .Messages, missing keys give zero values
		t, err := template.New("").Option("missingkey=zero").Parse(c.Template)
		if err == nil {
			if c.Messages == nil {
				c.Messages = []*Message{}
			}
			err = t.Execute(&out, map[string]any{"Messages": c.Messages})
		}
		r := Result{Out: out.String()}
		if err != nil {
			r.Err = err.Error()
		}
		results = append(results, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	enc.Encode(results)
}
"""


def run_go(tmp_path, cases: list[dict]) -> list[dict]:
    (tmp_path / "main.go").write_text(GO_PROGRAM)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "GOCACHE": str(tmp_path / "gocache"), "GOPATH": str(tmp_path / "gopath"),
           "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local", "GO111MODULE": "on"}
    done = subprocess.run(["go", "run", "main.go", "cases.json"], check=False, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow  # needs Go (the slow tier runs it where `go` is installed)
@pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed: the renderer is not compared with Go")
def test_renderer_and_derived_templates_match_real_go(tmp_path):
    cases, expected = [], []
    for name, chat_template in (("chatml", CHATML), ("smollm2", SMOLLM2), ("qwen2.5", QWEN25), ("llama3", LLAMA3)):
        go, _ = derived(chat_template)
        extra = [[], [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]]
        for messages in [*CONVERSATIONS, *extra]:
            cases.append({"template": go, "messages": messages})
            expected.append((name, render_go_template(go, messages), None))
    for template, messages, output in RENDERER_CASES:
        cases.append({"template": template, "messages": messages})
        expected.append((template, output, None))
    for template in GO_ERRORS:
        if template not in NOT_GO_ERRORS:
            cases.append({"template": template, "messages": MESSAGES})
            expected.append((template, None, "error"))
    results = run_go(tmp_path, cases)
    assert len(results) == len(cases)
    for (label, output, error), result in zip(expected, results):
        if error:
            assert result["err"], f"Go accepted {label!r}, the renderer rejects it"
        else:
            assert not result["err"], f"Go rejected {label!r}: {result['err']}"
            assert result["out"] == output, label


# --- the Modelfile -----------------------------------------------------------------------------

def test_modelfile_with_a_template():
    go, _ = derived(SMOLLM2)
    text = modelfile("run-f16.gguf", go, ["<|im_end|>", "</s>"])
    assert "ollama create NAME -f Modelfile" in text and "ollama run NAME" in text
    assert "\nFROM ./run-f16.gguf\n" in text
    assert f'\nTEMPLATE """{go}"""\n' in text
    stops = [line for line in text.splitlines() if line.startswith("PARAMETER stop")]
    assert stops == ['PARAMETER stop "<|im_end|>"', 'PARAMETER stop "</s>"']
    assert all(line.startswith("#") for line in text.split("FROM")[0].splitlines() if line)


def test_modelfile_without_a_template_says_why():
    text = modelfile("m.gguf", None, ["<|eot_id|>"], note="the chat template could not be expressed as one: X\nY")
    assert "TEMPLATE" not in text.replace("No TEMPLATE", "")
    comment = next(line for line in text.splitlines() if line.startswith("# No TEMPLATE"))
    assert "could not be expressed as one: X Y" in comment and "raw prompt" in comment
    assert text.count('PARAMETER stop "<|eot_id|>"') == 1


@pytest.mark.parametrize("template, stops", [
    ('{{ "a" }}"""', []),
    ("{{ .Content }}\u200b", []),  # a character Ollama's Modelfile parser would silently drop
    ("ok", ['say "x"']),
    ("ok", ["line\nbreak"]),
    ("ok", [""]),
])
def test_modelfile_refuses_what_it_cannot_write_faithfully(template, stops):
    with pytest.raises(ValueError):
        modelfile("m.gguf", template, stops)
