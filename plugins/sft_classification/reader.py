"""Reading classification data: CSV, TSV (GLUE layout: no quoting, header or not), JSONL, and a
folder of class subfolders (one text file per example, the subfolder's name its label: the layout of
the IMDB download and of scikit-learn's ``load_files``).

Rows become examples ``{"text", "text_pair", "label"}``; every problem names the file and line.
``data.train_rows`` / ``data.eval_rows`` pick rows of the training / evaluation file or folder, so
one labelled set (e.g. a GLUE dev set with no training set offline, IMDB's training folder) can be
split into disjoint parts. A folder is read in a seeded shuffled order (``data.folder_seed``), so
that its first N examples (``data.max_train_samples``) are not all of the first class; files keep
their order. For prediction a ``.txt`` file is one text per line (a tab separates a text pair).
"""

from __future__ import annotations

import csv
import html
import itertools
import random
import re
import sys
from pathlib import Path

from sft_core.errors import DataError
from sft_core.kit import json_objects, rows_for, select_rows

TEXT_NAMES = ("sentence", "text", "content", "review", "document")
# the GLUE tasks' own headers among them: MRPC "#1 String"/"#2 String" and "Quality", QQP "is_duplicate"
PAIR_NAMES = (("sentence1", "sentence2"), ("question", "sentence"), ("premise", "hypothesis"),
              ("question1", "question2"), ("#1 string", "#2 string"), ("text", "text_pair"))
LABEL_NAMES = ("label", "labels", "score", "gold_label", "quality", "is_duplicate", "sentiment", "class", "target",
               "category")
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
    header = data.header if data.header is not None else (data.columns is None and _names_columns(first, data))
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


def _names_columns(first: list[str], data) -> bool:
    """Whether a first row is a header: it holds a column name this reader knows, or a column the
    config names (data.text_column, text_pair_column, label_column) by name."""
    named = {getattr(data, key, None) for key in ("text_column", "text_pair_column", "label_column")}
    named = {n for n in named if isinstance(n, str) and not n.isdigit()}
    return bool(KNOWN & {c.lower() for c in first}) or bool(named & set(first))


def _folder_records(path: Path, data) -> tuple[list[tuple[int, dict]], list[str]]:
    """Rows of a folder of class subfolders: {"text", "label", "file"}, in a seeded shuffled order.

    Every subfolder holding files is a class (``data.classes`` picks some; files beside the
    subfolders, such as IMDB's ``urls_pos.txt``, are not examples). The files are sorted by name
    before the shuffle, so the order is the same on every file system.
    """
    found = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if data.classes is not None:
        names = {p.name: p for p in found}
        missing = [c for c in data.classes if c not in names]
        if missing:
            raise DataError(f"{path}: no subfolder {missing[0]!r} (set by data.classes); subfolders: "
                            f"{', '.join(names) or 'none'}")
        found = [names[c] for c in data.classes]
    rows: list[tuple[int, dict]] = []
    counts = {}
    for folder in found:
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        counts[folder.name] = len(files)
        for file in files:
            try:
                text = file.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError as exc:
                raise DataError(f"{file}: not UTF-8 text (byte {exc.start})") from None
            rows.append((1, {"text": text, "label": folder.name, "file": str(file)}))
    counts = {name: n for name, n in counts.items() if n}
    if not counts:
        raise DataError(f"{path}: a folder of examples holds one subfolder of text files per class; found none")
    random.Random(data.folder_seed).shuffle(rows)
    print(f"data: {path}: {len(rows):,} files in {len(counts)} class folders ("
          + ", ".join(f"{name} {n:,}" for name, n in counts.items()) + ")", file=sys.stderr)
    return rows, ["text", "label", "file"]


def _text_lines(path: Path) -> list[tuple[int, dict]]:
    """One text per non-blank line (a tab separates a text pair), for prediction."""
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                text, _, pair = line.partition("\t")
                rows.append((n, {"text": text, **({"text_pair": pair} if pair else {})}))
    return rows


_TAG = re.compile(r"<[^>]{0,200}>")


