"""The files ``sft new-task`` writes: a working task plugin (text -> label, JSONL) to edit into one's own.

Placeholders: ``__NAME__`` (task and entry-point name), ``__DIST__`` (distribution), ``__MODULE__``
(import package), ``__CLASS__`` (the task class), ``__CONTRACT__`` (the plugin contract version).
"""

PYPROJECT = '''[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "The __NAME__ task for sft."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["sft-core>=0.1"]

# What makes this a plugin: entry point __NAME__ (the task's name) in group sft, the module that registers it.
[project.entry-points.sft]
__NAME__ = "__MODULE__"

[tool.setuptools]
packages = ["__MODULE__"]

[tool.setuptools.package-data]
__MODULE__ = ["sample_data/*.jsonl"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

README = '''# __DIST__

The `__NAME__` task for [sft](https://pypi.org/project/sft-core/): a text and its label, from JSONL
lines `{"text": "...", "label": "..."}`. Written by `sft new-task __NAME__`; edit `__MODULE__/task.py`
(what the model reads and predicts) and `__MODULE__/options.py` (its `data.*` keys).

```bash
pip install -e .                      # sft finds the task through its entry point
python -m pytest                      # sft's conformance kit and the reader's tests
sft run --task __NAME__               # trains on the built-in sample
sft run --task __NAME__ --train train.jsonl --eval dev.jsonl data.text_field=review --overwrite   # replaces the first run
sft predict --model runs/__NAME__/model "some text"
```
'''

INIT = '''"""The __NAME__ task for sft: the entry-point module.

It declares the plugin contract it is written for and registers the task; it imports no torch
(``sft --help`` and ``sft tasks`` import it), the task module is imported when a run builds it.
"""

from sft_core import hookimpl

from .options import __CLASS__Data

#: The version of the sft plugin contract this plugin is written for.
SFT_CONTRACT = "__CONTRACT__"


def _factory(config):
    from .task import __CLASS__

    return __CLASS__(config)


@hookimpl
def sft_register_tasks(register):
    register("__NAME__", _factory, data_config=__CLASS__Data, summary="A text and its label (JSONL); accuracy.",
             defaults={"trainer": {"max_length": 128}})
'''

OPTIONS = '''"""The task's ``data.*`` keys (a dataclass only: no torch here)."""

from __future__ import annotations

from dataclasses import dataclass

from sft_core import DataConfig


@dataclass
class __CLASS__Data(DataConfig):
    text_field: str = "text"  # the JSONL field holding the text
    label_field: str = "label"  # the JSONL field holding the label
'''

TASK = '''"""The __NAME__ task: one text, one label; a sequence-classification head on any encoder or decoder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sft_core import DataError, SFTError

SAMPLE = Path(__file__).parent / "sample_data"


def read_examples(path, text_field: str, label_field: str, need_labels: bool) -> list[dict]:
    """JSONL lines to examples {"text", "label", "line"}; errors name the file, the line and the field."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {n}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise DataError(f"{path}, line {n}: expected an object with a text field {text_field!r}")
            label = record.get(label_field)
            if need_labels and label is None:
                raise DataError(f"{path}, line {n}: no label field {label_field!r}")
            examples.append({"text": record[text_field], "label": None if label is None else str(label), "line": n})
    return examples


class __CLASS__:
    predictions_file = "predictions.jsonl"
    main_metric = "accuracy"
    metric_directions = {"accuracy": "higher"}  # contract 1.1: which way each metric is better

    def __init__(self, config):
        self.config = config
        self.tokenizer = None
        self.labels: list[str] = []

    # --- data ---------------------------------------------------------------------------------
    def load(self, split: str, path: str | None) -> list[dict]:
        """Examples of ``split``; "predict" (``sft predict --input``) needs no labels."""
        if path is None:
            path = SAMPLE / ("train.jsonl" if split == "train" else "eval.jsonl")
        data = self.config.data
        examples = read_examples(path, data.text_field, data.label_field, need_labels=split != "predict")
        if split == "eval" and self.labels:
            for example in examples:
                if example["label"] not in self.labels:
                    raise DataError(f"{path}, line {example['line']}: label {example['label']!r} is not one of "
                                    f"the training labels {self.labels}")
        return examples

    def setup(self, train_examples: list[dict]) -> None:
        self.labels = sorted({e["label"] for e in train_examples})

    def state_dict(self) -> dict:
        return {"labels": self.labels}

    def load_state_dict(self, state: dict) -> None:
        self.labels = list(state["labels"])

    # --- model --------------------------------------------------------------------------------
    def load_tokenizer(self, name_or_path: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        return self.tokenizer

    def build_model(self, name_or_path: str):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=len(self.labels), id2label=dict(enumerate(self.labels)),
            label2id={label: i for i, label in enumerate(self.labels)})

    # --- features and batches -----------------------------------------------------------------
    def preprocess(self, examples: dict[str, list]) -> dict[str, list]:
        """Columns of examples (with the engine's ``example_id``) to columns of features."""
        out = dict(self.tokenizer(examples["text"], truncation=True, max_length=self.config.trainer.max_length))
        out["example_id"] = examples["example_id"]
        if all(label is not None for label in examples["label"]):
            index = {label: i for i, label in enumerate(self.labels)}
            out["labels"] = [index[label] for label in examples["label"]]
        return out

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features[0]]
        batch = self.tokenizer.pad([{k: f[k] for k in keys} for f in features], return_tensors="pt")
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features])
        return dict(batch)

    # --- evaluation ---------------------------------------------------------------------------
    def predict_step(self, model, batch) -> dict[str, torch.Tensor]:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        score, label = logits.softmax(-1).max(-1)
        return {"label": label, "score": score}

    def postprocess(self, outputs: list[dict], features, examples: list[dict]) -> list[dict]:
        """One output per feature (Python values), features in any order: back to example order."""
        predictions: list = [None] * len(examples)
        for example_id, output in zip(features["example_id"], outputs):
            predictions[example_id] = {"label": self.labels[output["label"]], "score": output["score"]}
        return predictions

    def compute_metrics(self, predictions: list[dict], examples: list[dict]) -> dict[str, float]:
        right = sum(p["label"] == e["label"] for p, e in zip(predictions, examples))
        return {"accuracy": right / len(examples) if examples else 0.0}

    def gold_predictions(self, examples: list[dict]) -> list[dict]:
        return [{"label": e["label"], "score": 1.0} for e in examples]

    def write_predictions(self, path: Path, predictions: list[dict], examples: list[dict]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for prediction, example in zip(predictions, examples):
                f.write(json.dumps({"text": example["text"], "label": example["label"], "prediction": prediction["label"],
                                    "score": prediction["score"]}, ensure_ascii=False) + "\\n")

    # --- sft predict --------------------------------------------------------------------------
    def read_inputs(self, texts: list[str]) -> list[dict]:
        if any(not t.strip() for t in texts):
            raise SFTError("an input text is empty")
        return [{"text": t, "label": None, "line": n} for n, t in enumerate(texts, 1)]

    def format_prediction(self, prediction: dict, example: dict) -> dict:
        return {"text": example["text"], "label": prediction["label"], "score": round(prediction["score"], 6)}
'''

TEST = '''"""The plugin's own tests: sft's conformance kit on the installed task, and the reader's errors."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the kit's tiny model is built in-process
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

from sft_core import DataError
from sft_core.testing import TaskConformance
from __MODULE__.task import read_examples


class Test__CLASS__(TaskConformance):
    case = "__NAME__"


def test_a_line_without_its_text_names_file_line_and_field(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\\n{"review": "no text field", "label": "b"}\\n', encoding="utf-8")
    with pytest.raises(DataError, match="data.jsonl, line 2: expected an object with a text field 'text'"):
        read_examples(path, "text", "label", need_labels=True)
'''

# A constructed sample the kit's tiny model and a real one can learn: the cue word decides the label.
_CUES = {"positive": ["great", "lovely", "superb", "wonderful"], "negative": ["awful", "boring", "dreadful", "poor"]}
_FRAMES = ["the {} film was seen by many", "a {} evening with friends", "what a {} book to read", "the food was {} today",
           "an {} trip to the sea", "the music sounded {} tonight"]


def sample(split: str) -> str:
    """JSONL of the sample split: a third of the (frame, cue) pairs evaluate, the others train."""
    import json

    lines = []
    for i, frame in enumerate(_FRAMES):
        for label, cues in _CUES.items():
            for j, cue in enumerate(cues):
                if ((i + j) % 3 == 0) == (split == "eval"):
                    lines.append(json.dumps({"text": frame.format(cue), "label": label}))
    return "\n".join(lines) + "\n"
