"""The classification task: sentences or sentence pairs to one label, or to a real value."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from sft_core.collate import pad_inputs
from sft_core.errors import DataError

from .first_token import first_token_last_layer
from .metrics import classification_metrics, regression_metrics
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
    #: contract 1.1: which way each metric is better (regression reports mse: lower)
    metric_directions = {"accuracy": "higher", "f1": "higher", "matthews_correlation": "higher",
                         "pearson": "higher", "spearman": "higher", "mse": "lower"}

    def __init__(self, config):
        self.config = config
        self.labels: list[str] = []  # id -> label; empty for regression
        self.regression = config.options.problem_type == "regression"
        self.tokenizer = None
        self.first_token_layer = False  # whether the model's last layer computes the first token only

    # --- data ---------------------------------------------------------------------------------
    def load(self, split: str, path: str | None) -> list[dict]:
        if path is None:
            path = SAMPLE / ("train.jsonl" if split == "train" else "eval.jsonl")
        limit = {"train": self.config.data.max_train_samples, "eval": self.config.data.max_eval_samples}.get(split)
        examples = read_examples(path, self.config.data, need_labels=split != "predict", limit=limit, split=split)
        if self.labels and split != "predict":
            known = set(self.labels)
            for example in examples:
                if _label_key(example["label"]) not in known:
                    raise DataError(f"{path} line {example['line']}: label {example['label']!r} never seen in "
                                    f"training (known labels: {', '.join(self.labels)})")
        return examples

    def setup(self, train_examples: list[dict]) -> None:
        raw = [e["label"] for e in train_examples]
        if self.config.options.problem_type == "auto":
            self.regression = _is_real_valued(raw)
        if self.regression:
            for example in train_examples:
                _as_float(example)
            self.labels = []
            return
        keys = {_label_key(label) for label in raw}
        numeric = all(k.lstrip("-").isdigit() for k in keys)
        self.labels = sorted(keys, key=int) if numeric else sorted(keys)
        if len(self.labels) < 2:
            raise DataError(f"the training data has a single label ({', '.join(self.labels)}); "
                            "classification needs at least two")

    def state_dict(self) -> dict:
        return {"labels": self.labels, "regression": self.regression}

    def load_state_dict(self, state: dict) -> None:
        self.labels = list(state.get("labels", []))
        self.regression = bool(state.get("regression", False))

    @property
    def main_metric(self) -> str:
        return "pearson" if self.regression else "accuracy"

    # --- model --------------------------------------------------------------------------------
    def load_tokenizer(self, name_or_path: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        return self.tokenizer

    def build_model(self, name_or_path: str):
        from transformers import AutoModelForSequenceClassification

        from sft_core.backbone import with_head

        if self.regression:
            kwargs = {"num_labels": 1, "problem_type": "regression"}
        else:
            kwargs = {"num_labels": len(self.labels), "problem_type": "single_label_classification",
                      "id2label": dict(enumerate(self.labels)), "label2id": {label: i for i, label in enumerate(self.labels)}}
        model = with_head(AutoModelForSequenceClassification, name_or_path, "sequence classification", **kwargs)
        # decoder-only models pool the last non-pad token, so only BERT-style heads take the shortcut
        self.first_token_layer = bool(self.config.options.first_token_last_layer) and first_token_last_layer(model)
        return model

    # --- features and batches -----------------------------------------------------------------
    def preprocess(self, examples: dict[str, list]) -> dict[str, list]:
        pairs = examples["text_pair"] if any(p is not None for p in examples["text_pair"]) else None
        encoded = self.tokenizer(examples["text"], pairs, truncation=True, max_length=self.config.trainer.max_length)
        out = {key: encoded[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded}
        out["example_id"] = examples["example_id"]
        if all(label is not None for label in examples["label"]):
            if self.regression:
                out["labels"] = [float(label) for label in examples["label"]]
            else:
                index = {label: i for i, label in enumerate(self.labels)}
                out["labels"] = [index[_label_key(label)] for label in examples["label"]]
        return out

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_inputs(features, self.tokenizer.pad_token_id)
        if features[0].get("labels") is not None:
            dtype = torch.float if self.regression else torch.long
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=dtype)
        return batch

    # --- evaluation ---------------------------------------------------------------------------
    def predict_step(self, model, batch) -> dict[str, torch.Tensor]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits.float()
        if self.regression:
            return {"value": logits.squeeze(-1)}
        score, pred = logits.softmax(-1).max(-1)
        return {"pred": pred, "score": score}

    def postprocess(self, outputs: list[dict], features, examples: list[dict]) -> list[dict]:
        predictions: list = [None] * len(examples)
        for example_id, output in zip(features["example_id"], outputs):
            if self.regression:
                predictions[example_id] = {"label": output["value"], "score": None}
            else:
                predictions[example_id] = {"label": self.labels[output["pred"]], "score": output["score"]}
        return predictions

    def compute_metrics(self, predictions: list[dict], examples: list[dict]) -> dict[str, float]:
        if self.regression:
            return regression_metrics([p["label"] for p in predictions], [float(e["label"]) for e in examples])
        index = {label: i for i, label in enumerate(self.labels)}
        return classification_metrics([index[p["label"]] for p in predictions],
                                      [index[_label_key(e["label"])] for e in examples], len(self.labels))

    def gold_predictions(self, examples: list[dict]) -> list[dict]:
        """Each example's gold label as a prediction (what a perfect model predicts)."""
        if self.regression:
            return [{"label": float(e["label"]), "score": None} for e in examples]
        return [{"label": _label_key(e["label"]), "score": 1.0} for e in examples]

    def write_predictions(self, path: Path, predictions: list[dict], examples: list[dict]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for prediction, example in zip(predictions, examples):
                record = {"text": example["text"], **({"text_pair": example["text_pair"]} if example["text_pair"] else {}),
                          "label": example["label"], "prediction": prediction["label"], "score": prediction["score"]}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    # --- the data as instructions (contract 1.1; the instruct task's data.source_task) ----------
    instruction_prompt = "Classify this text.\n\n{text}"

    def instruction_fields(self, example: dict) -> dict[str, str]:
        return {"text": example["text"], "text_pair": example.get("text_pair") or ""}

    def instruction_answer(self, example: dict) -> str:
        if self.regression:
            return f"{float(example['label']):.2f}".rstrip("0").rstrip(".")
        return _label_key(example["label"])

    def instruction_prediction(self, text: str, example: dict) -> dict:
        """The label a generated answer names: the whole answer, else the label name that comes first in it;
        an answer naming no label counts as wrong (a regression answer without a number: 0)."""
        if self.regression:
            import re

            found = re.search(r"-?\d+(?:\.\d+)?", text)
            return {"label": float(found.group()) if found else 0.0, "score": None}
        answer = text.strip().lower()
        by_name = {label.lower(): label for label in self.labels}
        found = [(answer.find(name), -len(name), by_name[name]) for name in by_name if name in answer]
        label = by_name.get(answer) or (min(found)[2] if found else None)
        if label is None:
            gold = _label_key(example["label"]) if example.get("label") is not None else None
            label = next((name for name in self.labels if name != gold), self.labels[0])
        return {"label": label, "score": None}

    def read_inputs(self, texts: list[str]) -> list[dict]:
        examples = []
        for text in texts:
            first, _, second = text.partition("\t")
            examples.append({"text": first, "text_pair": second or None, "label": None, "line": 0})
        return examples

    def format_prediction(self, prediction: dict, example: dict) -> dict:
        record = {"text": example["text"]}
        if example["text_pair"]:
            record["text_pair"] = example["text_pair"]
        record["label"] = prediction["label"]
        if prediction["score"] is not None:
            record["score"] = round(prediction["score"], 6)
        return record


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
