"""Preference pairs in the common shapes, read into one form (no torch here).

Every record becomes ``{"prompt": messages, "chosen": messages, "rejected": messages}``, where the
prompt ends with a user turn and each answer holds the assistant turn(s) that follow it:

- explicit prompt: ``{"prompt", "chosen", "rejected"}``, each a string (a user message, an assistant
  message) or a list of ``{"role", "content"}`` messages (TRL's standard and conversational formats);
- implicit prompt: ``{"chosen", "rejected"}`` only, two whole conversations (message lists, or
  transcripts ``"\\n\\nHuman: ... \\n\\nAssistant: ..."`` as in Anthropic's HH-RLHF files) that share
  their beginning: the shared turns up to the last user turn are the prompt.

A record that is not a pair (no shared beginning, a prompt that does not end with the user's turn,
a wrong type) is a ``DataError`` naming the file and line. A pair that is well formed but teaches
nothing (identical answers, an empty answer) is skipped and counted, or an error with
``data.invalid_pairs: error``.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from sft_core.errors import DataError
from sft_core.kit import json_objects, select_rows

ROLES = ("system", "user", "assistant")
#: A turn marker of an HH-RLHF transcript: a blank line, the speaker, a colon.
TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
SPEAKERS = {"Human": "user", "Assistant": "assistant"}


def detect(row: dict) -> str | None:
    if "chosen" not in row or "rejected" not in row:
        return None
    return "explicit_prompt" if "prompt" in row else "implicit_prompt"


def is_transcript(text: str) -> bool:
    return text.lstrip("\n").startswith(("Human:", "Assistant:"))


def parse_transcript(text: str, where: str, name: str) -> list[dict]:
    """``"\\n\\nHuman: q\\n\\nAssistant: a ..."`` as messages (each turn's text stripped of surrounding
    whitespace)."""
    body = text.lstrip("\n")
    if not is_transcript(body):
        raise DataError(f"{where}: {name} is not a transcript: it must start with 'Human:' (turns marked "
                        "'\\n\\nHuman: ' and '\\n\\nAssistant: '), or be a list of messages")
    parts = TURN.split("\n\n" + body)
    messages = [{"role": SPEAKERS[speaker], "content": content.strip()}
                for speaker, content in zip(parts[1::2], parts[2::2])]
    return messages


def _messages(value, where: str, name: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: {name} must be a string or a non-empty list of messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise DataError(f"{where}: {name}[{i}] must be an object with role and content, "
                            f"got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"{where}: {name}[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise DataError(f"{where}: {name}[{i}].content must be a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


def _side(value, where: str, name: str, role: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return _messages(value, where, name)


def _conversation(value, where: str, name: str) -> list[dict]:
    if isinstance(value, str):
        return parse_transcript(value, where, name)
    return _messages(value, where, name)


def split_pair(chosen: list[dict], rejected: list[dict], where: str) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen answer, rejected answer) of two whole conversations: the prompt is their shared
    beginning up to its last user turn."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared and chosen[shared - 1]["role"] != "user":
        shared -= 1
    if not shared:
        raise DataError(f"{where}: chosen and rejected share no beginning that ends with a user turn, so there is no "
                        "prompt; give two conversations that differ only in the answer, or give prompt as well")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def to_pair(row: dict, shape: str, where: str) -> dict:
    """One record as ``{"prompt", "chosen", "rejected"}`` message lists."""
    if shape == "explicit_prompt":
        prompt = _side(row["prompt"], where, "prompt", "user")
        chosen = _side(row["chosen"], where, "chosen", "assistant")
        rejected = _side(row["rejected"], where, "rejected", "assistant")
        if prompt[-1]["role"] != "user":
            raise DataError(f"{where}: the prompt must end with a user turn (the answers follow it), "
                            f"got {prompt[-1]['role']!r}")
    else:
        for name in ("chosen", "rejected"):
            if isinstance(row[name], str) and not is_transcript(row[name]):
                raise DataError(f"{where}: {name} is a plain string but there is no prompt; give prompt, or whole "
                                "conversations as message lists or '\\n\\nHuman: ... \\n\\nAssistant: ...' transcripts")
        prompt, chosen, rejected = split_pair(_conversation(row["chosen"], where, "chosen"),
                                              _conversation(row["rejected"], where, "rejected"), where)
    for name, answer in (("chosen", chosen), ("rejected", rejected)):
        if answer and answer[0]["role"] != "assistant":
            raise DataError(f"{where}: the {name} answer must start with an assistant turn, got {answer[0]['role']!r}")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def problem(pair: dict) -> str | None:
    """Why a well-formed pair teaches nothing, or None."""
    for name in ("chosen", "rejected"):
        if not any(m["role"] == "assistant" and m["content"].strip() for m in pair[name]):
            return f"an empty {name} answer"
    if pair["chosen"] == pair["rejected"]:
        return "identical answers"
    return None


def _lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as f:
        yield from f


def read_pairs(path: str | Path, shape: str, invalid: str = "skip", rows=None) -> tuple[list[dict], list[dict]]:
    """(examples ``{"prompt", "chosen", "rejected", "file", "line"}``, skipped ``{"file", "line", "why"}``)
    of a JSON-lines file (gzip when it ends in .gz); ``rows``: (ranges, config key, seed) of the
    records to read (``data.train_rows``), else all."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    examples, skipped = [], []
    records = list(json_objects(path, _lines(path)))
    if rows is not None:
        records = select_rows(records, rows[0], rows[1], rows[2], path)
    for n, row in records:
        where = f"{path} line {n}"
        kind = detect(row) if shape == "auto" else shape
        if kind is None:
            raise DataError(f"{where}: not a preference pair; expected chosen and rejected (and prompt, or whole "
                            f"conversations sharing their beginning), got keys {sorted(row)}")
        for key in ("prompt", "chosen", "rejected") if kind == "explicit_prompt" else ("chosen", "rejected"):
            if key not in row:
                raise DataError(f"{where}: missing {key!r} (data.format={shape})")
        pair = to_pair(row, kind, where)
        why = problem(pair)
        if why is not None:
            if invalid == "error":
                raise DataError(f"{where}: {why}: the pair teaches nothing (data.invalid_pairs: skip counts and skips "
                                "such pairs)")
            skipped.append({"file": str(path), "line": n, "why": why})
            continue
        examples.append({**pair, "file": str(path), "line": n})
    return examples, skipped
