"""Reading parallel data: JSONL records, TSV lines, or a pair of aligned plain-text files.

Every example is ``{"source": str, "target": str | None, "line": int}``; ``line`` is the 1-based
line in the file (the source file for aligned text) so that errors and notes can point at it.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

from sft_core.errors import DataError
from sft_core.kit import json_objects


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")  # -sig: a byte-order mark is no text


def _lines(path: Path) -> list[str]:
    try:
        with _open(path) as f:
            return [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def _stem(path: Path) -> str:
    """The name without .gz: 'train.en.gz' -> 'train.en'."""
    return path.name[:-3] if path.name.endswith(".gz") else path.name


def text_pair(path: Path, source_lang: str, target_lang: str) -> tuple[Path, Path] | None:
    """(source file, target file) when ``path`` names one side of an aligned pair or their common prefix."""
    if path.is_file():
        stem = _stem(path)
        for lang, other in ((source_lang, target_lang), (target_lang, source_lang)):
            if stem.endswith(f".{lang}"):
                base = stem[: -len(lang)] + other
                partner = path.with_name(base + (".gz" if path.name.endswith(".gz") else ""))
                if not partner.is_file():
                    alternative = path.with_name(base + ("" if path.name.endswith(".gz") else ".gz"))
                    partner = alternative if alternative.is_file() else partner
                return (path, partner) if lang == source_lang else (partner, path)
        return None
    for gz in ("", ".gz"):
        source = path.with_name(f"{path.name}.{source_lang}{gz}")
        if source.is_file():
            target = path.with_name(f"{path.name}.{target_lang}{gz}")
            return source, target
    return None


def detect_format(path: Path, data) -> str:
    if data.format != "auto":
        return data.format
    stem = _stem(path)
    if stem.endswith((".jsonl", ".json")):
        return "jsonl"
    if stem.endswith((".tsv", ".txt")) and text_pair(path, data.source_lang, data.target_lang) is None:
        return "tsv" if stem.endswith(".tsv") else "lines"
    return "text"


def _from_jsonl(path: Path, data, need_targets: bool) -> list[dict]:
    src, tgt = data.source_lang, data.target_lang
    examples = []
    for number, record in json_objects(path, _lines(path)):
        pair = record.get("translation", record)
        if not isinstance(pair, dict) or not isinstance(pair.get(src), str):
            raise DataError(f'{path} line {number}: expected {{"translation": {{"{src}": ..., "{tgt}": ...}}}} '
                            f"with a {src!r} string (data.source_lang)")
        target = pair.get(tgt)
        if target is not None and not isinstance(target, str):
            raise DataError(f"{path} line {number}: the {tgt!r} value is not a string")
        if need_targets and target is None:
            raise DataError(f"{path} line {number}: no {tgt!r} translation (data.target_lang)")
        examples.append({"source": pair[src], "target": target, "line": number})
    return examples


def _from_tsv(path: Path, need_targets: bool) -> list[dict]:
    examples = []
    for number, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) > 2 or (need_targets and len(parts) != 2):
            raise DataError(f"{path} line {number}: expected 'source<TAB>target', found {len(parts)} "
                            f"tab-separated field{'s' if len(parts) != 1 else ''}")
        examples.append({"source": parts[0], "target": parts[1] if len(parts) == 2 else None, "line": number})
    return examples


def _from_text(path: Path, data, need_targets: bool) -> list[dict]:
    pair = text_pair(path, data.source_lang, data.target_lang)
    if pair is None:
        raise DataError(f"{path}: not a parallel text file; expected FILE.{data.source_lang} with FILE."
                        f"{data.target_lang} next to it (data.source_lang/target_lang; .gz accepted), "
                        "or a .jsonl or .tsv file")
    source_file, target_file = pair
    if not source_file.is_file():
        raise DataError(f"{path}: the source side {source_file} does not exist")
    sources = _lines(source_file)
    if not target_file.is_file():
        if need_targets:
            raise DataError(f"{path}: the target side {target_file} does not exist")
        return [{"source": s, "target": None, "line": i} for i, s in enumerate(sources, 1) if s.strip()]
    targets = _lines(target_file)
    if len(sources) != len(targets):
        raise DataError(f"aligned files differ in length: {source_file} has {len(sources)} lines, "
                        f"{target_file} has {len(targets)}")
    return [{"source": s, "target": t, "line": i} for i, (s, t) in enumerate(zip(sources, targets), 1)
            if s.strip() or t.strip()]


def read_examples(path: str | Path, data, split: str, limit: int | None = None) -> list[dict]:
    path = Path(path)
    fmt = detect_format(path, data)
    if fmt != "text" and not path.is_file():
        raise DataError(f"data file not found: {path}")
    need_targets = split != "predict"
    if fmt == "jsonl":
        examples = _from_jsonl(path, data, need_targets)
    elif fmt == "tsv":
        examples = _from_tsv(path, need_targets)
    elif fmt == "lines":  # plain text, one source sentence a line (sft predict --input)
        examples = [{"source": s, "target": None, "line": i} for i, s in enumerate(_lines(path), 1) if s.strip()]
    else:
        examples = _from_text(path, data, need_targets)
    if split == "train":
        examples = _drop_half_empty(path, examples)
    if limit:
        examples = examples[:limit]
    return examples


def _drop_half_empty(path: Path, examples: list[dict]) -> list[dict]:
    """Training pairs with an empty side teach nothing; they are left out, and said so."""
    kept, dropped = [], []
    for example in examples:
        full = example["source"].strip() and (example["target"] or "").strip()
        (kept if full else dropped).append(example if full else example["line"])
    if dropped:
        shown = ", ".join(map(str, dropped[:5])) + (", ..." if len(dropped) > 5 else "")
        print(f"note: {path}: {len(dropped)} training pair(s) with an empty side left out (lines {shown})",
              file=sys.stderr)
    return kept
