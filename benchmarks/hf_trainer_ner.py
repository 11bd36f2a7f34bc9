"""Reference benchmark: CoNLL-2003 NER with the Hugging Face Trainer, the baseline for sft's ner task.

Fine-tunes an encoder (by default the offline MiniLM-L6-H384) with AutoModelForTokenClassification
on the first N sentences of eng.train and evaluates once on eng.testa, the way sft's ner task does
by default: IOB1 tags read as IOB2, the label on the first sub-token of each word (the others
are left out of the loss with -100), batch 16, lr 3e-4, 3 epochs, linear schedule with 10% warmup,
weight decay 0.01, max length 128, fp32 on CPU, no checkpoints. The score is seqeval's entity-level
F1 in strict IOB2 mode over the first sub-token predictions of each word.

--padding max_length pads every batch to --max-length with random sampling (the Trainer's default
way); --padding dynamic pads to the longest sentence of the batch and groups sentences of similar
length (train_sampling_strategy="group_by_length"). Both use DataCollatorForTokenClassification.

One difference with sft: a sentence longer than --max-length sub-tokens is truncated here, while
sft covers it with overlapping windows; in CoNLL-2003 that concerns a handful of sentences.

Measured as in hf_trainer_classification.py; the last stdout line is one JSON object.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from seqeval.metrics import f1_score, precision_score, recall_score  # noqa: E402
from seqeval.scheme import IOB2  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
    set_seed,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for trainer_common next to this file
from trainer_common import add_lora_arguments, default_model_path, figures, prepare_model, run_and_print  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = -100


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=default_model_path())
    p.add_argument("--data-dir", default=os.path.join(REPO_ROOT, "..", "shared", "data"))
    p.add_argument("--train-samples", type=int, default=2000, help="first N sentences of eng.train")
    p.add_argument("--eval-samples", type=int, default=None, help="first N sentences of eng.testa (default: all)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--padding", choices=["max_length", "dynamic"], default="max_length")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (TrainingArguments(bf16=True)); fp32 otherwise")
    p.add_argument("--output-dir", default=None, help="Trainer output dir (a temp dir by default)")
    add_lora_arguments(p)
    return p.parse_args(argv)


def read_conll(path, limit=None):
    """(words, tags) per sentence: word in the first column, tag in the last; -DOCSTART- ends a sentence."""
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append((words, tags))
                    words, tags = [], []
                if limit and len(sentences) >= limit:
                    break
                continue
            columns = line.split()
            words.append(columns[0])
            tags.append(columns[-1])
    if words and not (limit and len(sentences) >= limit):
        sentences.append((words, tags))
    return sentences


def iob1_to_iob2(tags):
    """IOB1 (I- may open an entity) to IOB2 (B- opens every entity)."""
    out = []
    for i, tag in enumerate(tags):
        opens = tag.startswith("I-") and (i == 0 or tags[i - 1] == "O" or tags[i - 1][2:] != tag[2:])
        out.append("B-" + tag[2:] if opens else tag)
    return out


def first_subword_labels(word_ids, tags, label2id):
    """Label ids per sub-token: the word's tag on its first sub-token, IGNORE elsewhere."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE if word is None or word == previous else label2id[tags[word]])
        previous = word
    return labels


def word_tags(predictions, label_ids, id2label):
    """Gold and predicted tag sequences over the labelled (first sub-token) positions."""
    gold, pred = [], []
    for p_row, l_row in zip(predictions, label_ids):
        keep = l_row != IGNORE
        gold.append([id2label[int(i)] for i in l_row[keep]])
        pred.append([id2label[int(i)] for i in p_row[keep]])
    return gold, pred


def main(args, output_dir):
    conll = os.path.join(args.data_dir, "conll2003")
    train_rows = [(w, iob1_to_iob2(t)) for w, t in read_conll(os.path.join(conll, "eng.train"), args.train_samples)]
    eval_rows = [(w, iob1_to_iob2(t)) for w, t in read_conll(os.path.join(conll, "eng.testa"), args.eval_samples)]
    types = sorted({tag[2:] for _, tags in train_rows for tag in tags if tag != "O"})
    labels = ["O"] + [f"{prefix}-{kind}" for kind in types for prefix in ("B", "I")]
    label2id = {label: i for i, label in enumerate(labels)}

    set_seed(args.seed)  # before loading: the classifier head is randomly initialised
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForTokenClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id, dtype=torch.float32)
    model = prepare_model(model, tokenizer, args, "TOKEN_CLS")
    startup = time.perf_counter() - START

    t0 = time.perf_counter()

    def encode(batch):
        encoded = tokenizer(batch["words"], is_split_into_words=True, truncation=True, max_length=args.max_length)
        encoded["labels"] = [first_subword_labels(encoded.word_ids(i), tags, label2id)
                             for i, tags in enumerate(batch["tags"])]
        return encoded

    train_ds, eval_ds = (
        Dataset.from_dict({"words": [w for w, _ in rows], "tags": [t for _, t in rows]})
        .map(encode, batched=True, remove_columns=["words", "tags"])
        for rows in (train_rows, eval_rows)
    )
    tokenization = time.perf_counter() - t0

    def compute_metrics(eval_pred):
        logits, label_ids = eval_pred
        gold, pred = word_tags(np.argmax(logits, axis=-1), label_ids, labels)
        kwargs = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
        return {"f1": f1_score(gold, pred, **kwargs), "precision": precision_score(gold, pred, **kwargs),
                "recall": recall_score(gold, pred, **kwargs)}

    dynamic = args.padding == "dynamic"
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
    collator = (DataCollatorForTokenClassification(tokenizer) if dynamic else
                DataCollatorForTokenClassification(tokenizer, padding="max_length", max_length=args.max_length))
    trainer = Trainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, data_collator=collator, compute_metrics=compute_metrics)
    train_metrics = trainer.train().metrics
    eval_metrics = trainer.evaluate()

    return figures("ner", args, train_ds, eval_ds, startup, tokenization, train_metrics, eval_metrics,
                   {"f1": eval_metrics["eval_f1"], "precision": eval_metrics["eval_precision"],
                    "recall": eval_metrics["eval_recall"]})


if __name__ == "__main__":
    run_and_print(main, parse_args(), START, "hf_trainer_ner_")
