"""Conformance kit for task plugins: the standard checks of the plugin contract, with a tiny random model.

Add it to a plugin's own test suite (the plugin installed, e.g. ``pip install -e .``)::

    from sft_core.testing import TaskConformance

    class TestMyTask(TaskConformance):
        case = "my-task"                      # or Case("my-task", overrides={...}, tiny_model=...)

or run it over several tasks with one parametrization::

    @conformance_cases("classification", Case("translation", tiny_model=build_tiny_marian))
    class TestTasks(TaskConformance):
        pass

Each check is one test: the entry-point module imports no torch; the task implements the Task
protocol; its config round-trips through YAML; the loss is a scalar with a gradient; collated
tensors agree in shape; there is one prediction per example; gold predictions score perfectly;
and a model trained by the engine for a few steps saves, reloads and predicts the same.

Contract versions: every check belongs to the contract version whose kit added it (``CHECKS``). A
plugin runs the checks of the version it declares (``SFT_CONTRACT``; a plugin declaring none is held
to the first, 1.0). A check added in a later version runs too, but its failure is advice (a
``KitAdvice`` warning in pytest's summary), never a failure, until the plugin declares that version
or opts in early with ``Case(opt_in=("check_name",))`` (or ``"all"``). So a plugin that passed its
version's kit keeps passing every later kit.

Data is the task's built-in sample unless ``Case.overrides`` names ``data.train``/``data.eval``.
The model is a 2-layer, 32-wide BERT with a tokenizer trained on the sample's texts, built
in-process; a task whose model is not an encoder (e.g. seq2seq) passes ``Case(tiny_model=...)``.
Importing this module imports pytest but no torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest
import yaml

# the tiny model builders and the checks by contract version are part of the kit's public names
from .compare import _describe, _likely_cause, _perfect, _read_output, _same  # noqa: F401
from .contract import CHECKS, CHECKS_BY_NAME, Check, KitAdvice, held_to, names_the_place  # noqa: F401
from .malformed import cut_short, files_read_by
from ..task import roles
from ..models.tiny import DECODER_FAMILIES, example_texts, tiny_bert, tiny_decoder  # noqa: F401

#: Modules the entry-point module of a plugin must not import (they make every ``sft`` call slow).
HEAVY_MODULES = ("torch", "transformers")

#: ``Case.malformed``'s default: a malformed copy of the task's own sample training file (see
#: ``check_malformed_data_is_a_data_error``).
FROM_SAMPLE = "sample"

#: Builds a tiny model folder (weights and tokenizer) in ``folder`` for ``examples``; returns its path.
TinyModelBuilder = Callable[[Path, list[dict]], "str | Path"]


@dataclass
class Case:
    """One task to check, and how."""

    task: str  # the registered task name
    overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted config keys, e.g. {"trainer.max_length": 64}
    tiny_model: TinyModelBuilder | None = None  # None: a tiny random BERT (see ``tiny_bert``)
    steps: int = 3  # optimizer steps of the engine run whose model is saved and reloaded
    max_eval_examples: int | None = 32
    perfect: float | None = None  # main metric of gold predictions; None: 1.0 or 100.0
    # texts for read_inputs, as `sft predict TEXT...` gives them; None: the first text of the first
    # evaluation example (the check is skipped if the task cannot read that alone)
    predict_texts: tuple[str, ...] | None = None
    # (file name, content) of a data file load() must refuse with a DataError naming the file and a
    # line; FROM_SAMPLE: a copy of the task's sample training file (JSON or JSON lines) cut short;
    # None skips the check
    malformed: tuple[str, str] | str | None = FROM_SAMPLE
    # checks of a later contract version than the plugin declares, to hold it to now (their names
    # as in CHECKS, or "all"); otherwise their failures are advice
    opt_in: tuple[str, ...] = ()


def conformance_cases(*cases: str | Case) -> pytest.MarkDecorator:
    """Parametrize a ``TaskConformance`` subclass over several tasks (one class-scoped case each)."""
    resolved = [Case(c) if isinstance(c, str) else c for c in cases]
    return pytest.mark.parametrize("conformance_case", resolved, ids=[c.task for c in resolved], scope="class")


def make_config(task: str, overrides: Mapping[str, Any] | None = None, host=None):
    """The resolved ``RunConfig`` of ``task`` with ``overrides`` (dotted keys, e.g.
    ``{"trainer.max_length": 64, "data.train": path}``), as ``sft run`` builds it: for a plugin's
    unit tests (a task's factory takes it)."""
    from ..api import run_config

    return run_config(task=task, overrides=dict(overrides or {}), host=host, source="make_config()")


# --- what the checks share ------------------------------------------------------------------

@dataclass
class Prepared:
    """A task set up on its sample data with an untrained tiny model, as a run would set it up."""

    spec: Any
    config: Any
    task: Any
    tokenizer: Any
    model: Any
    train_examples: list[dict]
    eval_examples: list[dict]
    train_features: Any
    eval_features: Any


def _host():
    from ..host.manager import PluginHost

    return PluginHost()


def _spec(host, name: str):
    if name not in host.tasks:
        failed = "; ".join(f"{p.name}: {p.error}" for p in host.failed) or "none"
        pytest.fail(f"task {name!r} is not registered (registered: {', '.join(sorted(host.tasks)) or 'none'}; "
                    f"failed plugins: {failed}); is the plugin installed (pip install -e .)?", pytrace=False)
    return host.tasks[name]


def _config(spec, case: Case, model: str, output_dir: Path):
    from ..config import build_config

    kit = {"model": model, "output_dir": str(output_dir), "trainer.max_steps": case.steps, "trainer.batch_size": 8,
           "trainer.eval_batch_size": 16, "trainer.lr": 1e-3, "trainer.warmup_ratio": 0.0, "trainer.eval_every": 0,
           "trainer.save_every": 0, "trainer.seed": 0,
           "data.max_eval_samples": case.max_eval_examples}
    return build_config(spec, [("conformance kit", kit), ("Case.overrides", dict(case.overrides))])


def _limit(examples: list[dict], n: int | None) -> list[dict]:
    return examples[:n] if n else examples


# --- the checks, as functions (the test class below runs each as one test) -----------------

def build_tiny_model(case: Case, folder: Path) -> str:
    """The tiny model folder for ``case``, built from the texts of its training and evaluation data."""
    spec = _spec(_host(), case.task)
    config = _config(spec, case, "unused", folder)
    task = spec.factory(config)
    examples = task.load("train", config.data.train) + _limit(task.load("eval", config.data.eval), case.max_eval_examples)
    return str(case.tiny_model(folder, examples) if case.tiny_model else tiny_bert(folder, example_texts(examples)))


def prepare(case: Case, model_dir: str, workdir: Path) -> Prepared:
    """Set the task up on its data with the untrained model, as ``sft run`` does before training."""
    from ..engine.batching import build_features

    spec = _spec(_host(), case.task)
    config = _config(spec, case, model_dir, workdir)
    task = spec.factory(config)
    train = task.load("train", config.data.train)
    evaluation = _limit(task.load("eval", config.data.eval), case.max_eval_examples)
    assert train and evaluation, f"task {case.task!r}: the training or evaluation data is empty"
    task.setup(train)
    from ..engine.loading import load_model

    tokenizer, model = load_model(task, model_dir)  # as the engine loads it (pad token resolved)
    return Prepared(spec, config, task, tokenizer, model, train, evaluation,
                    build_features(task, config, tokenizer, train, "train"),
                    build_features(task, config, tokenizer, evaluation, "eval"))


def check_entry_point_imports_no_torch(case: Case) -> None:
    """Loading the task's plugin alone (import and registration) imports none of ``HEAVY_MODULES``."""
    spec = _spec(_host(), case.task)
    if spec.distribution is None:
        pytest.skip(f"task {spec.name!r} is registered in-process, not through an entry point")
    code = ("import json, sys\nfrom sft_core.host import PluginHost\nhost = PluginHost()\n"
            "print(json.dumps({'tasks': sorted(host.tasks), 'failed': [p.error for p in host.failed],"
            f" 'heavy': sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)}}))")
    env = {k: v for k, v in os.environ.items() if k != "SFT_DISABLE_PLUGINS"}
    env["SFT_LOAD_PLUGINS"] = spec.provider
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert spec.name in report["tasks"], f"plugin {spec.provider!r} alone registers no {spec.name!r}: {report['failed']}"
    assert report["heavy"] == [], (f"loading plugin {spec.provider!r} imports {', '.join(report['heavy'])}: "
                                   "import it inside the task factory, not in the entry-point module")


def check_task_implements_the_protocol(case: Case, workdir: Path) -> None:
    from ..task import Task

    spec = _spec(_host(), case.task)
    task = spec.factory(_config(spec, case, "unused", workdir))
    members = [*Task.__annotations__, *(m for m, v in vars(Task).items() if callable(v) and not m.startswith("_"))]
    missing = [m for m in members if not hasattr(task, m)]
    assert not missing, f"task {spec.name!r} lacks {', '.join(missing)} of the Task protocol (sft_core.Task)"


def check_config_round_trips_through_yaml(case: Case, workdir: Path) -> None:
    from ..config import build_config

    spec = _spec(_host(), case.task)
    config = _config(spec, case, "some/model", workdir)
    text = config.to_yaml()
    again = build_config(spec, [("config.yaml", yaml.safe_load(text))])
    assert again == config, f"task {spec.name!r}: the config read back from its YAML differs:\n{text}"
    assert again.to_yaml() == text
    if spec.config is not None:
        assert isinstance(again.options, spec.config) and spec.section in yaml.safe_load(text)


def _batch(prepared: Prepared, features, n: int = 4) -> tuple[dict, int]:
    from ..engine.evaluation import rows

    indices = list(range(min(n, len(features))))
    return prepared.task.collate(rows(features, indices)), len(indices)


def check_loss_is_a_scalar_with_a_gradient(prepared: Prepared) -> None:
    import torch

    batch, _ = _batch(prepared, prepared.train_features)
    model = prepared.model
    model.train()
    model.zero_grad(set_to_none=True)
    compute_loss = roles(prepared.task).compute_loss  # optional: the engine uses it when given
    source = "task.compute_loss(model, batch)" if compute_loss else "model(**collate(features)).loss"
    try:
        loss = compute_loss(model, batch) if compute_loss else model(**batch).loss
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise AssertionError(f"{source} raised {type(exc).__name__}: {first}\n  batch: {_describe(batch)}\n  "
                             f"{_likely_cause(first)}") from None
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0, \
        f"{source} is {loss!r}, not a scalar tensor (are the labels in the batch?)"
    assert torch.isfinite(loss), f"the loss is {loss.item()}"
    assert loss.requires_grad, "the loss has no gradient"
    loss.backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters()), \
        "the loss gives no parameter a non-zero gradient"


