"""The conformance kit fails where a task breaks the contract, with a message saying what broke."""

from __future__ import annotations

import re
import types

import numpy as np
import pytest

import sft_core.testing as kit
from sft_classification.options import ClassificationData, ClassificationOptions
from sft_classification.task import ClassificationTask
from sft_core import hookimpl
from sft_core.host.manager import PluginHost

from helpers import install_distribution


class WrongGold(ClassificationTask):
    def gold_predictions(self, examples):
        return [{"label": self.labels[0], "score": 1.0} for _ in examples]


class NoLabels(ClassificationTask):
    def collate(self, features):
        return {k: v for k, v in super().collate(features).items() if k != "labels"}


class ShortLabels(ClassificationTask):
    def collate(self, features):
        batch = super().collate(features)
        if "labels" in batch:
            batch["labels"] = batch["labels"][:-1]
        return batch


class LostPrediction(ClassificationTask):
    def postprocess(self, outputs, features, examples):
        return super().postprocess(outputs, features, examples)[:-1]


class ForgetfulLabels(ClassificationTask):
    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.labels.reverse()  # a reloaded model reads its classes in the wrong order


class UnprintableRecord(ClassificationTask):
    def format_prediction(self, prediction, example):
        return {"label": prediction["label"], "alternatives": {prediction["label"]}}  # a set: no JSON


class OrderBlind(ClassificationTask):
    def postprocess(self, outputs, features, examples):  # takes outputs to be in example order
        return [self._prediction(np.asarray(o["logits"])) for o in outputs]


class FloatLabels(ClassificationTask):
    def collate(self, features):
        batch = super().collate(features)
        if "labels" in batch:
            batch["labels"] = batch["labels"].float().unsqueeze(1)  # what a regression head would take
        return batch


class RawReader(ClassificationTask):
    def load(self, split, path):
        if path is not None and str(path).endswith(".jsonl"):
            import json

            return [json.loads(line) for line in open(path)]  # json's own error, no file or line
        return super().load(split, path)


BROKEN = {"wrong-gold": WrongGold, "no-labels": NoLabels, "short-labels": ShortLabels,
          "lost-prediction": LostPrediction, "forgetful": ForgetfulLabels, "unprintable": UnprintableRecord,
          "order-blind": OrderBlind, "float-labels": FloatLabels, "raw-reader": RawReader}


def sft_register_tasks(register):
    for name, cls in BROKEN.items():
        register(name, cls, config=ClassificationOptions, data_config=ClassificationData)


@pytest.fixture(autouse=True)
def broken_host(monkeypatch):
    module = types.ModuleType("sft_broken_tasks")
    module.sft_register_tasks = hookimpl(sft_register_tasks)
    monkeypatch.setattr(kit, "_host", lambda: PluginHost(extra_plugins=(module,)))


def prepared(name, tiny_model, tmp_path):
    return kit.prepare(kit.Case(name), tiny_model, tmp_path)


def test_the_kit_passes_the_unbroken_task(tiny_model, tmp_path):
    case = kit.Case("classification")
    ready = kit.prepare(case, tiny_model, tmp_path)
    kit.check_loss_is_a_scalar_with_a_gradient(ready)
    kit.check_collate_shapes_agree(ready)
    kit.check_gold_predictions_score_perfectly(ready, case)


def test_gold_predictions_that_are_not_perfect(tiny_model, tmp_path):
    with pytest.raises(AssertionError, match="gold predictions score accuracy=0.5.*not a perfect 1.0 or 100.0"):
        kit.check_gold_predictions_score_perfectly(prepared("wrong-gold", tiny_model, tmp_path), kit.Case("wrong-gold"))


def test_a_batch_without_labels_has_no_loss(tiny_model, tmp_path):
    with pytest.raises(AssertionError, match="loss is None, not a scalar tensor"):
        kit.check_loss_is_a_scalar_with_a_gradient(prepared("no-labels", tiny_model, tmp_path))


def test_collated_rows_must_agree(tiny_model, tmp_path):
    with pytest.raises(AssertionError, match=r"train: batch\['labels'\] has shape \(3,\), expected 4 rows"):
        kit.check_collate_shapes_agree(prepared("short-labels", tiny_model, tmp_path))


def test_every_example_needs_a_prediction(tiny_model, tmp_path):
    with pytest.raises(AssertionError, match="59 predictions for 60 examples"):
        kit.check_one_prediction_per_example(kit.prepare(kit.Case("lost-prediction", max_eval_examples=None),
                                                         tiny_model, tmp_path))


def test_a_reloaded_model_must_predict_the_same(tiny_model, tmp_path):
    case = kit.Case("forgetful", steps=2)
    result = kit.run_engine(case, tiny_model, tmp_path)
    with pytest.raises(AssertionError, match="the reloaded model predicts differently: predictions.jsonl"):
        kit.check_saved_model_reloads_and_predicts_the_same(tmp_path, result, case)


