"""The translation task's metrics as an ``evaluate`` module, loaded offline from the installed package:

    import evaluate, sft_core
    metric = evaluate.load(sft_core.metric_module("translation"))
    metric.compute(predictions=["Ein Hund läuft."], references=["Ein Hund rennt."])   # sacrebleu BLEU, chrF

The same sacrebleu corpus BLEU and chrF (with their signatures) and length figures sft reports.
"""

import datasets
import evaluate

from sft_translation.metrics import translation_metrics


class SftTranslationMetric(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="sft's translation metrics: sacrebleu corpus BLEU and chrF with signatures, lengths.",
            citation="", inputs_description="predictions: one hypothesis per sentence; references: one reference each",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        return translation_metrics(list(predictions), list(references))