def strip_html(text: str) -> str:
    """Markup out of a text (``data.strip_html``): tags become spaces (``<br />`` a line break),
    entities their characters, runs of spaces one space."""
    text = re.sub(r"<br\s*/?>", "\n", text, flags=re.IGNORECASE)
    text = html.unescape(_TAG.sub(" ", text))
    return re.sub(r"[ \t]+", " ", text).strip()


def _find(names: list[str], wanted: str) -> str | None:
    """The column called ``wanted``, ignoring case (``Sentence`` is ``sentence``)."""
    for name in names:
        if name.lower() == wanted:
            return name
    return None


def _pick(names: list[str], wanted: str | None, candidates, what: str, key: str, path: Path, required: bool = True):
    if wanted is not None:
        if wanted not in names:
            if all(n.isdigit() for n in names):  # read without a header: the columns are positions
                raise DataError(f"{path}: no column {wanted!r} (set by {key}): the file was read without a header "
                                f"row, so its columns are positions {names[0]}-{names[-1]}; give {key} a position, "
                                "data.columns names, or data.header=true if the first row names the columns")
            raise DataError(f"{path}: no column {wanted!r} (set by {key}); columns: {', '.join(names)}")
        return wanted
    for name in candidates:
        found = _find(names, name)
        if found is not None:
            return found
    if required:
        raise DataError(f"{path}: cannot find the {what} column among {', '.join(names)}; set {key}")
    return None


def read_examples(path: str | Path, data, need_labels: bool, limit: int | None = None,
                  split: str | None = None) -> list[dict]:
    """Examples of ``path``; ``split`` ("train", "eval") applies that split's row ranges, if any."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    selection = rows_for(path, data, split)
    if path.is_dir():
        rows, names = _folder_records(path, data)
        rows = rows if selection else rows[:limit or None]
    elif split == "predict" and path.suffix.lower() == ".txt":
        examples = [{"text": row["text"], "text_pair": row.get("text_pair"), "label": None, "line": n}
                    for n, row in _text_lines(path)]
        if not examples:
            raise DataError(f"{path}: the file holds no texts (one per line)")
        return examples
    else:
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
    if not need_labels and data.label_column is not None and data.label_column not in names:
        label_col = None  # unlabelled input to predict: the training run's label column need not be there
    else:
        label_col = _pick(names, data.label_column, LABEL_NAMES, "label", "data.label_column", path,
                          required=need_labels)
    clean = strip_html if getattr(data, "strip_html", False) else None
    delimiter = getattr(data, "label_delimiter", None)
    examples = []
    for n, row in rows:
        where = row.get("file") or f"{path} line {n}"
        text = row.get(text_col)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: empty or missing text in column {text_col!r}")
        example = {"text": clean(text) if clean else text, "text_pair": None, "label": None, "line": n}
        if "file" in row:
            example["file"] = row["file"]
        if pair_col is not None:
            pair = row.get(pair_col)
            if not isinstance(pair, str) or not pair.strip():
                raise DataError(f"{where}: empty or missing text in column {pair_col!r}")
            example["text_pair"] = clean(pair) if clean else pair
        if label_col is not None:
            example["label"] = _label(row.get(label_col), delimiter, need_labels, where, label_col)
        examples.append(example)
    return examples


def _label(label, delimiter: str | None, need_labels: bool, where: str, column: str):
    """A row's label as read: a class name or number, or a list of class names (multi-label: a JSON
    list, or a text split at ``data.label_delimiter``); None when missing and not needed."""
    if isinstance(label, list):
        if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in label):
            raise DataError(f"{where}: the labels in column {column!r} must be class names, got {label!r}")
        return sorted({str(x).strip() for x in label if str(x).strip()})
    if isinstance(label, str) and not label.strip() and delimiter is not None:
        return []  # a delimited labels column left empty: none of the labels applies
    if label is None or (isinstance(label, str) and not label.strip()):
        if need_labels:
            raise DataError(f"{where}: missing label in column {column!r}")
        return None
    if delimiter is not None:
        return sorted({part.strip() for part in str(label).split(delimiter) if part.strip()})
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        return label
    return str(label).strip()
