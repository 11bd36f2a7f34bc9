"""Go's ``text/template``, the part Ollama's chat templates use: ``render_go_template``.

Enough of Go's text/template to execute what ``ollama._go_template`` writes, and a little more so that a
hand-edited template of the same kind still renders: text, {{- -}} trim markers, comments,
if / else if / else / range / end, variables declared and assigned with Go's scoping, pipelines
with | and parentheses, and the functions eq ne not and or len. Anything else is a ValueError naming
it, never a guess. The tests compare it with Go's own text/template, as Ollama executes it.
"""

from __future__ import annotations

import re

_SPACE = " \t\r\n"
_FUNCS = {"eq", "ne", "not", "and", "or", "len"}
_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue", "nil"}
_GO_FUNCS = {"print", "printf", "println", "index", "slice", "call", "html", "js", "urlquery",
             "lt", "le", "gt", "ge", "json"}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


class _Tok:
    __slots__ = ("fields", "kind", "value")

    def __init__(self, kind: str, value=None, fields: tuple = ()):
        self.kind, self.value, self.fields = kind, value, fields

    def __repr__(self) -> str:  # shown in errors, spelt as in the template
        if self.kind in ("dot", "var"):
            base = "" if self.kind == "dot" and self.fields else self.value
            return base + "".join("." + f for f in self.fields)
        if self.kind == "str":
            return repr(self.value)
        if self.kind == "bool":
            return "true" if self.value else "false"
        return "(...)" if self.kind == "pipe" else str(self.value)


def _go_string(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1:i + 2]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e in ("u", "U"):
            width = 4 if e == "u" else 8
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"bad \\{e} escape in Go string {body!r}")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:
            raise ValueError(f"unsupported escape \\{e} in Go string {body!r}")
    return "".join(out)


def _lex_action(src: str, i: int) -> tuple[list[_Tok], int, bool]:
    """Tokens of one action from ``src[i]`` on; returns them, the position after ``}}`` and whether it
    ended with ``-}}``."""
    toks: list[_Tok] = []
    while True:
        if src.startswith("}}", i):
            return toks, i + 2, False
        if i >= len(src):
            raise ValueError("unclosed action")
        c = src[i]
        if c in _SPACE:
            j = i
            while j < len(src) and src[j] in _SPACE:
                j += 1
            if src.startswith("-}}", j):  # " -}}": the space and the dash belong to the delimiter
                return toks, j + 3, True
            i = j
            continue
        if c == '"':
            j = i + 1
            while j < len(src) and src[j] != '"':
                if src[j] == "\n":
                    break
                j += 2 if src[j] == "\\" else 1
            if j >= len(src) or src[j] != '"':
                raise ValueError("unterminated quoted string")
            toks.append(_Tok("str", _go_string(src[i + 1:j])))
            i = j + 1
        elif c == "`":
            j = src.find("`", i + 1)
            if j < 0:
                raise ValueError("unterminated raw quoted string")
            toks.append(_Tok("str", src[i + 1:j].replace("\r", "")))
            i = j + 1
        elif c == ":" and src.startswith(":=", i):
            toks.append(_Tok(":=", ":="))
            i += 2
        elif c in "=|(),":
            toks.append(_Tok(c, c))
            i += 1
        elif c == "$" or c == ".":
            if c == "$":
                m = _IDENT.match(src, i + 1)
                name = "$" + (m.group() if m else "")
                i += len(name)
            else:
                name = "."
            fields = []
            while src.startswith(".", i) and _IDENT.match(src, i + 1):
                field = _IDENT.match(src, i + 1).group()
                fields.append(field)
                i += 1 + len(field)
            if name == "." and not fields:
                i += 1
            if src.startswith(".", i) and i < len(src):
                raise ValueError(f"unsupported field syntax near {src[i:i + 10]!r}")
            toks.append(_Tok("var" if name != "." else "dot", name, tuple(fields)))
        elif c in "+-" or c.isdigit():
            m = re.compile(r"[+-]?[0-9A-Za-z_.]+").match(src, i)
            text = m.group() if m else c
            if not re.fullmatch(r"[+-]?(0|[1-9][0-9]*)", text):
                raise ValueError(f"unsupported number {text!r} (decimal integers only)")
            toks.append(_Tok("int", int(text)))
            i += len(text)
        elif _IDENT.match(src, i):
            word = _IDENT.match(src, i).group()
            i += len(word)
            if word in ("true", "false"):
                toks.append(_Tok("bool", word == "true"))
            else:
                toks.append(_Tok("ident", word))
        else:
            raise ValueError(f"unsupported character {c!r} in an action")
        if toks[-1].kind in (")", "str", "int", "bool") and src.startswith(".", i) and _IDENT.match(src, i + 1):
            raise ValueError(f"unsupported: a field of {toks[-1]!r}")


