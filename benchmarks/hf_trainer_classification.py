"""Reference benchmark: SST-2 sequence classification with the Hugging Face Trainer.

This is the baseline our framework is compared against. It fine-tunes a BERT-style
encoder (by default the offline MiniLM-L6-H384 checkpoint) on the first N rows of
GLUE SST-2 with the Trainer's stock recipe -- AdamW (Trainer default optimizer),
linear schedule with warmup, fp32 on CPU, no checkpoints, no reporting -- and then
evaluates once on the full dev set (872 sentences).

It measures, so the same numbers can be produced for our framework:
  * startup       -- script start (before imports) until the model is loaded,
  * tokenization  -- reading the TSV files and tokenizing train + dev,
  * training      -- Trainer's own train_runtime / train_samples_per_second,
  * evaluation    -- Trainer's eval_runtime / eval_samples_per_second and accuracy,
  * wall_time and peak RSS of the whole process.

--padding max_length is the Trainer's default way (every example padded to
--max-length, random sampling); --padding dynamic pads each batch to its longest
example (DataCollatorWithPadding) and groups examples of similar length
(train_sampling_strategy="group_by_length", the transformers 5 replacement for
the removed `group_by_length=True`).

The last stdout line is a single JSON object with the results.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import csv  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for trainer_common next to this file
from trainer_common import add_lora_arguments, default_model_path, figures, prepare_model, run_and_print  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=default_model_path())
    p.add_argument("--data-dir", default=os.path.join(REPO_ROOT, "..", "shared", "data"))
    p.add_argument("--train-samples", type=int, default=4000, help="first N rows of train.tsv")
    p.add_argument("--eval-samples", type=int, default=None, help="first N rows of dev.tsv (default: all)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--padding", choices=["max_length", "dynamic"], default="max_length")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (TrainingArguments(bf16=True)); fp32 otherwise")
    p.add_argument("--output-dir", default=None, help="Trainer output dir (a temp dir by default)")
    add_lora_arguments(p)
    return p.parse_args()


def read_sst2(path, limit=None):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)  # header: sentence<TAB>label
        rows = [(sentence, int(label)) for sentence, label in reader]
    rows = rows[:limit] if limit is not None else rows
    return {"sentence": [r[0] for r in rows], "label": [r[1] for r in rows]}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def main(args, output_dir):
    set_seed(args.seed)  # before loading: the classifier head is randomly initialised
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=2, dtype=torch.float32
    )
    model = prepare_model(model, tokenizer, args, "SEQ_CLS")
    startup = time.perf_counter() - START

    t0 = time.perf_counter()
    sst2_dir = os.path.join(args.data_dir, "glue", "SST-2")
    dynamic = args.padding == "dynamic"

    def tokenize(batch):
        return tokenizer(
            batch["sentence"],
            truncation=True,
            max_length=args.max_length,
            padding=False if dynamic else "max_length",
        )

    train_ds, eval_ds = (
        Dataset.from_dict(read_sst2(os.path.join(sst2_dir, name), limit))
        .map(tokenize, batched=True, remove_columns=["sentence"])
        for name, limit in (("train.tsv", args.train_samples), ("dev.tsv", args.eval_samples))
    )
    tokenization = time.perf_counter() - t0

    training_args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        warmup_steps=args.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio
        weight_decay=args.weight_decay,
        lr_scheduler_type="linear",
        seed=args.seed,
        use_cpu=True,
        bf16=args.bf16,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        train_sampling_strategy="group_by_length" if dynamic else "random",
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer) if dynamic else None,
        compute_metrics=compute_metrics,
    )
    train_metrics = trainer.train().metrics
    eval_metrics = trainer.evaluate()

    return figures("classification", args, train_ds, eval_ds, startup, tokenization, train_metrics, eval_metrics,
                   {"accuracy": eval_metrics["eval_accuracy"]})


if __name__ == "__main__":
    run_and_print(main, parse_args(), START, "hf_trainer_bench_")
