"""sft against the Hugging Face Trainer: the same model, data, batch size, learning rate, schedule,
epochs and evaluation, each run in its own process, one after the other, for classification
(GLUE SST-2) and NER (CoNLL-2003).

For each task it runs three jobs and prints their figures side by side, then the ratios:
  * sft               -- `sft run --task TASK` (length-grouped batches, dynamic padding)
  * trainer (best)    -- the Trainer with length grouping and dynamic padding
  * trainer (default) -- the Trainer padding every example to max length
Training samples/s come from each framework's own train_samples_per_second; evaluation samples/s
from its own evaluation timing; end-to-end wall time is the whole process (start-up, reading and
tokenizing, training, evaluation) measured from outside; peak memory is the process's max RSS.
Hyper-parameters default to each sft task's defaults (classification: batch 32, lr 1e-4; ner:
batch 16, lr 3e-4; both 3 epochs, linear schedule, 10% warmup, weight decay 0.01, max length 128).

    python benchmarks/compare_trainer.py                                  # classification: 4,000 SST-2 sentences
    python benchmarks/compare_trainer.py --task ner                       # ner: 2,000 CoNLL-2003 sentences
    python benchmarks/compare_trainer.py --task all --output cmp.json     # both
    python benchmarks/compare_trainer.py --task ner --train-samples 300 --epochs 1 --skip-default   # a quick check
    python benchmarks/compare_trainer.py --task all --precision bf16 --skip-default   # both with bf16 autocast
    python benchmarks/compare_trainer.py --model smollm2 --lora --skip-default        # SmolLM2 + LoRA, against peft
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
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Workload:
    """One task's data, defaults and Trainer script."""

    task: str
    script: str
    train_file: str  # under --data-dir
    eval_file: str
    train_samples: int
    lr: float
    batch_size: int
    metric: str  # the quality figure both frameworks report


WORKLOADS = {
    "classification": Workload("classification", "hf_trainer_classification.py", "glue/SST-2/train.tsv",
                               "glue/SST-2/dev.tsv", 4000, 1e-4, 32, "accuracy"),
    "ner": Workload("ner", "hf_trainer_ner.py", "conll2003/eng.train", "conll2003/eng.testa", 2000, 3e-4, 16, "f1"),
}
FIGURES = ["train_samples_per_second", "eval_samples_per_second", "train_runtime", "wall_time", "peak_rss_mb"]


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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=[*WORKLOADS, "all"], default="classification", help="which comparison to run")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model", default="minilm", help="sft model alias or folder (the Trainer gets the same folder)")
    p.add_argument("--train-samples", type=int, help="first N training examples (default: 4000 sentences for "
                                                       "classification, 2000 for ner)")
    p.add_argument("--eval-samples", type=int, help="first N evaluation examples (default: the whole dev set)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, help="learning rate (default: the sft task's, 1e-4 or 3e-4)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the sft task's, 32 or 16)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="both frameworks in fp32, or both with bf16 autocast (sft: trainer.mixed_precision=bf16, "
                        "the Trainer: bf16=True); bf16 pays off on CPUs with AVX512-BF16 or AMX")
    p.add_argument("--skip-default", action="store_true", help="skip the slow pad-to-max-length Trainer run")
    p.add_argument("--lora", action="store_true", help="both sides train LoRA adapters (r 16, alpha 32, dropout "
                   "0.05, the family's default layers; sft's peft section, peft's get_peft_model for the Trainer)")
    p.add_argument("--output", help="also write the figures as JSON here")
    return p.parse_args(argv)