def _lex(src: str) -> list:
    """Text strings and token lists, with the trim markers already applied to the text around them."""
    items: list = []
    pos, trim_next = 0, False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        if trim_next:
            text = text.lstrip(_SPACE)
        if start < 0:
            if text:
                items.append(text)
            return items
        inner = start + 2
        if src.startswith("-", inner) and src[inner + 1:inner + 2] in tuple(_SPACE):
            text = text.rstrip(_SPACE)
            inner += 2
        if text:
            items.append(text)
        if src.startswith("/*", inner):
            end = src.find("*/", inner + 2)
            if end < 0:
                raise ValueError("unclosed comment")
            if src.startswith("}}", end + 2):
                pos, trim_next = end + 4, False
            elif src[end + 2:end + 3] in tuple(_SPACE) and src.startswith("-}}", end + 3):
                pos, trim_next = end + 6, True
            else:
                raise ValueError("comment ends before closing delimiter")
            continue
        toks, pos, trim_next = _lex_action(src, inner)
        items.append(toks)


class _Parser:
    """Go's parse tree, as tuples: ("text", s), ("action", pipe), ("if"|"range", pipe, body, else_body).
    A pipe is (declared names, is_assignment, commands); a command is a list of operand tokens."""

    def __init__(self, items: list):
        self.items, self.i, self.vars = items, 0, ["$"]

    def parse(self) -> list:
        nodes, stop = self._list()
        if stop is not None:
            raise ValueError(f"unexpected {{{{ {stop[0].value} }}}}")
        return nodes

    def _list(self):
        nodes = []
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if isinstance(item, str):
                nodes.append(("text", item))
                continue
            word = item[0].value if item and item[0].kind == "ident" else None
            if word in ("else", "end"):
                return nodes, item
            if word in ("if", "range"):
                nodes.append(self._control(word, item[1:]))
            elif word in _KEYWORDS:
                raise ValueError(f"unsupported in a Go template here: {{{{ {word} }}}}")
            else:
                nodes.append(("action", self._pipe(item, "command")))
        return nodes, None

    def _control(self, word: str, toks: list):
        mark = len(self.vars)
        pipe = self._pipe(toks, word)
        body, stop = self._list()
        else_body = None
        if stop is None:
            raise ValueError(f"unexpected end of template: {{{{ {word} }}}} has no {{{{ end }}}}")
        if stop[0].value == "else":
            rest = stop[1:]
            if rest and rest[0].kind == "ident" and rest[0].value == "if" and word == "if":
                else_body = [self._control("if", rest[1:])]  # {{ else if }}: the inner if takes the one {{ end }}
            elif rest:
                raise ValueError(f"unsupported: {{{{ else {' '.join(map(repr, rest))} }}}} after {{{{ {word} }}}}")
            else:
                else_body, stop = self._list()
                if stop is None or stop[0].value != "end":
                    raise ValueError(f"expected {{{{ end }}}} after the {{{{ else }}}} of {{{{ {word} }}}}")
        if stop[0].value == "end" and len(stop) > 1:
            raise ValueError(f"unexpected {stop[1]!r} in {{{{ end }}}}")
        del self.vars[mark:]
        return (word, pipe, body, else_body)

    def _pipe(self, toks: list, context: str):
        decl, assign = [], False
        if len(toks) >= 2 and toks[0].kind == "var" and not toks[0].fields and toks[1].kind in (":=", "="):
            decl, assign, toks = [toks[0].value], toks[1].kind == "=", toks[2:]
        elif (len(toks) >= 4 and toks[0].kind == "var" and toks[1].kind == "," and toks[2].kind == "var"
              and toks[3].kind == ":=" and not toks[0].fields and not toks[2].fields):
            if context != "range":
                raise ValueError(f"too many declarations in {context}")
            decl, toks = [toks[0].value, toks[2].value], toks[4:]
        if any(t.kind in (":=", "=") for t in toks):
            raise ValueError(f"unsupported declaration in {context}: {' '.join(map(repr, toks))}")
        for name in decl:
            if name == "$":
                raise ValueError("cannot declare or assign $")
        if assign and context == "range":
            raise ValueError("unsupported: assigning range elements to an existing variable")
        self.vars += decl
        return (decl, assign, self._commands(toks, context))

    def _commands(self, toks: list, context: str) -> list:
        cmds, cmd, i = [], [], 0
        while i < len(toks):
            t = toks[i]
            if t.kind == "|":
                if not cmd:
                    raise ValueError("missing command before |")
                cmds.append(cmd)
                cmd = []
            elif t.kind == "(":
                depth, j = 1, i + 1
                while j < len(toks) and depth:
                    depth += {"(": 1, ")": -1}.get(toks[j].kind, 0)
                    j += 1
                if depth:
                    raise ValueError("unclosed left paren")
                cmd.append(_Tok("pipe", self._pipe(toks[i + 1:j - 1], "parenthesized pipeline")))
                i = j
                continue
            elif t.kind in (")", ",", ":=", "="):
                raise ValueError(f"unexpected {t.kind!r} in {context}")
            else:
                self._check_operand(t)
                cmd.append(t)
            i += 1
        if not cmd:
            raise ValueError(f"missing value for {context}")
        cmds.append(cmd)
        for c in cmds:
            if c[0].kind != "ident" and len(c) > 1:
                raise ValueError(f"can't give argument to non-function {c[0]!r}")
        return cmds

    def _check_operand(self, t: _Tok) -> None:
        if t.kind == "ident":
            if t.value == "nil" or t.value in _KEYWORDS:
                raise ValueError(f"unsupported in a pipeline: {t.value}")
            if t.value in _GO_FUNCS:
                raise ValueError(f"unsupported function {t.value}")
            if t.value not in _FUNCS:
                raise ValueError(f'function "{t.value}" not defined')
        elif t.kind == "var" and t.value not in self.vars:
            raise ValueError(f"undefined variable: {t.value}")


