"""Where data paths point: local files, or Hugging Face datasets named ``hf:DATASET[:CONFIG]@SPLIT``.

A dataset split is written once to a JSON-lines file in the cache (``$SFT_CACHE_DIR`` or
``~/.cache/sft``), class-label ids turned into their names, and the task reads that file like any
other JSONL file: ``hf:nyu-mll/glue:sst2@train``, ``hf:rajpurkar/squad@validation``,
``hf:eriktks/conll2003@train`` or a local dataset folder, ``hf:./my-dataset@test``.
Needs the hub (or a local folder); imports ``datasets`` only when such a path is used.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..config import cache_root
from ..errors import SFTError

PREFIX = "hf:"


def is_hub(path: str | None) -> bool:
    return isinstance(path, str) and path.startswith(PREFIX)


def parse(spec: str) -> tuple[str, str | None, str]:
    """``hf:NAME[:CONFIG]@SPLIT`` -> (name, config or None, split)."""
    body, at, split = spec[len(PREFIX):].rpartition("@")
    if not at or not body or not split:
        raise SFTError(f"dataset {spec!r}: expected hf:DATASET[:CONFIG]@SPLIT, e.g. hf:nyu-mll/glue:sst2@train")
    name, colon, config = body.partition(":")
    return name, (config or None) if colon else None, split


def _with_label_names(dataset):
    """Class-label columns (and lists of class labels, as NER tags) as their names."""
    import datasets

    def names_of(feature):
        if isinstance(feature, datasets.ClassLabel):
            return feature, False
        inner = getattr(feature, "feature", None)
        return (inner, True) if isinstance(inner, datasets.ClassLabel) else (None, False)

    labelled = {column: names_of(feature) for column, feature in dataset.features.items()}
    labelled = {column: found for column, found in labelled.items() if found[0] is not None}
    if not labelled:
        return dataset

    def convert(batch):
        for column, (label, is_list) in labelled.items():
            values = batch[column]
            batch[column] = ([[label.int2str(v) for v in row] for row in values] if is_list
                             else [label.int2str(v) if v is not None and v >= 0 else None for v in values])
        return batch

    features = dataset.features.copy()  # without this, map would encode the names back into ids
    for column, (_, is_list) in labelled.items():
        features[column] = datasets.Sequence(datasets.Value("string")) if is_list else datasets.Value("string")
    return dataset.map(convert, batched=True, features=features)


def materialize(spec: str) -> str:
    """The JSON-lines file holding split ``spec``; written on first use, reused afterwards."""
    import datasets

    name, config, split = parse(spec)
    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # the hub, the network and dataset scripts raise many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SFTError(f"cannot load dataset {spec}: {first}") from None
    root = cache_root() / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{spec}|{dataset._fingerprint}".encode()).hexdigest()[:24]
    path = root / f"{key}.jsonl"
    if not path.is_file():
        tmp = path.with_name(f".tmp-{path.name}")
        _with_label_names(dataset).to_json(str(tmp), force_ascii=False)
        os.replace(tmp, path)
    return str(path)


def resolve(path: str | None) -> str | None:
    """``path`` itself, or for a dataset spec the local file that holds it."""
    return materialize(path) if is_hub(path) else path


def exists(path: str) -> bool:
    """Whether a data path can be read: a file or folder, files sharing it as a prefix (parallel
    text FILE.en + FILE.de), or a dataset spec (checked when it is loaded)."""
    if is_hub(path) or Path(path).exists():
        return True
    p = Path(path)
    return p.parent.is_dir() and any(p.parent.glob(f"{p.name}.*"))
