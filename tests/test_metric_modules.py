"""Each built-in task's metrics as an ``evaluate`` module, loaded offline from the installed package,
score a user's predictions exactly as the task's own ``compute_metrics`` does."""

from __future__ import annotations

import random

import pytest

import sft_core
from sft_core.host.manager import PluginHost

evaluate = pytest.importorskip("evaluate")

from helpers import make_config  # noqa: E402


def task_and_examples(name: str):
    host = PluginHost()
    spec = host.get_task(name)
    task = spec.factory(make_config(host, name))
    task.setup(task.load("train", None))
    return task, task.load("eval", None)


def spoil(values: list, others: list, share: float = 0.3) -> list:
    """``values`` with about ``share`` of them replaced by one of ``others`` (seeded)."""
    rng = random.Random(0)
    return [rng.choice(others) if rng.random() < share else v for v in values]


def test_classification(tmp_path):
    task, examples = task_and_examples("classification")
    labels = spoil([str(e["label"]) for e in examples], task.labels)
    expected = task.compute_metrics([{"label": label, "score": 1.0} for label in labels], examples)
    got = evaluate.load(sft_core.metric_module("classification")).compute(
        predictions=labels, references=[str(e["label"]) for e in examples])
    assert got == pytest.approx(expected) and 0 < got["accuracy"] < 1


def test_ner():
    task, examples = task_and_examples("ner")
    tags = [spoil(list(e["tags"]), ["O", "B-PER", "I-LOC"]) for e in examples]
    expected = task.compute_metrics([{"tags": t, "scores": [1.0] * len(t)} for t in tags], examples)
    got = evaluate.load(sft_core.metric_module("ner")).compute(predictions=tags, references=[e["tags"] for e in examples])
    assert got == pytest.approx(expected) and 0 < got["f1"] < 1


def test_qa():
    task, examples = task_and_examples("qa")
    gold = task.gold_predictions(examples)
    texts = spoil([g["text"] for g in gold], ["the", "a city", "1990"])
    expected = task.compute_metrics([dict(g, text=t) for g, t in zip(gold, texts)], examples)
    got = evaluate.load(sft_core.metric_module("qa")).compute(
        predictions=texts, references=[list(e["answers"]["text"]) for e in examples])
    assert got == pytest.approx(expected) and 0 < got["f1"] < 100


def test_translation():
    task, examples = task_and_examples("translation")
    hypotheses = spoil([e["target"] for e in examples], ["Ein Hund.", "Das ist gut."])
    expected = task.compute_metrics(hypotheses, examples)
    got = evaluate.load(sft_core.metric_module("translation")).compute(
        predictions=hypotheses, references=[e["target"] for e in examples])
    assert got == expected and 0 < got["bleu"] < 100


def test_a_task_without_a_module_says_so(monkeypatch):
    from sft_core.errors import SFTError

    with pytest.raises(SFTError, match="task 'instruct' ships no evaluate module"):
        sft_core.metric_module("instruct")