def _truth(v) -> bool:
    if v is None:
        return False
    if isinstance(v, (bool, int, str, list)):
        return bool(v)
    return True  # a struct


def _kind(v) -> str:
    for kind, types in (("bool", bool), ("int", int), ("string", str)):
        if isinstance(v, types):
            return kind
    return type(v).__name__


class _Exec:
    def __init__(self, root):
        self.vars: list[list] = [["$", root]]

    def lookup(self, name: str):
        for var in reversed(self.vars):
            if var[0] == name:
                return var[1]
        raise ValueError(f"undefined variable: {name}")

    def assign(self, name: str, value) -> None:
        for var in reversed(self.vars):
            if var[0] == name:
                var[1] = value
                return
        raise ValueError(f"undefined variable: {name}")

    def walk(self, nodes: list, dot, out: list) -> None:
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "action":
                value = self.pipe(node[1], dot)
                if not node[1][0]:
                    out.append(_print(value))
            elif kind == "if":
                mark = len(self.vars)
                if _truth(self.pipe(node[1], dot)):
                    self.walk(node[2], dot, out)
                elif node[3] is not None:
                    self.walk(node[3], dot, out)
                del self.vars[mark:]
            else:
                self.range(node, dot, out)

    def range(self, node, dot, out: list) -> None:
        mark = len(self.vars)
        decl = node[1][0]
        items = self.pipe(node[1], dot)
        if items is None:
            items = []
        if not isinstance(items, list):
            raise ValueError(f"range can't iterate over {_kind(items)} {items!r}")
        for index, elem in enumerate(items):
            if decl:
                self.vars[-1][1] = elem
            if len(decl) > 1:
                self.vars[-2][1] = index
            inner = len(self.vars)
            self.walk(node[2], elem, out)
            del self.vars[inner:]
        if not items and node[3] is not None:
            self.walk(node[3], dot, out)
        del self.vars[mark:]

    def pipe(self, pipe, dot):
        decl, assign, cmds = pipe
        value, piped = None, False
        for cmd in cmds:
            value = self.command(cmd, dot, [value] if piped else [])
            piped = True
        for name in decl:
            if assign:
                self.assign(name, value)
            else:
                self.vars.append([name, value])
        return value

    def command(self, cmd: list, dot, final: list):
        head = cmd[0]
        if head.kind != "ident":
            if final:
                raise ValueError(f"can't give argument to non-function {head!r}")
            return self.operand(head, dot)
        args = [lambda t=t: self.operand(t, dot) for t in cmd[1:]] + [lambda v=v: v for v in final]
        return _call(head.value, args)

    def operand(self, t: _Tok, dot):
        if t.kind == "ident":
            raise ValueError(f"function {t.value} used as a value: write ({t.value} ...)")
        if t.kind in ("str", "int", "bool"):
            return t.value
        if t.kind == "pipe":
            return self.pipe(t.value, dot)
        value = dot if t.kind == "dot" else self.lookup(t.value)
        for field in t.fields:
            value = _field(value, field)
        return value