def check_collate_shapes_agree(prepared: Prepared) -> None:
    import torch

    for split, features in (("train", prepared.train_features), ("eval", prepared.eval_features)):
        batch, n = _batch(prepared, features)
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        assert tensors, f"{split}: collate returned no tensors"
        for key, value in tensors.items():
            assert value.dim() >= 1 and value.shape[0] == n, \
                f"{split}: batch[{key!r}] has shape {tuple(value.shape)}, expected {n} rows (one per feature)"
        token_shapes = {k: tuple(tensors[k].shape) for k in ("input_ids", "attention_mask", "token_type_ids")
                        if k in tensors}
        assert len(set(token_shapes.values())) <= 1, f"{split}: token inputs differ in shape: {token_shapes}"


def predict(prepared: Prepared) -> list:
    """The untrained model's predictions for the evaluation examples, through the engine's loop."""
    from ..engine.evaluation import predict_features
    from ..engine.precision import make_accelerator

    outputs = predict_features(make_accelerator(prepared.config), prepared.task, prepared.model,
                               prepared.eval_features, prepared.config.trainer.eval_batch_size)
    return prepared.task.postprocess(outputs, prepared.eval_features, prepared.eval_examples)


def check_one_prediction_per_example(prepared: Prepared) -> None:
    predictions = predict(prepared)
    examples = prepared.eval_examples
    assert len(predictions) == len(examples), f"{len(predictions)} predictions for {len(examples)} examples"
    assert all(p is not None for p in predictions), "some examples got no prediction"
    metrics = prepared.task.compute_metrics(predictions, examples)
    assert prepared.task.main_metric in metrics, f"main_metric {prepared.task.main_metric!r} not in {sorted(metrics)}"
    for prediction, example in zip(predictions, examples):
        json.dumps(prepared.task.format_prediction(prediction, example))  # `sft predict` prints it


