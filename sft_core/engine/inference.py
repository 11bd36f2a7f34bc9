"""Inference on a saved model: ``sft eval`` (score a data file, write the metrics and predictions)
and ``sft predict`` (one record per input), each reading its input whole."""

from __future__ import annotations

from pathlib import Path

from ..errors import SFTError
from ..task import roles
from . import files
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
    pretrained = not is_sft_folder(model_dir) and task_name is not None
    if pretrained:
        config, task, model_path = load_pretrained(model_dir, host, task_name, layers)
    else:
        _, config, task = load_saved(model_dir, host, layers, data_given=data is not None)
        if task_name is not None and task_name != config.task:
            raise SFTError(f"{model_dir} is a model of task {config.task!r}, not {task_name!r}")
        model_path = model_dir
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
    if output_dir:
        out = Path(output_dir)
    else:
        out = Path(config.output_dir) / "zero-shot" if pretrained else Path(model_dir).resolve().parent / "eval"
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        files.write_json(out / "eval_results.json", metrics)
        files.write_predictions(task, out, predictions, examples)
    return {"metrics": metrics, "output_dir": str(out)}


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
