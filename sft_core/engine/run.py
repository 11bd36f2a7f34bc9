"""What ``sft run``, ``sft eval`` and ``sft predict`` do, as functions (the CLI is a thin layer).

Imports torch and transformers; keep it out of the import path of ``sft --help``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

from .checkpoint import TASK_FILE, fsync_dir, fsync_file
from ..config import RunConfig, build_config, train_files
from ..errors import SFTError
from ..models.onnx_runtime import is_onnx_folder
from ..models.aliases import resolve_model
from .sources import resolve as resolve_source
from ..task import prediction_files


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # weight loading/writing bars
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(requested: str, cuda: bool, native_bf16: bool) -> tuple[str, str | None]:
    """The precision to run in for ``trainer.mixed_precision=requested`` on a GPU (``cuda``) or the
    CPU whose bf16 support is ``native_bf16``, and a note for the user if it is not what they asked
    for (or may be slow).

    ``auto`` is bf16 on GPUs that have it, fp16 on other GPUs and fp32 on the CPU (the same math as
    any fp32 run). bf16 on the CPU is autocast to bfloat16: fast where the CPU multiplies bf16 in
    hardware, emulated (slower than fp32) elsewhere. fp16 needs a GPU.
    """
    if requested == "auto":
        return ("bf16" if native_bf16 else "fp16") if cuda else "no", None
    if cuda or requested == "no":
        return requested, None
    if requested == "fp16":
        return "no", "note: trainer.mixed_precision=fp16 needs a GPU; training in fp32 on the CPU (bf16 works on the CPU)"
    if not native_bf16:
        return "bf16", ("note: trainer.mixed_precision=bf16 on a CPU without AVX512-BF16 or AMX: bf16 is "
                        "emulated there and usually slower than fp32 (trainer.mixed_precision=no)")
    return "bf16", None


def make_accelerator(config: RunConfig):
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from ..models.sharding import take_over_fsdp_launch

    take_over_fsdp_launch()

    cuda = torch.cuda.is_available()
    native_bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_native_bf16()
    precision, note = resolve_precision(config.trainer.mixed_precision, cuda, native_bf16)
    if note:
        print(note, file=sys.stderr)
    # accelerate keeps its precision in a process-wide state; a process that runs several jobs (a
    # notebook, the tests) may ask for another precision each time. The process group is kept.
    reset = getattr(AcceleratorState, "_reset_state", None)
    if reset is not None and AcceleratorState._shared_state.get("_mixed_precision") not in (None, precision):
        reset(reset_partial_state=False)
    # accelerate only sets up multi-process CPU runs (gloo) when told it is on the CPU
    return Accelerator(mixed_precision=precision, cpu=not cuda)


def _write_json(path: Path, obj) -> None:
    """Write ``path`` whole or not at all: a temporary file, flushed to disk, then renamed."""
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _versions(accelerator) -> dict:
    import accelerate
    import torch
    import transformers

    from .. import __version__

    import peft

    return {"sft": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__, "peft": peft.__version__,
            "device": str(accelerator.device), "processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision}


def load_training_examples(task, config: RunConfig) -> list:
    """The examples of data.train: of each of its files in turn when it is a list."""
    files = train_files(config.data)
    if not files:
        raise SFTError("data.train is an empty list; give a file or a list of files")
    examples: list = []
    for path in files:
        examples += task.load("train", resolve_source(path))
    return examples


def split_holdout(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(training part, held-out part) of ``examples``: ``fraction`` of them, drawn with ``seed``,
    held out (at least one, and at least one left to train on); each part keeps the file order."""
    if len(examples) < 2:
        raise SFTError(f"{len(examples)} training example(s): too few to hold out a validation part")
    n = min(max(1, round(fraction * len(examples))), len(examples) - 1)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:n])
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def _limit(examples: list, n: int | None) -> list:
    return examples[:n] if n else examples