def _predict_examples(prepared: Prepared, examples: list[dict], split: str = "predict") -> list:
    from ..engine.batching import build_features
    from ..engine.evaluation import predict_features
    from ..engine.precision import make_accelerator

    features = build_features(prepared.task, prepared.config, prepared.tokenizer, examples, split, use_cache=False)
    outputs = predict_features(make_accelerator(prepared.config), prepared.task, prepared.model, features,
                               prepared.config.trainer.eval_batch_size)
    return prepared.task.postprocess(outputs, features, examples)


def _json_records(prepared: Prepared, predictions: list, examples: list[dict], where: str) -> list[dict]:
    assert len(predictions) == len(examples), f"{where}: {len(predictions)} predictions for {len(examples)} inputs"
    records = []
    for n, (prediction, example) in enumerate(zip(predictions, examples)):
        record = prepared.task.format_prediction(prediction, example)
        try:
            json.dumps(record)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{where}: format_prediction of input {n} is not JSON-serialisable ({exc}): {record!r}; "
                                 "`sft predict` prints it as a JSON line") from None
        records.append(record)
    return records


def check_predict_path_gives_json_records(prepared: Prepared, case: Case) -> None:
    """``sft predict``'s two ways in: ``load("predict", file)`` and ``read_inputs(texts)``, through
    preprocess, predict_step and postprocess to one JSON record per input."""
    from ..errors import SFTError

    task = prepared.task
    from_file = task.load("predict", prepared.config.data.eval)
    assert from_file, "load('predict', path) returned no examples"
    _json_records(prepared, _predict_examples(prepared, from_file), from_file, "load('predict', ...)")
    texts = list(case.predict_texts) if case.predict_texts else [example_texts(prepared.eval_examples[:1])[0]]
    try:
        from_texts = task.read_inputs(texts)
    except SFTError as exc:
        if case.predict_texts:
            raise AssertionError(f"read_inputs({texts!r}) raised: {exc}") from None
        pytest.skip(f"read_inputs cannot read one text alone ({exc}); give Case(predict_texts=(...)) to check it")
    assert len(from_texts) >= 1, f"read_inputs({texts!r}) returned no examples"
    _json_records(prepared, _predict_examples(prepared, from_texts), from_texts, "read_inputs(...)")


