"""Reading question answering data: SQuAD v1.1/v2.0 JSON and JSONL, with article selection.

Every question becomes one example::

    {"id", "title", "article", "context", "question",
     "answers": {"text": [...], "answer_start": [...]}, "is_impossible"}

``article`` is the index of the question's article (SQuAD JSON: position in ``data``; JSONL:
distinct titles in order of first appearance), so one file can be split into disjoint articles.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sft_core.errors import DataError
from sft_core.kit import json_objects


def parse_articles(text: str, key: str) -> list[int]:
    """ "0-39,45" -> [0, 1, ..., 39, 45]; ``key`` names the config key in errors."""
    chosen: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not match:
            raise DataError(f"{key}={text!r}: expected article indices and ranges such as 0-39 or 0-9,20")
        first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if last < first:
            raise DataError(f"{key}={text!r}: range {part} runs backwards")
        chosen.update(range(first, last + 1))
    return sorted(chosen)


def _answers(raw, where: str) -> dict:
    """Answers as {"text": [...], "answer_start": [...]}, from SQuAD's list or the JSONL dict."""
    if raw is None:
        return {"text": [], "answer_start": []}
    if isinstance(raw, dict):
        texts, starts = list(raw.get("text") or []), list(raw.get("answer_start") or [])
    elif isinstance(raw, list):
        if not all(isinstance(a, dict) for a in raw):
            raise DataError(f"{where}: answers must be objects with text and answer_start")
        texts, starts = [a.get("text") for a in raw], [a.get("answer_start") for a in raw]
    else:
        raise DataError(f"{where}: answers must be a list or {{\"text\": [...], \"answer_start\": [...]}}")
    if len(texts) != len(starts):
        raise DataError(f"{where}: {len(texts)} answer texts but {len(starts)} answer_start values")
    for text, start in zip(texts, starts):
        if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
            raise DataError(f"{where}: an answer needs a text (string) and an answer_start (integer), "
                            f"got {text!r} at {start!r}")
    return {"text": texts, "answer_start": starts}


def _example(qa: dict, context, title: str, article: int, where: str, need_answers: bool) -> dict:
    question = qa.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: empty or missing question")
    if not isinstance(context, str) or not context.strip():
        raise DataError(f"{where}: empty or missing context")
    answers = _answers(qa.get("answers"), where)
    impossible = qa.get("is_impossible")
    if impossible is None:  # JSONL (Hugging Face squad_v2 layout): no answer means unanswerable
        impossible = need_answers and not answers["text"]
    return {"id": str(qa["id"]), "title": title, "article": article, "context": context, "question": question,
            "answers": answers, "is_impossible": bool(impossible)}


def _read_squad_json(path: Path, doc: dict, need_answers: bool) -> list[dict]:
    articles = doc.get("data")
    if not isinstance(articles, list):
        raise DataError(f"{path}: not a SQuAD file (no \"data\" list of articles)")
    examples = []
    for a, article in enumerate(articles):
        title = str(article.get("title", a))
        for p, paragraph in enumerate(article.get("paragraphs") or []):
            for q, qa in enumerate(paragraph.get("qas") or []):
                where = f"{path} article {a} paragraph {p} question {q}"
                if "id" not in qa:
                    raise DataError(f"{where}: no id")
                examples.append(_example(qa, paragraph.get("context"), title, a, f"{where} (id {qa['id']})",
                                         need_answers))
    return examples


def _read_jsonl(path: Path, need_answers: bool) -> list[dict]:
    examples, titles = [], {}
    with open(path, encoding="utf-8-sig") as f:
        for n, row in json_objects(path, f):
            title = str(row.get("title", ""))
            article = titles.setdefault(title, len(titles))
            row.setdefault("id", str(n))
            examples.append(_example(row, row.get("context"), title, article, f"{path} line {n}", need_answers))
    return examples


def read_examples(path: str | Path, need_answers: bool) -> tuple[list[dict], bool]:
    """Examples of a SQuAD JSON or JSONL file, and whether the file declares SQuAD 2.0."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    doc = None
    if path.suffix.lower() != ".jsonl" and text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None  # one JSON object a line (JSONL named .json)
    if isinstance(doc, dict) and "data" in doc:
        examples = _read_squad_json(path, doc, need_answers)
        declared_v2 = str(doc.get("version", "")).lstrip("v").startswith("2")
    else:
        examples = _read_jsonl(path, need_answers)
        declared_v2 = False
    if not examples:
        raise DataError(f"{path}: the file holds no questions")
    ids = set()
    for example in examples:
        if example["id"] in ids:
            raise DataError(f"{path}: question id {example['id']!r} appears twice (predictions are keyed by id)")
        ids.add(example["id"])
    return examples, declared_v2


def select_articles(examples: list[dict], spec: str | None, key: str, path) -> list[dict]:
    if spec is None:
        return examples
    wanted = parse_articles(spec, key)
    count = max(e["article"] for e in examples) + 1
    beyond = [i for i in wanted if i >= count]
    if beyond:
        raise DataError(f"{key}={spec}: {path} has {count} articles (0-{count - 1}); "
                        f"set {key}=null to use the whole file")
    chosen = set(wanted)
    return [e for e in examples if e["article"] in chosen]


def mismatched_answers(examples: list[dict]) -> list[tuple[str, int]]:
    """(question id, answer index) of every answer whose text is not at its answer_start."""
    bad = []
    for example in examples:
        context, answers = example["context"], example["answers"]
        for i, (text, start) in enumerate(zip(answers["text"], answers["answer_start"])):
            if start < 0 or context[start:start + len(text)] != text:
                bad.append((example["id"], i))
    return bad