def _field(value, name: str):
    if isinstance(value, dict) and name in value:
        return value[name]
    raise ValueError(f"can't evaluate field {name} in type {_kind(value) if not isinstance(value, dict) else 'struct'}")


def _call(name: str, args: list):
    """Go's builtins, arguments as thunks so that ``and``/``or`` stop early as Go 1.18+ does."""
    if name in ("and", "or"):
        if not args:
            raise ValueError(f"wrong number of args for {name}: want at least 1 got 0")
        for arg in args:
            value = arg()
            if _truth(value) == (name == "or"):
                return value
        return value
    values = [arg() for arg in args]
    if name == "not":
        if len(values) != 1:
            raise ValueError(f"wrong number of args for not: want 1 got {len(values)}")
        return not _truth(values[0])
    if name == "len":
        if len(values) != 1:
            raise ValueError(f"wrong number of args for len: want 1 got {len(values)}")
        if isinstance(values[0], str):
            return len(values[0].encode("utf-8"))  # Go's len counts bytes
        if isinstance(values[0], list):
            return len(values[0])
        raise ValueError(f"len of type {_kind(values[0])}")
    if name == "ne" and len(values) != 2:
        raise ValueError(f"wrong number of args for ne: want 2 got {len(values)}")
    if len(values) < 2:
        raise ValueError("missing argument for comparison")
    first = values[0]
    if _kind(first) not in ("bool", "int", "string"):
        raise ValueError(f"uncomparable type {_kind(first)}")
    for other in values[1:]:
        if _kind(other) != _kind(first):
            raise ValueError(f"incompatible types for comparison: {_kind(first)} and {_kind(other)}")
    equal = any(other == first for other in values[1:])
    return equal if name == "eq" else not equal


def _print(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value)
    if value is None:
        return "<no value>"
    raise ValueError(f"printing a {_kind(value) if not isinstance(value, dict) else 'struct'} is not supported")


def render_go_template(template: str, messages: list[dict]) -> str:
    """Execute an Ollama-style Go template with ``.Messages`` = ``messages`` (``.Role``, ``.Content``).

    Implements the subset of Go's ``text/template`` described above with Go's semantics (trim
    markers, variable scoping, truthiness, ``len`` in bytes, ``and``/``or`` returning an operand);
    anything else raises ``ValueError`` naming the construct.
    """
    root = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
    tree = _Parser(_lex(template)).parse()
    out: list[str] = []
    _Exec(root).walk(tree, root, out)
    return "".join(out)
