"""The Ollama ``Modelfile`` written beside an exported ``.gguf``: a Go template equal to the chat template.

Ollama formats a conversation with a Go ``text/template``; the model was trained on conversations
formatted by its Hugging Face chat template, which is Jinja. A Modelfile whose template differs by one
newline from the Jinja one makes Ollama prompt the model with text it never saw in training, and
nothing fails loudly: answers just get worse. So the Go template is derived and then checked, never
guessed from the model family.

Derivation works from renderings, never by parsing Jinja (chat templates are programs, and two very
different programs can print the same thing). It assumes the per-message form most chat templates
have::

    HEAD + [DEFAULT system block when the first message is not a system one]
         + for each message: PREFIX(role) + content + SUFFIX(role)
         + GEN (the generation prompt) when the last message is not the assistant's

with PREFIX(role) = A + role + B where GEN = A + "assistant" + B. Conversations whose contents are
marker strings (``SFTMARKUSR1``...) are rendered, and every piece is read off the gaps between the
markers; each step checks what it assumed and raises ``TemplateUnsupported`` with the reason when a
template is not of this form (Llama 2 folds the system prompt into the first user turn, Gemma names
the assistant ``model``...). The pieces become a Go template of literal text and a few actions.

Verification renders a fixed set of conversations (with and without a system message, one to three
user turns, contents with newlines, tabs, unicode, quotes and template-like braces) through both
templates and requires the same text, character for character. The Go side is rendered by
``render_go_template``, a small implementation of the part of Go's ``text/template`` these templates
use (the tests compare it with real Go where ``go`` is installed), so the check needs neither Go nor
Ollama.

One difference is accepted and reported: Go templates cannot trim text (neither Go's nor Ollama's
template functions do), so a chat template that trims every message's content (Llama 3's
``message['content'] | trim``) is matched for contents without leading or trailing whitespace only;
``parts['trims_content']`` names the roles concerned. A template that trims some contents and not
others fails verification like any other difference.
"""

from __future__ import annotations

from .gotemplate import render_go_template

ROLES = ("system", "user", "assistant")
#: Contents of the derivation's conversations: words no chat template writes by itself.
MARKS = {"system": "SFTMARKSYS0", "user1": "SFTMARKUSR1", "assistant": "SFTMARKAST1", "user2": "SFTMARKUSR2"}
#: Padding around the markers to see whether the template trims contents.
PAD = (" \n\t", "\t\n ")


class TemplateUnsupported(Exception):
    """The chat template does not fit the per-message model; ``str()`` says why in one line."""


# --- derivation --------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _roles(messages: list[dict]) -> str:
    return ", ".join(m["role"] for m in messages) or "no messages"


def _render(render, messages: list[dict], generation_prompt: bool) -> str:
    """``render`` with its failures turned into a reason: a template may refuse a system message
    (Gemma) or insist on alternating turns, and that is an answer, not a crash."""
    try:
        text = render(messages, generation_prompt)
    except Exception as exc:  # any template error means "not of this form"
        raise TemplateUnsupported(f"the chat template fails on a conversation of {_roles(messages)}: "
                                  f"{type(exc).__name__}: {_one_line(exc)}") from exc
    if not isinstance(text, str):
        raise TemplateUnsupported(f"rendering returned {type(text).__name__}, not text")
    return text


