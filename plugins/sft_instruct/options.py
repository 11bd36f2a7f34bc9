"""Config sections of the instruction-tuning task (dataclasses only: no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sft_core import DataConfig
from sft_core.errors import ConfigError

FORMATS = ("auto", "messages", "prompt_completion", "alpaca", "sharegpt")
#: Keys of one ``instruct.mixture`` entry (the same meaning as the ``data.*`` keys of a single source).
SOURCE_KEYS = ("name", "train", "eval", "weight", "format", "source_task", "source_data", "prompt", "system",
               "verbalizer", "max_train_samples", "max_eval_samples")


@dataclass
class InstructData(DataConfig):
    # shape of JSON-lines records: auto detects messages, prompt/completion, Alpaca or ShareGPT per file
    format: str = "auto"
    # read data.train / data.eval through another task's reader (e.g. qa, classification, ner,
    # translation): its examples become instructions, its official metric scores the generations
    source_task: str | None = None
    source_data: dict = field(default_factory=dict)  # that task's data.* keys (e.g. train_articles: 0-39)
    # the user message for a source task's example: Python format fields named by the task
    # (qa: {question} {context}; classification: {text} {text_pair}; ner: {text}; translation:
    # {source}); None: the task's own default prompt
    prompt: str | None = None
    system: str | None = None  # a system message before every example (None: none, or the template's default)
    # answer words for a source task's labels, e.g. {"0": negative, "1": positive}; generations
    # are mapped back through it before scoring
    verbalizer: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"data.format must be one of {', '.join(FORMATS)}; got {self.format!r}")
        if (self.source_data or self.prompt or self.verbalizer) and not self.source_task:
            raise ConfigError("data.source_data, data.prompt and data.verbalizer apply to a source task: "
                              "set data.source_task (e.g. qa) or remove them")
        if self.prompt is not None:
            check_prompt(self.prompt, "data.prompt")


def check_prompt(prompt: str, key: str) -> None:
    import string

    try:
        list(string.Formatter().parse(prompt))
    except ValueError as exc:
        raise ConfigError(f"{key}: not a format string ({exc}); write fields as {{name}} and braces as {{{{ }}}}")


@dataclass
class InstructOptions:
    # the chat template: null uses the tokenizer's; "chatml" or a path to a Jinja file for base
    # models without one (saved with the model, used by predict, chat and serving)
    chat_template: str | None = None
    # which tokens carry the loss: every assistant turn (with its end-of-turn token), the last one,
    # or the whole sequence
    train_on: Literal["completion", "last_turn", "all"] = "completion"
    # concatenate short training examples into sequences of trainer.max_length (attention and
    # positions restart at every example); trainer.batch_size then counts packed sequences
    packing: bool = False
    # the attention kernel: null lets transformers choose (SDPA); eager, sdpa, flash_attention_2 (GPU)
    attention: str | None = None
    # what an example longer than trainer.max_length keeps: its start or its end
    truncation: Literal["keep_start", "keep_end"] = "keep_start"
    # evaluation by generation (with loss and perplexity); false: loss and perplexity only
    generate: bool = True
    max_new_tokens: int | None = None  # None: the longest evaluation reference + 16 tokens (256 without references)
    num_beams: int = 1  # 1: greedy
    # metrics of plain instruction data (a source task's data is scored by that task's metric)
    metrics: list[str] = field(default_factory=lambda: ["exact_match", "f1"])
    # several sources in one run: a list of mappings with the data.* keys of one source plus name
    # and weight, e.g. [{name: squad, source_task: qa, train: ..., eval: ..., weight: 2}]
    mixture: list[dict] = field(default_factory=list)
    # proportional: every training example once; temperature: source i sampled with probability
    # proportional to size_i^(1/T); weights: proportional to each source's weight (oversampling
    # repeats examples). The mixture is drawn once per run, seeded by trainer.seed.
    sampling: Literal["proportional", "temperature", "weights"] = "proportional"
    temperature: float = 2.0
    mixture_size: int | None = None  # training examples drawn (None: the sources' total)
    eval_per_source: int | None = None  # at most this many evaluation examples from each source

    def check(self) -> None:
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"instruct.max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.num_beams < 1:
            raise ConfigError(f"instruct.num_beams must be at least 1, got {self.num_beams}")
        unknown = [m for m in self.metrics if m not in ("exact_match", "f1", "bleu", "chrf")]
        if unknown or not self.metrics:
            raise ConfigError(f"instruct.metrics: expected some of exact_match, f1, bleu, chrf; got {self.metrics}")
        if self.temperature <= 0:
            raise ConfigError(f"instruct.temperature must be positive, got {self.temperature}")
        for name in ("mixture_size", "eval_per_source"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"instruct.{name} must be at least 1, got {getattr(self, name)}")
        names = []
        for i, entry in enumerate(self.mixture):
            where = f"instruct.mixture[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: expected a mapping of data keys (train, eval, weight, ...), got {entry!r}")
            unknown = sorted(set(entry) - set(SOURCE_KEYS))
            if unknown:
                raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(SOURCE_KEYS)}")
            if not entry.get("train") and not entry.get("eval"):
                raise ConfigError(f"{where}: give train and/or eval")
            weight = entry.get("weight", 1.0)
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
                raise ConfigError(f"{where}.weight must be a positive number, got {weight!r}")
            if entry.get("format", "auto") not in FORMATS:
                raise ConfigError(f"{where}.format must be one of {', '.join(FORMATS)}; got {entry['format']!r}")
            if entry.get("prompt") is not None:
                check_prompt(entry["prompt"], f"{where}.prompt")
            names.append(str(entry.get("name") or entry.get("source_task") or f"source{i}"))
        if len(set(names)) != len(names):
            raise ConfigError(f"instruct.mixture: source names must differ, got {names} (set name: for each)")


def mixture_sources(data: InstructData, options: InstructOptions) -> list[dict[str, Any]]:
    """The run's sources as uniform mappings (the ``data.*`` keys for a single source)."""
    if not options.mixture:
        return [{"name": data.source_task or "data", "train": data.train, "eval": data.eval, "weight": 1.0,
                 "format": data.format, "source_task": data.source_task, "source_data": dict(data.source_data),
                 "prompt": data.prompt, "system": data.system, "verbalizer": dict(data.verbalizer),
                 "max_train_samples": data.max_train_samples, "max_eval_samples": data.max_eval_samples}]
    out = []
    for i, entry in enumerate(options.mixture):
        out.append({"name": str(entry.get("name") or entry.get("source_task") or f"source{i}"),
                    "train": entry.get("train"), "eval": entry.get("eval"), "weight": float(entry.get("weight", 1.0)),
                    "format": entry.get("format", "auto"), "source_task": entry.get("source_task"),
                    "source_data": dict(entry.get("source_data") or {}), "prompt": entry.get("prompt"),
                    "system": entry.get("system", data.system), "verbalizer": dict(entry.get("verbalizer") or {}),
                    "max_train_samples": entry.get("max_train_samples"),
                    "max_eval_samples": entry.get("max_eval_samples")})
    return out
