"""sft's instruct task against TRL's SFTTrainer: the same model, examples, LoRA adapters, sequence
length, batch size, learning rate, schedule and steps, each run in its own process, one after the
other; prints tokens/s, peak memory and the loss of the first steps side by side.

Runs (``--runs``, default all):
  * sft            -- instruct task, batches in a fixed random order, padded to the longest
  * trl            -- SFTTrainer on exactly sft's batches (same order, same padding): identical math,
                      so the losses of the first steps must agree
  * sft-packed     -- sft with exact packing (instruct.packing: true)
  * trl-grouped    -- SFTTrainer with length-grouped batches (its fastest setting without packing)
  * trl-packed     -- SFTTrainer with its packing (best-fit decreasing, padding-free); checked for
                      correctness on this machine: its first loss must equal the exact one
Both sides see the same examples (SQuAD questions, or SST-2 sentences, as instructions, through
sft's chat-template rendering), the loss on the answer and its end-of-turn token only. Tokens/s
counts the examples' real tokens (no padding) over each framework's own training time.

    pip install --no-deps trl      # TRL's dependencies (transformers, accelerate, datasets) are sft's
    python benchmarks/compare_trl.py                              # SQuAD, 64 examples, fp32
    python benchmarks/compare_trl.py --precision bf16 --output trl.json
    python benchmarks/compare_trl.py --source sst2 --examples 256 --runs sft trl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNS = ("sft", "trl", "sft-packed", "trl-grouped", "trl-packed")

SOURCES = {
    "squad": {"data.train": "{data}/squad/dev-v1.1.json", "data.source_task": "qa",
              "data.source_data": {"train_articles": "0-39"}},
    "sst2": {"data.train": "{data}/glue/SST-2/train.tsv", "data.source_task": "classification",
             "data.prompt": "Is the sentiment of this movie review positive or negative?\n\n{text}",
             "data.verbalizer": {"0": "negative", "1": "positive"}},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2", help="model alias or folder (default: smollm2)")
    p.add_argument("--data-dir", default=os.environ.get("SFT_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--source", choices=[*sorted(SOURCES), "file"], default="squad")
    p.add_argument("--data-file", help="with --source file: a JSONL file of instruct examples")
    p.add_argument("--examples", type=int, default=64, help="training examples (one epoch over them)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--precision", choices=("no", "bf16"), default="no")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count())
    p.add_argument("--chat-template", help="instruct.chat_template for a model without one (e.g. chatml)")
    p.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    p.add_argument("--output", help="also write the figures to this JSON file")
    p.add_argument("--worker", choices=RUNS, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- what both sides share -------------------------------------------------------------------

def sft_config(args, work: Path, packing: bool, **extra):
    from sft_core.config import build_config
    from sft_core.host.manager import PluginHost

    host = PluginHost()
    if args.source == "file":  # a JSONL file of sft's instruct formats (benchmarks/memory.py's long texts)
        data = {"data.train": args.data_file}
    else:
        data = {k: (v.replace("{data}", args.data_dir) if k == "data.train" else v) for k, v in SOURCES[args.source].items()}
    values = {"model": args.model, "output_dir": str(work), **data, "data.max_train_samples": args.examples,
              "trainer.epochs": 1, "trainer.batch_size": args.batch_size, "trainer.lr": args.lr,
              "trainer.warmup_ratio": 0.0, "trainer.weight_decay": 0.0, "trainer.max_grad_norm": 1.0,
              "trainer.max_length": args.max_length, "trainer.mixed_precision": args.precision,
              "trainer.save_every": 0, "trainer.eval_every": 0, "trainer.log_every": 1,
              "trainer.group_by_length": False, "trainer.seed": 42, "instruct.packing": packing,
              "instruct.chat_template": args.chat_template, "peft.method": "lora", "peft.r": 16, "peft.alpha": 32, "peft.dropout": 0.0, "peft.save": "adapter",
              **extra}
    return host, build_config(host.get_task("instruct"), [("compare_trl.py", values)])


def examples_and_tokenizer(args, work: Path):
    """The training examples as sft reads them, the tokenizer, and each example's prompt and answer text."""
    from sft_core.engine import load_pretrained as _pretrained
    from sft_core.kit import chat_template as template

    host, config = sft_config(args, work, packing=False)
    _, task, path = _pretrained(config.model, host, "instruct", [("compare_trl.py", config.to_dict())])
    examples = task.load("train", config.data.train)[:args.examples]
    tokenizer = task.load_tokenizer(path)
    pairs = []
    for e in examples:
        prompt = template.render(tokenizer, e["messages"][:-1], True)
        full = template.encode(tokenizer, e["messages"], "example", task._whitespace)
        start, end = full.spans[-1]
        pairs.append((prompt, tokenizer.decode(full.input_ids[start:end])))
    return examples, tokenizer, pairs, path, config


