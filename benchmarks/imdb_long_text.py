"""What to keep of a long review: IMDB with each ``classification.long_text`` at one budget.

Trains MiniLM on the same training reviews for the same epochs with ``truncate`` at 128 and at 512
sub-words, ``head_tail`` (128 + 382) and ``windows`` (512, a quarter shared), evaluates each on the
same held-out reviews, and prints accuracy and training time side by side (also written as JSON).

    python benchmarks/imdb_long_text.py [--train-samples 1000] [--eval-samples 1000] [--epochs 2]

It runs configs/imdb.yaml with the variant's settings on top, so the data split is the recipe's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "truncate-128": {"classification.long_text": "truncate", "trainer.max_length": 128},
    "truncate-512": {"classification.long_text": "truncate", "trainer.max_length": 512},
    "head_tail-512": {"classification.long_text": "head_tail", "trainer.max_length": 512, "classification.head_tokens": 128},
    "windows-512": {"classification.long_text": "windows", "trainer.max_length": 512},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=1000)
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    parser.add_argument("--output", default=str(ROOT / "runs" / "imdb-long-text"))
    args = parser.parse_args()

    import sft_core as sft

    rows = []
    for name in args.variants.split(","):
        overrides = {"data.max_train_samples": args.train_samples, "data.max_eval_samples": args.eval_samples,
                     "trainer.epochs": args.epochs, **VARIANTS[name]}
        started = time.perf_counter()
        result = sft.train(config=[str(ROOT / "configs" / "imdb.yaml")], output_dir=f"{args.output}/{name}",
                           overrides=overrides, overwrite=True)
        info = json.loads((Path(args.output) / name / "run_info.json").read_text())
        rows.append({"variant": name, "accuracy": result["eval"]["accuracy"], "f1": result["eval"]["f1"],
                     "train_minutes": round(result["train"]["train_runtime"] / 60, 1),
                     "wall_minutes": round((time.perf_counter() - started) / 60, 1),
                     "train_over_max_length": info["data"]["train"]["share"],
                     "train_features": info["data"]["train"].get("windows", info["data"]["train"]["examples"])})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nIMDB, {args.train_samples} training reviews x {args.epochs:g} epochs, {args.eval_samples} held-out reviews")
    print(f"{'variant':<15}{'accuracy':>10}{'f1':>8}{'train min':>11}{'wall min':>10}{'over max':>10}{'features':>10}")
    for r in rows:
        print(f"{r['variant']:<15}{r['accuracy']:>10.4f}{r['f1']:>8.4f}{r['train_minutes']:>11}{r['wall_minutes']:>10}"
              f"{r['train_over_max_length']:>10.1%}{r['train_features']:>10}")
    out = Path(args.output) / "comparison.json"
    out.write_text(json.dumps({"settings": vars(args), "results": rows}, indent=2) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
