"""The NER task's metric as an ``evaluate`` module, loaded offline from the installed package:

    import evaluate, sft_core
    metric = evaluate.load(sft_core.metric_module("ner"))
    metric.compute(predictions=[["B-PER", "O"]], references=[["B-PER", "O"]])   # seqeval strict IOB2, as sft scores

Tags are IOB2 per word, one list per sentence.
"""

import datasets
import evaluate

from sft_ner.metrics import ner_metrics


class SftNerMetric(evaluate.Metric):
    def _info(self):
        tags = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description="sft's NER metric: seqeval entity precision, recall and F1 (strict IOB2), per-type F1, "
                        "token accuracy.",
            citation="", inputs_description="predictions and references: the IOB2 tags of each sentence's words",
            features=datasets.Features({"predictions": tags, "references": tags}))

    def _compute(self, predictions, references):
        return ner_metrics([list(r) for r in references], [list(p) for p in predictions])