def sft_order(n: int, batch_size: int, seed: int) -> list[int]:
    from sft_core.engine.batching import train_batches

    return [i for batch in train_batches([0] * n, batch_size, seed, 0, False) for i in batch]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the workers -----------------------------------------------------------------------------

def run_sft(args, work: Path, packing: bool, **extra) -> dict:
    """sft's instruct task; ``extra``: config keys on top (trainer.gradient_checkpointing, ...)."""
    from sft_core import engine

    host, config = sft_config(args, work, packing, **extra)
    result = engine.train(config, host)
    losses = [r["loss"] for r in map(json.loads, (work / "metrics.jsonl").read_text().splitlines())
              if "loss" in r and "event" not in r]
    info = json.loads((work / "run_info.json").read_text())
    _, tokenizer, pairs, _, _ = examples_and_tokenizer(args, work / "tokens")
    tokens = sum(min(len(tokenizer(p + a, add_special_tokens=False)["input_ids"]), args.max_length) for p, a in pairs)
    figures = {"train_seconds": result["train"]["train_runtime"], "steps": result["train"]["train_steps"],
               "tokens": tokens, "losses": losses[:5], "peak_rss_mb": peak_rss_mb()}
    if packing:
        figures["packed_sequences"] = info["data"]["train"]["packed_sequences"]
    return figures


def run_trl(args, work: Path, mode: str, checkpointing: bool = False) -> dict:
    trainer = build_trl(args, work, mode, checkpointing)
    tokens = sum(int(sum(x)) if "attention_mask" in trainer.train_dataset.column_names else len(x)
                 for x in trainer.train_dataset["attention_mask" if "attention_mask" in trainer.train_dataset.column_names
                                                 else "input_ids"])
    leak = packed_loss_check(trainer) if mode == "trl-packed" else None
    start = time.perf_counter()
    output = trainer.train()
    seconds = output.metrics.get("train_runtime", time.perf_counter() - start)
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    figures = {"train_seconds": seconds, "steps": trainer.state.global_step, "tokens": tokens, "losses": losses[:5],
               "peak_rss_mb": peak_rss_mb()}
    if mode == "trl-packed":
        figures["packed_sequences"] = len(trainer.train_dataset)
        figures["first_batch_loss_as_trained"], figures["first_batch_loss_exact"] = leak
    return figures


