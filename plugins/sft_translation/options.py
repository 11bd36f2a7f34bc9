"""Config sections of the translation task (dataclasses only: no torch here)."""

from __future__ import annotations

from dataclasses import dataclass

from sft_core import DataConfig
from sft_core.errors import ConfigError


@dataclass
class TranslationData(DataConfig):
    source_lang: str = "en"  # key in {"translation": {...}} records and suffix of parallel text files
    target_lang: str = "de"
    format: str = "auto"  # auto, jsonl, tsv or text (a pair of aligned files FILE.SRC and FILE.TGT, gzip accepted)

    def check(self) -> None:
        if self.format not in ("auto", "jsonl", "tsv", "text"):
            raise ConfigError(f"data.format must be one of auto, jsonl, tsv, text; got {self.format!r}")
        if self.source_lang == self.target_lang:
            raise ConfigError(f"data.source_lang and data.target_lang are both {self.source_lang!r}")


@dataclass
class TranslationOptions:
    # generation
    num_beams: int = 4
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0  # > 0 forbids repeating any n-gram of this size in a hypothesis
    # the longest hypothesis of a batch: max_length_ratio x its longest source (in tokens) + max_length_offset
    max_length_ratio: float = 1.5
    max_length_offset: int = 10
    source_prefix: str | None = None  # prepended to every source (T5: None chooses "translate English to German: ")
    source_lang_code: str | None = None  # mBART/NLLB language codes, e.g. en_XX / eng_Latn
    target_lang_code: str | None = None
    label_smoothing: float = 0.1
    # model: scratch (a Marian-style transformer built from these values, with a BPE tokenizer
    # trained on the training data; source and target share the vocabulary and the embeddings)
    vocab_size: int = 8000
    d_model: int = 256
    encoder_layers: int = 3
    decoder_layers: int = 3
    attention_heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1

    def check(self) -> None:
        for name in ("num_beams", "vocab_size", "d_model", "encoder_layers", "decoder_layers", "attention_heads",
                     "ffn_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"translation.{name} must be at least 1, got {getattr(self, name)}")
        if self.d_model % self.attention_heads:
            raise ConfigError(f"translation.d_model ({self.d_model}) must be a multiple of "
                              f"translation.attention_heads ({self.attention_heads})")
        if self.max_length_ratio <= 0 or self.max_length_offset < 0:
            raise ConfigError("translation.max_length_ratio must be positive and translation.max_length_offset "
                              f"not negative, got {self.max_length_ratio} and {self.max_length_offset}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.dropout < 1:
            raise ConfigError("translation.label_smoothing and translation.dropout must be in [0, 1)")
        if self.no_repeat_ngram_size < 0:
            raise ConfigError(f"translation.no_repeat_ngram_size must not be negative, got {self.no_repeat_ngram_size}")
