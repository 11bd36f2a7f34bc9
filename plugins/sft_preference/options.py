"""Config sections of the preference-tuning task (dataclasses only: no torch here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sft_core.errors import ConfigError
from sft_core.kit import RowsData, check_rows

FORMATS = ("auto", "explicit_prompt", "implicit_prompt")
LOSSES = ("dpo", "ipo", "hinge", "orpo", "simpo")
#: Losses that compare the policy with no reference model.
REFERENCE_FREE = ("orpo", "simpo")
#: ``preference.beta`` when left unset: DPO's 0.1 (also TRL's default for ipo, hinge and ORPO's
#: lambda); SimPO's paper trains with 2.0-2.5.
DEFAULT_BETA = {"dpo": 0.1, "ipo": 0.1, "hinge": 0.1, "orpo": 0.1, "simpo": 2.0}
REFERENCES = ("auto", "adapters", "copy", "precompute", "none")


@dataclass
class PreferenceData(RowsData):
    # explicit_prompt: records {"prompt", "chosen", "rejected"}; implicit_prompt: {"chosen", "rejected"}
    # as two whole conversations (message lists, or "\n\nHuman: ... \n\nAssistant: ..." transcripts as
    # Anthropic's HH-RLHF files are) whose shared beginning is the prompt; auto: by the keys, per record
    format: str = "auto"
    system: str | None = None  # a system message before every prompt (replacing the data's own)
    # a pair whose answers are identical, or with an empty answer, teaches nothing: skip it (counted,
    # and named on stderr) or stop with an error naming its file and line
    invalid_pairs: Literal["skip", "error"] = "skip"
    # (from RowsData) data.train_rows / data.eval_rows: 0-based ranges of the pairs of one file, e.g.
    # "0-1199" to train and "1200-" to evaluate; rows_seed numbers them after a shuffle

    def check(self) -> None:
        check_rows(self)
        if self.format not in FORMATS:
            raise ConfigError(f"data.format must be one of {', '.join(FORMATS)}; got {self.format!r}")
        if self.invalid_pairs not in ("skip", "error"):
            raise ConfigError(f"data.invalid_pairs must be skip or error; got {self.invalid_pairs!r}")


@dataclass
class PreferenceOptions:
    # dpo (the sigmoid loss of Rafailov et al.), ipo (squared, on log-probabilities averaged over the
    # answer's tokens, as TRL computes it), hinge; reference-free: orpo (the chosen answer's NLL plus
    # beta times the log odds ratio term), simpo (length-normalised, with a target margin simpo_gamma)
    loss: str = "dpo"
    beta: float | None = None  # None: 0.1, for simpo 2.0 (DEFAULT_BETA)
    label_smoothing: float = 0.0  # the share of pairs assumed mislabelled (dpo and simpo: conservative DPO)
    simpo_gamma: float = 0.5  # SimPO's target reward margin
    # the reference model: adapters (the same model with its LoRA adapters switched off), copy (a
    # frozen copy), precompute (its log-probabilities computed once before training and kept with
    # the features: one model in memory, resume exact), none; auto: adapters under peft, else
    # precompute; none for the reference-free losses
    reference: str = "auto"
    # the chat template: null uses the tokenizer's; "chatml" or a path to a Jinja file
    chat_template: str | None = None
    # a pair longer than trainer.max_length: keep_start cuts the end of the answer, keep_end the
    # beginning of the prompt (a pair left without an answer token is not trained on, and counted)
    truncation: Literal["keep_start", "keep_end"] = "keep_start"
    max_new_tokens: int | None = None  # generation by sft predict, chat and serve (None: 256)

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"preference.loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if self.beta is not None and self.beta <= 0:
            raise ConfigError(f"preference.beta must be positive, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"preference.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and self.loss not in ("dpo", "simpo"):
            raise ConfigError(f"preference.label_smoothing applies to the dpo and simpo losses, not {self.loss}")
        if self.reference not in REFERENCES:
            raise ConfigError(f"preference.reference must be one of {', '.join(REFERENCES)}; got {self.reference!r}")
        if self.loss in REFERENCE_FREE and self.reference not in ("auto", "none"):
            raise ConfigError(f"preference.loss={self.loss} uses no reference model; leave preference.reference "
                              f"at auto (got {self.reference})")
        if self.truncation not in ("keep_start", "keep_end"):
            raise ConfigError(f"preference.truncation must be keep_start or keep_end; got {self.truncation!r}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"preference.max_new_tokens must be at least 1, got {self.max_new_tokens}")

    @property
    def beta_value(self) -> float:
        return self.beta if self.beta is not None else DEFAULT_BETA[self.loss]
