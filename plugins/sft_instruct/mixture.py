"""Mixtures of sources, and other tasks' data as instructions (no torch here).

A *source* is one dataset: instruction records, or another task's data read through that task's
own reader (``source_task``). A task offers its data as instructions through an instruction adapter
its plugin registers with this plugin's hook ``sft_instruction_adapters`` (``hookspecs``); a task
written for contract 1.1 offers it with four members of its own, adapted by ``sft_core.compat``.

The training mixture is drawn once per run from ``trainer.seed``: the same configuration gives the
same examples in the same order, so a resumed run continues exactly (batches are a function of the
seed and the epoch).
"""

from __future__ import annotations

import json
import math
import random
import string
from typing import Any

from sft_core.errors import ConfigError, DataError
from sft_core.task import roles


def fill_prompt(prompt: str, fields: dict[str, str], where: str) -> str:
    names = [name for _, name, _, _ in string.Formatter().parse(prompt) if name]
    missing = [n for n in names if n not in fields]
    if missing:
        raise ConfigError(f"{where}: the prompt names {{{missing[0]}}}, but the source offers "
                          f"{', '.join('{' + f + '}' for f in fields) or 'no fields'}")
    return prompt.format(**fields)


def instruction_adapter(host, name: str, task):
    """The instruction adapter of task ``name`` (registered through ``sft_instruction_adapters``, or
    made by ``sft_core.compat`` from a 1.1 task's own members); a one-line error when it has none."""
    from sft_core import compat

    factories: dict = {}

    def register(task_name: str, factory) -> None:
        factories.setdefault(task_name, factory)

    hook = getattr(host.hook, "sft_instruction_adapters", None)
    if hook is not None:
        hook(register=register)
    adapter = factories[name](task) if name in factories else compat.legacy_instruction_adapter(task)
    if adapter is None:
        raise ConfigError(f"task {name!r} does not offer its data as instructions: its plugin registers no "
                          "instruction adapter (hook sft_instruction_adapters of the instruct plugin)")
    return adapter


class SourceTask:
    """Another task's reader, metric and instruction methods, for one source."""

    def __init__(self, host, source: dict, base_config):
        from sft_core.config import build_config

        name = source["source_task"]
        if name == "instruct":
            raise ConfigError(f"source {source['name']!r}: source_task cannot be instruct itself")
        spec = host.get_task(name)
        self.name = source["name"]
        layer = {"data": dict(source["source_data"]), "trainer": {"max_length": base_config.trainer.max_length}}
        self.config = build_config(spec, [(f"source {self.name!r} (source_data)", layer)])
        self.task = spec.factory(self.config)
        self.adapter = instruction_adapter(host, name, self.task)
        self.prompt = source["prompt"] or getattr(self.adapter, "prompt", None)
        if not self.prompt:
            raise ConfigError(f"source {self.name!r}: task {name!r} has no default prompt; set prompt")
        self.verbalizer = {str(k): str(v) for k, v in source["verbalizer"].items()}
        self.unverbal = {v.strip().lower(): k for k, v in self.verbalizer.items()}
        self.ready = False

    def read(self, split: str, path) -> list[dict]:
        return self.task.load(split, path)

    def setup(self, examples: list[dict]) -> None:
        if not self.ready:
            self.task.setup(examples)
            self.ready = True

    def answer(self, example: dict) -> str:
        text = self.adapter.answer(example)
        return self.verbalizer.get(text, text)

    def user_message(self, example: dict) -> str:
        return fill_prompt(self.prompt, self.adapter.fields(example), f"source {self.name!r}")

    def prediction(self, text: str, example: dict):
        words = text.strip()
        key = words.lower().strip(" .!\n")
        if self.unverbal:  # the whole answer, else the answer word that comes first in it
            found = [(key.find(word), -len(word), label) for word, label in self.unverbal.items() if word in key]
            words = self.unverbal.get(key) or (min(found)[2] if found else words)
        return self.adapter.prediction(words, example)

    def score(self, predictions: list, examples: list[dict]) -> dict[str, Any]:
        return self.task.compute_metrics(predictions, examples)

    def perfect(self, examples: list[dict]) -> float | None:
        """The main metric of gold predictions (1 or 100), to put sources on one scale; None if unknown."""
        gold = roles(self.task).gold_predictions
        if gold is None or not examples:
            return None
        return float(self.task.compute_metrics(gold(examples), examples)[self.task.main_metric])

    @property
    def main_metric(self) -> str:
        return self.task.main_metric


def source_record(source_index: int, messages: list[dict], references: list[str], where: tuple[str, int],
                  original: dict | None = None) -> dict:
    """The one example schema of the instruct task (every field Arrow-serialisable)."""
    return {"messages": messages, "references": references, "source": source_index, "file": where[0],
            "line": where[1], "original": json.dumps(original, ensure_ascii=False, default=str) if original else ""}


def draw(sizes: list[int], weights: list[float], sampling: str, temperature: float, total: int | None,
         seed: int) -> list[tuple[int, int]]:
    """The training mixture as (source, index) pairs in a seeded random order.

    ``proportional`` keeps every example once (``total`` then subsamples or repeats all sources
    alike); ``temperature`` gives source i the share size_i^(1/T) / sum; ``weights`` the share
    weight_i / sum. A source's count above its size repeats its examples (oversampling), below it
    takes a seeded subset.
    """
    if not any(sizes):
        return []
    grand = total or sum(sizes)
    if sampling == "proportional":
        shares = [s / sum(sizes) for s in sizes]
    elif sampling == "temperature":
        raw = [s ** (1.0 / temperature) if s else 0.0 for s in sizes]
        shares = [r / sum(raw) for r in raw]
    else:
        raw = [w if s else 0.0 for w, s in zip(weights, sizes)]
        shares = [r / sum(raw) for r in raw]
    counts = _apportion(shares, grand)
    rng = random.Random(seed * 7919 + 17)
    drawn: list[tuple[int, int]] = []
    for source, (size, count) in enumerate(zip(sizes, counts)):
        if not size:
            continue
        whole, rest = divmod(count, size)
        indices = list(range(size)) * whole + sorted(rng.sample(range(size), rest))
        drawn += [(source, i) for i in indices]
    rng.shuffle(drawn)
    return drawn


def _apportion(shares: list[float], total: int) -> list[int]:
    """Integer counts summing to ``total``, as close to ``shares`` as possible (largest remainders)."""
    exact = [s * total for s in shares]
    counts = [math.floor(x) for x in exact]
    for i in sorted(range(len(shares)), key=lambda i: -(exact[i] - counts[i]))[:total - sum(counts)]:
        counts[i] += 1
    return counts


def check_sources(sources: list[dict], split: str) -> None:
    if split == "train" and not any(s["train"] for s in sources):
        raise DataError("instruct.mixture: no source has training data (give train: for at least one)")
