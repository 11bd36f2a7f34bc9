"""A malformed copy of a task's own sample data, for the kit's malformed-data check: the sample is
found by watching which files ``load("train", None)`` opens, and cut short in its own format."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

_opened: list[str] | None = None  # files opened while the kit watches (``files_read_by``)
_watching = False


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


def files_read_by(call: Callable[[], Any]) -> list[Path]:
    """The data files ``call()`` opens (Python's ``open`` audit event), in order; code files left out."""
    global _opened, _watching
    if not _watching:
        sys.addaudithook(_audit)  # an audit hook cannot be removed: it records only while _opened is a list
        _watching = True
    _opened = []
    try:
        call()
    finally:
        opened, _opened = _opened, None
    seen: list[Path] = []
    for name in opened:
        path = Path(name)
        if path.suffix not in (".py", ".pyc", ".so", ".pth") and path.is_file() and path not in seen:
            seen.append(path)
    return seen


def cut_short(sample: Path) -> tuple[str, int | None] | str:
    """A malformed copy of a JSON-lines or JSON file and the line its error is on (None: any line),
    or why none can be built from ``sample``."""
    try:
        text = sample.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read {sample.name}: {exc}"
    lines = [line for line in text.splitlines() if line.strip()]

    def json_object(line: str) -> bool:
        try:
            return isinstance(json.loads(line), dict)
        except json.JSONDecodeError:
            return False

    if lines and json_object(lines[0]):  # JSON lines: the second record cut in half (never valid JSON)
        if len(lines) == 1:
            return lines[0][: len(lines[0]) // 2] + "\n", 1
        return lines[0] + "\n" + lines[1][: len(lines[1]) // 2] + "\n", 2
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return (f"its sample {sample.name} is neither JSON lines nor JSON, so the kit cannot cut it short "
                "without guessing the format")
    return text[: len(text) // 2], None  # one JSON document cut in half: the place is wherever it ends
