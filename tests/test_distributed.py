"""Two processes on the CPU (torchrun, gloo): the run ends, each evaluation example is scored
exactly once, and only the main process writes files. The launchers run as modules of this
interpreter (``python -m torch.distributed.run``, ``python -m accelerate.commands.launch``), so
they are there whenever torch and accelerate are, console scripts or not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from helpers import SAMPLE, sft

#: ``torchrun --standalone --nproc_per_node 2`` running ``sft`` (the console script) in each process.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *sft.command]


def test_two_processes_evaluate_every_example_once(tmp_path, tiny_model):
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    # 59 evaluation examples in batches of 7: the two shards differ in size and end in partial batches
    common = ["data.max_eval_samples=59", "trainer.eval_batch_size=7"]
    cmd = [*TORCHRUN, "run", "--task", "classification", "--model", tiny_model, "--output-dir", str(out),
           "trainer.max_steps=8", "trainer.eval_every=4", "trainer.lr=1e-3", "trainer.save_every=4", *common]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"output_dir"') == 1, "each process printed a summary"

    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_samples"] == 59
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 59
    gold = [json.loads(line)["sentence"] for line in (SAMPLE / "eval.jsonl").read_text().splitlines()[:59]]
    assert [p["text"] for p in predictions] == gold  # input order, none duplicated or missing

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["step"] for r in records if "eval_accuracy" in r]
    assert evals == [4, 8], "metrics.jsonl was written by more than one process"
    train = json.loads((out / "train_results.json").read_text())
    # 240 examples in batches of 32 on two processes: 4 steps an epoch, so 8 steps are 2 epochs
    assert train["train_steps"] == 8 and train["train_samples"] == 2 * 240

    # the same model scored by one process gives the same predictions, example for example
    single = sft("eval", "--model", out / "model", "--data", SAMPLE / "eval.jsonl", "--output-dir",
                 tmp_path / "single", *common, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    alone = [json.loads(line) for line in (tmp_path / "single" / "predictions.jsonl").read_text().splitlines()]
    assert [p["prediction"] for p in alone] == [p["prediction"] for p in predictions]
    for a, b in zip(alone, predictions):
        assert abs(a["score"] - b["score"]) < 1e-5


def test_two_processes_train_lora_and_resume_exactly(tmp_path, tiny_model):
    """LoRA under DDP: adapter-only checkpoints, a merged model, and a resumed run that ends with the
    same weights as an uninterrupted one."""
    from safetensors.torch import load_file

    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}

    def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [*TORCHRUN, "run", "--task", "classification", "--model", tiny_model, "--output-dir", str(out),
               "peft.method=lora", "peft.r=4", "trainer.lr=5e-3", "trainer.max_steps=6", "trainer.eval_every=0",
               "trainer.save_every=3", "trainer.keep_checkpoints=5", "data.max_train_samples=96",
               "trainer.batch_size=16", *extra]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    straight = run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    checkpoint = tmp_path / "straight" / "checkpoints" / "step-00000003"
    assert (checkpoint / "model" / "adapter_model.safetensors").is_file()
    assert not (checkpoint / "model" / "model.safetensors").exists()

    # a second run continued from the first one's step-3 checkpoint ends where the first ended
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step-00000003",
                    resumed_dir / "checkpoints" / "step-00000003")
    resumed = run(resumed_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_file(str(tmp_path / "straight" / "model" / "model.safetensors")), \
        load_file(str(resumed_dir / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_two_processes_shard_the_model_with_fsdp(tmp_path, tiny_model):
    """trainer.fsdp on the CPU (gloo): the run saves an ordinary model folder equal to the DDP run's,
    evaluates every example once with uneven shards, and resumes exactly from a sharded checkpoint."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}

    def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [*TORCHRUN, "run", "--task", "classification", "--model", tiny_model, "--output-dir", str(out),
               "trainer.lr=1e-3", "trainer.max_steps=6", "trainer.eval_every=0", "trainer.save_every=3",
               "trainer.keep_checkpoints=5", "data.max_eval_samples=59", "trainer.eval_batch_size=7", *extra]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    sharded = run(tmp_path / "fsdp", "trainer.fsdp=true")
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "sharding the model over 2 processes" in sharded.stderr
    plain = run(tmp_path / "ddp")
    assert plain.returncode == 0, plain.stderr[-3000:]

    weights = load_file(str(tmp_path / "fsdp" / "model" / "model.safetensors"))
    reference = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    assert weights.keys() == reference.keys()
    for name in weights:  # the same training, whether the weights were sharded or replicated
        assert torch.allclose(weights[name], reference[name], atol=1e-6), name
    AutoModelForSequenceClassification.from_pretrained(tmp_path / "fsdp" / "model")  # an ordinary folder
    predictions = (tmp_path / "fsdp" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 59 and json.loads((tmp_path / "fsdp" / "eval_results.json").read_text())[
        "accuracy"] == json.loads((tmp_path / "ddp" / "eval_results.json").read_text())["accuracy"]

    # the checkpoint holds the complete optimizer state, and a run resumed from it ends the same
    saved = torch.load(tmp_path / "fsdp" / "checkpoints" / "step-00000003" / "training_state.pt", weights_only=False)
    moments = sum(s["exp_avg"].numel() for s in saved["optimizer"]["state"].values())
    assert moments == sum(t.numel() for t in reference.values())
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "fsdp" / "checkpoints" / "step-00000003", resumed_dir / "checkpoints" / "step-00000003")
    resumed = run(resumed_dir, "trainer.fsdp=true", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = load_file(str(resumed_dir / "model" / "model.safetensors"))
    for name in weights:
        assert torch.equal(weights[name], again[name]), name


def test_accelerate_launch_with_the_fsdp_config_shards(tmp_path, tiny_model):
    config = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "fsdp-cpu.yaml"
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    # accelerate launch: its launcher module, running sft as ``python -m sft_core`` in each process
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m", "sft_core", "run",
           "--task", "classification", "--model", tiny_model, "--output-dir", str(tmp_path), "trainer.max_steps=2",
           "trainer.eval_every=0", "trainer.save_every=0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sharding the model over 2 processes" in proc.stderr
    assert (tmp_path / "model" / "model.safetensors").is_file()
