"""Corpus BLEU and chrF with sacrebleu's defaults, on detokenized text, with the signature."""

from __future__ import annotations


def translation_metrics(hypotheses: list[str], references: list[str]) -> dict:
    """``bleu``, ``chrf`` (0-100), the BLEU signature, and the hypothesis and reference lengths in
    sacrebleu's tokens (the lengths BLEU's brevity penalty compares; ``len_ratio`` is their ratio)."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu_metric, chrf_metric = BLEU(), CHRF()
    bleu = bleu_metric.corpus_score(hypotheses, [references])
    chrf = chrf_metric.corpus_score(hypotheses, [references])
    return {
        "bleu": bleu.score,
        "chrf": chrf.score,
        "bleu_signature": str(bleu_metric.get_signature()),
        "gen_len": bleu.sys_len,
        "ref_len": bleu.ref_len,
        "len_ratio": bleu.sys_len / bleu.ref_len if bleu.ref_len else 0.0,
    }
