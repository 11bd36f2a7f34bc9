"""One ``sft run``: from a resolved config to a run folder with its model, metrics and predictions.

``train`` reads top to bottom: check the folder and the checkpoint to resume from, read the data and
set the task up, load the model (with adapters), write what the run is, tokenize, train (``loop``),
write the results, and tell the plugins the run folder is complete (``sft_run_end``). Imports torch
and transformers; keep it out of the import path of ``sft --help``.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig, train_files
from ..errors import SFTError
from ..models.aliases import resolve_model
from ..task import feature_report, prediction_files, roles
from . import files
from .checkpoint import TASK_FILE
from .loading import load_model, quiet_libraries
from .precision import make_accelerator
from .sources import resolve as resolve_source


def train(config: RunConfig, host, resume: bool | str = False, overwrite: bool = False) -> dict:
    """``sft run``: train, evaluate, save; returns {"train": ..., "eval": ..., "main_process": ...}.

    An output folder holding an earlier run is continued (``resume``), replaced (``overwrite``:
    the files sft wrote there are removed first) or refused with an error. With
    data.validation_fraction, that part of the training examples is evaluated and the rest trains.
    """
    from accelerate.utils import set_seed

    from .batching import build_features
    from .loop import Run, fit
    from .memory import peak_memory, release_freed_memory
    from .run_folder import check_output_dir

    quiet_libraries()
    if config.trainer.release_memory and not release_freed_memory():
        print("trainer.release_memory: not available here (it sets glibc's malloc on Linux); ignored", file=sys.stderr)
    output_dir = Path(config.output_dir)
    check_output_dir(output_dir, bool(resume), overwrite)
    resume_from, resume_state = _checkpoint_to_resume(output_dir, resume)
    accelerator = make_accelerator(config)
    main = accelerator.is_main_process
    task = host.get_task(config.task).factory(config)
    data = read_data(task, config, resume_from)
    set_seed(config.trainer.seed)
    tokenizer, model = load_model(task, data.model_path, trainable=True,
                                  gradient_checkpointing=config.trainer.gradient_checkpointing)
    model, counts = _with_adapters(model, config, main)
    if main:
        _start_run_folder(output_dir, config, task, accelerator, resume_from, counts, data, overwrite)
    accelerator.wait_for_everyone()

    with accelerator.main_process_first():
        train_features = build_features(task, config, tokenizer, data.train, "train")
        eval_features = build_features(task, config, tokenizer, data.eval, "eval") if data.eval else None
    if main:
        print(describe_budget(config, len(data.train), train_features, accelerator.num_processes), file=sys.stderr)
    report = feature_report(task)  # e.g. truncation counts, packing, a mixture's composition
    if main and report:
        _add_to_run_info(output_dir, data=report)

    run = Run(config=config, task=task, hooks=host.hook, accelerator=accelerator, model=model,
              tokenizer=tokenizer, train_features=train_features, eval_features=eval_features,
              eval_examples=data.eval or None, output_dir=output_dir, resume_from=resume_from,
              resume_state=resume_state)
    result = fit(run)
    if main:
        speed = {k: result["train"][k] for k in ("train_samples_per_second", "train_tokens_per_second")}
        _add_to_run_info(output_dir, memory=peak_memory(accelerator.device), speed=speed)
        _write_results(output_dir, task, result)
        host.hook.sft_run_end(config=config, output_dir=output_dir, results=result)
    accelerator.wait_for_everyone()
    result["main_process"] = main
    return result


def _checkpoint_to_resume(output_dir: Path, resume: bool | str) -> tuple[Path | None, dict | None]:
    """(the checkpoint folder, its training state) for ``--resume``/``--resume-from``; read before the
    slow work, so that a bad file fails at once."""
    from .checkpoint import load_training_state
    from .loop import latest_checkpoint

    if not resume:
        return None, None
    resume_from = Path(resume) if isinstance(resume, str) else latest_checkpoint(output_dir)
    if resume_from is None or not (resume_from / "training_state.pt").is_file():
        raise SFTError(f"nothing to resume: no checkpoint in {output_dir / 'checkpoints'}"
                       if resume_from is None else f"not a checkpoint folder: {resume_from}")
    return resume_from, load_training_state(resume_from)


@dataclass
class RunData:
    """The examples a run trains and evaluates on, and the model it starts from."""

    train: list
    eval: list | None
    held_out: bool  # eval is a held-out part of data.train (data.validation_fraction)
    model_path: str


def read_data(task, config: RunConfig, resume_from: Path | None) -> RunData:
    """Read the training examples, set the task up on them (or restore it from the checkpoint), then
    read the evaluation examples, which the task can now check against what training defined (a
    label never seen in training is an error naming its file and line)."""
    train = _limit(load_training_examples(task, config), config.data.max_train_samples)
    if not train:
        raise SFTError(f"no training examples in {config.data.train or 'the built-in sample'}")
    held_out = None
    if config.data.validation_fraction is not None:  # checked with the config: between 0 and 1, no data.eval
        train, held_out = split_holdout(train, config.data.validation_fraction, config.data.validation_seed)
    if resume_from is not None:
        saved = json.loads((resume_from / "model" / TASK_FILE).read_text(encoding="utf-8"))
        task.load_state_dict(saved["state"])
        model_path = str(resume_from / "model")
    else:
        task.setup(train + (held_out or []))  # a label seen only in the held-out part is still a label
        model_path = (roles(task).resolve_model or resolve_model)(config.model)
    evaluation = None
    if held_out is not None:
        evaluation = _limit(held_out, config.data.max_eval_samples)
    elif config.data.eval is not None or config.data.train is None:
        evaluation = _limit(task.load("eval", resolve_source(config.data.eval)), config.data.max_eval_samples)
    return RunData(train, evaluation, held_out is not None, model_path)


def load_training_examples(task, config: RunConfig) -> list:
    """The examples of data.train: of each of its files in turn when it is a list."""
    paths = train_files(config.data)
    if not paths:
        raise SFTError("data.train is an empty list; give a file or a list of files")
    examples: list = []
    for path in paths:
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


def _with_adapters(model, config: RunConfig, main: bool):
    """The model with adapters applied when ``peft:`` asks (unless it has them from a checkpoint), and
    its parameter counts, printed by the main process."""
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
    return model, counts


#: The settings the budget line names, with where each value came from.
BUDGET_KEYS = ("trainer.lr", "trainer.epochs", "trainer.max_steps", "trainer.batch_size", "trainer.grad_accum",
               "peft.method")


def describe_budget(config: RunConfig, n_examples: int, features, world: int) -> str:
    """What training will do, before it starts: examples, tokens, epochs and optimizer steps, the
    settings that decide them with where each value came from, and a warning when the steps are
    too few to move a pretrained model."""
    from ..config import SMALL_DATA_STEPS
    from .batching import feature_lengths
    from .loop import Schedule

    cfg = config.trainer
    plan = Schedule.of(cfg, len(features), world)
    tokens = sum(feature_lengths(features))
    sequences = f" in {len(features):,} sequences" if len(features) != n_examples else ""
    epochs = plan.total_steps / max(plan.steps_per_epoch, 1)
    lines = [f"training: {n_examples:,} examples{sequences} ({tokens:,} tokens); {epochs:.3g} epochs of "
             f"{plan.steps_per_epoch:,} steps = {plan.total_steps:,} optimizer steps of "
             f"{cfg.batch_size * cfg.grad_accum * world:,}"]
    if plan.raised_from is not None:
        every = f"; evaluated and saved every {plan.epochs_per_eval} epochs" if plan.epochs_per_eval > 1 else ""
        lines.append(f"small training set: trainer.epochs {cfg.epochs:g} gives {plan.raised_from} steps, raised to "
                     f"trainer.min_steps {cfg.min_steps} ({config.origin_label('trainer.min_steps')}){every}; set "
                     f"trainer.epochs or trainer.max_steps to train exactly that")
    skip = {"trainer.max_steps": cfg.max_steps is None, "trainer.epochs": cfg.max_steps is not None,
            "trainer.grad_accum": cfg.grad_accum == 1}
    settings = []
    for key in BUDGET_KEYS:
        if not skip.get(key):
            section, name = key.split(".")
            value = getattr(getattr(config, section), name)
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            settings.append(f"{key} {shown} ({config.origin_label(key)})")
    lines.append("settings: " + "; ".join(settings))
    if plan.total_steps < SMALL_DATA_STEPS and plan.raised_from is None:
        lines.append(f"warning: {plan.total_steps} optimizer steps are few to move a pretrained model (with "
                     f"trainer.epochs left at its default, sft trains at least {SMALL_DATA_STEPS}); for more, "
                     f"raise trainer.epochs or trainer.max_steps, or lower trainer.batch_size")
    return "\n".join(lines)


def _start_run_folder(output_dir: Path, config: RunConfig, task, accelerator, resume_from, counts: dict,
                      data: RunData, overwrite: bool) -> None:
    """What the run is, written before it trains: ``config.yaml`` (resolved) and ``run_info.json``."""
    from .run_folder import remove_run

    if overwrite:
        remove_run(output_dir, prediction_files(task))
    output_dir.mkdir(parents=True, exist_ok=True)
    files.write_text(output_dir / "config.yaml", config.to_yaml())
    info = {"versions": _versions(accelerator), "seed": config.trainer.seed,
            "resumed_from": str(resume_from) if resume_from else None, "parameters": counts,
            "prediction_files": list(prediction_files(task))}
    if data.held_out:
        info["validation"] = {"fraction": config.data.validation_fraction, "seed": config.data.validation_seed,
                              "train_examples": len(data.train), "validation_examples": len(data.eval or [])}
    files.write_json(output_dir / "run_info.json", info)


def _add_to_run_info(output_dir: Path, **sections) -> None:
    """Add ``sections`` to the ``run_info.json`` written when the run started."""
    info = json.loads((output_dir / "run_info.json").read_text(encoding="utf-8"))
    files.write_json(output_dir / "run_info.json", {**info, **sections})


def _versions(accelerator) -> dict:
    import accelerate
    import peft
    import torch
    import transformers

    from ..version import __version__

    return {"sft": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__, "peft": peft.__version__,
            "device": str(accelerator.device), "processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision}


def _write_results(output_dir: Path, task, result: dict) -> None:
    """``train_results.json``, and the evaluation's ``eval_results.json`` with its predictions beside it."""
    files.write_json(output_dir / "train_results.json", result["train"])
    if result["eval"] is None:
        return
    files.write_json(output_dir / "eval_results.json", result["eval"])
    for name in prediction_files(task):
        best = output_dir / "checkpoints" / "best" / name
        if best.is_file():
            tmp = output_dir / f".tmp-{name}"
            shutil.copyfile(best, tmp)
            files.publish(tmp, output_dir / name)
