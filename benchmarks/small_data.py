"""Small training sets on sft's defaults: what the previous defaults learnt, what the current ones do.

A newcomer's first run is a few dozen examples and no settings. This script builds small real sets
from the benchmark data and trains each through the `sft` command line twice: with the settings
the defaults used to give (a fixed number of epochs whatever the set's size; LoRA at the full
fine-tuning learning rate) and with the current defaults (sft's small-data rule, trainer.min_steps;
adapters at peft.lr_scale times the task's rate). Generative sets also get the untrained model's
zero-shot score, measured by `sft eval` in the same way.

    python benchmarks/small_data.py [--data-dir ../shared/data] [--sets squad40,sst2-40,...]

Sets (training examples / evaluation examples):
  squad40      40 SQuAD v1.1 questions with their paragraphs as conversations (SmolLM2 + LoRA, instruct);
               50 questions of other articles; SQuAD-normalised exact match and F1
  sst2-40      40 SST-2 sentences as instructions ("positive" or "negative"; SmolLM2 + LoRA, instruct);
               200 dev sentences; exact match (= accuracy)
  sst2-40-minilm   the same 40 sentences, MiniLM sentence classifier (classification); the full dev set
  sst2-600-lora    600 SST-2 sentences, one epoch, SmolLM2 + LoRA sentence classifier (classification,
               peft.method=lora): the learning rate alone differs; the full dev set
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SETS = ("squad40", "sst2-40", "sst2-40-minilm", "sst2-600-lora")
SENTIMENT_PROMPT = "Is the sentiment of this movie review positive or negative? Answer with one word.\n\n{}"


def squad_conversations(data_dir: Path, folder: Path) -> tuple[Path, Path]:
    """40 training questions (one per paragraph, articles 0-19) and 50 evaluation questions (articles 40-47)."""
    articles = json.loads((data_dir / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))["data"]

    def conversations(indices, limit):
        out = []
        for article in (articles[i] for i in indices):
            for paragraph in article["paragraphs"]:
                qa = paragraph["qas"][0]
                answers = [a["text"] for a in qa["answers"]]
                user = f"Context: {paragraph['context']}\n\nQuestion: {qa['question']}\nAnswer with a short span of the context."
                out.append({"messages": [{"role": "user", "content": user},
                                         {"role": "assistant", "content": answers[0]}], "references": answers})
                if len(out) == limit:
                    return out
        return out

    return (_write(folder / "squad40-train.jsonl", conversations(range(0, 20), 40)),
            _write(folder / "squad40-eval.jsonl", conversations(range(40, 48), 50)))


def sst2_instructions(data_dir: Path, folder: Path) -> tuple[Path, Path]:
    def rows(name, limit):
        with open(data_dir / "glue" / "SST-2" / name, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            out = []
            for row in reader:
                answer = "positive" if row["label"] == "1" else "negative"
                out.append({"messages": [{"role": "user", "content": SENTIMENT_PROMPT.format(row["sentence"].strip())},
                                         {"role": "assistant", "content": answer}]})
                if len(out) == limit:
                    break
            return out

    return (_write(folder / "sst2-40-train.jsonl", rows("train.tsv", 40)),
            _write(folder / "sst2-40-eval.jsonl", rows("dev.tsv", 200)))


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def sft(*args: str) -> tuple[dict, str, float]:
    """Runs `sft ARGS` as a user would; (its JSON summary on stdout, its stderr, wall seconds)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sft_core", *args], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode != 0:
        sys.exit(f"sft {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), done.stderr, time.perf_counter() - started


def budget_line(stderr: str) -> str:
    return next((line for line in stderr.splitlines() if line.startswith("training: ")), "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="the benchmark data")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated, of: " + ", ".join(SETS))
    parser.add_argument("--output", default=str(ROOT / "runs" / "small-data"), help="run folders and comparison.json")
    args = parser.parse_args()
    data_dir, out = Path(args.data_dir), Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    squad = squad_conversations(data_dir, out)
    sst2 = sst2_instructions(data_dir, out)
    sst2_tsv = data_dir / "glue" / "SST-2"
    # name -> (task and data arguments, the metrics shown, the previous defaults as overrides, the
    # evaluation file the untrained model is scored on, or None)
    sets = {
        "squad40": (["--task", "instruct", "--train", str(squad[0]), "--eval", str(squad[1])], ["exact_match", "f1"],
                    ["trainer.lr=2e-4", "trainer.min_steps=0"], squad[1]),
        "sst2-40": (["--task", "instruct", "--train", str(sst2[0]), "--eval", str(sst2[1])], ["exact_match"],
                    ["trainer.lr=2e-4", "trainer.min_steps=0"], sst2[1]),
        "sst2-40-minilm": (["--task", "classification", "--train", str(sst2_tsv / "train.tsv"), "--eval",
                            str(sst2_tsv / "dev.tsv"), "data.max_train_samples=40"], ["accuracy"],
                           ["trainer.min_steps=0"], None),
        "sst2-600-lora": (["--task", "classification", "--model", "smollm2", "--train", str(sst2_tsv / "train.tsv"),
                           "--eval", str(sst2_tsv / "dev.tsv"), "data.max_train_samples=600", "trainer.epochs=1",
                           "peft.method=lora"], ["accuracy"], ["trainer.lr=1e-4"], None),
    }
    rows = []
    for name in args.sets.split(","):
        data_args, metrics, before, zero_shot = sets[name]
        if zero_shot is not None:
            result, _, wall = sft("eval", "--model", "smollm2", "--task", "instruct", "--data", str(zero_shot),
                                  "--output-dir", str(out / name / "zero-shot"))
            rows.append({"set": name, "settings": "untrained (zero-shot)", "budget": "-", "lr": "-",
                         **{m: result.get(m, result.get(f"eval_{m}")) for m in metrics}, "minutes": round(wall / 60, 1)})
            print(json.dumps(rows[-1]), flush=True)
        for label, extra in (("previous defaults", before), ("current defaults", [])):
            folder = out / name / label.split()[0]
            result, err, wall = sft("run", *data_args, *extra, "trainer.save_every=0", "--output-dir", str(folder),
                                    "--overwrite")
            config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
            rows.append({"set": name, "settings": label, "budget": budget_line(err).removeprefix("training: "),
                         "lr": config["trainer"]["lr"], **{m: result[f"eval_{m}"] for m in metrics},
                         "minutes": round(wall / 60, 1)})
            print(json.dumps(rows[-1]), flush=True)

    print()
    for r in rows:
        figures = ", ".join(f"{k} {r[k]:.4g}" for k in ("exact_match", "f1", "accuracy") if k in r)
        print(f"{r['set']:<16}{r['settings']:<23}lr {r['lr']!s:<8}{figures:<34}{r['minutes']:>5} min  {r['budget']}")
    (out / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {out / 'comparison.json'}")


if __name__ == "__main__":
    main()
