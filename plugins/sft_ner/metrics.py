"""Entity-level scores with seqeval in strict IOB2 mode, and token accuracy over words."""

from __future__ import annotations

import warnings

AVERAGES = ("micro avg", "macro avg", "weighted avg")


def ner_metrics(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """precision, recall, f1 (micro, entity level), accuracy (words) and f1_TYPE per entity type.

    The figures are those of ``seqeval.metrics.classification_report(mode="strict", scheme=IOB2)``:
    an entity counts only when its type and both boundaries match exactly.
    """
    from seqeval.metrics import accuracy_score, classification_report
    from seqeval.scheme import IOB2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns when a set has no entities at all
        report = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    out = {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1-score"],
           "accuracy": accuracy_score(gold, pred) if any(gold) else 0.0}
    for kind in sorted(k for k in report if k not in AVERAGES):
        out[f"f1_{kind}"] = report[kind]["f1-score"]
    return {k: float(v) for k, v in out.items()}
