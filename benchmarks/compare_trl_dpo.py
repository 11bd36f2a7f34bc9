"""sft's preference task against TRL's DPOTrainer: the same pairs, model, LoRA adapters (and their
initial weights), beta, batches, learning rate and schedule, each run in its own process, one after
the other; prints the loss and reward accuracy of the first steps side by side, then tokens/s and
peak memory.

Runs (``--runs``, default all):
  * sft            -- preference task, the reference by switching the adapters off each step
  * trl            -- DPOTrainer on exactly sft's batches (same pairs, same order): identical math,
                      so the loss and reward accuracy of every step must agree
  * sft-precompute -- sft with preference.reference: precompute (one reference forward per pair, before
                      training, in inference mode)
  * trl-precompute -- DPOTrainer with precompute_ref_log_probs=True
Pairs are read by sft (HH-RLHF transcripts by default), rendered by the model's chat template and
given to TRL as the rendered prompt and answer texts (ending with the end-of-turn token), so both
tokenize the same sequences; pairs longer than --max-length, or whose answers span several turns,
are left out (no truncation on either side). Tokens/s counts both answers' real tokens (prompt
included, no padding) over training time plus the precompute where there is one.

    pip install --no-deps trl
    python benchmarks/compare_trl_dpo.py                          # 64 HH-RLHF pairs, batch 8, fp32
    python benchmarks/compare_trl_dpo.py --pairs 128 --runs sft trl --output dpo.json
    python benchmarks/compare_trl_dpo.py --precision bf16         # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from compare_trl import machine, peak_rss_mb, sft_order  # noqa: E402 -- the SFT comparison's helpers
from sft_core import hookimpl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNS = ("sft", "trl", "sft-precompute", "trl-precompute")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2", help="model alias or folder (default: smollm2)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-1500.jsonl.gz"),
                   help="preference pairs sft reads (default: the HH-RLHF harmless-base file)")
    p.add_argument("--pairs", type=int, default=64, help="training pairs (one epoch over them)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per batch")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--precision", choices=("no", "bf16"), default="no")
    p.add_argument("--chat-template", help="preference.chat_template for a model without one (a Jinja file)")
    p.add_argument("--checkpointing", action="store_true",
                   help="gradient checkpointing on both sides (TRL's DPOConfig default; off here unless given)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count())
    p.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    p.add_argument("--output", help="also write the figures to this JSON file")
    p.add_argument("--worker", choices=RUNS, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- what both sides share -------------------------------------------------------------------

def sft_config(args, work: Path, train_file: str, **extra):
    from sft_core.config import build_config
    from sft_core.host.manager import PluginHost

    values = {"model": args.model, "output_dir": str(work), "data.train": train_file, "trainer.epochs": 1,
              "trainer.batch_size": args.batch_size, "trainer.eval_batch_size": args.batch_size, "trainer.lr": args.lr,
              "trainer.warmup_ratio": 0.0, "trainer.weight_decay": 0.0, "trainer.max_grad_norm": 1.0,
              "trainer.max_length": args.max_length, "trainer.mixed_precision": args.precision,
              "trainer.save_every": 0, "trainer.eval_every": 0, "trainer.log_every": 1,
              "trainer.group_by_length": False, "trainer.seed": 42, "preference.loss": "dpo",
              "preference.beta": args.beta, "peft.method": "lora", "peft.r": 16, "peft.alpha": 32,
              "peft.dropout": 0.0, "peft.save": "adapter", "trainer.gradient_checkpointing": args.checkpointing,
              "preference.chat_template": args.chat_template, **extra}
    host = PluginHost(extra_plugins=(SameAdapters(),))
    return host, build_config(host.get_task("preference"), [("compare_trl_dpo.py", values)])


def select_pairs(args, work: Path) -> tuple[Path, list[dict]]:
    """The first --pairs pairs that fit --max-length with single-turn answers: written as a JSONL file
    for sft (explicit prompt), and as TRL's texts (the rendered prompt, each answer's tokens decoded)."""
    from sft_core.engine import load_pretrained

    host, config = sft_config(args, work, args.data)
    _, task, path = load_pretrained(config.model, host, "preference", [("compare_trl_dpo.py", config.to_dict())])
    tokenizer = task.load_tokenizer(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples = task.load("train", args.data)
    chosen, texts = [], []
    for start in range(0, len(examples), 256):
        part = examples[start:start + 256]
        if len(chosen) >= args.pairs:
            break
        part = [e for e in part if len(e["chosen"]) == 1 and len(e["rejected"]) == 1]
        features = task.preprocess({**{k: [e[k] for e in part] for k in part[0]}, "example_id": list(range(len(part)))})
        for j, e in enumerate(part):
            ids, rejected = features["input_ids"][j], features["rejected_ids"][j]
            if features["truncated"][j] or len(chosen) >= args.pairs:
                continue
            start_at = features["prompt_len"][j]
            answer = lambda seq, labels: tokenizer.decode([t for t in labels if t != -100])  # noqa: E731
            chosen.append({"prompt": e["prompt"], "chosen": e["chosen"], "rejected": e["rejected"]})
            texts.append({"prompt": tokenizer.decode(ids[:start_at]),
                          "chosen": answer(ids, features["labels"][j]),
                          "rejected": answer(rejected, features["rejected_labels"][j])})
    out = work / "pairs.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(p) + "\n" for p in chosen), encoding="utf-8")
    return out, texts




def same_adapters(model) -> None:
    """LoRA's A matrices drawn from a seed per layer name (B stays zero), so that both frameworks
    start from the same adapters whatever else their random number generators did before."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                key = name[name.index("layers."):] if "layers." in name else name
                g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / p.shape[1] ** 0.5)


