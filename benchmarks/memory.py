"""Memory of fine-tuning an LLM, sft against TRL: where the peak goes, and the longest sequence a
memory budget trains. Each configuration runs in its own process, one after the other, on the
same examples (benchmarks/compare_trl.py's workload and workers: SmolLM2-135M-Instruct, LoRA r16
on every projection, fp32, SQuAD questions as instructions, the loss on the answers).

Three parts (``--parts``, default all):

  configs    a training run per configuration; peak resident memory (the process's max RSS),
             tokens/s and the first losses side by side:
               sft            the default: the loss over chunks of label tokens (trainer.chunked_loss)
               sft-unchunked  trainer.chunked_loss=false: the label tokens' full-vocabulary logits
               sft-ckpt       the default and trainer.gradient_checkpointing=true
               sft-lean       sft-ckpt and trainer.release_memory=true (freed blocks of 1 MB and
                              more go back to the system at once: glibc's MALLOC_MMAP_THRESHOLD_)
               trl            TRL's SFTTrainer on the same batches (identical math)
               trl-ckpt       TRL with gradient_checkpointing=True
               trl-lean       trl-ckpt with MALLOC_MMAP_THRESHOLD_=1048576 in its environment
  breakdown  one training step on the first batch (the same 8 examples on both sides), every tensor
             made in it recorded (sft_core.engine.memory.LiveTensors): weights, trainable
             parameters, their gradients and AdamW state, and at the step's peak what is alive by
             where it was made (the decoder's forward: activations; the output layer and the loss:
             logits and loss; the backward pass)
  longest    batch 1, one sequence of L tokens cut from IMDB training reviews joined into one
             stream, one optimizer step: the longest L (to 256 tokens, up to --cap) whose peak RSS
             stays within --budget-mb, for each of sft-ckpt, sft-lean, trl, trl-ckpt and trl-lean
             named in --configs

    pip install --no-deps trl
    python benchmarks/memory.py                                  # all three parts (over an hour on 2 cores)
    python benchmarks/memory.py --parts configs --output memory.json
    python benchmarks/memory.py --parts longest --configs sft-lean trl trl-lean --budget-mb 4096
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compare_trl  # noqa: E402  (this folder's script, for its workload and workers)

#: name: (side, settings, environment). "lean": gradient checkpointing and freed memory returned to
#: the system at once (sft: trainer.release_memory; TRL: the same glibc setting by its variable)
LEAN_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576"}
CONFIGS = {
    "sft": ("sft", {}, {}),
    "sft-unchunked": ("sft", {"trainer.chunked_loss": False}, {}),
    "sft-ckpt": ("sft", {"trainer.gradient_checkpointing": True}, {}),
    "sft-lean": ("sft", {"trainer.gradient_checkpointing": True, "trainer.release_memory": True}, {}),
    "trl": ("trl", {}, {}),
    "trl-ckpt": ("trl", {"checkpointing": True}, {}),
    "trl-lean": ("trl", {"checkpointing": True}, LEAN_ENV),
}
LONGEST = ("sft-ckpt", "sft-lean", "trl", "trl-ckpt", "trl-lean")
BREAKDOWN = ("sft", "sft-unchunked", "trl")
PARTS = ("configs", "breakdown", "longest")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--model", default="smollm2")
    p.add_argument("--data-dir", default=os.environ.get("SFT_DATA_DIR", str(HERE.parent.parent / "shared" / "data")))
    p.add_argument("--source", choices=sorted(compare_trl.SOURCES), default="squad")
    p.add_argument("--chat-template", help="instruct.chat_template for a model without one")
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count())
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                   help="the configurations to run, in every part (TRL's need `pip install --no-deps trl`)")
    p.add_argument("--budget-mb", type=float, default=4096, help="longest: the peak RSS a sequence may reach")
    p.add_argument("--start", type=int, default=1024, help="longest: the first length tried (doubled until over)")
    p.add_argument("--cap", type=int, default=16384, help="longest: the longest length tried")
    p.add_argument("--output", help="also write the figures to this JSON file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def trl_args(args, **over) -> argparse.Namespace:
    """compare_trl's arguments for the same workload."""
    values = ["--model", args.model, "--data-dir", args.data_dir, "--source", args.source, "--examples", str(args.examples),
              "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--threads", str(args.threads)]
    if args.chat_template:
        values += ["--chat-template", args.chat_template]
    ns = compare_trl.parse_args(values)
    for k, v in over.items():
        setattr(ns, k, v)
    return ns


