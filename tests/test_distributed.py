"""Two processes on the CPU (torchrun, gloo): the run ends, each evaluation example is scored
exactly once, and only the main process writes files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SAMPLE

BIN = Path(sys.executable).parent


@pytest.mark.skipif(not (BIN / "torchrun").exists(), reason="torchrun not installed")
def test_two_processes_evaluate_every_example_once(tmp_path, tiny_model):
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    # 59 evaluation examples in batches of 7: the two shards differ in size and end in partial batches
    common = ["data.max_eval_samples=59", "trainer.eval_batch_size=7"]
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "sft"), "run",
           "--task", "classification", "--model", tiny_model, "--output-dir", str(out),
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
    single = subprocess.run([str(BIN / "sft"), "eval", "--model", str(out / "model"), "--data",
                             str(SAMPLE / "eval.jsonl"), "--output-dir", str(tmp_path / "single"), *common],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    alone = [json.loads(line) for line in (tmp_path / "single" / "predictions.jsonl").read_text().splitlines()]
    assert [p["prediction"] for p in alone] == [p["prediction"] for p in predictions]
    for a, b in zip(alone, predictions):
        assert abs(a["score"] - b["score"]) < 1e-5
