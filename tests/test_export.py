"""``sft export``: ONNX round trips within tolerance for classification, NER and QA; int8; the
exported folder evaluated, predicted and served like a PyTorch one; clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from sft_core import SFTError
from sft_core import engine  # noqa: E402
from sft_core.engine.export import onnx as onnx_export  # noqa: E402
from sft_core.host.manager import PluginHost  # noqa: E402
from sft_core.testing import Case, _same, build_tiny_model, run_engine  # noqa: E402

from helpers import invoke  # noqa: E402
from test_serve import INPUTS, serving  # noqa: E402
from test_translation import TINY as TINY_MARIAN  # noqa: E402

TASKS = ("classification", "ner", "qa")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    folders = {}
    for task in TASKS:
        root = tmp_path_factory.mktemp(f"export-{task}")
        case = Case(task)
        run_engine(case, build_tiny_model(case, root / "tiny"), root / "run")
        folders[task] = root / "run" / "model"
    return folders


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = {}
    for task, model in trained.items():
        folder = tmp_path_factory.mktemp(f"onnx-{task}") / "exported"
        out[task] = folder, onnx_export.export_onnx(str(model), str(folder), PluginHost(), echo=lambda line: None)
    return out


def predict(model: Path, task: str) -> list[dict]:
    inputs = INPUTS[task]
    if task == "qa":
        fields = {name: [record[name] for record in inputs] for name in ("question", "context")}
        return engine.predict_saved(str(model), [], None, PluginHost(), fields=fields)
    return engine.predict_saved(str(model), list(inputs), None, PluginHost())


@pytest.mark.parametrize("task", TASKS)
def test_export_round_trip_is_equal_within_tolerance(trained, exported, task, tmp_path):
    folder, report = exported[task]
    assert (folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file()
    check = report["verification"]
    assert check["examples"] > 0 and check["fp32_max_abs_diff"] <= 1e-4
    saved = json.loads((folder / "sft_task.json").read_text())
    assert saved["task"] == task and saved["export"]["outputs"] and "input_ids" in saved["export"]["inputs"]
    # the exported folder is evaluated and predicted like the PyTorch one, with the same results
    data = engine.load_saved(str(trained[task]), PluginHost(), [])[1].data.eval
    torch_eval = engine.evaluate_saved(str(trained[task]), data, str(tmp_path / "torch"), PluginHost())["metrics"]
    onnx_eval = engine.evaluate_saved(str(folder), data, str(tmp_path / "onnx"), PluginHost())["metrics"]
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith("eval_")}  # noqa: E731
    assert _same(strip(onnx_eval), strip(torch_eval)) is None, (onnx_eval, torch_eval)
    assert _same(predict(folder, task), predict(trained[task], task)) is None


def test_int8_is_smaller_measured_and_evaluates(trained, exported, tmp_path):
    out = tmp_path / "int8"
    report = onnx_export.export_onnx(str(trained["classification"]), str(out), PluginHost(), quantize="int8",
                                     echo=lambda line: None)
    check = report["verification"]
    assert report["quantize"] == "int8" and check["fp32_max_abs_diff"] <= 1e-4
    assert check["int8_max_abs_diff"] > check["fp32_max_abs_diff"]  # int8 does change the outputs
    # the reported share of unchanged predictions is what the two folders predict on those examples
    from sft_core.engine.predictor import Predictor

    examples = engine.load_saved(str(out), PluginHost(), [])[2].load("eval", None)[:check["examples"]]
    pytorch, int8 = Predictor(str(trained["classification"])), Predictor(str(out))
    same = [a["label"] == b["label"] for a, b in zip(pytorch.predict_examples(examples), int8.predict_examples(examples))]
    assert check["int8_same_predictions"] == pytest.approx(sum(same) / len(same))
    assert not (out / "model-fp32.onnx").exists()
    fp32 = exported["classification"][0] / "model.onnx"
    assert (out / "model.onnx").stat().st_size < fp32.stat().st_size
    metrics = engine.evaluate_saved(str(out), None, str(tmp_path / "eval"), PluginHost())["metrics"]
    assert {"accuracy", "f1"} <= set(metrics)


def test_an_exported_folder_is_served_through_onnxruntime(exported):
    import httpx

    from sft_core.engine.predictor import Predictor

    folder = exported["classification"][0]
    with serving(Predictor(str(folder))) as (url, _):
        info = httpx.get(f"{url}/info").json()
        got = httpx.post(f"{url}/predict", json={"inputs": INPUTS["classification"]}).json()["predictions"]
    assert info["backend"] == "onnx" and "onnxruntime" in info["versions"]
    assert _same(got, predict(folder, "classification")) is None


def test_a_generating_task_is_refused_with_a_clear_message(tmp_path):
    case = Case("translation", overrides=TINY_MARIAN)
    run_engine(case, "scratch", tmp_path / "run")
    with pytest.raises(SFTError, match="generates its predictions .* sft serve --model"):
        onnx_export.export_onnx(str(tmp_path / "run" / "model"), str(tmp_path / "out"), PluginHost(),
                                echo=lambda line: None)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out-*"))


def test_a_failed_verification_writes_nothing(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "_compare", lambda *args: 0.5)
    with pytest.raises(SFTError, match="differ from PyTorch's by up to 0.5"):
        onnx_export.export_onnx(str(trained["classification"]), str(tmp_path / "out"), PluginHost(),
                                echo=lambda line: None)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out-*"))


def test_the_command_refuses_a_non_empty_output_unless_overwrite(trained, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["export", "--model", str(trained["ner"]), "--output", str(out)]
    host = PluginHost()
    refused = invoke(*args, host=host)
    assert refused.exit_code == 2 and "exists and is not empty" in refused.output
    assert (out / "keep.txt").read_text() == "mine"
    done = invoke(*args, "--overwrite", host=host)
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["verification"]["fp32_max_abs_diff"] <= 1e-4 and (out / "model.onnx").is_file()
    assert not (out / "keep.txt").exists()
    again = invoke("export", "--model", out, "--output", tmp_path / "twice", host=host)
    assert again.exit_code == 2 and "already an exported (ONNX) model" in again.output