# --- workers (each in a process of its own) ---------------------------------------------------

def work_configs(args, name: str, work: Path) -> dict:
    side, extra, _ = CONFIGS[name]
    a = trl_args(args)
    if side == "sft":
        return compare_trl.run_sft(a, work, False, **extra)
    return compare_trl.run_trl(a, work, "trl", **extra)


def work_longest(args, name: str, work: Path) -> dict:
    side, extra, _ = CONFIGS[name]
    a = trl_args(args, source="file", data_file=str(long_text_file(args, work)), examples=1, batch_size=1,
                 max_length=args.length)
    figures = (compare_trl.run_sft(a, work, False, **extra) if side == "sft"
               else compare_trl.run_trl(a, work, "trl", **extra))
    return {**figures, "length": args.length}


def long_text_file(args, work: Path) -> Path:
    """One instruct example whose answer is IMDB training reviews joined (far longer than any length
    tried: the run cuts it to trainer.max_length, keeping its start)."""
    root = Path(args.data_dir) / "imdb" / "aclImdb" / "train"
    files = sorted((root / "pos").glob("*.txt"))[:400] + sorted((root / "neg").glob("*.txt"))[:400]
    if not files:
        raise SystemExit(f"no IMDB training reviews under {root} (see the data README)")
    text = "\n\n".join(f.read_text(encoding="utf-8").replace("<br />", "\n") for f in files)
    chars = 6 * max(args.length or 0, 1024)  # at least one token per 6 characters of English
    work.mkdir(parents=True, exist_ok=True)
    path = work / "long.jsonl"
    path.write_text(json.dumps({"prompt": "Continue these movie reviews.", "completion": text[:chars]}) + "\n")
    return path


def work_breakdown(args, name: str, work: Path) -> dict:
    import torch

    from sft_core.engine.memory import LiveTensors, peak_rss_mb

    model, step = (_sft_step if name.startswith("sft") else _trl_step)(args, name, work)
    params = {id(p): p for p in model.parameters()}.values()
    weights = sum(p.numel() * p.element_size() for p in params)
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    decoder = _decoder(model)
    region = {"now": "other"}
    hooks = [decoder.register_forward_pre_hook(lambda *a: region.update(now="activations")),
             decoder.register_forward_hook(lambda *a: region.update(now="logits and loss"))]
    model.train()
    model.zero_grad(set_to_none=True)
    with LiveTensors(tag=lambda: region["now"]) as live:
        loss = step()
        region["now"] = "backward"
        loss.backward()
    for h in hooks:
        h.remove()
    mb = 2 ** 20
    return {"weights_mb": weights / mb, "trainable_mb": trainable / mb,
            "gradients_and_adamw_mb": 3 * trainable / mb,  # a gradient and two moments per trainable value
            "step_peak_mb": live.peak_bytes / mb, "step_peak_by_region_mb": {k: v / mb for k, v in live.peak_by_tag.items()},
            "largest_tensor_mb": live.largest_bytes / mb, "loss": float(loss), "peak_rss_mb": peak_rss_mb(),
            "torch": torch.__version__}


def _decoder(model):
    from sft_core.engine.lm_loss import _inner

    return _inner(model).get_decoder()


