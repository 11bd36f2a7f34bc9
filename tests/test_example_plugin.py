"""The example third-party plugin (tests/fixtures/sft-multiple-choice), installed with pip as a real
distribution: sft finds it, trains and evaluates it, can switch it off, and it passes its own suite
(the conformance kit: tests/test_frozen_plugins.py). The package is uninstalled afterwards, leaving
the environment as found."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, plugins_env
from helpers import installed_fixture, sft

PACKAGE = ROOT / "tests" / "fixtures" / "sft-multiple-choice"
DISTRIBUTION = "sft-multiple-choice"


def _env(**extra: str) -> dict[str, str]:
    """The built-in plugins and this one (the suite loads no other installed plugin)."""
    return plugins_env(DISTRIBUTION, PIP_DISABLE_PIP_VERSION_CHECK="1",
                       OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), **extra)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """A copy of the package, installed (pip, no build isolation) for this module and uninstalled after it."""
    yield from installed_fixture(PACKAGE.name, DISTRIBUTION, tmp_path_factory.mktemp("example-plugin"), _env())


def plugin_sft(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``sft ARGS...`` with this plugin loaded, and ``env`` added to the environment."""
    return sft(*args, env=_env(**env), timeout=300)


def test_sft_tasks_lists_it_with_its_distribution(package):
    done = plugin_sft("tasks")
    assert done.returncode == 0, done.stderr
    line = next((line for line in done.stdout.splitlines() if line.startswith("multiple-choice ")), None)
    assert line is not None, done.stdout
    assert line.endswith(f"[{DISTRIBUTION}]") and "Multiple choice" in line
    assert "classification" in done.stdout and done.stderr == ""


def test_sft_plugins_shows_its_version_and_contract(package):
    done = plugin_sft("plugins")
    assert done.returncode == 0, done.stderr
    assert f"multiple-choice  ({DISTRIBUTION} 0.1.0)  hooks: sft_register_tasks  contract 1.1" in done.stdout.splitlines()


def test_sft_run_trains_and_evaluates_it(package, tiny_model, tmp_path):
    out = tmp_path / "run"
    done = plugin_sft("run", "--task", "multiple-choice", "--model", tiny_model, "--output-dir", str(out),
               "trainer.max_steps=4", "trainer.batch_size=8", "trainer.lr=1e-3", "trainer.save_every=0")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["train_steps"] == 4
    sample = [json.loads(line) for line in
              (PACKAGE / "sft_multiple_choice" / "sample_data" / "eval.jsonl").read_text().splitlines()]
    assert json.loads((out / "eval_results.json").read_text())["eval_samples"] == len(sample)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["label"] for r in records] == [s["label"] for s in sample]
    assert all(r["prediction"] in (0, 1) for r in records)
    assert summary["eval_accuracy"] == pytest.approx(sum(r["prediction"] == r["label"] for r in records) / len(records))
    assert json.loads((out / "model" / "sft_task.json").read_text())["task"] == "multiple-choice"
    assert "layout: auto" in (out / "config.yaml").read_text()  # the plugin's data.* key


def test_disable_plugins_removes_it(package):
    done = plugin_sft("tasks", SFT_DISABLE_PLUGINS="multiple-choice")
    assert done.returncode == 0 and done.stderr == ""
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert "multiple-choice" not in names and "classification" in names
    done = plugin_sft("run", "--task", "multiple-choice", "--print-config", SFT_DISABLE_PLUGINS="multiple-choice")
    assert done.returncode == 2 and "unknown task 'multiple-choice'" in done.stderr