def load_model(task, path: str, trainable: bool = False, gradient_checkpointing: bool = False):
    """Tokenizer and model of ``path`` through the task, with loading failures turned into one clear line.

    ``path`` is a model folder, a hub id, or an adapter-only folder written by sft (its base model
    is built by the task, then the adapters are loaded onto it; ``trainable`` to train them on).
    The tokenizer gets a pad token (its own, else its EOS) and the model's config the same id.
    Gradient checkpointing is switched on in the base model, before any adapters are loaded.
    """
    from ..models import adapters
    from ..models.backbone import enable_gradient_checkpointing, ensure_pad_token, sync_pad_token

    folder = Path(path)
    if is_onnx_folder(folder):  # written by `sft export`: run by onnxruntime
        from ..models.onnx_runtime import OnnxModel

        tokenizer = task.load_tokenizer(path)
        ensure_pad_token(tokenizer, path)
        model = OnnxModel(folder)
        sync_pad_token(model, tokenizer)
        return tokenizer, model
    base = path
    if adapters.is_adapter_folder(folder) and (folder / TASK_FILE).is_file():
        base = adapters.base_for(folder, json.loads((folder / TASK_FILE).read_text(encoding="utf-8")))
    try:
        tokenizer = task.load_tokenizer(path)
        ensure_pad_token(tokenizer, path)
        model = task.build_model(base)
    except SFTError:
        raise
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SFTError(f"cannot load model {base!r}: {first}") from None
    sync_pad_token(model, tokenizer)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model, base)
    if base != path:
        model = adapters.load(model, folder, trainable=trainable)
    return tokenizer, model


def train(config: RunConfig, host, resume: bool | str = False, overwrite: bool = False) -> dict:
    """``sft run``: train, evaluate, save; returns {"train": ..., "eval": ...}.

    An output folder holding an earlier run is continued (``resume``), replaced (``overwrite``:
    the files sft wrote there are removed first) or refused with an error. With
    data.validation_fraction, that part of the training examples is evaluated and the rest trains.
    """
    from accelerate.utils import set_seed

    from .batching import build_features
    from .checkpoint import load_training_state
    from .run_folder import check_output_dir, remove_run
    from .loop import Run, fit, latest_checkpoint

    _quiet_libraries()
    spec = host.get_task(config.task)
    output_dir = Path(config.output_dir)
    check_output_dir(output_dir, bool(resume), overwrite)
    resume_from = resume_state = None
    if resume:
        resume_from = Path(resume) if isinstance(resume, str) else latest_checkpoint(output_dir)
        if resume_from is None or not (resume_from / "training_state.pt").is_file():
            raise SFTError(f"nothing to resume: no checkpoint in {output_dir / 'checkpoints'}"
                           if resume_from is None else f"not a checkpoint folder: {resume_from}")
        resume_state = load_training_state(resume_from)  # before the slow work: a bad file fails at once

    accelerator = make_accelerator(config)
    main = accelerator.is_main_process
    task = spec.factory(config)
    train_examples = _limit(load_training_examples(task, config), config.data.max_train_samples)
    if not train_examples:
        raise SFTError(f"no training examples in {config.data.train or 'the built-in sample'}")
    held_out = None
    if config.data.validation_fraction is not None:  # checked with the config: between 0 and 1, no data.eval
        train_examples, held_out = split_holdout(train_examples, config.data.validation_fraction,
                                                 config.data.validation_seed)
    if resume_from is not None:
        saved = json.loads((resume_from / "model" / TASK_FILE).read_text(encoding="utf-8"))
        task.load_state_dict(saved["state"])
        model_path = str(resume_from / "model")
    else:
        # a label seen only in the held-out part is still one of the task's labels
        task.setup(train_examples + (held_out or []))
        # a task may resolve names of its own (e.g. a model built from a configuration)
        model_path = getattr(task, "resolve_model", resolve_model)(config.model)
    # read after setup/load_state_dict, so that the task can check it against what training defined
    # (e.g. a label never seen in training is an error naming its file and line)
    eval_path = config.data.eval
    eval_examples = None
    if held_out is not None:
        eval_examples = _limit(held_out, config.data.max_eval_samples)
    elif eval_path is not None or config.data.train is None:
        eval_examples = _limit(task.load("eval", resolve_source(eval_path)), config.data.max_eval_samples)
    set_seed(config.trainer.seed)
    tokenizer, model = load_model(task, model_path, trainable=True,
                                  gradient_checkpointing=config.trainer.gradient_checkpointing)
    from ..models import adapters
    from ..models.backbone import describe_counts, parameter_counts

    if config.peft.enabled and not adapters.is_peft_model(model):
        if config.peft.save == "adapter" and not getattr(model, "name_or_path", ""):
            # a model built from a configuration (not loaded from a folder or the hub) has no name
            raise SFTError(f"peft.save=adapter records the base model to load the adapters onto, but {config.model!r} "
                           "cannot be loaded again (it is built at random); use peft.save=merged")
        model = adapters.apply(model, config.peft, config.model)
    counts = parameter_counts(model)
    if main:
        print(describe_counts(counts), file=sys.stderr)

    if main:
        if overwrite:
            remove_run(output_dir, prediction_files(task))
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        info = {"versions": _versions(accelerator), "seed": config.trainer.seed,
                "resumed_from": str(resume_from) if resume_from else None, "parameters": counts,
                "prediction_files": list(prediction_files(task))}
        if held_out is not None:
            info["validation"] = {"fraction": config.data.validation_fraction, "seed": config.data.validation_seed,
                                  "train_examples": len(train_examples),
                                  "validation_examples": len(eval_examples or [])}
        _write_json(output_dir / "run_info.json", info)
    accelerator.wait_for_everyone()

    with accelerator.main_process_first():
        train_features = build_features(task, config, tokenizer, train_examples, "train")
        eval_features = build_features(task, config, tokenizer, eval_examples, "eval") if eval_examples else None
    report = getattr(task, "report", None)  # e.g. truncation counts, packing, a mixture's composition
    if main and report:
        info = json.loads((output_dir / "run_info.json").read_text(encoding="utf-8"))
        _write_json(output_dir / "run_info.json", {**info, "data": report})

    run = Run(config=config, task=task, hooks=host.hook, accelerator=accelerator, model=model,
              tokenizer=tokenizer, train_features=train_features, eval_features=eval_features,
              eval_examples=eval_examples or None, output_dir=output_dir, resume_from=resume_from,
              resume_state=resume_state)
    result = fit(run)
    if main:
        _write_json(output_dir / "train_results.json", result["train"])
        if result["eval"] is not None:
            _write_json(output_dir / "eval_results.json", result["eval"])
            for name in prediction_files(task):
                best = output_dir / "checkpoints" / "best" / name
                if best.is_file():
                    shutil.copyfile(best, output_dir / name)
        if config.trainer.report:
            _write_report(output_dir)
    accelerator.wait_for_everyone()
    result["main_process"] = main
    return result