def build_trl(args, work: Path, mode: str, checkpointing: bool = False, pairs=None, max_steps: int = -1):
    """TRL's SFTTrainer on the run's examples (``pairs``: prompt and completion texts instead)."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    if pairs is None:
        _, tokenizer, pairs, path, _ = examples_and_tokenizer(args, work)
    else:
        from sft_core.kit import resolve_model
        from transformers import AutoTokenizer

        path = resolve_model(args.model)
        tokenizer = AutoTokenizer.from_pretrained(path)
    # identical math: the dataset in sft's batch order, read sequentially
    order = sft_order(len(pairs), args.batch_size, 42) if mode == "trl" else list(range(len(pairs)))
    # plain prompt and completion text (the completion ends with the end-of-turn token, which is
    # SmolLM2's EOS), so TRL tokenizes exactly sft's sequences and masks all but the answer
    dataset = datasets.Dataset.from_list([{"prompt": pairs[i][0], "completion": pairs[i][1]} for i in order])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):  # a template's tokens added (chatml)
        model.resize_token_embeddings(len(tokenizer))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    config = SFTConfig(output_dir=str(work / "trl"), per_device_train_batch_size=args.batch_size, num_train_epochs=1,
                       learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                       max_grad_norm=1.0, max_length=args.max_length, logging_steps=1, save_strategy="no",
                       report_to="none", use_cpu=True, bf16=args.precision == "bf16", seed=42,
                       completion_only_loss=True, packing=mode == "trl-packed",
                       train_sampling_strategy={"trl": "sequential", "trl-grouped": "group_by_length"}.get(mode, "random"),
                       dataloader_num_workers=0, disable_tqdm=True, max_steps=max_steps,
                       gradient_checkpointing=checkpointing,
                       gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None)

    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=lora)
    return trainer


def packed_loss_check(trainer) -> tuple[float, float]:
    """The loss of TRL's first packed batch as its training forward computes it, and with the KV
    cache off (the setting under which transformers confines attention to each packed example)."""
    import torch

    batch = next(iter(trainer.get_train_dataloader()))
    batch = {k: v.to(trainer.model.device) if hasattr(v, "to") else v for k, v in batch.items()}
    trainer.model.train()
    with torch.no_grad():
        as_trained = trainer.model(**batch).loss.item()
        exact = trainer.model(**batch, use_cache=False).loss.item()
    return as_trained, exact


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    if args.worker.startswith("sft"):
        figures = run_sft(args, work, packing=args.worker == "sft-packed")
    else:
        figures = run_trl(args, work, args.worker)
    print("FIGURES " + json.dumps(figures))


# --- the comparison --------------------------------------------------------------------------

def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TQDM_DISABLE="1", OMP_NUM_THREADS=str(args.threads))
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="compare-trl-") as tmp:
        for name in args.runs:
            cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--worker", name,
                   "--workdir", str(Path(tmp) / name)]
            started = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((l for l in done.stdout.splitlines() if l.startswith("FIGURES ")), None)
            if done.returncode or line is None:
                tail = (done.stderr or done.stdout).strip().splitlines()[-8:]
                results[name] = {"error": " | ".join(tail)}
                print(f"{name}: failed\n  " + "\n  ".join(tail), file=sys.stderr)
                continue
            figures = json.loads(line[len("FIGURES "):])
            figures["tokens_per_second"] = round(figures["tokens"] / figures["train_seconds"], 1)
            figures["wall_seconds"] = round(time.perf_counter() - started, 1)
            results[name] = figures
            print(f"{name}: {figures['tokens_per_second']} tokens/s", file=sys.stderr)
    report(args, results)
    if args.output:
        Path(args.output).write_text(json.dumps({"args": vars(args), "machine": machine(), "results": results},
                                                indent=2) + "\n")


def machine() -> dict:
    import torch
    import transformers

    try:
        import trl
        trl_version = trl.__version__
    except ImportError:
        trl_version = None
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl_version}


def report(args, results: dict) -> None:
    print(f"\n{args.examples} {args.source} examples, batch {args.batch_size}, max length {args.max_length}, "
          f"LoRA r16 on all projections, precision {args.precision}, {args.threads} threads; {machine()}")
    print(f"{'run':<12} {'tokens/s':>9} {'train s':>8} {'steps':>6} {'tokens':>7} {'peak MB':>8}  first losses")
    for name, f in results.items():
        if "error" in f:
            print(f"{name:<12} failed: {f['error'][:100]}")
            continue
        losses = " ".join(f"{x:.4f}" for x in f["losses"])
        print(f"{name:<12} {f['tokens_per_second']:>9} {f['train_seconds']:>8.1f} {f['steps']:>6} {f['tokens']:>7} "
              f"{f['peak_rss_mb']:>8.0f}  {losses}")
    def ratio(a, b):
        if a in results and b in results and "error" not in results[a] and "error" not in results[b]:
            return results[a]["tokens_per_second"] / results[b]["tokens_per_second"]
        return None
    for a, b, what in (("sft", "trl", "identical math"), ("sft-packed", "trl-grouped", "sft packed vs TRL grouped"),
                       ("sft-packed", "trl-packed", "sft packed vs TRL packed")):
        r = ratio(a, b)
        if r is not None:
            print(f"{what}: {r:.2f}x tokens/s")
    if "sft" in results and "trl" in results and "error" not in results["sft"] and "error" not in results["trl"]:
        first = abs(results["sft"]["losses"][0] - results["trl"]["losses"][0])
        print(f"first-step loss, sft - trl: {first:.2e} (equal batches, equal weights: should be ~0)")
    packed = results.get("trl-packed")
    if packed and "error" not in packed:
        a, b = packed["first_batch_loss_as_trained"], packed["first_batch_loss_exact"]
        verdict = "exact" if abs(a - b) < 1e-4 else "examples attend to each other"
        print(f"TRL packing on this machine: first packed batch loss {a:.4f} as trained, {b:.4f} with attention "
              f"confined to each example: {verdict}")


if __name__ == "__main__":
    main()
