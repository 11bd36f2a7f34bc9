"""The QA task's metric as an ``evaluate`` module, loaded offline from the installed package:

    import evaluate, sft_core
    metric = evaluate.load(sft_core.metric_module("qa"))              # SQuAD v1.1; "2.0" for v2.0
    metric.compute(predictions=["Denver Broncos"], references=[["Denver Broncos", "The Broncos"]])

The official SQuAD exact match and F1 (0-100), as sft scores them; an empty list of references is an
unanswerable question (v2.0).
"""

import datasets
import evaluate

from sft_qa.metrics import squad_scores


class SftQaMetric(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="sft's QA metric: the official SQuAD v1.1 / v2.0 exact match and F1.",
            citation="", inputs_description="predictions: one answer text per question; references: its gold answers",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}))

    def _compute(self, predictions, references):
        version = "2.0" if self.config_name == "2.0" else "1.1"
        return squad_scores(list(predictions), [list(r) for r in references], version=version)
