"""The plugin kit: helpers a task plugin builds on. Importing this imports no torch.

- ``json_objects(path, lines)``: the objects of a JSON-lines file, a malformed line a ``DataError``
  naming the file and the line.
- ``pad_inputs(features, pad_token_id)``: a batch's token inputs padded on the right to its longest.
- ``with_head(auto_class, name_or_path, head)``: a transformers model with a task head for any family
  that has one, or a one-line error naming those that do.
- ``install(model)``, ``reading(model, positions)``, ``positions_of(mask)``: the last-layer shortcut
  for BERT-style encoders, where a head reads only some positions of the last layer (the same
  outputs and gradients there, fewer FLOPs); see ``sft_core.models.last_layer``.
- ``metric_direction(task, name)``: whether a higher or a lower value of a metric is better.
- ``resolve_model(name)``: a model alias (``minilm``, ``smollm2``), folder or hub id as a path to load;
  ``resolve_data(path)``: a data path or ``hf:NAME[:CONFIG]@SPLIT`` as a local file to read.
- ``host()``: the plugin host (the installed plugins and their tasks), for a task built on other tasks.
- ``causal_lm_loss(model, inputs, labels, chunked)``: a causal LM's next-token loss over the labelled
  positions, by default without ever holding the full-vocabulary logits (``trainer.chunked_loss``);
  ``linear_cross_entropy(hidden, weight, targets)``: the chunked output layer and loss on their own
  (see ``sft_core.engine.lm_loss``); ``causal_lm_logps(model, inputs, labels)``: the per-token
  log-probabilities of the labelled tokens, with gradients, by the same chunked path (for losses on
  sequence log-probabilities, e.g. preference tuning).
- ``parse_rows(text, key)``, ``check_rows(data)``, ``rows_for(path, data, split)``,
  ``select_rows(rows, spec, key, seed, path)``: ``data.train_rows`` / ``data.eval_rows``, 0-based row
  ranges such as "0-1199" and "1200-" that let one file serve as disjoint training and evaluation
  sets (a task's ``DataConfig`` declares the keys; see ``RowsData``).
- ``chat_template``: conversations rendered by a tokenizer's chat template and turned into token ids
  with the spans of the assistant turns, with the checks that make training and serving see the same
  tokens (every prompt's rendering a token prefix of the conversation, no double BOS, the end-of-turn
  token part of the answer); see ``sft_core.models.chat_template``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from .config import DataConfig
from .errors import ConfigError, DataError
from .models import chat_template
from .task import metric_direction

#: Token-aligned inputs and the value that pads each (None: the tokenizer's pad token id).
TOKEN_INPUTS = (("input_ids", None), ("attention_mask", 0), ("token_type_ids", 0))


def json_objects(path: str | Path, lines: Iterable[str]) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for every non-blank line of a JSON-lines file.

    A line that is not JSON, or not a JSON object, is a ``DataError`` naming the file and the line.
    """
    for n, line in enumerate(lines, 1):
        if n == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark (Windows editors write one) is no JSON
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {n}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {n}: expected a JSON object, got {type(row).__name__}")
        yield n, row


RowRanges = list[tuple[int, Optional[int]]]  # (first, last or None: to the end)


def parse_rows(text: str, key: str) -> RowRanges:
    """``"0-799"`` -> [(0, 799)], ``"800-"`` -> [(800, None)], ``"0-9,20"`` -> [(0, 9), (20, 20)].

    Rows are 0-based data rows (a header row is not counted); ranges include both ends; an open
    end runs to the last row. ``key`` names the config key in errors.
    """
    ranges: RowRanges = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:(-)\s*(\d+)?)?\s*", part)
        if not match:
            raise ConfigError(f"{key}={text!r}: expected 0-based row ranges such as 0-799, 800- or 0-99,200")
        first = int(match[1])
        last = None if match[2] and match[3] is None else int(match[3] if match[3] is not None else match[1])
        if last is not None and last < first:
            raise ConfigError(f"{key}={text!r}: range {part.strip()} runs backwards")
        ranges.append((first, last))
    return ranges


def _overlap(a: RowRanges, b: RowRanges) -> bool:
    inf = float("inf")
    return any(x0 <= (y1 if y1 is not None else inf) and y0 <= (x1 if x1 is not None else inf)
               for x0, x1 in a for y0, y1 in b)


@dataclass
class RowsData(DataConfig):
    """``data.*`` keys that pick rows of one file: a task's ``DataConfig`` subclasses it (and calls
    ``check_rows(self)`` in its ``check``)."""

    # Rows of data.train / data.eval to use, 0-based ranges such as "0-799" and "800-", so that one
    # file can serve as disjoint training and evaluation sets. None: every row.
    train_rows: str | None = None
    eval_rows: str | None = None
    rows_seed: int | None = None  # set: rows are numbered after a shuffle with this seed (same order for both)