def test_an_entry_point_that_imports_torch(monkeypatch, tmp_path, load_plugins):
    install_distribution(monkeypatch, tmp_path, "sft-heavy", "heavy",
                         "import torch\n"
                         "from sft_core import hookimpl\n"
                         "from sft_classification import _factory\n"
                         "from sft_classification.options import ClassificationData\n\n"
                         "@hookimpl\n"
                         "def sft_register_tasks(register):\n"
                         "    register('heavy', _factory, data_config=ClassificationData)\n")
    monkeypatch.setattr(kit, "_host", PluginHost)
    load_plugins("sft-heavy")
    with pytest.raises(AssertionError, match="loading plugin 'heavy' imports torch: import it inside the task factory"):
        kit.check_entry_point_imports_no_torch(kit.Case("heavy"))


# --- the checks of the predict path, feature order, loss errors and malformed data -------------

def test_the_kit_passes_the_unbroken_task_on_the_new_checks(tiny_model, tmp_path):
    case = kit.Case("classification")
    ready = kit.prepare(case, tiny_model, tmp_path)
    kit.check_predict_path_gives_json_records(ready, case)
    kit.check_shuffled_features_map_back(ready)
    kit.check_malformed_data_is_a_data_error(case, tmp_path)


def test_a_record_sft_predict_cannot_print(tiny_model, tmp_path):
    with pytest.raises(AssertionError, match="format_prediction of input 0 is not JSON-serialisable"):
        kit.check_predict_path_gives_json_records(prepared("unprintable", tiny_model, tmp_path), kit.Case("unprintable"))


def test_outputs_placed_by_position_rather_than_example_id(tiny_model, tmp_path):
    with pytest.raises(AssertionError, match="with the features in another order the predictions change"):
        kit.check_shuffled_features_map_back(prepared("order-blind", tiny_model, tmp_path))


def test_a_failing_loss_names_the_likely_cause(tiny_model, tmp_path):
    with pytest.raises(AssertionError) as failed:
        kit.check_loss_is_a_scalar_with_a_gradient(prepared("float-labels", tiny_model, tmp_path))
    message = str(failed.value)
    assert "model(**collate(features)).loss raised" in message and "labels: (4, 1) float32" in message
    assert "likely cause: the labels' " in message


def test_a_reader_that_lets_json_errors_through(tmp_path):
    with pytest.raises(AssertionError, match="raised JSONDecodeError.*not a DataError naming the file and the line"):
        kit.check_malformed_data_is_a_data_error(kit.Case("raw-reader"), tmp_path)


# --- contract versions: a later check is advice for an older plugin -------------------------

class Incomplete:
    """A task missing most of the Task protocol (a 1.0 check)."""

    def __init__(self, config):
        self.config = config


def _plugin_host(monkeypatch, contract: str | None):
    """The kit's host with a plugin declaring ``contract`` (None: no SFT_CONTRACT), registering
    raw-reader (fails a 2.0 check) and incomplete (fails a 1.0 check)."""
    module = types.ModuleType(f"sft_versioned_{contract}")
    if contract is not None:
        module.SFT_CONTRACT = contract

    def register_tasks(register):
        register("raw-reader", RawReader, config=ClassificationOptions, data_config=ClassificationData)
        register("incomplete", Incomplete)

    module.sft_register_tasks = hookimpl(register_tasks)
    monkeypatch.setattr(kit, "_host", lambda: PluginHost(extra_plugins=(module,)))


@pytest.mark.parametrize("contract", ["1.0", "1.1", None])
def test_a_later_check_is_advice_for_an_older_contract(monkeypatch, tmp_path, contract):
    _plugin_host(monkeypatch, contract)
    assert kit.declared_contract("raw-reader") == (contract or "1.0")
    with pytest.warns(kit.KitAdvice, match=r"raw-reader: malformed_data_is_a_data_error did not pass \(load\('train', "
                      r"malformed.jsonl\) raised JSONDecodeError.*a contract 2.0 check and the plugin declares "
                      rf"{contract or '1.0'}, so this is advice"):
        kit.TaskConformance().test_malformed_data_is_a_data_error(kit.Case("raw-reader"), tmp_path)


def test_the_later_check_holds_a_plugin_declaring_its_version(monkeypatch, tmp_path):
    _plugin_host(monkeypatch, "2.0")
    with pytest.raises(AssertionError, match="raised JSONDecodeError.*not a DataError naming the file and the line"):
        kit.TaskConformance().test_malformed_data_is_a_data_error(kit.Case("raw-reader"), tmp_path)


@pytest.mark.parametrize("opt_in", [("malformed_data_is_a_data_error",), ("all",)])
def test_an_older_plugin_can_opt_in_to_a_later_check(monkeypatch, tmp_path, opt_in):
    _plugin_host(monkeypatch, "1.0")
    with pytest.raises(AssertionError, match="raised JSONDecodeError"):
        kit.TaskConformance().test_malformed_data_is_a_data_error(kit.Case("raw-reader", opt_in=opt_in), tmp_path)


