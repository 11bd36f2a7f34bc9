"""Config sections of the question answering task (dataclasses only: no torch here)."""

from __future__ import annotations

from dataclasses import dataclass

from sft_core import DataConfig
from sft_core.errors import ConfigError


@dataclass
class QAData(DataConfig):
    # None: SQuAD 2.0 behaviour (unanswerable questions, null answers) when the training data has
    # a question marked is_impossible, or a JSONL question without answers
    version_2_with_negative: bool | None = None
    # Articles of a SQuAD JSON file (0-based, in file order; JSONL: distinct titles in order of
    # appearance), e.g. "0-39" and "40-47": one file serves as training and evaluation set on
    # disjoint articles. None: all articles.
    train_articles: str | None = None
    eval_articles: str | None = None


@dataclass
class QAOptions:
    doc_stride: int = 128  # tokens shared by consecutive windows over a long context (Hugging Face meaning)
    n_best: int = 20  # start and end candidates per window, and the length of the n-best list
    max_answer_length: int = 30  # in tokens
    null_score_diff_threshold: float = 0.0  # SQuAD 2.0: predict "" when null score - best span score exceeds it

    def check(self) -> None:
        if self.doc_stride < 0:
            raise ConfigError(f"qa.doc_stride must not be negative, got {self.doc_stride}")
        for name in ("n_best", "max_answer_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"qa.{name} must be at least 1, got {getattr(self, name)}")
