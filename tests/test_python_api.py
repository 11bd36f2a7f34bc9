"""sft from Python: train -> evaluate -> predict through ``import sft_core as sft`` gives what the CLI gives."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

import sft_core as sft

from helpers import SAMPLE, invoke

TEXTS = ["a warm, funny and moving film", "the battery died after an hour"]


def cli_out(*args) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def cli_json(*args) -> tuple[object, str]:
    out = cli_out(*args)
    try:
        return json.loads(out), out  # one JSON document (run, eval)
    except json.JSONDecodeError:
        return [json.loads(line) for line in out.splitlines()], out  # JSON lines (predict)


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    """The same run from Python and from the CLI: a config file, an override, named arguments."""
    root = tmp_path_factory.mktemp("api")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"task": "classification", "trainer": {"epochs": 1, "lr": 1e-3, "seed": 3,
                                                                            "batch_size": 8, "save_every": 0}}))
    common = {"train": str(SAMPLE / "train.jsonl"), "eval": str(SAMPLE / "eval.jsonl")}
    python = sft.train(model=tiny_model, output_dir=str(root / "python"), config=[str(recipe)],
                       overrides={"trainer.max_length": 64}, **common)
    from_cli, _ = cli_json("run", "--config", recipe, "--model", tiny_model, "--train", common["train"],
                           "--eval", common["eval"], "--output-dir", root / "cli", "trainer.max_length=64")
    return root, python, from_cli


def test_train_returns_what_sft_run_prints(runs):
    root, python, from_cli = runs
    assert python["output_dir"] == str(root / "python") and set(python) >= {"train", "eval"}
    assert python["train"]["train_steps"] == from_cli["train_steps"] > 0
    losses = [[r["loss"] for r in map(json.loads, (root / name / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
              for name in ("python", "cli")]
    assert losses[0] and losses[0] == pytest.approx(losses[1], rel=1e-6)  # the same training, step by step
    assert python["eval"]["accuracy"] == pytest.approx(from_cli["eval_accuracy"])
    python_config = yaml.safe_load((root / "python" / "config.yaml").read_text())
    cli_config = yaml.safe_load((root / "cli" / "config.yaml").read_text())
    assert python_config["trainer"] == cli_config["trainer"] and python_config["trainer"]["max_length"] == 64


def test_evaluate_and_predict_equal_the_cli(runs):
    root, _, _ = runs
    model = root / "python" / "model"
    metrics = sft.evaluate(str(model), str(SAMPLE / "eval.jsonl"), output_dir=str(root / "python-eval"))
    from_cli, _ = cli_json("eval", "--model", model, "--data", SAMPLE / "eval.jsonl", "--output-dir", root / "cli-eval")
    strip = lambda m: {k: v for k, v in m.items() if k not in ("eval_runtime", "eval_samples_per_second")}  # noqa: E731
    assert strip(metrics) == strip(from_cli)
    predictor = sft.Predictor(str(model))
    records, _ = cli_json("predict", "--model", model, *TEXTS)
    assert predictor.predict(TEXTS) == records == sft.predict(str(model), TEXTS)


def test_run_config_is_what_print_config_shows(tiny_model):
    config = sft.run_config(task="classification", model=tiny_model, overrides={"trainer.lr": 3e-5})
    printed = cli_out("run", "--task", "classification", "--model", tiny_model, "trainer.lr=3e-5", "--print-config")
    assert config.to_yaml() == printed and config.trainer.lr == 3e-5


def test_errors_are_the_cli_errors():
    with pytest.raises(sft.SFTError, match="no task given"):
        sft.train()
    with pytest.raises(sft.SFTError, match="data file not found: missing.tsv"):
        sft.train(task="classification", train="missing.tsv")
    with pytest.raises(sft.ConfigError, match="override trainer.learning_rate=0.001: unknown config key"):
        sft.run_config(task="classification", overrides={"trainer.learning_rate": 1e-3})


def test_importing_the_api_imports_no_torch():
    code = ("import sys, sft_core as sft\nsft.run_config(task='classification')\n"
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
