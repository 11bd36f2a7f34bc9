"""The classification task's metrics as an ``evaluate`` module, loaded offline from the installed package:

    import evaluate, sft_core
    metric = evaluate.load(sft_core.metric_module("classification"))                 # labels
    metric.compute(predictions=["pos", "neg"], references=["pos", "pos"])          # accuracy, f1, matthews_correlation
    evaluate.load(sft_core.metric_module("classification"), "regression")          # pearson, spearman, mse

The labels are ordered as the task orders them (numerically when all are integers, else
alphabetically; give ``labels=[...]`` to set it): binary F1 is that of the second label, as sft reports it.
"""

import datasets
import evaluate

from sft_classification.metrics import classification_metrics, regression_metrics


class SftClassificationMetric(evaluate.Metric):
    def _info(self):
        value = datasets.Value("float64" if self.config_name == "regression" else "string")
        return evaluate.MetricInfo(
            description="sft's classification metrics: accuracy, F1 (binary: of the second label, else macro) and "
                        "Matthews correlation; with config 'regression' Pearson, Spearman and MSE.",
            citation="", inputs_description="predictions and references: one label (or value) per example",
            features=datasets.Features({"predictions": value, "references": value}))

    def _compute(self, predictions, references, labels=None):
        if self.config_name == "regression":
            return regression_metrics([float(p) for p in predictions], [float(r) for r in references])
        keys = {str(x) for x in [*references, *predictions]}
        if labels is None:
            numeric = all(k.lstrip("-").isdigit() for k in keys)
            labels = sorted(keys, key=int) if numeric else sorted(keys)
        index = {str(label): i for i, label in enumerate(labels)}
        return classification_metrics([index[str(p)] for p in predictions], [index[str(r)] for r in references],
                                      max(2, len(labels)))