def check_shuffled_features_map_back(prepared: Prepared) -> None:
    """postprocess maps outputs to examples through ``example_id``, not by position: the evaluation
    features in a shuffled order give the same predictions."""
    import random

    from ..engine.evaluation import predict_features
    from ..engine.precision import make_accelerator

    features = prepared.eval_features
    order = list(range(len(features)))
    random.Random(0).shuffle(order)
    if order == sorted(order):
        order.reverse()
    shuffled = features.select(order)
    outputs = predict_features(make_accelerator(prepared.config), prepared.task, prepared.model, shuffled,
                               prepared.config.trainer.eval_batch_size)
    again = prepared.task.postprocess(outputs, shuffled, prepared.eval_examples)
    # tight: an untrained tiny model's scores differ between examples only in the sixth digit
    difference = _same(again, predict(prepared), "predictions", rel_tol=1e-6)
    assert difference is None, (f"with the features in another order the predictions change ({difference}): "
                                "postprocess must place each output by its feature's example_id")


def malformed_file(case: Case, task: Any, config: Any, workdir: Path) -> tuple[Path, int | None] | str:
    """The file ``check_malformed_data_is_a_data_error`` gives ``load("train", ...)`` and the line
    its error must name (None: any line), or why there is none.

    ``Case.malformed`` as (name, content): that file, declared by the plugin. ``FROM_SAMPLE``: the
    task's own training file (``data.train``, else the sample its ``load("train", None)`` reads),
    JSON lines with its second record cut in half, or a JSON document cut in half."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if case.malformed != FROM_SAMPLE:
        name, content = case.malformed
        path = workdir / name
        path.write_text(content, encoding="utf-8")
        return path, None
    if config.data.train:
        sample = Path(config.data.train)
    else:
        read = files_read_by(lambda: task.load("train", None))
        if not read:
            return "load('train', None) opened no file the kit could see"
        sample = read[0]
    built = cut_short(sample)
    if isinstance(built, str):
        return built
    content, line = built
    path = workdir / f"malformed{sample.suffix}"
    path.write_text(content, encoding="utf-8")
    return path, line


def check_malformed_data_is_a_data_error(case: Case, workdir: Path) -> None:
    """A malformed data file is refused with a DataError naming the file and the line."""
    from ..errors import DataError

    if case.malformed is None:
        pytest.skip("Case(malformed=None): no malformed file to check")
    spec = _spec(_host(), case.task)
    config = _config(spec, case, "unused", workdir)
    task = spec.factory(config)
    built = malformed_file(case, task, config, Path(workdir) / "malformed")
    if isinstance(built, str):
        pytest.skip(f"no malformed file to check: {built}; declare one, Case(malformed=(file name, content))")
    path, line = built
    content = path.read_text(encoding="utf-8")
    try:
        task.load("train", str(path))
    except DataError as exc:
        where = f"line {line}" if line else "a line"
        assert names_the_place(str(exc), path.name, line), (
            f"the DataError does not name the file and {where} (as '{path.name}:{line or 2}:', "
            f"'{path.name} line {line or 2}' or '{path.name}, line {line or 2}'): {exc}")
        return
    except Exception as exc:
        raise AssertionError(f"load('train', {path.name}) raised {type(exc).__name__}: {exc}, not a DataError naming "
                             "the file and the line (raise sft_core.DataError)") from None
    raise AssertionError(f"load('train', {path.name}) accepted a malformed file:\n{content}")


def check_gold_predictions_score_perfectly(prepared: Prepared, case: Case) -> None:
    task = prepared.task
    if roles(task).gold_predictions is None:
        pytest.skip(f"task {case.task!r} has no gold_predictions(examples); add it to enable this check")
    gold = task.gold_predictions(prepared.eval_examples)
    assert len(gold) == len(prepared.eval_examples), f"{len(gold)} gold predictions for {len(prepared.eval_examples)} examples"
    predicted = predict(prepared)
    if isinstance(gold[0], dict) and isinstance(predicted[0], dict):
        extra = set(gold[0]) - set(predicted[0])
        assert not extra, f"gold predictions have keys postprocess never returns: {sorted(extra)}"
    metrics = task.compute_metrics(gold, prepared.eval_examples)
    value = metrics[task.main_metric]
    assert _perfect(value, case.perfect), (
        f"gold predictions score {task.main_metric}={value}, not a perfect "
        f"{case.perfect if case.perfect is not None else '1.0 or 100.0'}: {metrics}")


def run_engine(case: Case, model_dir: str, output_dir: Path) -> dict:
    """A short ``sft run`` of the task (``case.steps`` steps, one evaluation at the end); its result."""
    from .. import engine

    host = _host()
    return engine.train(_config(_spec(host, case.task), case, model_dir, output_dir), host)


def check_saved_model_reloads_and_predicts_the_same(output_dir: Path, result: dict, case: Case) -> None:
    """``output_dir/model``, reloaded as ``sft eval`` does, gives the run's predictions files and metrics."""
    from .. import engine
    from ..task import prediction_files

    assert result["train"]["train_steps"] == case.steps and result["eval"] is not None
    saved = output_dir / "model"
    from ..engine.checkpoint import TASK_FILE

    _, _, task = engine.load_saved(str(saved), _host(), [])
    # the run's own evaluation data (data=None), limited as the run was: sft eval reads it whole unless told
    trained_with = json.loads((saved / TASK_FILE).read_text(encoding="utf-8"))["config"]["data"]
    limit = [("the run's data.max_eval_samples", {"data.max_eval_samples": trained_with.get("max_eval_samples")})]
    again = engine.evaluate_saved(str(saved), None, str(output_dir / "reloaded"), _host(), limit)
    for name in prediction_files(task):
        if (output_dir / name).is_file():
            difference = _same(_read_output(output_dir / name), _read_output(output_dir / "reloaded" / name), name)
            assert difference is None, f"the reloaded model predicts differently: {difference}"
    metrics = {k: v for k, v in result["eval"].items() if not k.startswith("eval_") and k != "step"}
    reloaded = {k: v for k, v in again["metrics"].items() if not k.startswith("eval_")}
    assert _same(metrics, reloaded) is None, f"metrics of the run {metrics} != of the reloaded model {reloaded}"


