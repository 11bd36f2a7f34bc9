"""An output folder holding a run is never silently replaced (``--resume``, ``--overwrite`` or a refusal);
resuming never unpickles; checkpoint and model folders are flushed to disk before they are published."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

import sft_core as sft
from sft_core.commands.bench import recipes as bench
from sft_core import hookimpl
from sft_core.engine.checkpoint import replace_dir
from sft_core.errors import SFTError
from sft_core.host.manager import PluginHost
from sft_core.engine.run_folder import earlier_run

from helpers import invoke, train_tiny

TINY_RUN = {"trainer.max_steps": 2, "trainer.lr": 1e-3, "trainer.batch_size": 8, "trainer.eval_batch_size": 16,
            "data.max_eval_samples": 8, "trainer.log_every": 1}


class StopAt:
    """Raises KeyboardInterrupt at a step, as an unhandled Ctrl-C would: a run that never finished."""

    def __init__(self, step: int):
        self.step = step

    @hookimpl
    def sft_step_end(self, config, state, loss, lr):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture()
def interrupted(tmp_path, tiny_model) -> Path:
    """A run stopped at step 5 with a checkpoint at step 4, plus files of sft eval and of the user."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_tiny(out, tiny_model, [StopAt(5)], **{**TINY_RUN, "trainer.max_steps": 8, "trainer.save_every": 4})
    for name in ("eval", "eval-dev", "zero-shot-test"):
        (out / name).mkdir()
        (out / name / "eval_results.json").write_text("{}")
        (out / name / "evaluated.json").write_text('{"data": "dev.tsv"}')
    (out / "eval-notes").mkdir()  # the user's, not sft eval's
    (out / "notes.txt").write_text("my notes on this run\n")
    (out / "predictions.jsonl").write_text('{"old": true}\n')
    return out


