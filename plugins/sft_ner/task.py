"""The NER task: words to IOB2 tags with a token-classification head, scored at the word level."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from sft_core import kit as last_layer  # install, reading, positions_of
from sft_core.errors import ConfigError, DataError, SFTError

from .alignment import IGNORE, best_positions, encode, word_prefix
from .decoding import IOB2Viterbi
from .metrics import ner_metrics
from .reader import read_examples, split_words
from .schemes import entity_spans

SAMPLE = Path(__file__).parent / "sample_data"


def label_set(types: set[str]) -> list[str]:
    """O, then B-X and I-X for every type X (both, even if training never shows an I-X)."""
    return ["O"] + [f"{prefix}-{kind}" for kind in sorted(types) for prefix in ("B", "I")]


def _types(examples: list[dict]) -> dict[str, tuple[int, int]]:
    """Entity type -> (example index, line) of its first occurrence."""
    found: dict[str, tuple[int, int]] = {}
    for i, example in enumerate(examples):
        for tag in example["tags"] or ():
            if tag != "O" and tag[2:] not in found:
                found[tag[2:]] = (i, example["line"])
    return found


class NERTask:
    predictions_file = "predictions.jsonl"
    main_metric = "f1"
    #: contract 1.1: every metric here is higher-is-better
    metric_directions = {"f1": "higher", "precision": "higher", "recall": "higher", "accuracy": "higher"}
    #: a sentence longer than max_length is read in windows (ner.stride): every word gets a tag
    long_inputs = "windows"

    def __init__(self, config):
        self.config = config
        self.options = config.options
        self.labels: list[str] = []  # id -> IOB2 tag
        self.tokenizer = None
        self.word_prefix = ""  # put before each word but the first (byte-level BPE tokenizers; see alignment)
        self.partial_last_layer = False  # whether the model's last layer computes the scored tokens only

    # --- data ---------------------------------------------------------------------------------
    def load(self, split: str, path: str | None) -> list[dict]:
        if path is None:
            path = SAMPLE / ("train.conll" if split == "train" else "eval.conll")
        limit = {"train": self.config.data.max_train_samples, "eval": self.config.data.max_eval_samples}.get(split)
        examples = read_examples(path, self.config.data, split, limit)
        if split == "eval" and self.labels:  # the engine reads eval data after setup / load_state_dict
            self._check_types(str(path), examples)
        return examples

    def _check_types(self, path: str, examples: list[dict]) -> None:
        known = {label[2:] for label in self.labels if label != "O"}
        for kind, (_, line) in _types(examples).items():
            if kind not in known:
                raise DataError(f"{path} line {line}: entity type {kind!r} never seen in training "
                                f"(known types: {', '.join(sorted(known)) or 'none'})")

    def setup(self, train_examples: list[dict]) -> None:
        types = set(_types(train_examples))
        if not types:
            raise DataError("the training data holds no entities (every tag is O); is data.tag_column right?")
        self.labels = label_set(types)

    def state_dict(self) -> dict:
        return {"labels": self.labels}

    def load_state_dict(self, state: dict) -> None:
        self.labels = list(state.get("labels", []))

    # --- model --------------------------------------------------------------------------------
    def load_tokenizer(self, name_or_path: str):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if not getattr(tokenizer, "is_fast", False):
            raise SFTError(f"{name_or_path}: NER needs a fast (Rust-backed) tokenizer for word alignment "
                           "(word_ids); this model has only a Python one")
        try:
            tokenizer([["a"]], is_split_into_words=True)
        except (AssertionError, ValueError, TypeError):  # byte-level BPE (RoBERTa, GPT-2) wants this for words
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, add_prefix_space=True)
        budget = self.config.trainer.max_length - tokenizer.num_special_tokens_to_add(pair=False)
        if budget < 2:
            raise ConfigError(f"trainer.max_length={self.config.trainer.max_length} leaves no room for words")
        self.tokenizer = tokenizer
        self.word_prefix = word_prefix(tokenizer)
        return tokenizer

    def build_model(self, name_or_path: str):
        from transformers import AutoModelForTokenClassification

        from sft_core.kit import with_head

        model = with_head(AutoModelForTokenClassification, name_or_path, "token classification",
                          num_labels=len(self.labels), id2label=dict(enumerate(self.labels)),
                          label2id={label: i for i, label in enumerate(self.labels)})
        self.partial_last_layer = bool(self.options.scored_tokens_last_layer) and last_layer.install(model)
        return model

    # --- features and batches -----------------------------------------------------------------
    def preprocess(self, examples: dict[str, list]) -> dict[str, list]:
        tags = examples["tags"] if all(t is not None for t in examples["tags"]) else None
        columns, owners = encode(
            self.tokenizer, examples["tokens"], tags, {label: i for i, label in enumerate(self.labels)},
            self.config.trainer.max_length, self.options.stride, self.options.label_all_tokens, self.word_prefix)
        columns["example_id"] = [examples["example_id"][i] for i in owners]
        return columns

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        pad = self.tokenizer.pad_token_id or 0
        batch = {
            "input_ids": torch.tensor([f["input_ids"] + [pad] * (longest - len(f["input_ids"])) for f in features]),
            "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (longest - len(f["input_ids"]))
                                            for f in features]),
        }
        if "token_type_ids" in self.tokenizer.model_input_names:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        if features[0].get("labels") is not None:
            batch["labels"] = torch.tensor([f["labels"] + [IGNORE] * (longest - len(f["labels"])) for f in features])
        # where predictions are read: the first sub-token of each word
        batch["word_starts"] = torch.tensor([[w >= 0 for w in f["first_of_word"]] + [False] * (longest - len(f["first_of_word"]))
                                             for f in features])
        return batch

    @staticmethod
    def model_inputs(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k not in ("labels", "word_starts")}

    def logits_at(self, model, batch: dict, wanted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits at the positions ``wanted`` (batch, length) marks, computed there only when the
        model allows: (logits of shape (batch, k, labels), their (batch, k) positions), or the
        logits of every position and None."""
        if not self.partial_last_layer or not bool(wanted.any()):
            return model(**self.model_inputs(batch)).logits, None
        positions = last_layer.positions_of(wanted)
        with last_layer.reading(model, positions):
            return model(**self.model_inputs(batch)).logits, positions

    def compute_loss(self, model, batch: dict) -> torch.Tensor:
        """Token cross-entropy over the labelled positions (the mean over them, like the model's own loss)."""
        labels = batch["labels"]
        logits, positions = self.logits_at(model, batch, labels != IGNORE)
        if positions is not None:  # filler positions of shorter rows are unlabelled ones: IGNORE
            labels = labels.gather(1, positions)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)

    # --- evaluation ---------------------------------------------------------------------------
    def predict_step(self, model, batch) -> dict[str, torch.Tensor]:
        logits, positions = self.logits_at(model, batch, batch["word_starts"])
        logits = logits.float()
        if positions is not None:  # back to one row per position; the others are never read
            shape = (*batch["word_starts"].shape, logits.shape[-1])
            logits = logits.new_zeros(shape).scatter_(1, positions.unsqueeze(-1).expand(-1, -1, shape[-1]), logits)
        if self.options.constrained_decoding:  # Viterbi needs every label's score, per token
            return {"log_probs": logits.log_softmax(-1)}
        score, pred = logits.softmax(-1).max(-1)
        return {"pred": pred, "score": score}

    def postprocess(self, outputs: list[dict], features, examples: list[dict]) -> list[dict]:
        """Per word: the IOB2 tag and its probability, read from the best window of each word."""
        chosen = best_positions(list(features["first_of_word"]), list(features["example_id"]),
                                [len(e["tokens"]) for e in examples])
        viterbi = IOB2Viterbi(self.labels) if self.options.constrained_decoding else None
        predictions = []
        for words in chosen:
            if any(c is None for c in words):
                raise RuntimeError("a word got no prediction; every word must be in a window")
            if viterbi is None:
                ids = [outputs[f]["pred"][p] for f, p in words]
                scores = [outputs[f]["score"][p] for f, p in words]
            else:
                log_probs = np.array([outputs[f]["log_probs"][p] for f, p in words], dtype=np.float64).reshape(
                    len(words), len(self.labels))
                ids = viterbi.decode(log_probs)
                scores = [float(np.exp(log_probs[i, k])) for i, k in enumerate(ids)]
            predictions.append({"tags": [self.labels[i] for i in ids], "scores": scores})
        return predictions

    def compute_metrics(self, predictions: list[dict], examples: list[dict]) -> dict[str, float]:
        return ner_metrics([e["tags"] for e in examples], [p["tags"] for p in predictions])

    def gold_predictions(self, examples: list[dict]) -> list[dict]:
        """Each sentence's gold tags as a prediction (what a perfect model predicts)."""
        return [{"tags": list(e["tags"]), "scores": [1.0] * len(e["tags"])} for e in examples]

    def write_predictions(self, path: Path, predictions: list[dict], examples: list[dict]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for prediction, example in zip(predictions, examples):
                record = {"tokens": example["tokens"], "gold_tags": example["tags"], "pred_tags": prediction["tags"]}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def read_inputs(self, texts: list[str]) -> list[dict]:
        examples = []
        for n, text in enumerate(texts, 1):
            words, offsets = split_words(text)
            examples.append({"tokens": words, "tags": None, "text": text, "offsets": offsets, "line": n})
        return examples

    def format_prediction(self, prediction: dict, example: dict) -> dict:
        if example.get("text") is None:  # pre-tokenized input: tags per word
            return {"tokens": example["tokens"], "tags": prediction["tags"]}
        text, offsets, scores = example["text"], example["offsets"], prediction["scores"]
        entities = []
        for kind, first, end in entity_spans(prediction["tags"]):
            start, stop = offsets[first][0], offsets[end - 1][1]
            entities.append({"type": kind, "text": text[start:stop], "start": start, "end": stop,
                             "score": round(sum(scores[first:end]) / (end - first), 6)})
        return {"text": text, "entities": entities}
