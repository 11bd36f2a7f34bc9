"""The classification task's metrics as an ``evaluate`` module, loaded offline from the installed package:

    import evaluate, sft_core
    metric = evaluate.load(sft_core.metric_module("classification"))                 # labels
    metric.compute(predictions=["pos", "neg"], references=["pos", "pos"])          # accuracy, f1, matthews_correlation
    evaluate.load(sft_core.metric_module("classification"), "regression")          # pearson, spearman, mse
    evaluate.load(sft_core.metric_module("classification"), "multi_label")         # a list of labels per example:
    # micro_f1, macro_f1, micro_precision, micro_recall, subset_accuracy, hamming_loss

The labels are ordered as the task orders them (numerically when all are integers, else
alphabetically; give ``labels=[...]`` to set it): binary F1 is that of the second label, as sft reports it.
"""

import datasets
import evaluate

from sft_classification.metrics import classification_metrics, multi_label_metrics, regression_metrics


class SftClassificationMetric(evaluate.Metric):
    def _info(self):
        value = datasets.Value("float64" if self.config_name == "regression" else "string")
        if self.config_name == "multi_label":
            value = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description="sft's classification metrics: accuracy, F1 (binary: of the second label, else macro) and "
                        "Matthews correlation; with config 'regression' Pearson, Spearman and MSE; with "
                        "'multi_label' micro and macro F1, subset accuracy and Hamming loss.",
            citation="", inputs_description="predictions and references: one label (or value) per example",
            features=datasets.Features({"predictions": value, "references": value}))

    def _compute(self, predictions, references, labels=None):
        if self.config_name == "regression":
            return regression_metrics([float(p) for p in predictions], [float(r) for r in references])
        if self.config_name == "multi_label":
            names = sorted({str(x) for row in [*references, *predictions] for x in row}) if labels is None else labels
            index = {str(label): i for i, label in enumerate(names)}
            return multi_label_metrics([[index[str(x)] for x in row] for row in predictions],
                                       [[index[str(x)] for x in row] for row in references], len(names))
        keys = {str(x) for x in [*references, *predictions]}
        if labels is None:
            numeric = all(k.lstrip("-").isdigit() for k in keys)
            labels = sorted(keys, key=int) if numeric else sorted(keys)
        index = {str(label): i for i, label in enumerate(labels)}
        return classification_metrics([index[str(p)] for p in predictions], [index[str(r)] for r in references],
                                      max(2, len(labels)))
