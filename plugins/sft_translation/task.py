"""The translation task: source sentences to target sentences with a seq2seq model, BLEU by sacrebleu."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from sft_core.kit import pad_inputs
from sft_core.errors import ConfigError, SFTError
from sft_core.kit import resolve_model

from .metrics import translation_metrics
from .modeling import LANGUAGE_NAMES, max_positions, pretrained_model, scratch_model, train_tokenizer
from .reader import read_examples

SAMPLE = Path(__file__).parent / "sample_data"
#: The ``model`` value that builds a new model from the ``translation.*`` architecture options.
SCRATCH = "scratch"
IGNORE = -100


class TranslationTask:
    predictions_file = "predictions.txt"
    main_metric = "bleu"
    #: contract 1.1 (gen_len, ref_len and len_ratio describe lengths; neither way is better)
    metric_directions = {"bleu": "higher", "chrf": "higher"}

    def __init__(self, config):
        self.config = config
        self.options = config.options
        self.tokenizer = None
        self.prefix = self.options.source_prefix or ""
        self._train_texts: list[str] = []
        self._truncated = 0

    # --- data ---------------------------------------------------------------------------------
    def load(self, split: str, path: str | None) -> list[dict]:
        if path is None:
            path = SAMPLE / ("train.jsonl" if split == "train" else "eval.jsonl")
        limit = {"train": self.config.data.max_train_samples, "eval": self.config.data.max_eval_samples}.get(split)
        return read_examples(path, self.config.data, split, limit)

    def setup(self, train_examples: list[dict]) -> None:
        # a tokenizer built from scratch learns its vocabulary from both sides of the training data
        self._train_texts = [text for e in train_examples for text in (e["source"], e["target"])]

    def state_dict(self) -> dict:
        return {"source_lang": self.config.data.source_lang, "target_lang": self.config.data.target_lang,
                "source_prefix": self.prefix}

    def load_state_dict(self, state: dict) -> None:
        self.prefix = state.get("source_prefix", self.prefix) or ""

    # --- model --------------------------------------------------------------------------------
    def resolve_model(self, name: str) -> str:
        return SCRATCH if name == SCRATCH else resolve_model(name)

    def load_tokenizer(self, name_or_path: str):
        if name_or_path == SCRATCH:
            if not self._train_texts:
                raise ConfigError("model: scratch trains its tokenizer on the training data, but there is none")
            self.tokenizer = train_tokenizer(self._train_texts, self.options.vocab_size,
                                             self.config.trainer.max_length)
            return self.tokenizer
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        for attribute, code in (("src_lang", self.options.source_lang_code), ("tgt_lang", self.options.target_lang_code)):
            if code is not None:
                if not hasattr(self.tokenizer, attribute):
                    raise ConfigError(f"translation.{attribute.replace('src', 'source').replace('tgt', 'target')}"
                                      f"_code is set, but the tokenizer of {name_or_path} has no language codes")
                setattr(self.tokenizer, attribute, code)
        return self.tokenizer

    def build_model(self, name_or_path: str):
        if name_or_path == SCRATCH:
            model = scratch_model(self.options, self.tokenizer)
        else:
            model = pretrained_model(name_or_path, self.tokenizer)
        if model.config.model_type == "t5" and not self.prefix:
            data = self.config.data
            source, target = LANGUAGE_NAMES.get(data.source_lang), LANGUAGE_NAMES.get(data.target_lang)
            if source and target:
                self.prefix = f"translate {source} to {target}: "
        return model

    # --- features and batches -----------------------------------------------------------------
    def preprocess(self, examples: dict[str, list]) -> dict[str, list]:
        limit = self.config.trainer.max_length
        sources = [self.prefix + s for s in examples["source"]]
        encoded = self.tokenizer(sources, truncation=True, max_length=limit)
        out = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
               "example_id": examples["example_id"]}
        targets = examples["target"]
        lengths = [len(ids) for ids in encoded["input_ids"]]
        if all(t is not None for t in targets):
            labels = self.tokenizer(text_target=targets, truncation=True, max_length=limit)["input_ids"]
            start = self.tokenizer.cls_token_id  # BERT-style targets: the decoder start token is prepended anyway
            if start is not None:
                labels = [ids[1:] if ids and ids[0] == start else ids for ids in labels]
            out["labels"] = labels
            lengths = [n + len(ids) for n, ids in zip(lengths, labels)]
        out["length"] = lengths
        return out

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_inputs(features, self.tokenizer.pad_token_id)
        batch.pop("token_type_ids", None)  # encoder-decoder generate() rejects them
        if features[0].get("labels") is not None:
            longest = max(len(f["labels"]) for f in features)
            batch["labels"] = torch.tensor([f["labels"] + [IGNORE] * (longest - len(f["labels"])) for f in features])
        return batch

    def compute_loss(self, model, batch) -> torch.Tensor:
        """Cross-entropy over target tokens, with label smoothing (``translation.label_smoothing``)."""
        smoothing = self.options.label_smoothing
        if not smoothing:
            return model(**batch).loss
        labels = batch["labels"]
        inner = getattr(model, "module", model)  # the model itself under DistributedDataParallel
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        inputs["decoder_input_ids"] = inner.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(**inputs).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                               ignore_index=IGNORE, label_smoothing=smoothing)

    # --- evaluation ---------------------------------------------------------------------------
    def generation_kwargs(self, model, source_length: int) -> dict:
        """Beam search settings; the length limit follows the batch's longest source."""
        options = self.options
        limit = math.ceil(options.max_length_ratio * source_length) + options.max_length_offset
        cap = max_positions(model.config)
        if cap:
            limit = min(limit, cap - 1)
        kwargs = {"num_beams": options.num_beams, "length_penalty": options.length_penalty,
                  "max_new_tokens": limit, "early_stopping": True, "do_sample": False}
        if options.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = options.no_repeat_ngram_size
        if options.target_lang_code is not None:
            kwargs["forced_bos_token_id"] = self.tokenizer.convert_tokens_to_ids(options.target_lang_code)
        return kwargs

    def predict_step(self, model, batch) -> list[list[int]]:
        ids = batch["input_ids"]
        generated = model.generate(input_ids=ids, attention_mask=batch["attention_mask"],
                                   **self.generation_kwargs(model, ids.shape[1]))
        pad = self.tokenizer.pad_token_id
        return [[t for t in row if t != pad] for row in generated.tolist()]

    def postprocess(self, outputs: list[list[int]], features, examples: list[dict]) -> list[str]:
        predictions: list = [""] * len(examples)
        texts = self.tokenizer.batch_decode(outputs, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        for example_id, text in zip(features["example_id"], texts):
            predictions[example_id] = " ".join(text.split())  # one line per input, whatever the model emits
        return predictions

    def gold_predictions(self, examples: list[dict]) -> list[str]:
        """The references as hypotheses (BLEU 100): the conformance kit's check of the metric."""
        return [e["target"] or "" for e in examples]

    def compute_metrics(self, predictions: list[str], examples: list[dict]) -> dict:
        return translation_metrics(predictions, [e["target"] or "" for e in examples])

    def write_predictions(self, path: Path, predictions: list[str], examples: list[dict]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(p + "\n" for p in predictions)

    def read_inputs(self, texts: list[str]) -> list[dict]:
        return [{"source": text, "target": None, "line": 0} for text in texts]

    def format_prediction(self, prediction: str, example: dict) -> dict:
        return {"source": example["source"], "translation": prediction}

    # contract 1.1: generated text, for the OpenAI-style routes of `sft serve`
    def prediction_text(self, prediction: str) -> str:
        return prediction

    def read_messages(self, conversations: list[list[dict]]) -> list[dict]:
        """A chat asks to translate its last user message (a translation model keeps no history)."""
        texts = []
        for n, messages in enumerate(conversations):
            users = [m["content"] for m in messages if m.get("role") == "user"]
            if not users or not users[-1].strip():
                raise SFTError(f"conversation {n}: no user message to translate")
            texts.append(users[-1])
        return self.read_inputs(texts)