def _sft_step(args, name: str, work: Path):
    from sft_core.engine import load_model
    from sft_core.engine.batching import build_features
    from sft_core.engine.evaluation import rows
    from sft_core.models import adapters

    a = trl_args(args)
    host, config = compare_trl.sft_config(a, work, False, **CONFIGS[name][1])
    _, _, _, path, _ = compare_trl.examples_and_tokenizer(a, work / "tokens")
    task = host.get_task("instruct").factory(config)
    tokenizer, model = load_model(task, path, trainable=True)
    model = adapters.apply(model, config.peft, config.model)
    examples = task.load("train", config.data.train)[:args.examples]
    features = build_features(task, config, tokenizer, examples, "train", use_cache=False)
    first = compare_trl.sft_order(len(examples), args.batch_size, 42)[:args.batch_size]
    batch = task.collate(rows(features, first))
    return model, lambda: task.compute_loss(model, batch)


def _trl_step(args, name: str, work: Path):
    trainer = compare_trl.build_trl(trl_args(args), work, "trl")
    batch = next(iter(trainer.get_train_dataloader()))  # sft's first batch: the dataset is in sft's order
    model = trainer.model
    return model, lambda: trainer.compute_loss(model, batch)


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    part, name = args.worker.split(":")
    work = Path(args.workdir)
    figures = {"configs": work_configs, "longest": work_longest, "breakdown": work_breakdown}[part](args, name, work)
    print("FIGURES " + json.dumps(figures))


# --- the orchestration ------------------------------------------------------------------------

def spawn(args, argv, part: str, name: str, tmp: Path, length: int | None = None) -> dict:
    work = tmp / f"{part}-{name}-{length or 0}"
    cmd = [sys.executable, __file__, *argv, "--worker", f"{part}:{name}", "--workdir", str(work)]
    if length:
        cmd += ["--length", str(length)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TQDM_DISABLE="1", OMP_NUM_THREADS=str(args.threads), **CONFIGS[name][2])
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("FIGURES ")), None)
    if done.returncode or line is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
        print(f"{part} {name} {length or ''}: failed\n  " + "\n  ".join(tail), file=sys.stderr)
        return {"error": " | ".join(tail)}
    figures = json.loads(line[len("FIGURES "):])
    figures["wall_seconds"] = round(time.perf_counter() - started, 1)
    if "tokens" in figures and figures.get("train_seconds"):
        figures["tokens_per_second"] = round(figures["tokens"] / figures["train_seconds"], 1)
    return figures


def longest(args, argv, name: str, tmp: Path) -> dict:
    """Double the length from --start while the peak fits the budget, then halve the gap to 256 tokens."""
    tried: dict[int, float | None] = {}

    def fits(length: int) -> bool:
        f = spawn(args, argv, "longest", name, tmp, length)
        tried[length] = f.get("peak_rss_mb")
        ok = "error" not in f and f["peak_rss_mb"] <= args.budget_mb
        print(f"longest {name}: {length} tokens, peak {tried[length]} MB: {'fits' if ok else 'over'}", file=sys.stderr)
        return ok

    good, bad = 0, None
    length = args.start
    while length <= args.cap:
        if fits(length):
            good, length = length, length * 2
        else:
            bad = length
            break
    if bad is None and good:
        return {"longest": good, "capped": True, "tried": tried}
    while bad is not None and bad - good > 256:
        mid = (good + bad) // 2 // 256 * 256 or 256
        if mid in (good, bad):
            break
        if fits(mid):
            good = mid
        else:
            bad = mid
    return {"longest": good, "capped": False, "first_over": bad, "tried": tried}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    results: dict = {"machine": compare_trl.machine(), "settings": {k: v for k, v in vars(args).items()
                                                                   if k not in ("worker", "workdir", "length")}}
    with tempfile.TemporaryDirectory(prefix="sft-memory-") as tmp:
        tmp = Path(tmp)
        if "configs" in args.parts:
            results["configs"] = {}
            for name in args.configs:
                results["configs"][name] = spawn(args, argv, "configs", name, tmp)
                print(f"configs {name}: {json.dumps(results['configs'][name])[:200]}", file=sys.stderr)
        if "breakdown" in args.parts:
            results["breakdown"] = {name: spawn(args, argv, "breakdown", name, tmp) for name in BREAKDOWN
                                    if name in args.configs}
        if "longest" in args.parts:
            results["longest"] = {name: longest(args, argv, name, tmp) for name in LONGEST if name in args.configs}
    report(args, results)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


