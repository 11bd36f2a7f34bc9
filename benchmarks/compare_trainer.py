"""sft against the Hugging Face Trainer: the same model, SST-2 examples, batch size, learning rate,
schedule, epochs and dev-set evaluation, each run in its own process, one after the other.

Runs three jobs and prints their figures side by side, then the ratios:
  * sft               -- `sft run --task classification` (length-grouped batches, dynamic padding)
  * trainer (best)    -- the Trainer with length grouping and dynamic padding
  * trainer (default) -- the Trainer padding every example to max length
Training samples/s come from each framework's own train_samples_per_second; evaluation samples/s
from its own evaluation timing; end-to-end wall time is the whole process (start-up, reading and
tokenizing, training, evaluation) measured from outside; peak memory is the process's max RSS.

    python benchmarks/compare_trainer.py                      # 4,000 examples, 3 epochs
    python benchmarks/compare_trainer.py --train-samples 500 --epochs 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_measured(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd``; returns (completed process, wall seconds, peak RSS in MB of that process)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0), err.seek(0)
        code = os.waitstatus_to_exitcode(status)
        done = subprocess.CompletedProcess(cmd, code, out.read().decode(), err.read().decode())
    if code != 0:
        sys.exit(f"failed ({code}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return done, wall, usage.ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model", default="minilm", help="sft model alias or folder (the Trainer gets the same folder)")
    p.add_argument("--train-samples", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip-default", action="store_true", help="skip the slow pad-to-max-length Trainer run")
    p.add_argument("--output", help="also write the figures as JSON here")
    args = p.parse_args()

    sst2 = Path(args.data_dir) / "glue" / "SST-2"
    if not (sst2 / "train.tsv").is_file():
        sys.exit(f"SST-2 not found under {sst2} (give --data-dir)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    sys.path.insert(0, str(ROOT))
    from sft_core.models import resolve_model

    model_dir = resolve_model(args.model)
    bin_dir = Path(sys.executable).parent
    work = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    env["SFT_CACHE_DIR"] = str(work / "cache")  # a cold feature cache: tokenization is part of the run

    results = {}
    sft_out = work / "sft"
    cmd = [str(bin_dir / "sft"), "run", "--task", "classification", "--model", model_dir,
           "--train", str(sst2 / "train.tsv"), "--eval", str(sst2 / "dev.tsv"), "--output-dir", str(sft_out),
           f"data.max_train_samples={args.train_samples}", f"trainer.epochs={args.epochs}", f"trainer.lr={args.lr}",
           f"trainer.batch_size={args.batch_size}", f"trainer.eval_batch_size={args.eval_batch_size}",
           f"trainer.max_length={args.max_length}", f"trainer.seed={args.seed}", "trainer.warmup_ratio=0.1",
           "trainer.weight_decay=0.01", "trainer.scheduler=linear",
           # the Trainer side evaluates once at the end and saves no checkpoints: do the same work
           "trainer.eval_every=0", "trainer.save_every=0"]
    print("running sft ...", file=sys.stderr)
    _, wall, rss = run_measured(cmd, env)
    train = json.loads((sft_out / "train_results.json").read_text())
    ev = json.loads((sft_out / "eval_results.json").read_text())
    results["sft"] = {"train_samples_per_second": train["train_samples_per_second"],
                      "eval_samples_per_second": ev["eval_samples_per_second"], "accuracy": ev["accuracy"],
                      "train_runtime": train["train_runtime"], "wall_time": wall, "peak_rss_mb": rss}

    for padding in ("dynamic", "max_length"):
        if padding == "max_length" and args.skip_default:
            continue
        name = "trainer_best" if padding == "dynamic" else "trainer_default"
        print(f"running the Trainer ({padding} padding) ...", file=sys.stderr)
        cmd = [sys.executable, str(HERE / "hf_trainer_classification.py"), "--model", model_dir,
               "--data-dir", args.data_dir, "--train-samples", str(args.train_samples), "--epochs", str(args.epochs),
               "--lr", str(args.lr), "--batch-size", str(args.batch_size), "--eval-batch-size", str(args.eval_batch_size),
               "--max-length", str(args.max_length), "--seed", str(args.seed), "--padding", padding,
               "--output-dir", str(work / name)]
        done, wall, rss = run_measured(cmd, env)
        out = json.loads(done.stdout.strip().splitlines()[-1])
        results[name] = {"train_samples_per_second": out["train_samples_per_second"],
                         "eval_samples_per_second": out["eval_samples_per_second"], "accuracy": out["accuracy"],
                         "train_runtime": out["train_runtime"], "wall_time": wall, "peak_rss_mb": rss}

    keys = ["train_samples_per_second", "eval_samples_per_second", "train_runtime", "wall_time", "peak_rss_mb", "accuracy"]
    print(f"\nSST-2, {args.train_samples} training examples, {args.epochs} epochs, batch {args.batch_size}, "
          f"lr {args.lr}, max length {args.max_length}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs\n")
    print(f"| {'figure':<26} | " + " | ".join(f"{n:>15}" for n in results) + " |")
    print(f"|{'-' * 28}|" + "|".join("-" * 17 for _ in results) + "|")
    for key in keys:
        print(f"| {key:<26} | " + " | ".join(f"{results[n][key]:>15.3f}" for n in results) + " |")
    s = results["sft"]
    print()
    for name in [n for n in results if n != "sft"]:
        t = results[name]
        print(f"sft vs {name}: training samples/s x{s['train_samples_per_second'] / t['train_samples_per_second']:.2f}, "
              f"evaluation samples/s x{s['eval_samples_per_second'] / t['eval_samples_per_second']:.2f}, "
              f"end-to-end x{t['wall_time'] / s['wall_time']:.2f} faster, "
              f"peak memory x{s['peak_rss_mb'] / t['peak_rss_mb']:.2f}")
    if args.output:
        Path(args.output).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
