"""A plugin written for contract 1.0 keeps loading and working: the example package as it was
before 1.1 (SFT_CONTRACT "1.0", no metric_directions), under another task name, through the
conformance kit's checks and a saved model that reloads."""

from __future__ import annotations

import importlib
import shutil
import sys

import pytest

import sft_core.testing as kit
from conftest import ROOT
from sft_core.host.manager import PluginHost
from sft_core.task import metric_direction

PACKAGE = ROOT / "tests" / "fixtures" / "sft-multiple-choice" / "sft_multiple_choice"
NAME = "multiple-choice-v10"
CASE = kit.Case(NAME, predict_texts=("The cook cracks two eggs. | She whisks them. | She reads a map.",))


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """The example plugin rewritten to contract 1.0 as package sft_multiple_choice_v10."""
    root = tmp_path_factory.mktemp("contract-1.0")
    copy = root / "sft_multiple_choice_v10"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    init = (copy / "__init__.py").read_text()
    (copy / "__init__.py").write_text(init.replace('SFT_CONTRACT = "1.1"', 'SFT_CONTRACT = "1.0"')
                                      .replace('"multiple-choice",', f'"{NAME}",'))
    task = (copy / "task.py").read_text()
    (copy / "task.py").write_text("\n".join(line for line in task.splitlines() if "metric_directions" not in line) + "\n")
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("sft_multiple_choice_v10")
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m.startswith("sft_multiple_choice_v10")]:
            del sys.modules[name]


@pytest.fixture
def legacy_host(legacy, monkeypatch):
    """A host with the built-in tasks and the 1.0 plugin; the kit's own host is that one too."""
    monkeypatch.setattr(kit, "_host", lambda: PluginHost(extra_plugins=(legacy,)))
    return kit._host()


def test_a_1_0_plugin_loads_with_its_contract(legacy_host, legacy):
    assert legacy.SFT_CONTRACT == "1.0" and NAME in legacy_host.tasks and not legacy_host.failed
    task = legacy_host.tasks[NAME].factory(kit.make_config(NAME, host=legacy_host))
    assert not hasattr(task, "metric_directions") and metric_direction(task, "accuracy") == "higher"


def test_a_1_0_plugin_passes_the_kit(legacy_host, tiny_model, tmp_path):
    prepared = kit.prepare(CASE, tiny_model, tmp_path / "prepared")
    kit.check_loss_is_a_scalar_with_a_gradient(prepared)
    kit.check_collate_shapes_agree(prepared)
    kit.check_one_prediction_per_example(prepared)
    kit.check_predict_path_gives_json_records(prepared, CASE)
    kit.check_shuffled_features_map_back(prepared)
    kit.check_gold_predictions_score_perfectly(prepared, CASE)
    kit.check_malformed_data_is_a_data_error(CASE, tmp_path)
    result = kit.run_engine(CASE, tiny_model, tmp_path / "run")
    kit.check_saved_model_reloads_and_predicts_the_same(tmp_path / "run", result, CASE)