def check_rows(data) -> None:
    """The row ranges parse, belong to one file, and do not overlap when train and eval are one file."""
    train = parse_rows(data.train_rows, "data.train_rows") if data.train_rows is not None else None
    evals = parse_rows(data.eval_rows, "data.eval_rows") if data.eval_rows is not None else None
    if data.train_rows is not None and isinstance(data.train, list):
        raise ConfigError(f"data.train_rows={data.train_rows} picks rows of one file, but data.train is a list of "
                          f"{len(data.train)} files; give one file or drop data.train_rows")
    if not isinstance(data.train, str) or data.eval is None or (train is None and evals is None):
        return
    if Path(data.train).resolve() != Path(data.eval).resolve():
        return
    if train is None or evals is None or _overlap(train, evals):
        raise ConfigError(f"data.train and data.eval are the same file ({data.eval}) and data.train_rows="
                          f"{data.train_rows} and data.eval_rows={data.eval_rows} share rows; give disjoint ranges")


def rows_for(path: str | Path, data, split: str | None) -> tuple[str, str] | None:
    """(ranges, config key) when ``path`` is read as the file that data.train_rows / data.eval_rows belong to."""
    if split not in ("train", "eval"):
        return None
    spec, named = getattr(data, f"{split}_rows", None), getattr(data, split, None)
    if spec is None or not isinstance(named, str) or Path(named).resolve() != Path(path).resolve():
        return None  # e.g. `sft eval` of a saved model on another file: its row ranges do not apply
    return spec, f"data.{split}_rows"


def select_rows(rows: list, spec: str, key: str, seed: int | None, path: str | Path) -> list:
    """The rows at the positions ``spec`` names, after a shuffle with ``seed`` when one is given."""
    order = list(range(len(rows)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    chosen: list = []
    seen: set[int] = set()
    for first, last in parse_rows(spec, key):
        end = len(rows) - 1 if last is None else last
        if first >= len(rows) or end >= len(rows):
            raise DataError(f"{key}={spec}: {path} has {len(rows)} data rows (0-{len(rows) - 1})")
        for position in range(first, end + 1):
            if position not in seen:
                seen.add(position)
                chosen.append(rows[order[position]])
    return chosen


def pad_inputs(features: list[dict], pad_token_id: int | None) -> dict[str, Any]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` (those present) as tensors, padded on
    the right to the longest feature of the batch."""
    import torch

    longest = max(len(f["input_ids"]) for f in features)
    batch = {}
    for key, fill in TOKEN_INPUTS:
        if key in features[0]:
            value = (pad_token_id or 0) if fill is None else fill
            batch[key] = torch.tensor([f[key] + [value] * (longest - len(f[key])) for f in features])
    return batch


def with_head(auto_class, name_or_path: str, head: str, **kwargs):
    """``auto_class.from_pretrained(name_or_path)``, or a one-line error naming the families with ``head``."""
    from .models.backbone import with_head as load

    return load(auto_class, name_or_path, head, **kwargs)


def install(model, first: int | None = None) -> bool:
    """Let the last encoder layer of ``model`` compute only the positions a head reads (see ``reading``)."""
    from .models.last_layer import install as install_last_layer

    return install_last_layer(model, first)


def reading(model, positions):
    """A context in which the last layer computes only ``positions`` (a tensor of indices per row)."""
    from .models.last_layer import reading as read

    return read(model, positions)


def positions_of(mask):
    """The positions a boolean mask selects, as ``reading`` takes them."""
    from .models.last_layer import positions_of as positions

    return positions(mask)


def resolve_model(name: str) -> str:
    """A model alias, folder or hub id as what ``from_pretrained`` loads."""
    from .models.aliases import resolve_model as resolve

    return resolve(name)


def resolve_data(path: str | None) -> str | None:
    """A data path as a local file: ``hf:NAME[:CONFIG]@SPLIT`` written once to JSONL; None stays None."""
    from .engine.sources import resolve

    return resolve(path)


def host():
    """A plugin host with the installed plugins (their tasks: ``host().get_task(name)``)."""
    from .host.manager import PluginHost

    return PluginHost()


def causal_lm_loss(model, inputs: dict, labels, chunked: bool = True, reduction: str = "mean"):
    """The next-token loss of a causal LM over the positions ``labels`` marks (-100 elsewhere); with
    ``chunked`` the output layer and the loss run over chunks of label tokens (the same loss and
    gradients, never the whole batch's logits). ``reduction="none"``: per-token losses, no gradients."""
    from .engine.lm_loss import causal_lm_loss as loss

    return loss(model, inputs, labels, chunked=chunked, reduction=reduction)


def causal_lm_logps(model, inputs: dict, labels, chunked: bool = True):
    """The log-probability of every labelled token (-100 elsewhere gives 0), with gradients: a (batch,
    length - 1) tensor; ``.sum(1)`` is each row's log-probability of its labelled tokens. With
    ``chunked`` the full-vocabulary logits of the batch are never held."""
    from .engine.lm_loss import causal_lm_logps as logps

    return logps(model, inputs, labels, chunked=chunked)


def linear_cross_entropy(hidden, weight, targets, bias=None, reduction: str = "mean"):
    """``F.cross_entropy(F.linear(hidden, weight, bias), targets)`` computed over chunks of rows."""
    from .engine.lm_loss import linear_cross_entropy as loss

    return loss(hidden, weight, targets, bias, reduction=reduction)


__all__ = ["json_objects", "pad_inputs", "with_head", "install", "reading", "positions_of", "metric_direction",
           "resolve_model", "resolve_data", "host", "causal_lm_loss", "causal_lm_logps", "linear_cross_entropy",
           "chat_template", "parse_rows", "check_rows", "rows_for", "select_rows", "RowsData", "TOKEN_INPUTS"]
