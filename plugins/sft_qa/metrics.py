"""Exact match and F1 as the official SQuAD evaluation scripts define them (v1.1 and v2.0).

Written from the definition, not copied: an answer is normalised by lower-casing, removing ASCII
punctuation, removing the articles a/an/the and collapsing whitespace; EM and F1 (bag of tokens)
take the maximum over the gold answers; the totals are summed in file order and scaled to 0-100
exactly as the scripts do, so the figures agree with theirs to the last digit.

v1.1 and v2.0 differ in two details: v2.0 drops gold answers that normalise to nothing (a question
left without any is scored against ``""``), and its F1 is 1 when both token lists are empty (v1.1:
0). v2.0 also reports HasAns/NoAns figures, a question being HasAns when it has gold answers at all.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, version: str = "1.1") -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version == "2.0" and (not predicted or not expected):
        return int(predicted == expected)
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0
    precision = 1.0 * shared / len(predicted)
    recall = 1.0 * shared / len(expected)
    return (2 * precision * recall) / (precision + recall)


def gold_answers(texts: list[str], version: str) -> list[str]:
    if version == "2.0":
        kept = [t for t in texts if normalize_answer(t)]
        return kept or [""]
    return list(texts) or [""]  # v1.1 has no unanswerable questions; "" keeps the maximum defined


def squad_scores(predictions: list[str], golds: list[list[str]], version: str = "1.1") -> dict[str, float]:
    """EM and F1 on 0-100 (keys ``exact_match``, ``f1``); v2.0 adds HasAns_*/NoAns_* figures.

    ``predictions[i]`` answers the question whose gold texts are ``golds[i]``, in file order.
    """
    if version not in ("1.1", "2.0"):
        raise ValueError(f"version must be '1.1' or '2.0', got {version!r}")
    total = len(predictions)
    if total == 0:
        return {"exact_match": 0.0, "f1": 0.0}
    ems, f1s, answerable = [], [], []
    for prediction, texts in zip(predictions, golds):
        gold = gold_answers(texts, version)
        ems.append(max(exact_match(prediction, g) for g in gold))
        f1s.append(max(f1(prediction, g, version) for g in gold))
        answerable.append(bool(texts))  # as the v2.0 script: has gold answers, normalised or not
    scores = {"exact_match": _percent(ems), "f1": _percent(f1s)}
    if version == "2.0":
        for name, flag in (("HasAns", True), ("NoAns", False)):
            chosen = [i for i, a in enumerate(answerable) if a is flag]
            if chosen:  # the script reports a group only when it has questions
                scores[f"{name}_exact"] = _percent([ems[i] for i in chosen])
                scores[f"{name}_f1"] = _percent([f1s[i] for i in chosen])
                scores[f"{name}_total"] = float(len(chosen))
    return scores


def _percent(values: list) -> float:
    total = 0  # summed one by one in order, as the official scripts do: float sums depend on order
    for value in values:
        total += value
    return 100.0 * total / len(values)
