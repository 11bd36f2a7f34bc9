"""Reading helpers shared by task readers (no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import DataError


def json_objects(path: str | Path, lines: Iterable[str]) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for every non-blank line of a JSON-lines file.

    A line that is not JSON, or not a JSON object, is a ``DataError`` naming the file and the line.
    """
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {n}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {n}: expected a JSON object, got {type(row).__name__}")
        yield n, row
