"""Inference on a saved model: ``sft eval`` (score a data file, write the metrics and predictions)
and ``sft predict`` (one record per input), each reading its input whole."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ..errors import SFTError
from ..task import roles
from . import files
from .checkpoint import TASK_FILE
from .loading import is_sft_folder, load_model, load_pretrained, load_saved, quiet_libraries
from .precision import make_accelerator
from .sources import resolve as resolve_source


def _limit(examples: list, n: int | None) -> list:
    return examples[:n] if n else examples


def evaluate_saved(model_dir: str, data: str | None, output_dir: str | None, host, layers=(),
                   task_name: str | None = None) -> dict:
    """``sft eval``: score a saved model on ``data``; writes eval_results.json and predictions.

    ``data`` is scored whole: the training run's sample limits do not apply, only those of
    ``layers`` (this command's config files and settings). A model that was not written by sft (e.g. ``smollm2``, a hub id) is evaluated as the untrained
    starting point of ``task_name``: its zero-shot baseline, measured the same way as a trained model.
    """
    from .batching import build_features
    from .evaluation import evaluate

    quiet_libraries()
    layers = list(layers)
    saved_task = _saved_task(model_dir)
    # a model folder of another task (e.g. an instruct model scored on preference pairs) is evaluated as
    # the starting point of task_name, as a model that sft never trained is
    pretrained = task_name is not None and saved_task != task_name
    if pretrained:
        if saved_task is not None:
            print(f"sft eval: {model_dir} is a model of task {saved_task!r}; evaluated as the starting point of task "
                  f"{task_name!r}", file=sys.stderr)
        config, task, model_path = load_pretrained(model_dir, host, task_name, layers)
    else:
        _, config, task = load_saved(model_dir, host, layers, data_given=data is not None)
        model_path = model_dir
    given = data is not None
    data = data or config.data.eval  # None: the task's built-in sample
    accelerator = make_accelerator(config)
    examples = _limit(task.load("eval", resolve_source(data)), config.data.max_eval_samples)
    if not examples:
        raise SFTError(f"no examples in {data or 'the built-in sample'}")
    if pretrained:
        task.setup(examples)  # what training data would define (e.g. a label map), from the evaluation data
    tokenizer, model = load_model(task, model_path)
    model.to(accelerator.device)
    features = build_features(task, config, tokenizer, examples, "eval")
    metrics, predictions = evaluate(accelerator, task, model, features, examples, config.trainer.eval_batch_size)
    if data is None:
        source = "the built-in sample"
    else:  # the data file as a full path: the same file however it was named on the command line
        source = str(data) if str(data).startswith("hf:") else str(Path(data).resolve())
    if output_dir:
        out = Path(output_dir)
    else:
        base = Path(config.output_dir) if pretrained else Path(model_dir).resolve().parent
        out = evaluation_folder(base, "zero-shot" if pretrained else "eval", source if given else None)
    replaced = _evaluated(out) == source
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        files.write_json(out / "eval_results.json", metrics)
        files.write_predictions(task, out, predictions, examples)
        files.write_json(out / EVALUATED_FILE, {"model": str(model_dir), "data": source})
    return {"metrics": metrics, "output_dir": str(out), "replaced": replaced}


def _saved_task(model_dir: str) -> str | None:
    """The task a model folder written by sft was trained for; None for any other model."""
    import json

    if not is_sft_folder(model_dir):
        return None
    try:
        return json.loads((Path(model_dir) / TASK_FILE).read_text(encoding="utf-8"))["task"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


#: What an evaluation folder holds the results of: {"model", "data"}.
EVALUATED_FILE = "evaluated.json"


def _evaluated(folder: Path) -> str | None:
    """The data whose evaluation ``folder`` holds, or None (no folder, or none sft eval wrote)."""
    import json

    try:
        return json.loads((folder / EVALUATED_FILE).read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        return None


def evaluation_folder(base: Path, prefix: str, data: str | None) -> Path:
    """Where ``sft eval`` writes without ``--output-dir``: ``base/prefix`` for the run's own evaluation
    data, ``base/prefix-NAME`` for a data file NAME.EXT (``-2``, ``-3``, ... when that folder holds
    another file's evaluation): one folder per data file, so an evaluation never replaces another's."""
    if data is None:
        return base / prefix
    if data.startswith("hf:"):
        name = data[3:]
    else:
        path = Path(data.rstrip("/\\"))
        name = Path(path.stem).stem if path.suffix == ".gz" else (path.stem if path.suffix else path.name)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "data"
    folder, n = base / f"{prefix}-{name}", 2
    while folder.exists() and _evaluated(folder) != data:
        folder, n = base / f"{prefix}-{name}-{n}", n + 1
    return folder


def _read_fields(task, name: str, fields: dict[str, list[str]]) -> list[dict]:
    """Examples from named inputs (``--question Q --context C``, repeatable), checked against the task."""
    declared = roles(task).input_fields
    for field in fields:
        if field not in declared:
            takes = ", ".join(f"--{f}" for f in declared) if declared else "no named inputs (give TEXT arguments)"
            raise SFTError(f"no such option: --{field} (task {name!r} takes {takes})")
    counts = {len(values) for values in fields.values()}
    if len(counts) > 1:
        raise SFTError("give each of " + ", ".join(f"--{f}" for f in fields) + " once per input (the counts differ)")
    n = counts.pop()
    return task.read_fields([{field: values[i] for field, values in fields.items()} for i in range(n)])


def predict_saved(model_dir: str, texts: list[str], input_path: str | None, host, layers=(), fields=None):
    """``sft predict``: yields one JSON-serialisable record per input, in input order.

    ``fields`` holds named inputs ({name: [value per input]}) for tasks that declare ``input_fields``.
    """
    from .predictor import Predictor

    quiet_libraries()
    _, config, task = load_saved(model_dir, host, list(layers))  # inputs are read before the model loads
    if fields:
        examples = _read_fields(task, config.task, fields)
    else:
        examples = task.load("predict", resolve_source(input_path)) if input_path else task.read_inputs(list(texts))
    if not examples:
        return []
    predictor = Predictor(model_dir, host, layers)
    return predictor.records(predictor.predict_examples(examples), examples)
