"""trainer.mixed_precision: what each setting resolves to, and bf16 autocast on the CPU."""

from __future__ import annotations

import json

import pytest
import torch

from sft_core import hookimpl
from sft_core.engine.precision import cpu_has_native_bf16, resolve_precision

from helpers import load_weights, train_tiny


@pytest.mark.parametrize("requested, cuda, cpu_bf16, expected, note", [
    ("auto", False, True, "no", None),  # fp32 on the CPU unless asked: the same math as any fp32 run
    ("auto", False, False, "no", None),
    ("no", False, True, "no", None),
    ("bf16", False, True, "bf16", None),
    ("bf16", False, False, "bf16", "AVX512-BF16"),  # honoured, with a warning that it is emulated
    ("fp16", False, True, "no", "needs a GPU"),
    ("fp16", True, False, "fp16", None),
    ("bf16", True, False, "bf16", None),
    ("no", True, False, "no", None),
])
def test_resolve_precision(requested, cuda, cpu_bf16, expected, note):
    precision, message = resolve_precision(requested, cuda, cpu_bf16)
    assert precision == expected
    if note is None:
        assert message is None
    else:
        assert note in message and f"trainer.mixed_precision={requested}" in message


class DtypeRecorder:
    """Records the dtype of every Linear output, in training and in evaluation."""

    def __init__(self):
        self.train: set[torch.dtype] = set()
        self.eval: set[torch.dtype] = set()

    @hookimpl
    def sft_train_start(self, config, task, model, state):
        def record(module, inputs, output):
            (self.train if module.training else self.eval).add(output.dtype)

        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(record)


def _run(tmp_path, tiny_model, precision):
    recorder = DtypeRecorder()
    result = train_tiny(tmp_path, tiny_model, [recorder], **{"trainer.max_steps": 3, "trainer.eval_every": 0,
                                                               "trainer.save_every": 0,
                                                               "trainer.mixed_precision": precision})
    return recorder, result


def test_bf16_on_the_cpu_autocasts_training_and_evaluation(tmp_path, tiny_model, capsys):
    recorder, result = _run(tmp_path / "bf16", tiny_model, "bf16")
    assert recorder.train == {torch.bfloat16} and recorder.eval == {torch.bfloat16}
    info = json.loads((tmp_path / "bf16" / "run_info.json").read_text())
    assert info["versions"]["mixed_precision"] == "bf16" and info["versions"]["device"] == "cpu"
    records = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(loss)) for loss in losses)
    predictions = [json.loads(line) for line in (tmp_path / "bf16" / "predictions.jsonl").read_text().splitlines()]
    assert result["eval"]["accuracy"] == pytest.approx(
        sum(p["prediction"] == p["label"] for p in predictions) / len(predictions))  # the figure of the written predictions
    # autocast only: the weights are kept and saved in fp32
    assert {t.dtype for t in load_weights(tmp_path / "bf16" / "model").values()} == {torch.float32}
    if cpu_has_native_bf16():
        assert "emulated" not in capsys.readouterr().err


def test_fp32_is_the_cpu_default(tmp_path, tiny_model):
    recorder, _ = _run(tmp_path / "auto", tiny_model, "auto")
    assert recorder.train == {torch.float32} and recorder.eval == {torch.float32}
    info = json.loads((tmp_path / "auto" / "run_info.json").read_text())
    assert info["versions"]["mixed_precision"] == "no"