# --- contract versions: which checks hold a plugin -----------------------------------------

def declared_contract(task: str, host=None) -> str:
    """The contract version the plugin registering ``task`` declares (``SFT_CONTRACT``); "1.0", the
    first, for a plugin declaring none."""
    from ..compat import parse_version

    host = host or _host()
    spec = _spec(host, task)
    declared = next((info.contract for info in host.plugins if info.name == spec.provider), None)
    version = parse_version(declared) if declared is not None else None
    return f"{version[0]}.{version[1]}" if version else "1.0"


def run_check(name: str, case: Case, call: Callable[[], Any]) -> None:
    """Run one check for ``case``: as a requirement when the plugin's contract version has it, else
    as advice (a failure becomes a ``KitAdvice`` warning; a skip stays a skip)."""
    check = CHECKS_BY_NAME[name]
    declared = declared_contract(case.task)
    if held_to(check, declared, case.opt_in):
        call()
        return
    try:
        call()
    except Exception as exc:  # AssertionError and whatever the task raised; pytest's skip/fail are not Exceptions
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        warnings.warn(KitAdvice(
            f"{case.task}: {name} did not pass ({first}). It is a contract {check.since} check and the plugin "
            f"declares {declared}, so this is advice; it becomes a requirement when the plugin declares "
            f"SFT_CONTRACT = \"{check.since}\" (or opts in with Case(opt_in=(\"{name}\",)))."), stacklevel=2)


