"""Reading classification data: CSV, TSV (GLUE layout: no quoting, header or not) and JSONL.

Rows become examples ``{"text", "text_pair", "label"}``; every problem names the file and line.
``data.train_rows`` / ``data.eval_rows`` pick rows of the training / evaluation file, so one labelled
file (e.g. a GLUE dev set with no training set offline) can be split into disjoint parts.
"""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path

from sft_core.errors import DataError
from sft_core.readers import json_objects

from .options import parse_rows

TEXT_NAMES = ("sentence", "text", "content", "review", "document")
PAIR_NAMES = (("sentence1", "sentence2"), ("question", "sentence"), ("premise", "hypothesis"),
              ("question1", "question2"), ("text", "text_pair"))
LABEL_NAMES = ("label", "labels", "score", "gold_label")
KNOWN = {*TEXT_NAMES, *(n for pair in PAIR_NAMES for n in pair), *LABEL_NAMES}


def _records(path: Path, data, limit: int | None = None) -> tuple[list[tuple[int, dict]], list[str]]:
    """(line number, row dict) pairs (the first ``limit`` only, when given) and the column names."""
    suffix = "".join(path.suffixes[-1:]).lower()
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: Excel writes a byte-order mark
        if suffix in (".jsonl", ".json"):
            out, names = [], []
            for n, row in json_objects(path, f):
                out.append((n, row))
                names += [k for k in row if k not in names]
                if limit and len(out) >= limit:
                    break
            return out, names
        tsv = suffix == ".tsv" or (suffix != ".csv" and "\t" in f.readline())
        f.seek(0)
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else csv.reader(f)
        rows_wanted = None if not limit else limit + 1  # one more for a header row
        lines = list(itertools.islice(((reader.line_num, row) for row in reader if row and any(c.strip() for c in row)),
                                      rows_wanted))
    if not lines:
        return [], []
    first = [c.strip() for c in lines[0][1]]
    header = data.header if data.header is not None else (data.columns is None and bool(KNOWN & {c.lower() for c in first}))
    if header:
        names, lines = first, lines[1:]
    elif data.columns:
        names = list(data.columns)
    else:
        names = [str(i) for i in range(len(first))]
        if len(first) == 1:
            names = ["text"]
    if limit:
        lines = lines[:limit]
    rows = []
    for n, values in lines:
        if len(values) != len(names):
            raise DataError(f"{path} line {n}: {len(values)} fields, expected {len(names)} ({', '.join(names)})")
        rows.append((n, dict(zip(names, values))))
    return rows, names


def _find(names: list[str], wanted: str) -> str | None:
    """The column called ``wanted``, ignoring case (``Sentence`` is ``sentence``)."""
    for name in names:
        if name.lower() == wanted:
            return name
    return None


def _pick(names: list[str], wanted: str | None, candidates, what: str, key: str, path: Path, required: bool = True):
    if wanted is not None:
        if wanted not in names:
            raise DataError(f"{path}: no column {wanted!r} (set by {key}); columns: {', '.join(names)}")
        return wanted
    for name in candidates:
        found = _find(names, name)
        if found is not None:
            return found
    if required:
        raise DataError(f"{path}: cannot find the {what} column among {', '.join(names)}; set {key}")
    return None


def _row_spec(path: Path, data, split: str | None) -> tuple[str, str] | None:
    """(ranges, config key) when ``path`` is read as the file that data.train_rows / data.eval_rows belong to."""
    if split not in ("train", "eval"):
        return None
    spec, named = getattr(data, f"{split}_rows", None), getattr(data, split, None)
    if spec is None or named is None or Path(named).resolve() != path.resolve():
        return None  # e.g. `sft eval` of a saved model on another file: its row ranges do not apply
    return spec, f"data.{split}_rows"


def select_rows(rows: list, spec: str, key: str, seed: int | None, path: Path) -> list:
    """The rows at the positions ``spec`` names, after a shuffle with ``seed`` when one is given."""
    order = list(range(len(rows)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    chosen: list = []
    seen: set[int] = set()
    for first, last in parse_rows(spec, key):
        end = len(rows) - 1 if last is None else last
        if first >= len(rows) or end >= len(rows):
            raise DataError(f"{key}={spec}: {path} has {len(rows)} data rows (0-{len(rows) - 1})")
        for position in range(first, end + 1):
            if position not in seen:
                seen.add(position)
                chosen.append(rows[order[position]])
    return chosen


def read_examples(path: str | Path, data, need_labels: bool, limit: int | None = None,
                  split: str | None = None) -> list[dict]:
    """Examples of ``path``; ``split`` ("train", "eval") applies that split's row ranges, if any."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    selection = _row_spec(path, data, split)
    rows, names = _records(path, data, None if selection else limit)
    if selection and rows:
        rows = select_rows(rows, *selection, getattr(data, "rows_seed", None), path)[:limit or None]
    if not rows:
        raise DataError(f"{path}: the file holds no examples")
    text_col, pair_col = data.text_column, data.text_pair_column
    if text_col is None and pair_col is None:
        for a, b in PAIR_NAMES:
            if _find(names, a) and _find(names, b):
                text_col, pair_col = _find(names, a), _find(names, b)
                break
    text_col = _pick(names, text_col, TEXT_NAMES, "text", "data.text_column", path)
    if pair_col is not None:
        _pick(names, pair_col, (), "text pair", "data.text_pair_column", path)
    label_col = _pick(names, data.label_column, LABEL_NAMES, "label", "data.label_column", path, required=need_labels)
    examples = []
    for n, row in rows:
        text = row.get(text_col)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path} line {n}: empty or missing text in column {text_col!r}")
        example = {"text": text, "text_pair": None, "label": None, "line": n}
        if pair_col is not None:
            pair = row.get(pair_col)
            if not isinstance(pair, str) or not pair.strip():
                raise DataError(f"{path} line {n}: empty or missing text in column {pair_col!r}")
            example["text_pair"] = pair
        if label_col is not None:
            label = row.get(label_col)
            if label is None or (isinstance(label, str) and not label.strip()):
                if need_labels:
                    raise DataError(f"{path} line {n}: missing label in column {label_col!r}")
            else:
                example["label"] = str(label).strip() if not isinstance(label, (int, float)) or isinstance(label, bool) else label
        examples.append(example)
    return examples