def _excerpt(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _cut_suffix(gap: str, prefix: str, where: str) -> str:
    """The suffix of one message out of the gap ``SUFFIX + PREFIX(next)`` between two contents."""
    if not gap.endswith(prefix):
        raise TemplateUnsupported(f"the text {where} is {gap!r}, which does not end with the next "
                                  f"message's prefix {prefix!r} (built from the generation prompt)")
    return gap[:len(gap) - len(prefix)]


def _msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def derive_go_template(render) -> tuple[str, dict]:
    """``render(messages, add_generation_prompt) -> str`` renders the Jinja chat template (callers pass
    ``lambda m, g: tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=g)``).

    Returns ``(go_template, parts)``; ``parts`` is JSON-able: ``head``, ``prefix`` and ``suffix`` per
    role, ``generation_prompt``, ``default_system`` (the system prompt the template inserts when a
    conversation has none, or None) and ``trims_content`` (the roles whose content the template
    trims). Raises ``TemplateUnsupported`` when the template is not of the per-message form. The
    result is not verified here: call ``verify_go_template``.
    """
    sys_m, usr1, ast1, usr2 = MARKS["system"], MARKS["user1"], MARKS["assistant"], MARKS["user2"]
    one = [_msg("user", usr1)]
    bare, prompted = _render(render, one, False), _render(render, one, True)
    if not prompted.startswith(bare) or prompted == bare:
        raise TemplateUnsupported("add_generation_prompt does not append a generation prompt "
                                  f"(a user turn renders as {_excerpt(bare)} without it and {_excerpt(prompted)} "
                                  "with it)")
    gen = prompted[len(bare):]
    if gen.count("assistant") != 1:
        raise TemplateUnsupported(f"the generation prompt {gen!r} does not name the role 'assistant' exactly once, "
                                  "so the form of a message's prefix cannot be read from it")
    before, after = gen.split("assistant")
    prefix = {role: before + role + after for role in ROLES}

    conversation = [_msg("system", sys_m), _msg("user", usr1), _msg("assistant", ast1), _msg("user", usr2)]
    full = _render(render, conversation, False)
    marks = [sys_m, usr1, ast1, usr2]
    if any(full.count(m) != 1 for m in marks) or [full.find(m) for m in marks] != sorted(full.find(m) for m in marks):
        raise TemplateUnsupported("a conversation of system, user, assistant, user does not render each content "
                                  f"once and in order: {_excerpt(full, 200)}")
    at = [full.find(m) for m in marks]
    lead = full[:at[0]]
    if not lead.endswith(prefix["system"]):
        raise TemplateUnsupported(f"the system message is preceded by {lead!r}, which does not end with "
                                  f"{prefix['system']!r} (the generation prompt's form with role 'system')")
    head = lead[:len(lead) - len(prefix["system"])]
    gaps = [full[at[i] + len(marks[i]):at[i + 1]] for i in range(3)]
    suffix = {"system": _cut_suffix(gaps[0], prefix["user"], "between a system and a user message"),
              "user": _cut_suffix(gaps[1], prefix["assistant"], "between a user and an assistant message"),
              "assistant": _cut_suffix(gaps[2], prefix["user"], "between an assistant and a user message")}
    tail = full[at[3] + len(usr2):]
    if tail != suffix["user"]:
        raise TemplateUnsupported(f"the last user message ends with {tail!r} but the first with {suffix['user']!r}")

    # A conversation without a system message: as is, or with a default system block first (SmolLM2, Qwen2.5).
    plain = head + prefix["user"] + usr1 + suffix["user"]
    default = None
    if bare != plain:
        start, end = head + prefix["system"], suffix["system"] + plain[len(head):]
        if not (bare.startswith(start) and bare.endswith(end) and len(bare) >= len(start) + len(end)):
            raise TemplateUnsupported(f"a conversation without a system message renders as {_excerpt(bare, 200)}, "
                                      f"neither {plain!r} nor that with a default system message first")
        default = bare[len(start):len(bare) - len(end)]

    pieces = {"head": head, "generation prompt": gen, "default system prompt": default or "",
              **{f"{role} prefix": prefix[role] for role in ROLES},
              **{f"{role} suffix": suffix[role] for role in ROLES}}
    for name, piece in pieces.items():
        # Go reads "{{" as the start of an action, also when a piece ending in "{" meets the next "{{ ... }}".
        if "{{" in piece or piece.endswith("{"):
            raise TemplateUnsupported(f"the {name} {piece!r} contains '{{{{', which a Go template cannot hold "
                                      "as plain text")

    parts = {"head": head, "prefix": prefix, "suffix": suffix, "generation_prompt": gen, "default_system": default,
             "trims_content": _trimmed_roles(render)}
    return _go_template(parts), parts


def _trimmed_roles(render) -> list[str]:
    """The roles whose content loses the whitespace around it: the one difference Go cannot follow."""
    contents = {"system": MARKS["system"], "user": MARKS["user1"], "assistant": MARKS["assistant"]}
    padded = [_msg(role, PAD[0] + contents[role] + PAD[1]) for role in ("system", "user", "assistant")]
    text = _render(render, [*padded, _msg("user", MARKS["user2"])], False)
    return [role for role in ROLES if PAD[0] + contents[role] + PAD[1] not in text]


def _go_template(parts: dict) -> str:
    """The Go template of the derived pieces. No trim markers (``{{-``): they would eat the newlines
    the pieces start or end with. ``$last`` remembers the last role, as the Jinja template adds its
    generation prompt after a user turn; Ollama sends conversations that end with one."""
    prefix, suffix = parts["prefix"], parts["suffix"]
    out = ['{{ $last := "" }}', parts["head"]]
    if parts["default_system"] is None:
        out.append("{{ range .Messages }}")
    else:
        out += ['{{ range $i, $m := .Messages }}{{ if eq $i 0 }}{{ if ne .Role "system" }}',
                prefix["system"], parts["default_system"], suffix["system"], "{{ end }}{{ end }}"]
    for k, role in enumerate(ROLES):
        out += ["{{ if" if k == 0 else "{{ else if", f' eq .Role "{role}" }}}}',
                prefix[role], "{{ .Content }}", suffix[role]]
    out += ['{{ end }}{{ $last = .Role }}{{ end }}{{ if ne $last "assistant" }}',
            parts["generation_prompt"], "{{ end }}"]
    return "".join(out)


# --- verification --------------------------------------------------------------------------------

_SYSTEM = 'You are terse.\nAnswer in one line, "quoted" when asked.'
_USERS = ("Hello there.",
          "Two lines:\nsecond one\n\nand a third after a blank line.",
          "Spaces  and\ttabs; café, 日本語, 🙂; \"double\", 'single', `back`; {{ .Content }} {% raw %} \\n")
_ASSISTANTS = ("Hi! How can I help?", "Sure:\n- one\n- two")
_PADDED = (" \n leading and trailing \n", "\ttab first", "newline last\n")

#: The conversations ``verify_go_template`` renders; all end with a user turn, as Ollama sends them.
CONVERSATIONS = (
    [_msg("user", _USERS[0])],
    [_msg("system", _SYSTEM), _msg("user", _USERS[0])],
    [_msg("user", _USERS[1]), _msg("assistant", _ASSISTANTS[0]), _msg("user", _USERS[2])],
    [_msg("system", _SYSTEM), _msg("user", _USERS[2]), _msg("assistant", _ASSISTANTS[1]), _msg("user", _USERS[1])],
    [_msg("user", _USERS[0]), _msg("assistant", _ASSISTANTS[0]), _msg("user", _USERS[1]),
     _msg("assistant", _ASSISTANTS[1]), _msg("user", _USERS[2])],
    [_msg("system", _SYSTEM), _msg("user", _USERS[1]), _msg("assistant", _ASSISTANTS[1]), _msg("user", _USERS[0]),
     _msg("assistant", _ASSISTANTS[0]), _msg("user", _USERS[2])],
    # contents with whitespace around them: see the module docstring for templates that trim
    [_msg("system", _PADDED[0]), _msg("user", _PADDED[1])],
    [_msg("user", _PADDED[2]), _msg("assistant", _PADDED[0]), _msg("user", _PADDED[1])],
)


def verify_go_template(template: str, render) -> int:
    """Render ``CONVERSATIONS`` through the Go template and the Jinja one (``render(messages, True)``).

    Returns how many were compared; raises ``TemplateUnsupported`` naming the first conversation
    whose renderings differ and showing both around the first differing character. A conversation
    with padded contents whose Jinja rendering is that of its stripped contents (the template trims
    every content) is compared as the Go template renders the stripped contents: Go cannot trim.
    """
    for number, messages in enumerate(CONVERSATIONS, 1):
        expected = _render(render, messages, True)
        sent = messages
        stripped = [{**m, "content": m["content"].strip()} for m in messages]
        if stripped != messages and _render(render, stripped, True) == expected:
            sent = stripped
        try:
            got = render_go_template(template, sent)
        except ValueError as exc:
            raise TemplateUnsupported(f"the Go template does not render: {_one_line(exc)}") from exc
        if got != expected:
            i = next((k for k, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
            lo = max(0, i - 25)
            raise TemplateUnsupported(
                f"conversation {number} ({_roles(messages)}) renders differently at character {i}: "
                f"chat template ...{expected[lo:i + 25]!r}..., Go template ...{got[lo:i + 25]!r}...")
    return len(CONVERSATIONS)


# --- the Modelfile -----------------------------------------------------------------------------

def _modelfile_safe(text: str, allowed: str) -> bool:
    """Ollama's Modelfile parser silently drops characters Go does not count as printable."""
    return all(c.isprintable() or c in allowed for c in text)


def modelfile(gguf_name: str, template: str | None, stops: list[str], note: str | None = None) -> str:
    """The Modelfile: how to use it, ``FROM ./<gguf_name>``, the template, one ``PARAMETER stop`` per stop.

    Without a template, a comment says why (``note``) and that Ollama then sends the raw prompt; a
    ``note`` given with a template is written as a comment too. Ollama's Modelfile parser reads a
    quoted value verbatim (no escapes) up to the closing quotes, so a template holding three double
    quotes in a row, a stop string holding a double quote, or characters that parser drops are
    refused (``ValueError``) rather than written wrong.
    """
    if not gguf_name or not _modelfile_safe(gguf_name, ""):
        raise ValueError(f"cannot name the GGUF file {gguf_name!r} in a Modelfile")
    lines = ["# Ollama Modelfile written by `sft export --format gguf`. In this folder:",
             "#   ollama create NAME -f Modelfile",
             "#   ollama run NAME"]
    if template is None:
        why = _one_line(note) if note else "no template was derived"
        lines.append(f"# No TEMPLATE: {why}. Ollama then sends the raw prompt to the model.")
    elif note:
        lines.append(f"# Note: {_one_line(note)}")
    lines += ["", f"FROM ./{gguf_name}", ""]
    if template is not None:
        if '"""' in template:
            raise ValueError('the template contains three double quotes in a row, which end a Modelfile '
                             'TEMPLATE """...""" block')
        if not _modelfile_safe(template, "\n\r\t"):
            raise ValueError("the template contains characters that Ollama's Modelfile parser drops")
        lines += [f'TEMPLATE """{template}"""', ""]
    for stop in stops:
        if not stop or '"' in stop or not _modelfile_safe(stop, ""):
            raise ValueError(f"the stop string {stop!r} cannot be written as a Modelfile parameter")
        lines.append(f'PARAMETER stop "{stop}"')
    return "\n".join(lines).rstrip("\n") + "\n"


# --- a Go text/template subset -------------------------------------------------------------------
