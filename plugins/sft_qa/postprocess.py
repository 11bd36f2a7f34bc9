"""From the per-window top-k start/end logits to one answer per question (pure Python, no torch).

Every window (feature) of a question contributes its ``n_best`` start and end candidates; a pair
is a span when both tokens lie in the context, the end does not come before the start and the span
is at most ``max_answer_length`` tokens long. Spans are scored by start logit + end logit and
mapped back to characters of the original context through the offsets kept in the features, so
the answer is a slice of the context as written (case, accents and spacing preserved). The same
span seen by two overlapping windows is kept once, with its best score.

SQuAD 2.0: the null answer scores start + end logit of the CLS token, taking the lowest over the
windows (the window most confident that an answer exists); the question gets "" when the null score
exceeds the best span's by more than ``null_score_diff_threshold``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Window:
    """One feature's reduced outputs and its token -> character offsets (-1: not a context token)."""

    start_index: list[int]
    start_logit: list[float]
    end_index: list[int]
    end_logit: list[float]
    null_score: float
    offset_start: list[int]
    offset_end: list[int]


def _spans(window: Window, max_answer_length: int):
    starts, ends = window.offset_start, window.offset_end
    n = len(starts)
    for s, s_logit in zip(window.start_index, window.start_logit):
        if s >= n or starts[s] < 0:
            continue
        for e, e_logit in zip(window.end_index, window.end_logit):
            if e >= n or ends[e] < 0 or e < s or e - s + 1 > max_answer_length:
                continue
            yield starts[s], ends[e], s_logit, e_logit


def best_answer(context: str, windows: list[Window], *, n_best: int = 20, max_answer_length: int = 30,
                version_2: bool = False, null_score_diff_threshold: float = 0.0) -> dict:
    """The answer to one question: {"text", "start", "end", "score", "probability", "null_score_diff", "nbest"}.

    ``start``/``end`` are character offsets into ``context`` (end exclusive; None for the null
    answer); ``nbest`` lists up to ``n_best`` candidates, best first, with softmax probabilities.
    """
    spans: dict[tuple[int, int], dict] = {}
    null_score = None
    for window in windows:
        if null_score is None or window.null_score < null_score:
            null_score = window.null_score
        for start, end, s_logit, e_logit in _spans(window, max_answer_length):
            score = s_logit + e_logit
            if (start, end) not in spans or spans[(start, end)]["score"] < score:
                spans[(start, end)] = {"text": context[start:end], "start": start, "end": end, "score": score,
                                       "start_logit": s_logit, "end_logit": e_logit}
    ranked = sorted(spans.values(), key=lambda c: -c["score"])
    best = ranked[0] if ranked else None
    nbest = ranked[:n_best]
    null_diff = None
    if version_2 and null_score is not None:
        null = {"text": "", "start": None, "end": None, "score": null_score, "start_logit": None, "end_logit": None}
        nbest = sorted([*nbest, null], key=lambda c: -c["score"])[:n_best]
        if best is not None:
            null_diff = null_score - best["score"]
        if best is None or null_diff > null_score_diff_threshold:
            best = null
    _add_probabilities(nbest)
    if best is None:
        return {"text": "", "start": None, "end": None, "score": None, "probability": None,
                "null_score_diff": null_diff, "nbest": nbest}
    probability = next((c["probability"] for c in nbest if c["start"] == best["start"] and c["end"] == best["end"]), None)
    return {"text": best["text"], "start": best["start"], "end": best["end"], "score": best["score"],
            "probability": probability, "null_score_diff": null_diff, "nbest": nbest}


def _add_probabilities(candidates: list[dict]) -> None:
    if not candidates:
        return
    top = max(c["score"] for c in candidates)
    weights = [math.exp(c["score"] - top) for c in candidates]
    total = sum(weights)
    for candidate, weight in zip(candidates, weights):
        candidate["probability"] = weight / total
