"""Tasks declare which way each metric is better (contract 1.1); best-model selection follows it."""

from __future__ import annotations

import json
import random
import types

import pytest

from sft_core.host.manager import PluginHost
from sft_core.task import metric_direction
from sft_core.engine.loop import _better

from helpers import make_config, train_tiny


def task(name: str, **values):
    host = PluginHost()
    spec = host.get_task(name)
    return spec.factory(make_config(host, name, **values))


def test_built_in_tasks_declare_their_directions():
    classification = task("classification")
    assert metric_direction(classification, "mse") == "lower"
    assert metric_direction(classification, "accuracy") == metric_direction(classification, "pearson") == "higher"
    assert metric_direction(task("ner"), "f1") == metric_direction(task("qa"), "exact_match") == "higher"
    assert metric_direction(task("translation"), "bleu") == "higher"
    instruct = task("instruct")
    assert metric_direction(instruct, "loss") == metric_direction(instruct, "perplexity") == "lower"
    assert metric_direction(instruct, "f1") == "higher"


def test_a_mixture_keeps_each_source_tasks_directions(tmp_path):
    mixture = task("instruct", **{"instruct.mixture": [
        {"name": "sst2", "source_task": "classification", "eval": "dev.tsv", "weight": 1.0},
        {"name": "chat", "eval": "chat.jsonl", "weight": 1.0}]})
    assert metric_direction(mixture, "sst2/loss") == metric_direction(mixture, "chat/perplexity") == "lower"
    assert metric_direction(mixture, "sst2/accuracy") == metric_direction(mixture, "score") == "higher"


def test_a_contract_1_0_task_keeps_the_1_0_rule():
    old = types.SimpleNamespace(main_metric="accuracy")  # declares no metric_directions
    assert metric_direction(old, "eval_loss") == "lower" and metric_direction(old, "perplexity") == "higher"
    declared = types.SimpleNamespace(metric_directions={"wer": "lower"})
    assert metric_direction(declared, "wer") == "lower" and metric_direction(declared, "val_loss") == "higher"
    with pytest.raises(ValueError, match="expected 'higher' or 'lower'"):
        metric_direction(types.SimpleNamespace(metric_directions={"wer": "down"}), "wer")


def test_better_follows_the_direction():
    assert _better("lower", 0.2, 0.3) and not _better("lower", 0.4, 0.3)
    assert _better("higher", 0.4, 0.3) and not _better("higher", 0.2, 0.3)
    assert _better("lower", 5.0, None)


def test_the_best_model_of_a_regression_run_has_the_lowest_mse(tmp_path, tiny_model):
    """With trainer.metric_for_best=mse the kept model is the evaluation with the lowest mse (the
    name has no "loss" in it: the old name rule took the highest)."""
    rng = random.Random(0)
    words = ["good", "bad", "film", "plot", "actor", "scene"]
    rows = []
    for _ in range(96):
        n = rng.randint(1, 6)
        rows.append({"text": " ".join(rng.choice(words) for _ in range(n)), "label": float(n) / 2})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:64]))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[64:]))
    result = train_tiny(tmp_path / "run", tiny_model, **{
        "data.train": str(tmp_path / "train.jsonl"), "data.eval": str(tmp_path / "eval.jsonl"),
        "trainer.epochs": 4, "trainer.eval_every": 2, "trainer.metric_for_best": "mse", "trainer.save_every": 0,
        "trainer.lr": 3e-3})
    evaluations = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
                   if "eval_mse" in r]
    assert len({round(r["eval_mse"], 6) for r in evaluations}) > 1  # the evaluations differ
    lowest = min(evaluations, key=lambda r: r["eval_mse"])
    assert result["best_step"] == lowest["step"] and result["metric_for_best"] == "mse"
    assert result["eval"]["mse"] == pytest.approx(lowest["eval_mse"])
