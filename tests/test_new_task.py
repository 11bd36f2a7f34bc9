"""``sft new-task``: the package it writes installs with pip, passes its own tests (the conformance
kit), trains with ``sft run --task NAME`` unchanged and predicts; uninstalled afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sft_core.commands.new_task import names

from conftest import plugins_env
from helpers import invoke, sft

NAME = "scaffolded-demo"


def _env() -> dict[str, str]:
    """The built-in plugins and the written package (the suite loads no other installed plugin)."""
    return plugins_env(f"sft-{NAME}", PIP_DISABLE_PIP_VERSION_CHECK="1",
                       OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, env=_env(), cwd=cwd)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    folder = tmp_path_factory.mktemp("new-task")
    result = invoke("new-task", NAME, "--dir", folder)
    assert result.exit_code == 0, result.output
    root = folder / f"sft-{NAME}"
    run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", root)
    yield root
    run(sys.executable, "-m", "pip", "uninstall", "-q", "-y", f"sft-{NAME}")


def test_the_package_follows_the_naming_rule(package):
    assert (package / "pyproject.toml").read_text().count(f'{NAME} = "sft_scaffolded_demo"') == 1
    assert names(NAME) == {"__NAME__": NAME, "__DIST__": f"sft-{NAME}", "__MODULE__": "sft_scaffolded_demo",
                           "__CLASS__": "ScaffoldedDemoTask"}
    tasks = sft("tasks", env=_env(), check=True).stdout
    assert any(line.startswith(NAME) and line.endswith(f"[sft-{NAME}]") for line in tasks.splitlines())


def test_it_passes_its_own_tests(package):
    done = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=package)
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_it_trains_and_predicts_unchanged(package, tiny_model, tmp_path):
    out = tmp_path / "run"
    done = sft("run", "--task", NAME, "--model", tiny_model, "--output-dir", out, "trainer.lr=1e-3", env=_env(),
               check=True)
    summary = json.loads(done.stdout)
    written = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert summary["train_steps"] > 0 and written
    assert summary["eval_accuracy"] == pytest.approx(sum(r["prediction"] == r["label"] for r in written) / len(written))
    saved = json.loads((out / "model" / "sft_task.json").read_text())
    assert saved["provider"]["distribution"] == f"sft-{NAME}"
    predicted = sft("predict", "--model", out / "model", "a lovely film", "x", env=_env(), check=True)
    records = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [r["text"] for r in records] == ["a lovely film", "x"]
    assert all(r["label"] in ("positive", "negative") for r in records)


def test_a_bad_name_or_an_existing_folder_is_refused(tmp_path):
    bad = invoke("new-task", "My_Task", "--dir", tmp_path)
    assert bad.exit_code == 2 and "use lower-case letters, digits and single hyphens" in bad.output
    assert invoke("new-task", "dup", "--dir", tmp_path).exit_code == 0
    again = invoke("new-task", "dup", "--dir", tmp_path)
    assert again.exit_code == 2 and "exists; remove it or give another --dir" in again.output
