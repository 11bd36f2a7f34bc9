"""Config sections of the NER task (dataclasses only: no torch here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sft_core import DataConfig
from sft_core.errors import ConfigError


@dataclass
class NERData(DataConfig):
    format: Literal["auto", "conll", "jsonl"] = "auto"  # auto: .jsonl/.json files are JSON lines, others CoNLL columns
    token_column: int = 0  # CoNLL: column of the word (0-based; negative counts from the end)
    tag_column: int = -1  # CoNLL: column of the NER tag (-1: the last)
    tag_scheme: Literal["auto", "iob1", "iob2", "bioes"] = "auto"  # auto: detected per file; all become IOB2
    label_names: list[str] | None = None  # JSONL ner_tags given as integers: the tag of each id, in order


@dataclass
class NEROptions:
    label_all_tokens: bool = False  # also train on the continuation sub-tokens of a word (else ignored in the loss)
    constrained_decoding: bool = False  # Viterbi over valid IOB2 transitions instead of per-word argmax
    stride: int = 32  # sub-tokens shared by consecutive windows of a sentence longer than trainer.max_length
    # compute the last encoder layer only where a tag is read: the labelled sub-tokens in training,
    # the first sub-token of each word in evaluation (BERT-style encoders; the same loss, gradients
    # and predictions, fewer FLOPs; see sft_core/last_layer.py)
    scored_tokens_last_layer: bool = True

    def check(self) -> None:
        if self.stride < 0:
            raise ConfigError(f"ner.stride must not be negative, got {self.stride}")
