"""SIGINT and SIGTERM during training: the step finishes, a checkpoint is written, the run stops as
"interrupted" (exit 130 / 143 from the CLI), and ``--resume`` continues it exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from sft_core.engine import checkpoint
from sft_core import hookimpl
from sft_core.errors import TrainingInterrupted

from helpers import load_weights, sft, train_tiny


# 40 examples in batches of 8: 5 steps an epoch, 8 steps in all; no regular checkpoint before the end
RUN = {"data.max_train_samples": 40, "trainer.batch_size": 8, "trainer.max_steps": 8, "trainer.save_every": 100,
       "trainer.log_every": 1, "trainer.lr": 1e-3, "trainer.eval_batch_size": 16, "data.max_eval_samples": 16}


class SignalAt:
    """Sends ``signum`` to this process when a step ends, and records how training ended."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum
        self.status = None

    @hookimpl
    def sft_step_end(self, config, state, loss, lr):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signum)

    @hookimpl
    def sft_train_end(self, config, state, status):
        self.status = status


def test_a_signal_checkpoints_the_step_and_a_second_one_cannot_break_the_checkpoint(tmp_path, tiny_model,
                                                                                     monkeypatch):
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    real_save = checkpoint.save_model_folder
    writes = []

    def save_with_a_second_signal(*args, **kwargs):  # a SIGTERM while the checkpoint is being written
        writes.append(args[0])
        os.kill(os.getpid(), signal.SIGTERM)
        real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_model_folder", save_with_a_second_signal)
    out = tmp_path / "run"
    recorder = SignalAt(3, signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as caught:
        train_tiny(out, tiny_model, [recorder], **RUN)
    step = out / "checkpoints" / "step-00000003"
    assert str(caught.value) == f"interrupted by SIGINT at step 3: checkpoint written to {step}; continue with --resume"
    assert caught.value.exit_code == 130 and recorder.status == "interrupted"
    assert writes == [out / "checkpoints" / ".tmp-step-00000003" / "model"]  # one checkpoint, at the step reached
    # complete, despite the second signal in the middle of writing it
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000003"]
    assert (step / "model" / "model.safetensors").is_file()
    state = torch.load(step / "training_state.pt", map_location="cpu", weights_only=True)
    assert state["state"]["global_step"] == 3 and state["state"]["steps_in_epoch"] == 3
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert records[-1]["event"] == "interrupted" and records[-1]["signal"] == "SIGINT"
    assert not (out / "model").exists() and not (out / "train_results.json").exists()
    # the process's own handlers are back
    assert {number: signal.getsignal(number) for number in before} == before


LAUNCHER = """
import os, signal, sys
from sft_core import hookimpl
from sft_core.commands import cli
from sft_core.host.manager import PluginHost

class SignalAt:
    @hookimpl
    def sft_step_end(self, config, state, loss, lr):
        if state.global_step == int(os.environ["SIGNAL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGTERM)  # as a cluster preempting the job does, mid-epoch

cli.PluginHost = lambda: PluginHost(extra_plugins=(SignalAt(),))
cli.main(sys.argv[1:])
"""


def _losses(folder: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r and "event" not in r}


def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_model):
    launcher = tmp_path / "signal_at.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false", "SIGNAL_AT_STEP": "3"}
    settings = [f"{k}={v}" for k, v in RUN.items()]

    def run(program: list[str], out: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*program, "run", "--task", "classification", "--model", tiny_model, "--output-dir",
                               str(out), *settings, *extra], capture_output=True, text=True, env=env, timeout=300)

    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    with ThreadPoolExecutor(max_workers=2) as pool:
        plain = pool.submit(run, sft.command, straight)
        stopped = pool.submit(run, [sys.executable, str(launcher)], interrupted)
        plain, stopped = plain.result(), stopped.result()
    assert plain.returncode == 0, plain.stderr[-3000:]

    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    step = interrupted / "checkpoints" / "step-00000003"
    assert stopped.stderr.strip().splitlines()[-1] == (f"interrupted by SIGTERM at step 3: checkpoint written to "
                                                       f"{step}; continue with --resume")
    assert [p.name for p in (interrupted / "checkpoints").iterdir()] == ["step-00000003"]
    assert sorted(_losses(interrupted)) == [1, 2, 3]  # the log keeps what was written

    resumed = run(sft.command, interrupted, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = load_weights(straight / "model"), load_weights(interrupted / "model")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    timing = ("eval_runtime", "eval_samples_per_second")
    final = [{k: v for k, v in json.loads((folder / "eval_results.json").read_text()).items() if k not in timing}
             for folder in (straight, interrupted)]
    assert final[0] == final[1]
    assert _losses(interrupted) == _losses(straight) and len(_losses(straight)) == 8
    assert json.loads((interrupted / "train_results.json").read_text())["train_steps"] == 8
