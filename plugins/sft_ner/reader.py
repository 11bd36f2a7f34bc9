"""Reading NER data: CoNLL column files and JSON lines, tags converted to IOB2.

An example is ``{"tokens", "tags", "text", "offsets", "line"}``: ``tags`` is None when there is no
gold annotation (prediction inputs); ``text`` and ``offsets`` (character spans of the words) are set
only for raw text, whose entities are then reported with character offsets. Every problem names
the file and line.

Which reader a file gets: ``.jsonl``/``.json`` JSON lines, any other file CoNLL columns (or as
``data.format`` says); for prediction only, a ``.txt`` file is raw text, one text per line, never
columns (training and evaluation files named ``.txt``, as some CoNLL-2003 copies are, stay columns).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from sft_core.errors import DataError
from sft_core.kit import json_objects

from .schemes import detect_scheme, first_violation, split_tag, to_iob2

DOCSTART = "-DOCSTART-"
# A word: an abbreviation with inner dots (U.S., e.g.), a run of letters/digits joined by inner
# hyphens or dots (Jean-Pierre, 3.5, 1996-08-22), or any other single non-space character.
WORD = re.compile(r"(?:\w\.){2,}|\w+(?:[-.]\w+)*|[^\w\s]")


def split_words(text: str) -> tuple[list[str], list[list[int]]]:
    """Words of raw text, CoNLL-like (punctuation apart), with their [start, end) character offsets."""
    matches = list(WORD.finditer(text))
    return [m.group() for m in matches], [[m.start(), m.end()] for m in matches]


def _example(tokens, tags=None, text=None, offsets=None, line=0) -> dict:
    return {"tokens": tokens, "tags": tags, "text": text, "offsets": offsets, "line": line}


def _is_jsonl(path: Path, data) -> bool:
    if data.format != "auto":
        return data.format == "jsonl"
    return path.suffix.lower() in (".jsonl", ".json")


# --- CoNLL columns ----------------------------------------------------------------------------

def _read_conll(path: Path, data, need_tags: bool, limit: int | None) -> list[tuple[list[str], list[str] | None, list[int]]]:
    """Sentences (the first ``limit`` only, when given) as (tokens, raw tags or None, line of each token)."""
    sentences = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    columns = first = None

    def close():
        nonlocal tokens, tags, lines
        if tokens:
            sentences.append((tokens, tags if tags else None, lines))
        tokens, tags, lines = [], [], []

    with open(path, encoding="utf-8-sig") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith(DOCSTART):
                close()  # -DOCSTART- lines also end a sentence, wherever they appear
                if limit and len(sentences) >= limit:
                    return sentences
                continue
            fields = [c.strip() for c in line.split("\t")] if "\t" in line else line.split()
            if columns is None:
                columns, first = len(fields), n
                wanted = (data.token_column, data.tag_column) if need_tags else (data.token_column,)
                for key, index in zip(("data.token_column", "data.tag_column"), wanted):
                    if not -columns <= index < columns:
                        raise DataError(f"{path} line {n}: {columns} column(s), so {key}={index} is out of range")
                if need_tags and columns < 2:
                    raise DataError(f"{path} line {n}: 1 column; expected a token and a tag column")
            elif len(fields) != columns:
                raise DataError(f"{path} line {n}: {len(fields)} columns, expected {columns} (as on line {first})")
            token = fields[data.token_column]
            if not token:
                raise DataError(f"{path} line {n}: empty token")
            tokens.append(token)
            lines.append(n)
            if need_tags:
                tag = fields[data.tag_column]
                if not tag:
                    raise DataError(f"{path} line {n}: empty tag")
                tags.append(tag)
    close()
    return sentences


# --- raw text, for prediction ----------------------------------------------------------------

def _text_lines(path: Path, limit: int | None) -> list[dict]:
    """One text per non-blank line, split into words as a TEXT argument of ``sft predict`` is."""
    examples = []
    with open(path, encoding="utf-8-sig") as f:
        for n, raw in enumerate(f, 1):
            text = raw.rstrip("\r\n")
            if text.strip():
                words, offsets = split_words(text)
                examples.append(_example(words, None, text, offsets, n))
                if limit and len(examples) >= limit:
                    break
    return examples


# --- JSON lines -------------------------------------------------------------------------------

def _json_records(path: Path):
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    if text.lstrip().startswith("["):  # a JSON array of records, as some exports write
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg})") from None
        yield from enumerate(records, 1)  # numbered by record
        return
    yield from json_objects(path, text.splitlines())


def _read_jsonl(path: Path, data, split: str, limit: int | None) -> tuple[list, list[dict]]:
    """(sentences with tags as in _read_conll, raw-text examples) from JSON lines."""
    sentences, raw = [], []
    for n, record in _json_records(path):
        if limit and len(sentences) + len(raw) >= limit:
            break
        if not isinstance(record, dict):
            raise DataError(f"{path} line {n}: expected a JSON object, got {type(record).__name__}")
        tokens = record.get("tokens")
        if tokens is None and split == "predict" and isinstance(record.get("text"), str):
            words, offsets = split_words(record["text"])
            raw.append((len(sentences) + len(raw), _example(words, None, record["text"], offsets, n)))
            continue
        if not isinstance(tokens, list) or not tokens:
            raise DataError(f"{path} line {n}: expected a non-empty list of strings under \"tokens\""
                            + (" (or raw text under \"text\")" if split == "predict" else ""))
        for token in tokens:
            if not isinstance(token, str) or not token.strip():
                raise DataError(f"{path} line {n}: empty or non-string token {token!r}")
        tags = None
        if split != "predict":
            key = "tags" if "tags" in record else "ner_tags" if "ner_tags" in record else None
            if key is None:
                raise DataError(f"{path} line {n}: no \"tags\" or \"ner_tags\"")
            tags = [_tag_name(t, data, path, n) for t in record[key]] if isinstance(record[key], list) else None
            if tags is None or len(tags) != len(tokens):
                got = len(record[key]) if isinstance(record[key], list) else type(record[key]).__name__
                raise DataError(f"{path} line {n}: {len(tokens)} tokens but {got} {key}")
        sentences.append((tokens, tags, [n] * len(tokens)))
    return sentences, raw


def _tag_name(tag, data, path: Path, n: int) -> str:
    if isinstance(tag, str):
        return tag
    if isinstance(tag, int) and not isinstance(tag, bool):
        names = data.label_names
        if not names:
            raise DataError(f"{path} line {n}: tags are numbers; name them with data.label_names "
                            "(e.g. [O, B-PER, I-PER, ...] in id order)")
        if not 0 <= tag < len(names):
            raise DataError(f"{path} line {n}: tag id {tag} is out of range for data.label_names ({len(names)} names)")
        return names[tag]
    raise DataError(f"{path} line {n}: tag {tag!r} is neither a string nor an integer id")


# --- both -------------------------------------------------------------------------------------

def _to_iob2(path: Path, sentences: list, data) -> list[list[str]]:
    """Check the tags and convert them to IOB2; the scheme is detected per file unless forced."""
    for _, tags, lines in sentences:
        for tag, n in zip(tags, lines):
            try:
                split_tag(tag)
            except ValueError:
                raise DataError(f"{path} line {n}: tag {tag!r} is neither O nor B-/I-/E-/S-TYPE "
                                f"(is data.tag_column={data.tag_column} the tag column?)") from None
    scheme = data.tag_scheme
    if scheme == "auto":
        scheme = detect_scheme([tags for _, tags, _ in sentences])
        if scheme != "iob2":
            print(f"note: {path}: tags read as {scheme.upper()}, converted to IOB2 (set data.tag_scheme to force a scheme)",
                  file=sys.stderr)
    else:
        for _, tags, lines in sentences:
            bad = first_violation(tags, scheme)
            if bad is not None:
                index, reason = bad
                hint = (" (data in IOB1, like the original CoNLL-2003 files? set data.tag_scheme=iob1 or auto)"
                        if scheme == "iob2" else "")
                raise DataError(f"{path} line {lines[index]}: not valid {scheme.upper()}: {reason}{hint}")
    return [to_iob2(tags, scheme) for _, tags, _ in sentences]


def read_examples(path: str | Path, data, split: str, limit: int | None = None) -> list[dict]:
    """Examples of a CoNLL or JSONL file (the first ``limit``, when given); ``split`` "predict" needs
    no tags (and ignores any)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    need_tags = split != "predict"
    if split == "predict" and path.suffix.lower() == ".txt":
        examples = _text_lines(path, limit)
        if not examples:
            raise DataError(f"{path}: the file holds no text (one text per line)")
        return examples
    if _is_jsonl(path, data):
        sentences, raw = _read_jsonl(path, data, split, limit)
    else:
        sentences, raw = _read_conll(path, data, need_tags, limit), []
    if not sentences and not raw:
        raise DataError(f"{path}: the file holds no sentences")
    tags = _to_iob2(path, sentences, data) if need_tags else [None] * len(sentences)
    examples = [_example(tokens, t, line=lines[0]) for (tokens, _, lines), t in zip(sentences, tags)]
    for position, example in raw:  # raw-text records back in input order
        examples.insert(position, example)
    return examples