def _checked_case(case: Case) -> Case:
    unknown = [n for n in case.opt_in if n != "all" and n not in CHECKS_BY_NAME]
    if unknown:
        pytest.fail(f"Case(opt_in=...): no check named {', '.join(map(repr, unknown))}; the checks are "
                    f"{', '.join(CHECKS_BY_NAME)} (or \"all\")", pytrace=False)
    return case


class TaskConformance:
    """Inherit in a test class named ``Test...`` and set ``case``; pytest runs every check as a test."""

    #: The task to check: its registered name or a ``Case``; or parametrize with ``conformance_cases``.
    case: Case | str | None = None

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_case(cls, request) -> Case:
        case = cls.case
        if case is None:
            pytest.fail(f"{cls.__name__}: set `case = \"task-name\"` (or a Case) on the class, "
                        "or decorate it with conformance_cases(...)", pytrace=False)
        return _checked_case(Case(case) if isinstance(case, str) else case)

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_model(cls, conformance_case: Case, tmp_path_factory) -> str:
        return build_tiny_model(conformance_case, tmp_path_factory.mktemp(f"tiny-{conformance_case.task}"))

    @pytest.fixture(scope="class")
    @classmethod
    def prepared(cls, conformance_case: Case, conformance_model: str, tmp_path_factory) -> Prepared:
        return prepare(conformance_case, conformance_model, tmp_path_factory.mktemp(f"{conformance_case.task}-prepared"))

    @pytest.fixture(scope="class")
    @classmethod
    def engine_run(cls, conformance_case: Case, conformance_model: str, tmp_path_factory) -> tuple[Path, dict]:
        out = tmp_path_factory.mktemp(f"{conformance_case.task}-run")
        return out, run_engine(conformance_case, conformance_model, out)

    # each test runs its check through run_check: a requirement, or advice for a check of a later
    # contract version than the plugin declares
    def test_entry_point_imports_no_torch(self, conformance_case: Case) -> None:
        run_check("entry_point_imports_no_torch", conformance_case,
                  lambda: check_entry_point_imports_no_torch(conformance_case))

    def test_task_implements_the_protocol(self, conformance_case: Case, tmp_path: Path) -> None:
        run_check("task_implements_the_protocol", conformance_case,
                  lambda: check_task_implements_the_protocol(conformance_case, tmp_path))

    def test_config_round_trips_through_yaml(self, conformance_case: Case, tmp_path: Path) -> None:
        run_check("config_round_trips_through_yaml", conformance_case,
                  lambda: check_config_round_trips_through_yaml(conformance_case, tmp_path))

    def test_loss_is_a_scalar_with_a_gradient(self, prepared: Prepared, conformance_case: Case) -> None:
        run_check("loss_is_a_scalar_with_a_gradient", conformance_case,
                  lambda: check_loss_is_a_scalar_with_a_gradient(prepared))

    def test_collate_shapes_agree(self, prepared: Prepared, conformance_case: Case) -> None:
        run_check("collate_shapes_agree", conformance_case, lambda: check_collate_shapes_agree(prepared))

    def test_one_prediction_per_example(self, prepared: Prepared, conformance_case: Case) -> None:
        run_check("one_prediction_per_example", conformance_case, lambda: check_one_prediction_per_example(prepared))

    def test_predict_path_gives_json_records(self, prepared: Prepared, conformance_case: Case) -> None:
        run_check("predict_path_gives_json_records", conformance_case,
                  lambda: check_predict_path_gives_json_records(prepared, conformance_case))

    def test_shuffled_features_map_back(self, prepared: Prepared, conformance_case: Case) -> None:
        run_check("shuffled_features_map_back", conformance_case, lambda: check_shuffled_features_map_back(prepared))

    def test_malformed_data_is_a_data_error(self, conformance_case: Case, tmp_path: Path) -> None:
        run_check("malformed_data_is_a_data_error", conformance_case,
                  lambda: check_malformed_data_is_a_data_error(conformance_case, tmp_path))

    def test_gold_predictions_score_perfectly(self, prepared: Prepared, conformance_case: Case) -> None:
        run_check("gold_predictions_score_perfectly", conformance_case,
                  lambda: check_gold_predictions_score_perfectly(prepared, conformance_case))

    def test_saved_model_reloads_and_predicts_the_same(self, engine_run: tuple[Path, dict],
                                                       conformance_case: Case) -> None:
        run_check("saved_model_reloads_and_predicts_the_same", conformance_case,
                  lambda: check_saved_model_reloads_and_predicts_the_same(*engine_run, conformance_case))