def test_an_interrupted_run_is_refused_then_replaced_with_overwrite(interrupted, tiny_model):
    out = interrupted
    log = (out / "metrics.jsonl").read_bytes()
    args = ["run", "--task", "classification", "--model", tiny_model, "--output-dir", out,
            *(f"{k}={v}" for k, v in TINY_RUN.items())]
    line = one_error_line(invoke(*args))
    assert line == (f"error: {out} already holds a run (interrupted at step 4); give --resume to continue it "
                    "or --overwrite to replace it")
    # nothing was touched
    assert (out / "metrics.jsonl").read_bytes() == log
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000004"]

    result = invoke(*args, "trainer.save_every=0", "--overwrite")
    assert result.exit_code == 0, result.output
    steps = [json.loads(line).get("step") for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and steps == sorted(steps) and max(steps) == 2  # the new run's log alone (the old went to 4)
    assert not (out / "checkpoints").exists()  # the earlier run's checkpoints are gone
    assert not [name for name in ("eval", "eval-dev", "zero-shot-test") if (out / name).exists()]  # sft eval's too
    assert (out / "eval-notes").is_dir()
    assert (out / "notes.txt").read_text() == "my notes on this run\n"  # a file sft never writes stays
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 8 and "old" not in predictions[0]
    assert json.loads((out / "train_results.json").read_text())["train_steps"] == 2


def test_resume_and_overwrite_together_are_refused(interrupted, tiny_model):
    line = one_error_line(invoke("run", "--task", "classification", "--model", tiny_model, "--output-dir", interrupted,
                                 "--resume", "--overwrite"))
    assert line == "error: give either --resume (continue the run) or --overwrite (replace it), not both"


def test_the_python_api_refuses_a_finished_run_unless_overwrite(tmp_path, tiny_model):
    out = tmp_path / "run"
    arguments = {"task": "classification", "model": tiny_model, "output_dir": str(out), "overrides": TINY_RUN}
    sft.train(**arguments)
    first = (out / "metrics.jsonl").read_text()
    with pytest.raises(SFTError) as caught:
        sft.train(**arguments)
    assert str(caught.value) == (f"{out} already holds a run (finished); give --resume to continue it or "
                                 "--overwrite to replace it")
    assert (out / "metrics.jsonl").read_text() == first
    result = sft.train(**arguments, overwrite=True)
    assert result["train"]["train_steps"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(first.splitlines())  # replaced, not appended


def test_what_counts_as_an_earlier_run(tmp_path):
    folder = tmp_path / "out"
    assert earlier_run(folder) is None  # not there yet
    folder.mkdir()
    (folder / "train.jsonl").write_text("{}\n")
    (folder / "checkpoints").mkdir()
    assert earlier_run(folder) is None  # user files and an empty checkpoints folder hold no run
    (folder / "metrics.jsonl").write_text('{"step": 7, "loss": 1.0}\n{"step": 9, "lo')  # cut short by a crash
    assert earlier_run(folder) == "interrupted at step 7, before its first checkpoint"
    with pytest.raises(SFTError, match=r"already holds a run \(interrupted at step 7, before its first checkpoint\); "
                                       r"give --overwrite to replace it, or another --output-dir"):
        sft.train(task="classification", output_dir=str(folder))
    (folder / "checkpoints" / "step-00000005").mkdir()
    assert earlier_run(folder) == "interrupted at step 5"
    (folder / "train_results.json").write_text("{}")
    assert earlier_run(folder) == "finished"


def test_bench_runs_a_recipe_again_into_its_folder(tiny_model, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [("a great warm film", 1), ("dull and long", 0)] * 4
    (data / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    recipe = tmp_path / "again.yaml"
    recipe.write_text(json.dumps({"task": "classification", "model": tiny_model,
                                  "data": {"train": "{data_dir}/train.tsv", "eval": "{data_dir}/train.tsv"},
                                  "trainer": {"max_steps": 1, "batch_size": 4, "eval_batch_size": 4,
                                              "save_every": 0},
                                  "bench": {"metrics": ["accuracy"]}}))
    out = tmp_path / "bench"
    earlier = out / "runs" / "again"  # what a first measurement left there
    earlier.mkdir(parents=True)
    (earlier / "config.yaml").write_text("task: classification\n")
    (earlier / "train_results.json").write_text('{"train_steps": 99}')
    result = bench.run_recipe(bench.load_recipe(recipe), PluginHost(), data_dir=data, output=out, quick=False)
    assert result["status"] == "ok", (result["error"], (out / "logs" / "again.err").read_text()[-2000:])
    assert json.loads((earlier / "train_results.json").read_text())["train_steps"] == 1


# --- resuming never unpickles ----------------------------------------------------------------------

class Payload:
    """Unpickling this creates ``marker``: what a tampered training_state.pt could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_resume_refuses_a_pickled_object_and_runs_none_of_it(tmp_path, tiny_model):
    out = tmp_path / "run"
    values = {**TINY_RUN, "trainer.max_steps": 4, "trainer.save_every": 2}
    with pytest.raises(KeyboardInterrupt):
        train_tiny(out, tiny_model, [StopAt(3)], **values)
    state_file = out / "checkpoints" / "step-00000002" / "training_state.pt"
    saved = torch.load(state_file, map_location="cpu", weights_only=True)  # what sft writes loads safely
    assert saved["state"]["global_step"] == 2 and isinstance(saved["rng"][0]["numpy"]["keys"], torch.Tensor)

    marker = tmp_path / "payload-ran"
    torch.save({**saved, "scheduler": Payload(marker)}, state_file)
    line = one_error_line(invoke("run", "--task", "classification", "--model", tiny_model, "--output-dir", out,
                                 "--resume", *(f"{k}={v}" for k, v in values.items())))
    assert line.startswith(f"error: cannot resume from {state_file}: it holds objects other than tensors and plain "
                           "values, and sft does not unpickle checkpoints"), line
    assert not marker.exists()


# --- flushed to disk before the rename that publishes it ---------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_a_folder_is_flushed_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    tmp, final = tmp_path / ".tmp-model", tmp_path / "model"
    (tmp / "sub").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "sub/tokenizer.json"):
        (tmp / name).write_text(name)
    events: list[tuple[str, str]] = []
    fsync, rename = os.fsync, os.replace

    def recording_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording_replace(src, dst):
        events.append(("rename", str(src)))
        rename(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    replace_dir(tmp, final)
    renamed = events.index(("rename", str(tmp)))
    flushed = {path for kind, path in events[:renamed] if kind == "fsync"}
    assert flushed >= {str(tmp / "config.json"), str(tmp / "model.safetensors"), str(tmp / "sub" / "tokenizer.json"),
                       str(tmp), str(tmp / "sub")}
    assert ("fsync", str(tmp_path)) in events[renamed:]  # the rename itself, in the parent folder
    assert (final / "sub" / "tokenizer.json").read_text() == "sub/tokenizer.json"