def compare(w: Workload, args: argparse.Namespace, model_dir: str, env: dict, work: Path) -> dict:
    """Run sft and the Trainer on one workload; returns {job name: figures}."""
    data = Path(args.data_dir)
    train_samples = args.train_samples or w.train_samples
    lr = args.lr or w.lr
    batch_size = args.batch_size or w.batch_size
    limits = [f"data.max_train_samples={train_samples}"]
    limits += [f"data.max_eval_samples={args.eval_samples}"] if args.eval_samples else []
    results = {}
    sft_out = work / f"{w.task}-sft"
    cmd = [str(Path(sys.executable).parent / "sft"), "run", "--task", w.task, "--model", model_dir,
           "--train", str(data / w.train_file), "--eval", str(data / w.eval_file), "--output-dir", str(sft_out),
           *limits, f"trainer.epochs={args.epochs}", f"trainer.lr={lr}", f"trainer.batch_size={batch_size}",
           f"trainer.eval_batch_size={args.eval_batch_size}", f"trainer.max_length={args.max_length}",
           f"trainer.seed={args.seed}", "trainer.warmup_ratio=0.1", "trainer.weight_decay=0.01",
           "trainer.scheduler=linear",
           f"trainer.mixed_precision={'bf16' if args.precision == 'bf16' else 'no'}",
           # the Trainer side evaluates once at the end and saves no checkpoints: do the same work
           "trainer.eval_every=0", "trainer.save_every=0"]
    lora_args = []
    if args.lora:  # the same adapters on both sides; sft keeps them unmerged, as the Trainer does
        targets = lora_targets(model_dir)
        cmd += ["peft.method=lora", "peft.r=16", "peft.alpha=32", "peft.dropout=0.05", "peft.save=adapter",
                f"peft.target_modules=[{','.join(targets)}]"]
        lora_args = ["--lora", "--lora-r", "16", "--lora-alpha", "32", "--lora-dropout", "0.05",
                     "--lora-targets", ",".join(targets)]
    print(f"{w.task}: running sft ...", file=sys.stderr)
    _, wall, rss = run_measured(cmd, env)
    train = json.loads((sft_out / "train_results.json").read_text())
    ev = json.loads((sft_out / "eval_results.json").read_text())
    results["sft"] = {"train_samples_per_second": train["train_samples_per_second"],
                      "eval_samples_per_second": ev["eval_samples_per_second"], w.metric: ev[w.metric],
                      "train_runtime": train["train_runtime"], "wall_time": wall, "peak_rss_mb": rss}

    for padding in ("dynamic", "max_length"):
        if padding == "max_length" and args.skip_default:
            continue
        name = "trainer_best" if padding == "dynamic" else "trainer_default"
        print(f"{w.task}: running the Trainer ({padding} padding) ...", file=sys.stderr)
        cmd = [sys.executable, str(HERE / w.script), "--model", model_dir, "--data-dir", args.data_dir,
               "--train-samples", str(train_samples), "--epochs", str(args.epochs), "--lr", str(lr),
               "--batch-size", str(batch_size), "--eval-batch-size", str(args.eval_batch_size),
               "--max-length", str(args.max_length), "--seed", str(args.seed), "--padding", padding,
               "--output-dir", str(work / f"{w.task}-{name}"), *(["--bf16"] if args.precision == "bf16" else []),
               *lora_args,
               *(["--eval-samples", str(args.eval_samples)] if args.eval_samples else [])]
        done, wall, rss = run_measured(cmd, env)
        out = json.loads(done.stdout.strip().splitlines()[-1])
        results[name] = {"train_samples_per_second": out["train_samples_per_second"],
                         "eval_samples_per_second": out["eval_samples_per_second"], w.metric: out[w.metric],
                         "train_runtime": out["train_runtime"], "wall_time": wall, "peak_rss_mb": rss}
    return results


def lora_targets(model_dir: str) -> list[str]:
    """The layer names sft adapts by default for this model's family (both sides get the same list)."""
    from sft_core.models.adapters import FAMILY_TARGETS

    kind = json.loads((Path(model_dir) / "config.json").read_text())["model_type"]
    if kind not in FAMILY_TARGETS:
        sys.exit(f"--lora: no default layer names for {kind} models in sft_core.models.adapters.FAMILY_TARGETS")
    return FAMILY_TARGETS[kind]


def report(w: Workload, args: argparse.Namespace, results: dict) -> None:
    print(f"\n{w.task}: {args.train_samples or w.train_samples} training examples of {w.train_file}, "
          f"{args.epochs} epochs, batch {args.batch_size or w.batch_size}, lr {args.lr or w.lr}, max length "
          f"{args.max_length}, {args.precision}{', LoRA' if args.lora else ''}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n")
    print(f"| {'figure':<26} | " + " | ".join(f"{n:>15}" for n in results) + " |")
    print(f"|{'-' * 28}|" + "|".join("-" * 17 for _ in results) + "|")
    for key in [*FIGURES, w.metric]:
        print(f"| {key:<26} | " + " | ".join(f"{results[n][key]:>15.3f}" for n in results) + " |")
    s = results["sft"]
    print()
    for name in [n for n in results if n != "sft"]:
        t = results[name]
        print(f"{w.task}, sft vs {name}: training samples/s x{s['train_samples_per_second'] / t['train_samples_per_second']:.2f}, "
              f"evaluation samples/s x{s['eval_samples_per_second'] / t['eval_samples_per_second']:.2f}, "
              f"end-to-end x{t['wall_time'] / s['wall_time']:.2f} faster, "
              f"peak memory x{s['peak_rss_mb'] / t['peak_rss_mb']:.2f}")


def main(argv=None) -> None:
    args = parse_args(argv)
    workloads = list(WORKLOADS.values()) if args.task == "all" else [WORKLOADS[args.task]]
    for w in workloads:  # check every data file before the first long run
        for name in (w.train_file, w.eval_file):
            if not (Path(args.data_dir) / name).is_file():
                sys.exit(f"{name} not found under {args.data_dir} (give --data-dir)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    sys.path.insert(0, str(ROOT))
    from sft_core.models.aliases import resolve_model

    model_dir = resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    env["SFT_CACHE_DIR"] = str(work / "cache")  # a cold feature cache: tokenization is part of the run
    everything = {}
    for w in workloads:
        everything[w.task] = compare(w, args, model_dir, env, work)
        report(w, args, everything[w.task])
        if args.output:  # after each task, so a later failure keeps what was measured
            Path(args.output).write_text(json.dumps({"args": vars(args), "results": everything}, indent=2))


if __name__ == "__main__":
    main()