def _write_report(output_dir: Path) -> None:
    """trainer.report: the run's report.html; a report that fails costs the run nothing."""
    from ..commands.report import write_report

    try:
        print(f"report: {write_report([str(output_dir)], str(output_dir / 'report.html'))}", file=sys.stderr)
    except Exception as exc:  # the model and results are written: say why the page is not
        print(f"warning: no report.html ({type(exc).__name__}: {exc})", file=sys.stderr)


#: Keys of the saved training config that bounded what the training run read, not what a later
#: ``sft eval`` or ``sft predict`` scores or predicts
TRAINING_LIMITS = ("max_train_samples", "max_eval_samples", "validation_fraction", "validation_seed")


def _inference_layer(saved: dict, data_given: bool) -> dict:
    """The saved training config as the lowest config layer of ``sft eval``/``sft predict``.

    Without the training run's sample limits: this command reads its data whole unless its own
    options or config files set a limit. With ``data_given`` (``sft eval --data FILE``) also
    without data.eval, since the run's row selections (data.eval_rows, ...) belong to that file:
    FILE is scored whole, even when it is the run's own evaluation file.
    """
    data = {k: v for k, v in (saved.get("data") or {}).items()
            if k not in TRAINING_LIMITS and not (data_given and k == "eval")}
    return {**saved, "data": data}


