"""Config sections of the classification task (dataclasses only: no torch here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sft_core.errors import ConfigError
from sft_core.kit import RowsData, check_rows, parse_rows  # noqa: F401 -- parse_rows: also known by this module


@dataclass
class ClassificationData(RowsData):
    text_column: str | None = None  # None: found among the common names (sentence, text, ...)
    text_pair_column: str | None = None  # None: a pair only when the file has pair columns
    label_column: str | None = None  # None: label, labels, score
    header: bool | None = None  # TSV/CSV: None detects a header row by its column names
    columns: list[str] | None = None  # names for the columns of a file without header (e.g. CoLA)
    # a folder of class subfolders (one text file per example): which subfolders are the classes
    # (None: every subfolder holding files), and the seed of the shuffled order it is read in
    classes: list[str] | None = None
    folder_seed: int = 0
    strip_html: bool = False  # remove markup (IMDB's <br />) from texts; never done unless asked
    label_delimiter: str | None = None  # multi-label: the labels of a row in one text column, e.g. "|"

    def check(self) -> None:
        if self.label_delimiter is not None and not self.label_delimiter:
            raise ConfigError("data.label_delimiter is empty; give the text between labels, e.g. '|'")
        check_rows(self)


@dataclass
class ClassificationOptions:
    # auto: multi_label when labels are lists (or data.label_delimiter is set), regression for
    # real-valued labels, else single_label
    problem_type: Literal["auto", "single_label", "multi_label", "regression"] = "auto"
    threshold: float = 0.5  # multi_label: a label is predicted when its probability reaches this
    # texts longer than trainer.max_length sub-words: cut the end off (truncate), keep the first
    # head_tokens and the last ones (head_tail, Sun et al. 2019), or read the whole text in
    # overlapping windows whose logits are pooled per text (windows)
    long_text: Literal["truncate", "head_tail", "windows"] = "truncate"
    head_tokens: int = 128  # head_tail: sub-words kept from the start; the rest of max_length from the end
    window_stride: int | None = None  # windows: sub-words shared by neighbouring windows; None: max_length // 4
    pool: Literal["mean", "max"] = "mean"  # windows: how a text's window logits become one
    # single_label: weighted cross entropy; balanced: n / (classes * count of the class), as scikit-learn
    class_weights: Literal["balanced"] | list[float] | None = None
    # compute the last encoder layer for the first token only, the one the head reads (BERT/RoBERTa
    # classifiers; the same logits and gradients, fewer FLOPs; see first_token.py)
    first_token_last_layer: bool = True

    def check(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"classification.threshold={self.threshold}: expected a probability between 0 and 1")
        if self.head_tokens < 0:
            raise ConfigError(f"classification.head_tokens={self.head_tokens}: expected 0 or more sub-words")
        if self.window_stride is not None and self.window_stride < 0:
            raise ConfigError(f"classification.window_stride={self.window_stride}: expected 0 or more sub-words")
        if isinstance(self.class_weights, list):
            if self.problem_type in ("multi_label", "regression"):
                raise ConfigError(f"classification.class_weights applies to single-label classification, "
                                  f"not problem_type={self.problem_type}")
            if not self.class_weights or any(not w > 0 for w in self.class_weights):
                raise ConfigError(f"classification.class_weights={self.class_weights}: expected one positive "
                                  "weight per label, in label order")
