"""Instruction data in the common shapes, read into one form: a conversation (no torch here).

Every shape becomes ``messages``, a list of ``{"role": system|user|assistant, "content": str}``:

- ``{"messages": [{"role", "content"}, ...]}`` (OpenAI / TRL conversational)
- ``{"prompt": ..., "completion": ...}`` (strings, or lists of messages as TRL's conversational
  prompt-completion)
- Alpaca: ``{"instruction", "input", "output"}`` (the input, when not empty, follows the
  instruction after a blank line)
- ShareGPT: ``{"conversations": [{"from": human|gpt|system, "value"}, ...]}``

For prediction the same shapes come without the answer (a conversation ending with a user turn,
a prompt alone, an instruction without output). A record may carry ``references`` (a list of
strings): more correct answers for the generation metrics.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from sft_core.errors import DataError
from sft_core.kit import json_objects

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                  "system": "system"}
#: Keys that identify each shape, in detection order.
SHAPES = {"messages": ("messages",), "sharegpt": ("conversations",), "prompt_completion": ("prompt",),
          "alpaca": ("instruction",)}


def detect(row: dict) -> str | None:
    for shape, keys in SHAPES.items():
        if all(k in row for k in keys):
            return shape
    return None


def _text(value, where: str, name: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: {name} must be a string, got {type(value).__name__}")
    return value


def _messages(value, where: str, name: str = "messages", roles: dict | None = None) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: {name} must be a non-empty list of messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise DataError(f"{where}: {name}[{i}] must be an object, got {type(message).__name__}")
        if roles is None:
            role, content = message.get("role"), message.get("content")
            if role not in ROLES:
                raise DataError(f"{where}: {name}[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        else:
            speaker, content = message.get("from"), message.get("value")
            role = roles.get(speaker)
            if role is None:
                raise DataError(f"{where}: {name}[{i}].from must be one of {', '.join(roles)}, got {speaker!r}")
        out.append({"role": role, "content": _text(content, where, f"{name}[{i}].content")})
    return out


def to_messages(row: dict, shape: str, where: str, need_answer: bool) -> list[dict]:
    """One record as a conversation; ``need_answer``: it must end with an assistant turn."""
    if shape == "messages":
        messages = _messages(row["messages"], where)
    elif shape == "sharegpt":
        messages = _messages(row["conversations"], where, "conversations", SHAREGPT_ROLES)
    elif shape == "prompt_completion":
        prompt = row["prompt"]
        messages = (_messages(prompt, where, "prompt") if isinstance(prompt, list)
                    else [{"role": "user", "content": _text(prompt, where, "prompt")}])
        completion = row.get("completion")
        if completion is not None:
            messages += (_messages(completion, where, "completion") if isinstance(completion, list)
                         else [{"role": "assistant", "content": _text(completion, where, "completion")}])
    elif shape == "alpaca":
        instruction = _text(row["instruction"], where, "instruction")
        extra = row.get("input") or ""
        user = f"{instruction}\n\n{_text(extra, where, 'input')}" if extra.strip() else instruction
        messages = [{"role": "user", "content": user}]
        if row.get("output") is not None:
            messages.append({"role": "assistant", "content": _text(row["output"], where, "output")})
    else:
        raise DataError(f"{where}: unknown data format {shape!r}")
    if need_answer and not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant answer to learn from or score against "
                        f"({ {'messages': 'a message with role assistant', 'sharegpt': 'a turn from gpt', 'prompt_completion': 'completion', 'alpaca': 'output'}[shape] } is missing)")
    if need_answer and messages[-1]["role"] == "user":
        # training learns the assistant turns and evaluation scores the last one against the answer
        # it generates after the turns before it: a user turn after the last answer is neither
        raise DataError(f"{where}: the conversation ends with a user turn that no assistant answer follows; "
                        "end it with the answer (or drop the last message); conversations that end with a "
                        "question are for sft predict")
    if not need_answer and messages[-1]["role"] == "assistant":
        messages = messages[:-1]  # predict: answer the conversation up to its last answer
        if not messages:
            raise DataError(f"{where}: nothing to answer (the conversation holds only an assistant turn)")
    return messages


def _lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the first record
        yield from f


def read_conversations(path: str | Path, shape: str, need_answer: bool) -> list[dict]:
    """Examples ``{"messages", "references", "file", "line"}`` from a JSON-lines file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    examples = []
    found = None
    for n, row in json_objects(path, _lines(path)):
        where = f"{path} line {n}"
        kind = shape if shape != "auto" else detect(row)
        if kind is None:
            raise DataError(f"{where}: not an instruction record; expected messages, prompt/completion, "
                            f"instruction/output (Alpaca) or conversations (ShareGPT), got keys {sorted(row)}")
        if shape == "auto" and found is not None and kind != found:
            raise DataError(f"{where}: a {kind} record in a file of {found} records (set data.format to read one shape)")
        found = kind
        for key in SHAPES[kind]:
            if key not in row:
                raise DataError(f"{where}: missing {key!r} (data.format={shape})")
        references = row.get("references")
        if references is not None and (not isinstance(references, list)
                                       or not all(isinstance(r, str) for r in references)):
            raise DataError(f"{where}: references must be a list of strings")
        examples.append({"messages": to_messages(row, kind, where, need_answer),
                         "references": list(references or []), "file": str(path), "line": n})
    return examples