class SameAdapters:
    """A plugin for sft's run: ``same_adapters`` at the start of training."""

    @hookimpl
    def sft_train_start(self, config, task, model, state):
        same_adapters(model)




def pair_tokens(texts: list[dict], tokenizer) -> int:
    return sum(len(tokenizer(t["prompt"] + t[side], add_special_tokens=False)["input_ids"])
               for t in texts for side in ("chosen", "rejected"))


# --- the workers -----------------------------------------------------------------------------

def run_sft(args, work: Path, precompute: bool) -> dict:
    from sft_core import engine

    train_file, texts = select_pairs(args, work / "pairs")
    extra = {"preference.reference": "precompute" if precompute else "adapters"}
    host, config = sft_config(args, work / "run", str(train_file), **extra)
    started = time.perf_counter()
    result = engine.train(config, host)
    wall = time.perf_counter() - started
    records = [r for r in map(json.loads, (work / "run" / "metrics.jsonl").read_text().splitlines())
               if "loss" in r and "event" not in r]
    info = json.loads((work / "run" / "run_info.json").read_text())
    reference_seconds = info["data"]["train"].get("reference_seconds", 0.0)
    from transformers import AutoTokenizer

    from sft_core.kit import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    return {"train_seconds": result["train"]["train_runtime"], "reference_seconds": reference_seconds,
            "wall_seconds_in_process": round(wall, 1), "steps": result["train"]["train_steps"],
            "tokens": pair_tokens(texts, tokenizer), "pairs": len(texts),
            "losses": [r["loss"] for r in records][:5], "accuracies": [r["reward_accuracy"] for r in records][:5],
            "peak_rss_mb": peak_rss_mb()}


def run_trl(args, work: Path, precompute: bool) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from sft_core.kit import resolve_model

    _, texts = select_pairs(args, work / "pairs")
    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    order = sft_order(len(texts), args.batch_size, 42)  # identical math: sft's batches, read in order
    dataset = datasets.Dataset.from_list([texts[i] for i in order])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    config = DPOConfig(output_dir=str(work / "trl"), per_device_train_batch_size=args.batch_size, num_train_epochs=1,
                       learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                       max_grad_norm=1.0, max_length=args.max_length, logging_steps=1, save_strategy="no",
                       report_to="none", use_cpu=not torch.cuda.is_available(), bf16=args.precision == "bf16",
                       seed=42, beta=args.beta, loss_type=["sigmoid"], train_sampling_strategy="sequential",
                       dataloader_num_workers=0, disable_tqdm=True, precompute_ref_log_probs=precompute,
                       precompute_ref_batch_size=args.batch_size, gradient_checkpointing=args.checkpointing,
                       gradient_checkpointing_kwargs={"use_reentrant": False} if args.checkpointing else None)
    reference = {"seconds": 0.0}
    original = DPOTrainer._precompute_ref_logps

    def timed(self, *a, **kw):
        started = time.perf_counter()
        try:
            return original(self, *a, **kw)
        finally:
            reference["seconds"] += time.perf_counter() - started

    DPOTrainer._precompute_ref_logps = timed
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    same_adapters(trainer.model)
    started = time.perf_counter()
    output = trainer.train()
    seconds = output.metrics.get("train_runtime", time.perf_counter() - started)
    records = [r for r in trainer.state.log_history if "loss" in r]
    return {"train_seconds": seconds, "reference_seconds": round(reference["seconds"], 2),
            "steps": trainer.state.global_step, "tokens": pair_tokens(texts, tokenizer), "pairs": len(texts),
            "losses": [r["loss"] for r in records][:5], "accuracies": [r["rewards/accuracies"] for r in records][:5],
            "peak_rss_mb": peak_rss_mb()}


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    run = run_sft if args.worker.startswith("sft") else run_trl
    print("FIGURES " + json.dumps(run(args, work, precompute=args.worker.endswith("precompute"))))