def report(args, results: dict) -> None:
    print(f"\n{args.examples} {args.source} examples, batch {args.batch_size}, max length {args.max_length}, LoRA r16 on every "
          f"projection, fp32, {args.threads} threads; {results['machine']}")
    configs = results.get("configs")
    if configs:
        print(f"\n{'configuration':<15}{'peak MB':>9}{'tokens/s':>10}{'train s':>9}  first losses")
        for name, f in configs.items():
            if "error" in f:
                print(f"{name:<15} failed: {f['error'][:100]}")
                continue
            losses = " ".join(f"{x:.4f}" for x in f["losses"])
            print(f"{name:<15}{f['peak_rss_mb']:>9.0f}{f['tokens_per_second']:>10}{f['train_seconds']:>9.1f}  {losses}")
        ok = {k: v for k, v in configs.items() if "error" not in v}
        if "sft" in ok and "trl" in ok:
            s, t = ok["sft"], ok["trl"]
            print(f"identical math: sft peak {s['peak_rss_mb'] / t['peak_rss_mb']:.2f}x TRL's, "
                  f"{s['tokens_per_second'] / t['tokens_per_second']:.2f}x its tokens/s")
        for lean in ("sft-lean", "trl-lean"):
            if lean in ok and "trl" in ok:
                print(f"{lean}: peak {ok[lean]['peak_rss_mb'] / ok['trl']['peak_rss_mb']:.2f}x TRL's default, "
                      f"{ok[lean]['tokens_per_second'] / ok['trl']['tokens_per_second']:.2f}x its tokens/s")
        if "sft-ckpt" in ok and "trl" in ok:
            print(f"sft with checkpointing: peak {ok['sft-ckpt']['peak_rss_mb'] / ok['trl']['peak_rss_mb']:.2f}x TRL's "
                  f"default, {ok['sft-ckpt']['tokens_per_second'] / ok['trl']['tokens_per_second']:.2f}x its tokens/s")
    breakdown = results.get("breakdown")
    if breakdown:
        regions = ["activations", "logits and loss", "backward", "other"]
        print(f"\none step on the first batch (MB){'':<3}" + "".join(f"{h:>14}" for h in
              ["weights", "trainable", "grads+AdamW", "step peak", *regions, "largest", "process RSS"]))
        for name, f in breakdown.items():
            if "error" in f:
                print(f"{name:<34} failed: {f['error'][:100]}")
                continue
            by = f["step_peak_by_region_mb"]
            cells = [f["weights_mb"], f["trainable_mb"], f["gradients_and_adamw_mb"], f["step_peak_mb"],
                     *[by.get(r, 0.0) for r in regions], f["largest_tensor_mb"], f["peak_rss_mb"]]
            print(f"{name:<34}" + "".join(f"{c:>14.1f}" for c in cells))
    runs = results.get("longest")
    if runs:
        print(f"\nlongest sequence trained (batch 1, one step) within {args.budget_mb:.0f} MB of peak RSS:")
        for name, r in runs.items():
            capped = f" (the cap; {args.cap} fits)" if r.get("capped") else f" ({r.get('first_over')} does not)"
            tried = ", ".join(f"{k}: {v:.0f} MB" if v else f"{k}: failed" for k, v in sorted(r["tried"].items()))
            print(f"  {name:<10} {r['longest']:>6} tokens{capped}   [{tried}]")


if __name__ == "__main__":
    main()