def test_a_check_of_its_own_version_still_fails_an_older_plugin(monkeypatch, tmp_path):
    _plugin_host(monkeypatch, "1.0")
    with pytest.raises(AssertionError, match="task 'incomplete' lacks main_metric, predictions_file, load"):
        kit.TaskConformance().test_task_implements_the_protocol(kit.Case("incomplete"), tmp_path)


def test_an_unknown_opt_in_names_the_checks(monkeypatch):
    _plugin_host(monkeypatch, "1.0")
    with pytest.raises(pytest.fail.Exception, match="no check named 'malformed'; the checks are entry_point_imports"):
        kit._checked_case(kit.Case("raw-reader", opt_in=("malformed",)))


def test_every_check_is_a_test_with_a_released_version():
    from sft_core.compat import parse_version
    from sft_core.task import CONTRACT_VERSION

    tests = {name[len("test_"):] for name in dir(kit.TaskConformance) if name.startswith("test_")}
    assert tests == set(kit.CHECKS_BY_NAME)
    released = {(1, 0), (1, 1), (2, 0), parse_version(CONTRACT_VERSION)}
    assert {parse_version(check.since) for check in kit.CHECKS} <= released


# --- naming the place of a malformed file, and a malformed file in the task's own format -----

@pytest.mark.parametrize("message", [
    "malformed.jsonl:2: not JSON (Expecting value)",                   # compilers and linters
    "/data/malformed.jsonl:2:7: unterminated string",                  # with a column
    "malformed.jsonl line 2: invalid JSON",                            # sft's own readers
    'File "malformed.jsonl", line 2: invalid JSON',                    # Python's
    "malformed.jsonl, line 2: invalid JSON",
    "malformed.jsonl (line 2): invalid JSON",
    "invalid JSON on Line: 2 of malformed.jsonl",
    "malformed.jsonl: row 2 is not JSON",
])
def test_every_usual_way_of_naming_the_place(message):
    assert kit.names_the_place(message, "malformed.jsonl", 2)
    assert kit.names_the_place(message, "malformed.jsonl")
    assert not kit.names_the_place(message, "malformed.jsonl", 3)


@pytest.mark.parametrize("message", ["malformed.jsonl: invalid JSON", "line 2: invalid JSON",
                                     "other.jsonl:2: invalid JSON"])
def test_a_message_without_the_file_or_a_line(message):
    assert not kit.names_the_place(message, "malformed.jsonl")


def test_the_malformed_file_is_cut_from_the_task_sample(monkeypatch, tmp_path):
    """The file is the task's own format (its sample's first record, then the second cut short), so a
    plugin whose records have other keys than the built-in tasks' is not refused for those."""
    from pathlib import Path

    import sft_classification

    monkeypatch.setattr(kit, "_host", PluginHost)
    case = kit.Case("classification")
    spec = kit._spec(kit._host(), case.task)
    config = kit._config(spec, case, "unused", tmp_path)
    path, line = kit.malformed_file(case, spec.factory(config), config, tmp_path)
    sample = (Path(sft_classification.__file__).parent / "sample_data" / "train.jsonl").read_text().splitlines()
    first, second = path.read_text().splitlines()
    assert (path.name, line, first) == ("malformed.jsonl", 2, sample[0])
    assert second == sample[1][: len(sample[1]) // 2]


def test_a_json_sample_is_cut_in_half_and_any_line_named(monkeypatch, tmp_path):
    monkeypatch.setattr(kit, "_host", PluginHost)
    case = kit.Case("qa")
    spec = kit._spec(kit._host(), case.task)
    config = kit._config(spec, case, "unused", tmp_path)
    path, line = kit.malformed_file(case, spec.factory(config), config, tmp_path)
    assert path.name == "malformed.json" and line is None and path.read_text().lstrip().startswith("{")


def test_a_sample_in_another_format_asks_for_a_declared_file(monkeypatch, tmp_path):
    monkeypatch.setattr(kit, "_host", PluginHost)
    with pytest.raises(pytest.skip.Exception, match="its sample train.conll is neither JSON lines nor JSON.*declare "
                       r"one, Case\(malformed=\(file name, content\)\)"):
        kit.check_malformed_data_is_a_data_error(kit.Case("ner"), tmp_path)


def test_the_contract_page_lists_every_check_with_its_version():
    from conftest import ROOT

    page = (ROOT / "docs" / "plugins" / "contract.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| (\d+\.\d+) \|", page, re.MULTILINE))
    assert rows == {check.name: check.since for check in kit.CHECKS}


def test_json_objects_reads_past_a_byte_order_mark(tmp_path):
    from sft_core.kit import json_objects

    lines = ['\ufeff{"text": "a"}', "", '{"text": "b"}']
    assert list(json_objects(tmp_path / "x.jsonl", lines)) == [(1, {"text": "a"}), (3, {"text": "b"})]