# --- the comparison --------------------------------------------------------------------------

def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TQDM_DISABLE="1", OMP_NUM_THREADS=str(args.threads))
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="compare-trl-dpo-") as tmp:
        for name in args.runs:
            cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--worker", name,
                   "--workdir", str(Path(tmp) / name)]
            started = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("FIGURES ")), None)
            if done.returncode or line is None:
                tail = (done.stderr or done.stdout).strip().splitlines()[-8:]
                results[name] = {"error": " | ".join(tail)}
                print(f"{name}: failed\n  " + "\n  ".join(tail), file=sys.stderr)
                continue
            figures = json.loads(line[len("FIGURES "):])
            seconds = figures["train_seconds"] + figures["reference_seconds"]
            figures["tokens_per_second"] = round(figures["tokens"] / seconds, 1)
            figures["wall_seconds"] = round(time.perf_counter() - started, 1)
            results[name] = figures
            print(f"{name}: {figures['tokens_per_second']} tokens/s", file=sys.stderr)
    report(args, results)
    if args.output:
        Path(args.output).write_text(json.dumps({"args": vars(args), "machine": machine(), "results": results},
                                                indent=2) + "\n")




def report(args, results: dict) -> None:
    ok = {k: v for k, v in results.items() if "error" not in v}
    pairs = next((f["pairs"] for f in ok.values()), args.pairs)
    print(f"\n{pairs} pairs of {Path(args.data).name}, batch {args.batch_size} pairs, max length {args.max_length}, "
          f"DPO beta {args.beta}, LoRA r16 on all projections, lr {args.lr}, precision {args.precision}, "
          f"gradient checkpointing {'on' if args.checkpointing else 'off'} on both sides, "
          f"{args.threads} threads; {machine()}")
    print(f"{'run':<15} {'tokens/s':>9} {'train s':>8} {'ref s':>6} {'steps':>6} {'tokens':>7} {'peak MB':>8}  "
          "loss / reward accuracy of steps 1-5")
    for name, f in results.items():
        if "error" in f:
            print(f"{name:<15} failed: {f['error'][:100]}")
            continue
        steps = " ".join(f"{a:.4f}/{b:.3f}" for a, b in zip(f["losses"], f["accuracies"]))
        print(f"{name:<15} {f['tokens_per_second']:>9} {f['train_seconds']:>8.1f} {f['reference_seconds']:>6.1f} "
              f"{f['steps']:>6} {f['tokens']:>7} {f['peak_rss_mb']:>8.0f}  {steps}")
    for a, b in (("sft", "trl"), ("sft-precompute", "trl-precompute"), ("sft-precompute", "trl")):
        if a in ok and b in ok:
            print(f"{a} vs {b}: {ok[a]['tokens_per_second'] / ok[b]['tokens_per_second']:.2f}x tokens/s, "
                  f"peak memory {ok[a]['peak_rss_mb']:.0f} vs {ok[b]['peak_rss_mb']:.0f} MB")
    for a, b in (("sft", "trl"), ("sft-precompute", "trl-precompute")):
        if a in ok and b in ok:
            dl = max(abs(x - y) for x, y in zip(ok[a]["losses"], ok[b]["losses"]))
            da = max(abs(x - y) for x, y in zip(ok[a]["accuracies"], ok[b]["accuracies"]))
            print(f"steps 1-5, {a} - {b}: largest loss difference {dl:.1e}, reward accuracy {da:.1e} "
                  f"({'equal to 4 decimals' if dl < 5e-5 and da < 5e-5 else 'NOT equal'})")


if __name__ == "__main__":
    main()
