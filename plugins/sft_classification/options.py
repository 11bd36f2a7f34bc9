"""Config sections of the classification task (dataclasses only: no torch here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sft_core import DataConfig


@dataclass
class ClassificationData(DataConfig):
    text_column: str | None = None  # None: found among the common names (sentence, text, ...)
    text_pair_column: str | None = None  # None: a pair only when the file has pair columns
    label_column: str | None = None  # None: label, labels, score
    header: bool | None = None  # TSV/CSV: None detects a header row by its column names
    columns: list[str] | None = None  # names for the columns of a file without header (e.g. CoLA)


@dataclass
class ClassificationOptions:
    problem_type: Literal["auto", "single_label", "regression"] = "auto"  # auto: regression for real-valued labels
