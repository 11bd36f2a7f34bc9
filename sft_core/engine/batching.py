"""Features and batches: tokenization done once and cached, length-grouped batches, sharding.

Batches are lists of feature indices computed from (seed, epoch) alone, so a resumed run can skip
to the exact batch where it stopped without touching the data before it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path

from ..config import cache_root
from ..task import roles
from ..version import __version__


FEATURES_REVISION = 3


def cache_dir() -> Path:
    return cache_root() / "features"


def _fingerprint(task, config, tokenizer, examples: list[dict], split: str) -> str:
    h = hashlib.sha256()
    identity = {
        "sft": __version__,
        # raised when a built-in task's features change for the same inputs (2: NER words as running
        # text for byte-level BPE tokenizers; 3: QA training windows flag answers cut inside a token)
        "features": FEATURES_REVISION,
        "task": config.task,
        "task_class": type(task).__qualname__,
        "split": split,
        "tokenizer": [type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer)],
        "max_length": config.trainer.max_length,
        "data": dataclasses.asdict(config.data) | {"train": None, "eval": None},
        "options": dataclasses.asdict(config.options) if config.options is not None else None,
        "state": task.state_dict(),
    }
    h.update(json.dumps(identity, sort_keys=True, default=str).encode())
    for example in examples:
        h.update(json.dumps(example, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def build_features(task, config, tokenizer, examples: list[dict], split: str, use_cache: bool = True):
    """Tokenize ``examples`` with ``task.preprocess`` once; reuse the cached result on later runs."""
    import datasets

    datasets.disable_progress_bars()
    rows = [dict(example, example_id=i) for i, example in enumerate(examples)]
    columns = list(rows[0]) if rows else ["example_id"]
    table = (datasets.Dataset.from_list(rows) if use_cache else _in_memory(_columns(rows))) if rows else \
        datasets.Dataset.from_dict({"example_id": []})
    if use_cache:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        cache_file = str(folder / f"{_fingerprint(task, config, tokenizer, examples, split)}.arrow")
        features = table.map(task.preprocess, batched=True, batch_size=1000, remove_columns=columns,
                             cache_file_name=cache_file, load_from_cache_file=True, new_fingerprint=Path(cache_file).stem)
    else:
        # the same batches map() would pass (columns read back from Arrow), without its fingerprint of
        # the function, which pickles the task's tokenizer: a tenth of a second per call, too slow to serve
        parts = [_in_memory(task.preprocess(table[i:i + 1000])) for i in range(0, len(table), 1000)]
        features = (datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0] if parts
                    else datasets.Dataset.from_dict({"example_id": []}))
    if "example_id" not in features.column_names:
        raise RuntimeError(f"task {config.task!r}: preprocess() must keep the 'example_id' column")
    finish = roles(task).finish_features  # e.g. packing, truncation counts
    return finish(features, split) if finish is not None else features


def _columns(rows: list[dict]) -> dict[str, list]:
    return {name: [row.get(name) for row in rows] for name in rows[0]}


def _in_memory(columns):
    """A Dataset of ``columns`` without the fingerprint ``from_dict`` computes by hashing the whole table
    (nothing is cached for it)."""
    import secrets

    import datasets
    from datasets.table import InMemoryTable

    return datasets.Dataset(InMemoryTable.from_pydict(dict(columns)), fingerprint=secrets.token_hex(8))


def feature_lengths(features) -> list[int]:
    if "length" in features.column_names:
        return list(features["length"])
    return [len(ids) for ids in features["input_ids"]]


def train_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """The batches of one epoch, as feature indices; deterministic in (seed, epoch).

    With length grouping, a random permutation is cut into mega-batches of 50 batches, each sorted
    by length, so padding is small while batch order stays random.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        mega = batch_size * 50
        order = [i for start in range(0, len(order), mega)
                 for i in sorted(order[start:start + mega], key=lambda j: -lengths[j])]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def shard_train_batches(batches: list[list[int]], world: int) -> list[list[list[int]]]:
    """Group batches ``world`` at a time: element ``r`` of each group is process ``r``'s batch.

    The list is padded by wrapping around so every process takes the same number of steps.
    """
    if len(batches) % world:
        batches = batches + batches[: world - len(batches) % world]
    return [batches[i:i + world] for i in range(0, len(batches), world)]


def eval_batches(lengths: list[int], batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """Disjoint, length-sorted batches for this process; every feature is in exactly one of them."""
    mine = sorted(range(rank, len(lengths), world), key=lambda j: -lengths[j])
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
