"""The conformance kit fails where a task breaks the contract, with a message saying what broke."""

from __future__ import annotations

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
