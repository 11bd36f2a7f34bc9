"""The classification task: sentences, sentence pairs or documents to one label, to a set of labels
(multi-label), or to a real value."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from sft_core.kit import pad_inputs
from sft_core.errors import ConfigError, DataError

from .first_token import first_token_last_layer
from .long_text import encode
from .metrics import classification_metrics, multi_label_metrics, regression_metrics
from .reader import read_examples

SAMPLE = Path(__file__).parent / "sample_data"


def _label_key(label) -> str:
    """The class name of a label: 5, 5.0 and "5.0" are all class "5", whatever the file format."""
    text = str(label).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


class ClassificationTask:
    predictions_file = "predictions.jsonl"
    #: contract 1.1: which way each metric is better (regression's mse and multi-label's Hamming
    #: loss: lower)
    metric_directions = {"accuracy": "higher", "f1": "higher", "matthews_correlation": "higher",
                         "pearson": "higher", "spearman": "higher", "mse": "lower",
                         "micro_f1": "higher", "macro_f1": "higher", "micro_precision": "higher",
                         "micro_recall": "higher", "subset_accuracy": "higher", "hamming_loss": "lower"}

    def __init__(self, config):
        self.config = config
        self.options = config.options
        self.labels: list[str] = []  # id -> label; empty for regression
        # single_label, multi_label or regression; decided by setup() when problem_type is auto
        self.problem = None if config.options.problem_type == "auto" else config.options.problem_type
        self.class_weights: list[float] | None = None
        self.tokenizer = None
        self.first_token_layer = False  # whether the model's last layer computes the first token only
        self.report: dict = {}  # truncation counts per split, class weights: written to run_info.json
        # contract 1.1: with windows nothing is truncated (sft serve then flags no input as too long)
        self.long_inputs = "windows" if config.options.long_text == "windows" else "truncate"

    @property
    def regression(self) -> bool:
        return self.problem == "regression"

    @property
    def multi_label(self) -> bool:
        return self.problem == "multi_label"

    # --- data ---------------------------------------------------------------------------------
    def load(self, split: str, path: str | None) -> list[dict]:
        if path is None:  # the built-in sample: sentiment, or topics for multi-label
            prefix = "multilabel_" if self.config.options.problem_type == "multi_label" else ""
            path = SAMPLE / f"{prefix}{'train' if split == 'train' else 'eval'}.jsonl"
        limit = {"train": self.config.data.max_train_samples, "eval": self.config.data.max_eval_samples}.get(split)
        examples = read_examples(path, self.config.data, need_labels=split != "predict", limit=limit, split=split)
        if self.labels and split != "predict":
            known = set(self.labels)
            for example in examples:
                unknown = [k for k in self._keys(example["label"]) if k not in known]
                if unknown:
                    where = example.get("file") or f"{path} line {example['line']}"
                    raise DataError(f"{where}: label {unknown[0]!r} never seen in training "
                                    f"(known labels: {', '.join(self.labels)})")
        return examples

    def _keys(self, label) -> list[str]:
        """The class names a label names: one, or a multi-label example's list."""
        if isinstance(label, list):
            return [_label_key(x) for x in label]
        if self.multi_label:
            raise DataError(f"label {label!r}: multi-label classification takes a list of labels per example "
                            "(a JSON list, or a text column split by data.label_delimiter)")
        return [_label_key(label)]

    def setup(self, train_examples: list[dict]) -> None:
        raw = [e["label"] for e in train_examples]
        if self.problem is None:
            if any(isinstance(label, list) for label in raw) or self.config.data.label_delimiter is not None:
                self.problem = "multi_label"
            else:
                self.problem = "regression" if _is_real_valued(raw) else "single_label"
        if self.regression:
            for example in train_examples:
                _as_float(example)
            self.labels = []
            return
        keys = {k for label in raw for k in self._keys(label)}
        numeric = all(k.lstrip("-").isdigit() for k in keys)
        self.labels = sorted(keys, key=int) if numeric else sorted(keys)
        source = f" ({self.config.data.train})" if self.config.data.train else ""
        if self.multi_label and not self.labels:
            raise DataError(f"the training data{source} names no label at all; multi-label classification "
                            "needs at least one")
        if not self.multi_label and len(self.labels) < 2:
            raise DataError(f"the training data{source} holds a single class ({', '.join(self.labels)}); "
                            "classification needs at least two (a file sorted by label keeps its order: "
                            "data.max_train_samples takes its first rows)")
        self._set_class_weights(self._class_weights(raw))
        if self.class_weights is not None:
            self.report["class_weights"] = {label: round(w, 6) for label, w in zip(self.labels, self.class_weights)}

    def _class_weights(self, raw: list) -> list[float] | None:
        wanted = self.options.class_weights
        if wanted is None:
            return None
        if self.problem != "single_label":
            raise ConfigError(f"classification.class_weights applies to single-label classification, "
                              f"not to {self.problem.replace('_', '-')}")
        if wanted == "balanced":
            counts = Counter(_label_key(label) for label in raw)
            return [len(raw) / (len(self.labels) * counts[label]) for label in self.labels]
        if len(wanted) != len(self.labels):
            raise ConfigError(f"classification.class_weights has {len(wanted)} weights for {len(self.labels)} labels "
                              f"({', '.join(self.labels)}, in this order)")
        return [float(w) for w in wanted]

    def _set_class_weights(self, weights: list[float] | None) -> None:
        """Weights on: the engine's step calls ``compute_loss`` (contract: a task's own loss), which
        exists only then, so an unweighted run keeps the model's own loss untouched."""
        self.class_weights = weights
        if weights is not None:
            self.compute_loss = self._weighted_loss
        else:
            self.__dict__.pop("compute_loss", None)

    def state_dict(self) -> dict:
        return {"labels": self.labels, "regression": self.regression, "problem": self.problem,
                "class_weights": self.class_weights}

    def load_state_dict(self, state: dict) -> None:
        self.labels = list(state.get("labels", []))
        self.problem = state.get("problem") or ("regression" if state.get("regression") else "single_label")
        self._set_class_weights(state.get("class_weights"))

    @property
    def main_metric(self) -> str:
        return {"regression": "pearson", "multi_label": "micro_f1"}.get(self.problem, "accuracy")

    # --- model --------------------------------------------------------------------------------
    def load_tokenizer(self, name_or_path: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        return self.tokenizer

    def build_model(self, name_or_path: str):
        from transformers import AutoModelForSequenceClassification

        from sft_core.kit import with_head

        if self.regression:
            kwargs = {"num_labels": 1, "problem_type": "regression"}
        else:
            kind = "multi_label_classification" if self.multi_label else "single_label_classification"
            kwargs = {"num_labels": len(self.labels), "problem_type": kind,
                      "id2label": dict(enumerate(self.labels)), "label2id": {label: i for i, label in enumerate(self.labels)}}
        model = with_head(AutoModelForSequenceClassification, name_or_path, "sequence classification", **kwargs)
        # decoder-only models pool the last non-pad token, so only BERT-style heads take the shortcut
        self.first_token_layer = bool(self.config.options.first_token_last_layer) and first_token_last_layer(model)
        return model

    # --- features and batches -----------------------------------------------------------------
    def preprocess(self, examples: dict[str, list]) -> dict[str, list]:
        pairs = examples["text_pair"] if any(p is not None for p in examples["text_pair"]) else None
        columns, text_of, over = encode(self.tokenizer, examples["text"], pairs, self.config.trainer.max_length,
                                        self.options)
        out = dict(columns)
        out["example_id"] = [examples["example_id"][i] for i in text_of]
        out["over_length"] = [over[i] for i in text_of]  # the text exceeded max_length (counted in finish_features)
        if all(label is not None for label in examples["label"]):
            index = {name: i for i, name in enumerate(self.labels)}  # once per batch, not per example
            targets = [self._target(label, index) for label in examples["label"]]
            out["labels"] = [targets[i] for i in text_of]
        return out

    def _target(self, label, index: dict[str, int]):
        if self.regression:
            return float(label)
        if self.multi_label:
            hot = [0.0] * len(self.labels)
            for key in self._keys(label):
                hot[index[key]] = 1.0
            return hot
        return index[_label_key(label)]

    def finish_features(self, features, split: str):
        """Count the texts longer than trainer.max_length (contract 1.1): never truncated silently."""
        if split == "predict" or "over_length" not in features.column_names:
            return features
        ids, flags = features["example_id"], features["over_length"]
        texts = len(set(ids))
        over = len({i for i, flag in zip(ids, flags) if flag})
        mode = self.options.long_text
        report = {"examples": texts, "over_max_length": over, "share": round(over / texts, 4) if texts else 0.0,
                  "max_length": self.config.trainer.max_length, "long_text": mode}
        if mode == "windows":
            report["windows"] = len(ids)
        self.report[split] = report
        if over:
            done = {"truncate": "the end of each is cut off", "head_tail": "the middle of each is cut out",
                    "windows": f"read in {len(ids):,} windows"}[mode]
            what = {"train": "training", "eval": "evaluation"}.get(split, split)
            print(f"note: {over:,} of {texts:,} {what} texts ({over / texts:.1%}) are longer than trainer.max_length="
                  f"{self.config.trainer.max_length} sub-words: {done} (classification.long_text={mode})", file=sys.stderr)
        return features

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_inputs(features, self.tokenizer.pad_token_id)
        if features[0].get("labels") is not None:
            dtype = torch.long if self.problem == "single_label" else torch.float
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=dtype)
        return batch

    def _weighted_loss(self, model, batch) -> torch.Tensor:
        """Cross entropy weighted by classification.class_weights (the task's ``compute_loss`` then)."""
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        weight = torch.tensor(self.class_weights, dtype=logits.dtype, device=logits.device)
        return torch.nn.functional.cross_entropy(logits, batch["labels"], weight=weight)

    # --- evaluation ---------------------------------------------------------------------------
    def predict_step(self, model, batch) -> dict[str, torch.Tensor]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits.float()
        if self.regression:
            return {"value": logits.squeeze(-1)}
        return {"logits": logits}  # pooled per text (windows) in postprocess

    def postprocess(self, outputs: list[dict], features, examples: list[dict]) -> list[dict]:
        grouped: dict[int, list] = {}
        key = "value" if self.regression else "logits"
        for example_id, output in zip(features["example_id"], outputs):
            grouped.setdefault(example_id, []).append(output[key])
        pool = np.max if self.options.pool == "max" else np.mean
        predictions: list = [None] * len(examples)
        for example_id, values in grouped.items():
            pooled = pool(np.asarray(values, dtype=np.float64), axis=0)
            predictions[example_id] = self._prediction(pooled)
        return predictions

    def _prediction(self, pooled: np.ndarray) -> dict:
        if self.regression:
            return {"label": float(pooled), "score": None}
        if self.multi_label:
            probs = 1.0 / (1.0 + np.exp(-pooled))
            order = [j for j in np.argsort(-probs, kind="stable") if probs[j] >= self.options.threshold]
            return {"label": [self.labels[j] for j in order],
                    "scores": {label: float(p) for label, p in zip(self.labels, probs)}}
        probs = np.exp(pooled - pooled.max())
        probs /= probs.sum()
        best = int(probs.argmax())
        return {"label": self.labels[best], "score": float(probs[best])}

    def compute_metrics(self, predictions: list[dict], examples: list[dict]) -> dict[str, float]:
        if self.regression:
            return regression_metrics([p["label"] for p in predictions], [float(e["label"]) for e in examples])
        index = {label: i for i, label in enumerate(self.labels)}
        if self.multi_label:
            return multi_label_metrics([[index[k] for k in p["label"]] for p in predictions],
                                       [[index[k] for k in self._keys(e["label"])] for e in examples], len(self.labels))
        return classification_metrics([index[p["label"]] for p in predictions],
                                      [index[_label_key(e["label"])] for e in examples], len(self.labels))

    def gold_predictions(self, examples: list[dict]) -> list[dict]:
        """Each example's gold label as a prediction (what a perfect model predicts)."""
        if self.regression:
            return [{"label": float(e["label"]), "score": None} for e in examples]
        if self.multi_label:
            out = []
            for e in examples:
                gold = self._keys(e["label"])
                out.append({"label": [k for k in self.labels if k in gold],
                            "scores": {k: 1.0 if k in gold else 0.0 for k in self.labels}})
            return out
        return [{"label": _label_key(e["label"]), "score": 1.0} for e in examples]

    def write_predictions(self, path: Path, predictions: list[dict], examples: list[dict]) -> None:
        """One record per example: its text, its gold ``label`` and the ``prediction`` (the key
        ``sft predict`` gives it too), with the score (multi-label: every label's probability)."""
        with open(path, "w", encoding="utf-8") as f:
            for prediction, example in zip(predictions, examples):
                record = {"text": example["text"]}
                if example["text_pair"]:
                    record["text_pair"] = example["text_pair"]
                if example.get("file"):
                    record["file"] = example["file"]
                record["label"] = example["label"]
                record.update(self._scored(prediction, every_score=True))
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _scored(self, prediction: dict, every_score: bool = False) -> dict:
        if self.multi_label:
            scores = prediction["scores"] if every_score else {k: prediction["scores"][k] for k in prediction["label"]}
            return {"prediction": prediction["label"], "scores": {k: round(v, 6) for k, v in scores.items()}}
        record = {"prediction": prediction["label"]}
        if prediction["score"] is not None:
            record["score"] = round(prediction["score"], 6)
        return record

    def read_inputs(self, texts: list[str]) -> list[dict]:
        examples = []
        for text in texts:
            first, _, second = text.partition("\t")
            examples.append({"text": first, "text_pair": second or None, "label": None, "line": 0})
        return examples

    def format_prediction(self, prediction: dict, example: dict) -> dict:
        """The input, the ``prediction`` (multi-label: the labels at or above the threshold, most
        likely first) and its score (multi-label: those labels' probabilities)."""
        record = {"text": example["text"]}
        if example["text_pair"]:
            record["text_pair"] = example["text_pair"]
        return {**record, **self._scored(prediction)}


def _is_real_valued(labels) -> bool:
    values = []
    for label in labels:
        try:
            values.append(float(label))
        except (TypeError, ValueError):
            return False
    return any(not math.isclose(v, round(v)) for v in values)


def _as_float(example: dict) -> None:
    try:
        example["label"] = float(example["label"])
    except (TypeError, ValueError):
        raise DataError(f"line {example['line']}: label {example['label']!r} is not a number (regression)") from None