def load_saved(model_dir: str, host, layers: list[tuple[str, dict]], data_given: bool = False):
    """Rebuild (spec, config, task) from a model folder written by ``sft run``, for inference:
    ``layers`` (this command's config files and settings) on top of the saved config, whose
    training-time sample limits are dropped (see ``_inference_layer``)."""
    folder = Path(model_dir)
    info_file = folder / TASK_FILE
    if not folder.is_dir():
        raise SFTError(f"model folder not found: {folder}")
    if not info_file.is_file():
        raise SFTError(f"{folder} was not written by sft (no {TASK_FILE}); train with `sft run` first")
    info = json.loads(info_file.read_text(encoding="utf-8"))
    provider = info.get("provider") or {}
    if info["task"] not in host.tasks and provider.get("distribution"):
        version = f" (it was saved with {provider['version']})" if provider.get("version") else ""
        raise SFTError(f"{folder} is a model of task {info['task']!r}, provided by the package "
                       f"{provider['distribution']!r}{version}, which is not installed or not loaded: "
                       f"pip install {provider['distribution']}")
    spec = host.get_task(info["task"])
    saved = _inference_layer(info["config"], data_given)
    saved.pop("task", None)
    config = build_config(spec, [(f"{info_file}", saved), *layers, ("--model", {"model": str(folder)})])
    task = spec.factory(config)
    task.load_state_dict(info.get("state", {}))
    return spec, config, task


def _pretrained(model: str, host, task_name: str, layers: list[tuple[str, dict]]):
    """(config, task, model path) for a model that was not written by sft (an alias, a folder, a hub id)."""
    spec = host.get_task(task_name)
    config = build_config(spec, [*layers, ("--model", {"model": model})])
    task = spec.factory(config)
    return config, task, getattr(task, "resolve_model", resolve_model)(config.model)


def _is_sft_folder(model: str) -> bool:
    return (Path(model) / TASK_FILE).is_file()


def prepare_for_inference(model: str, host, task_name: str, layers=()):
    """(task, tokenizer, model in eval mode) for a model folder written by sft, or, when ``model`` is
    not one, for ``model`` as the pretrained backbone of task ``task_name``."""
    _quiet_libraries()
    if _is_sft_folder(model):
        _, config, task = load_saved(model, host, list(layers))
        path = model
    else:
        config, task, path = _pretrained(model, host, task_name, list(layers))
    tokenizer, loaded = load_model(task, path)
    loaded.eval()
    return task, tokenizer, loaded


def evaluate_saved(model_dir: str, data: str | None, output_dir: str | None, host, layers=(),
                   task_name: str | None = None) -> dict:
    """``sft eval``: score a saved model on ``data``; writes eval_results.json and predictions.

    ``data`` is scored whole: the training run's sample limits do not apply, only those of
    ``layers`` (this command's config files and settings). A model that was not written by sft (e.g. ``smollm2``, a hub id) is evaluated as the untrained
    starting point of ``task_name``: its zero-shot baseline, measured the same way as a trained model.
    """
    from .batching import build_features
    from .evaluation import evaluate

    _quiet_libraries()
    layers = list(layers)
    pretrained = not _is_sft_folder(model_dir) and task_name is not None
    if pretrained:
        config, task, model_path = _pretrained(model_dir, host, task_name, layers)
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
        _write_json(out / "eval_results.json", metrics)
        task.write_predictions(out / task.predictions_file, predictions, examples)
    return {"metrics": metrics, "output_dir": str(out)}


def _read_fields(task, name: str, fields: dict[str, list[str]]) -> list[dict]:
    """Examples from named inputs (``--question Q --context C``, repeatable), checked against the task."""
    declared = tuple(getattr(task, "input_fields", ()))
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

    _quiet_libraries()
    _, config, task = load_saved(model_dir, host, list(layers))  # inputs are read before the model loads
    if fields:
        examples = _read_fields(task, config.task, fields)
    else:
        examples = task.load("predict", resolve_source(input_path)) if input_path else task.read_inputs(list(texts))
    if not examples:
        return []
    predictor = Predictor(model_dir, host, layers)
    return predictor.records(predictor.predict_examples(examples), examples)
