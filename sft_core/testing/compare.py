"""What the kit's checks compare and report: predictions files read back, values compared with a
float tolerance, a perfect score, and a failing loss described with its likely cause. No torch at
import time."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _perfect(value: float, expected: float | None) -> bool:
    targets = (1.0, 100.0) if expected is None else (expected,)
    return any(math.isclose(value, t, rel_tol=1e-6, abs_tol=1e-9) for t in targets)


def _read_output(path: Path) -> Any:
    """A predictions file as data (JSON, JSON lines) or text, for a comparison that tolerates float noise."""
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError:
        return text


def _same(a: Any, b: Any, where: str = "", rel_tol: float = 1e-4) -> str | None:
    """Where ``a`` and ``b`` differ (floats compared to ``rel_tol`` relative), or None when they agree."""
    if isinstance(a, float) or isinstance(b, float):
        ok = (isinstance(a, (int, float)) and isinstance(b, (int, float))
              and math.isclose(a, b, rel_tol=rel_tol, abs_tol=min(1e-6, rel_tol)))
        return None if ok else f"{where or 'value'}: {a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where or 'record'}: keys {sorted(a)} != {sorted(b)}"
        return next((d for k in a if (d := _same(a[k], b[k], f"{where}[{k!r}]", rel_tol))), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where or 'list'}: {len(a)} items != {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _same(x, y, f"{where}[{i}]", rel_tol))), None)
    return None if a == b else f"{where or 'value'}: {a!r} != {b!r}"


def _likely_cause(message: str) -> str:
    text = message.lower()
    if "dtype" in text or "scalar type" in text or ("expected" in text and ("long" in text or "float" in text)):
        return ("likely cause: the labels' dtype is not what the model's loss expects (class ids as torch.long, "
                "regression targets as torch.float)")
    if "size" in text or "shape" in text or "dimension" in text:
        return "likely cause: the labels' shape does not match the logits (one label per feature, or per token)"
    if "index" in text and "out of" in text:
        return "likely cause: a label id is not below the number of labels the model was built with, or a token id is not in the vocabulary"
    return "see the batch above for what collate returned"


def _describe(batch: dict) -> str:
    import torch

    return ", ".join(f"{k}: {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}" if isinstance(v, torch.Tensor)
                     else f"{k}: {type(v).__name__}" for k, v in batch.items())
