"""Plugins frozen as the documentation of each contract version told authors to write them, installed
with pip as real distributions, run their own test suites (the conformance kit) against the current
kit: a plugin that passed its contract version's kit keeps passing every later kit.

- 1.0: ``tests/fixtures/sft-topic-tags`` (multi-label topics; no ``metric_directions``; errors as
  ``file:LINE:``);
- 1.1: ``tests/fixtures/sft-multiple-choice`` (the example plugin of the docs);
- 2.0: ``tests/fixtures/sft-sentence-score`` (regression; ``sft_core.kit`` helpers).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import plugins_env
from helpers import installed_fixture, sft
from sft_core.testing import CHECKS

# contract version -> (fixture folder and distribution, entry point and task name)
FROZEN = {"1.0": ("sft-topic-tags", "topic-tags"), "1.1": ("sft-multiple-choice", "multiple-choice"),
          "2.0": ("sft-sentence-score", "sentence-score")}


def _env(distribution: str) -> dict[str, str]:
    return plugins_env(distribution, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))


@pytest.fixture(scope="module", params=sorted(FROZEN), ids=lambda version: f"contract-{version}")
def frozen(request, tmp_path_factory):
    """(contract version, task name, installed copy) of one frozen plugin."""
    folder, task = FROZEN[request.param]
    copy = tmp_path_factory.mktemp(f"frozen-{request.param}")
    for installed in installed_fixture(folder, folder, copy, _env(folder)):
        yield request.param, task, installed


def test_it_loads_with_its_declared_contract(frozen):
    version, task, package = frozen
    done = sft("plugins", env=_env(package.name), timeout=120)
    assert done.returncode == 0, done.stderr
    line = next((line for line in done.stdout.splitlines() if line.startswith(f"{task}  ")), None)
    assert line is not None, done.stdout
    assert f"({package.name} " in line and line.endswith(f"contract {version}"), line


def test_its_own_suite_passes_the_current_kit(frozen):
    """What the plugin's author runs (`python -m pytest` in the package), with every check of the kit
    run and passed: none skipped, none failed."""
    version, task, package = frozen
    done = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-W", "default"],
                          cwd=package, capture_output=True, text=True, timeout=600, env=_env(package.name))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and not re.search(r"failed|error|skipped", summary), summary
    passed = set(re.findall(r"::(test_\w+) PASSED", output))
    missing = [check.name for check in CHECKS if f"test_{check.name}" not in passed]
    assert not missing, f"kit checks not passed in the {task} suite: {missing}\n{output[-3000:]}"


def test_the_1_0_plugin_keeps_the_1_0_metric_rule(frozen):
    """A 1.0 task has no metric_directions (1.1): a metric is lower-is-better when its name holds "loss"."""
    version, task, package = frozen
    code = ("from sft_core.host import PluginHost\nfrom sft_core.task import metric_direction\n"
            "from sft_core.testing import make_config\n"
            f"host = PluginHost()\ntask = host.tasks[{task!r}].factory(make_config({task!r}, host=host))\n"
            "print(hasattr(task, 'metric_directions'), metric_direction(task, task.main_metric), "
            "metric_direction(task, 'eval_loss'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=_env(package.name))
    assert done.returncode == 0, done.stderr
    declares, main, loss = done.stdout.split()
    assert main == "higher" and declares == ("False" if version == "1.0" else "True")
    if version == "1.0":
        assert loss == "lower"
