"""Checkpoints and model folders, written atomically: into a temporary folder, then renamed.

A checkpoint is a model folder (``model/``, usable by ``sft eval``) plus ``training_state.pt``
(optimizer, scheduler, RNG) and a readable ``trainer_state.json``, so an interrupted run resumes
exactly where it stopped and a crash mid-write leaves no half checkpoint. With LoRA (``peft:``) the
model folder of a checkpoint holds the adapters and the head only, and the optimizer state covers
just those (nothing else trains); the base model is named in ``sft_task.json``.

``training_state.pt`` holds tensors and plain values only (RNG states included), and is read with
``weights_only=True``: resuming from a checkpoint never unpickles, so a tampered file cannot run
code. Every file of a folder is flushed to disk before the rename that publishes it, so a power
loss after the rename cannot leave a checkpoint of empty files.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SFTError
from .files import replace_dir, write_json

TASK_FILE = "sft_task.json"
TRAINING_STATE = "training_state.pt"


@dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 0
    steps_in_epoch: int = 0  # optimizer steps already taken in ``epoch``
    samples_seen: int = 0
    tokens_seen: int = 0  # the tokens of the features trained on (padding not counted)
    train_seconds: float = 0.0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    # set by a hook (``state.stop_reason = "why"``, e.g. ``sft tune`` pruning a trial) to end training
    # after this step or evaluation, as early stopping does; not saved in checkpoints
    stop_reason: str | None = None

    def saved(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "stop_reason"}

    def epochs_done(self, steps_per_epoch: int) -> float:
        """Epochs completed at this step, as a fraction (the Hugging Face Trainer's convention): 0.2
        after the first of five steps per epoch, 1.0 at the end of the first epoch. Every row of
        ``metrics.jsonl`` (training and evaluation) gives this as its ``epoch``."""
        return round(self.epoch + self.steps_in_epoch / max(steps_per_epoch, 1), 4)


def provider(task) -> dict:
    """Which installed distribution provides ``task``'s code (its name and version), so a model whose
    plugin is missing can say what to install."""
    from importlib import metadata

    package = type(task).__module__.split(".")[0]
    names = metadata.packages_distributions().get(package) or []
    if not names:
        return {"module": type(task).__module__, "distribution": None, "version": None}
    try:
        version = metadata.version(names[0])
    except metadata.PackageNotFoundError:
        version = None
    return {"module": type(task).__module__, "distribution": names[0], "version": version}


def save_model_folder(path: Path, model, tokenizer, task, config, merge: bool = False, merge_batch=None,
                      state_dict: dict | None = None) -> None:
    """Model weights, tokenizer, and what ``sft eval``/``sft predict`` need to rebuild the task.

    A LoRA model is saved as its adapters (and head) only, or with ``merge`` as a complete model,
    the adapters merged into the base weights and checked on ``merge_batch`` (model inputs).
    ``state_dict``: the weights to write instead of the model's own (a sharded model's, gathered).
    """
    from ..models import adapters

    path.mkdir(parents=True, exist_ok=True)
    info = {"task": config.task, "config": config.to_dict(), "state": task.state_dict(), "provider": provider(task)}
    if adapters.is_peft_model(model):
        if merge:
            model = adapters.merged_copy(model, merge_batch)
        else:
            base = next(iter(model.peft_config.values())).base_model_name_or_path
            info["adapter"] = adapters.adapter_info(config, base)
    model.save_pretrained(path, state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    write_json(path / TASK_FILE, info)


def write_model_folder(final: Path, model, tokenizer, task, config, merge: bool = False, merge_batch=None,
                       state_dict: dict | None = None) -> None:
    tmp = final.with_name(f".tmp-{final.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        save_model_folder(tmp, model, tokenizer, task, config, merge=merge, merge_batch=merge_batch,
                          state_dict=state_dict)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed save leaves nothing half-written behind
        raise
    replace_dir(tmp, final)


def rng_state() -> dict:
    """This process's random states as tensors and plain values (what ``weights_only`` loads)."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "state": list(words), "gauss_next": gauss},
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict | list[dict], rank: int = 0) -> None:
    """Restore the RNG state saved for process ``rank`` (a single saved state serves every process)."""
    if isinstance(state, list):
        state = state[rank] if rank < len(state) else state[0]
    python, numpy = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, state: TrainState, model, tokenizer, task, config, optimizer_state: dict, scheduler,
                    rng: list[dict] | None = None, state_dict: dict | None = None) -> Path:
    """Write checkpoint ``step-N`` of ``state``; ``rng`` holds every process's RNG state (process
    order), since each process draws its own dropout masks; None: this process's alone.
    ``state_dict``: the model's weights when they are not its own (gathered from a sharded model)."""
    final = folder / f"step-{state.global_step:08d}"
    tmp = folder / f".tmp-step-{state.global_step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model_folder(tmp / "model", model, tokenizer, task, config, state_dict=state_dict)
    torch.save(
        {"optimizer": optimizer_state, "scheduler": plain(scheduler.state_dict()),
         "rng": rng if rng is not None else [rng_state()], "state": state.saved()},
        tmp / TRAINING_STATE,
    )
    write_json(tmp / "trainer_state.json", state.saved())
    replace_dir(tmp, final)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))


def rotate_checkpoints(folder: Path, keep: int) -> None:
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def plain(value):
    """``value`` (a scheduler's state) as plain values: tuples as lists, one-number tensors as numbers."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def load_training_state(checkpoint: Path) -> dict:
    """The optimizer, scheduler and RNG state of ``checkpoint``, read without unpickling anything."""
    import pickle

    path = checkpoint / TRAINING_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as exc:
        problem = "it holds objects other than tensors and plain values" if isinstance(exc, pickle.UnpicklingError) \
            else "it is not a readable training state"
        raise SFTError(f"cannot resume from {path}: {problem}, and sft does not unpickle checkpoints "
                       "(was it written by this version of sft?)") from None
