"""The classification task's data as instructions for a causal LM (the ``instruct`` task's
``data.source_task: classification``): the prompt, the answer the model should write, and a generated answer
turned back into a prediction that the task's own metric scores. Registered through the instruct
plugin's hook ``sft_instruction_adapters``."""

from __future__ import annotations

from .task import _label_key


class InstructionAdapter:
    """Wraps one classification task object (its labels, its options)."""

    def __init__(self, task):
        self.task = task

    prompt = "Classify this text.\n\n{text}"

    def fields(self, example: dict) -> dict[str, str]:
        return {"text": example["text"], "text_pair": example.get("text_pair") or ""}

    def answer(self, example: dict) -> str:
        if self.task.regression:
            return f"{float(example['label']):.2f}".rstrip("0").rstrip(".")
        if self.task.multi_label:
            return ", ".join(k for k in self.task.labels if k in self.task._keys(example["label"])) or "none"
        return _label_key(example["label"])

    def prediction(self, text: str, example: dict) -> dict:
        """The label a generated answer names: the whole answer, else the label name that comes first in it;
        an answer naming no label counts as wrong (a regression answer without a number: 0)."""
        if self.task.regression:
            import re

            found = re.search(r"-?\d+(?:\.\d+)?", text)
            return {"label": float(found.group()) if found else 0.0, "score": None}
        if self.task.multi_label:  # every label the answer names
            named = {part.strip().lower() for part in text.split(",")}
            chosen = [label for label in self.task.labels if label.lower() in named]
            return {"label": chosen, "scores": {label: float(label in chosen) for label in self.task.labels}}
        answer = text.strip().lower()
        by_name = {label.lower(): label for label in self.task.labels}
        found = [(answer.find(name), -len(name), by_name[name]) for name in by_name if name in answer]
        label = by_name.get(answer) or (min(found)[2] if found else None)
        if label is None:
            gold = _label_key(example["label"]) if example.get("label") is not None else None
            label = next((name for name in self.task.labels if name != gold), self.task.labels[0])
        return {"label": label, "score": None}
