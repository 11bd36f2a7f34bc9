"""Classification and regression metrics, computed directly (no hub downloads)."""

from __future__ import annotations

import numpy as np


def classification_metrics(pred: list[int], gold: list[int], num_labels: int) -> dict[str, float]:
    p, g = np.asarray(pred), np.asarray(gold)
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (g, p), 1)
    tp = np.diag(confusion).astype(float)
    predicted, actual = confusion.sum(0).astype(float), confusion.sum(1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1_per_class = np.where(predicted + actual > 0, 2 * tp / (predicted + actual), 0.0)
    # binary: F1 of the positive class (label id 1), as GLUE reports it; otherwise macro average
    f1 = float(f1_per_class[1]) if num_labels == 2 else float(f1_per_class.mean())
    return {"accuracy": float((p == g).mean()) if len(g) else 0.0, "f1": f1,
            "matthews_correlation": matthews(confusion)}


def matthews(confusion: np.ndarray) -> float:
    """Matthews correlation coefficient for any number of classes (Gorodkin's R_K)."""
    c = confusion.astype(float)
    n = c.sum()
    correct = np.trace(c)
    t, p = c.sum(1), c.sum(0)
    cov_ytyp = correct * n - t @ p
    cov_ypyp = n * n - p @ p
    cov_ytyt = n * n - t @ t
    denominator = np.sqrt(cov_ytyt * cov_ypyp)
    return float(cov_ytyp / denominator) if denominator else 0.0


def regression_metrics(pred: list[float], gold: list[float]) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    p, g = np.asarray(pred, dtype=float), np.asarray(gold, dtype=float)
    constant = len(p) < 2 or np.ptp(p) == 0 or np.ptp(g) == 0
    return {
        "pearson": 0.0 if constant else float(pearsonr(p, g)[0]),
        "spearman": 0.0 if constant else float(spearmanr(p, g)[0]),
        "mse": float(((p - g) ** 2).mean()) if len(p) else 0.0,
    }


def multi_label_metrics(pred: list[list[int]], gold: list[list[int]], num_labels: int) -> dict[str, float]:
    """Multi-label scores from the label ids predicted and gold for each example.

    Micro scores pool every (example, label) decision; macro F1 averages the labels' F1 over the
    labels that occur in the gold annotation or the predictions (a label that is never gold and
    never predicted has no F1 and is left out, rather than counted as 0 or 1); subset accuracy
    counts examples whose predicted set is exactly the gold set; Hamming loss is the share of wrong
    (example, label) decisions, lower is better.
    """
    p = np.zeros((len(pred), num_labels), dtype=bool)
    g = np.zeros((len(gold), num_labels), dtype=bool)
    for row, ids in enumerate(pred):
        p[row, list(ids)] = True
    for row, ids in enumerate(gold):
        g[row, list(ids)] = True
    tp, fp, fn = (p & g).sum(0), (p & ~g).sum(0), (~p & g).sum(0)
    denominator = 2 * tp + fp + fn
    micro = 2 * tp.sum() / denominator.sum() if denominator.sum() else 1.0
    occurring = denominator > 0
    macro = float((2 * tp[occurring] / denominator[occurring]).mean()) if occurring.any() else 1.0
    predicted, actual = tp.sum() + fp.sum(), tp.sum() + fn.sum()
    return {
        "micro_f1": float(micro), "macro_f1": macro,
        "micro_precision": float(tp.sum() / predicted) if predicted else 0.0,
        "micro_recall": float(tp.sum() / actual) if actual else 0.0,
        "subset_accuracy": float((p == g).all(1).mean()) if len(g) else 0.0,
        "hamming_loss": float((p != g).mean()) if p.size else 0.0,
    }
