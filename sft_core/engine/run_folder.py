"""An output folder that already holds a run: ``sft run`` continues it (``--resume``), replaces it
(``--overwrite``) or refuses, never silently deletes its checkpoints or truncates its log.

Imports no torch: ``sft run`` checks the folder before the slow imports.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import SFTError

#: Files and folders of a run that sft writes (``sft run``; ``sft eval`` next to the model: eval/ and
#: eval-NAME/ per data file; for an untrained model: zero-shot/, zero-shot-NAME/). ``--overwrite``
#: removes these and the prediction files only.
RUN_FILES = ("config.yaml", "metrics.jsonl", "run_info.json", "train_results.json", "eval_results.json", "report.html")
RUN_FOLDERS = ("checkpoints", "model", "eval", "zero-shot", "tensorboard")
EVALUATION_PREFIXES = ("eval-", "zero-shot-")
#: What shows that a folder holds a run
MARKERS = ("config.yaml", "metrics.jsonl", "eval_results.json", "model")


def _last_logged_step(folder: Path) -> int | None:
    try:
        lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    steps = []
    for line in lines:
        try:
            steps.append(json.loads(line).get("step"))
        except (ValueError, AttributeError):  # a line cut short by a crash
            continue
    steps = [s for s in steps if isinstance(s, int)]
    return max(steps) if steps else None


def _checkpoint_steps(folder: Path) -> list[int]:
    found = folder / "checkpoints"
    if not found.is_dir():
        return []
    names = [p.name for p in found.iterdir() if p.is_dir()]
    return sorted(int(n[5:]) for n in names if n.startswith("step-") and n[5:].isdigit())


def earlier_run(folder: Path) -> str | None:
    """How the run in ``folder`` ended (``finished``, ``interrupted at step N``), None when it holds none."""
    checkpoints = folder / "checkpoints"
    has_checkpoints = checkpoints.is_dir() and any(checkpoints.iterdir())
    if not has_checkpoints and not any((folder / name).exists() for name in MARKERS):
        return None
    if (folder / "train_results.json").is_file():
        return "finished"
    steps = _checkpoint_steps(folder)
    if steps:
        return f"interrupted at step {steps[-1]}"
    logged = _last_logged_step(folder)
    return "interrupted before its first checkpoint" if logged is None else \
        f"interrupted at step {logged}, before its first checkpoint"


def check_output_dir(folder: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a folder holding an earlier run unless told to continue or replace it."""
    if resume and overwrite:
        raise SFTError("give either --resume (continue the run) or --overwrite (replace it), not both")
    if resume or overwrite:
        return
    found = earlier_run(folder)
    if found is None:
        return
    if _checkpoint_steps(folder) or found == "finished":
        raise SFTError(f"{folder} already holds a run ({found}); give --resume to continue it or --overwrite "
                       "to replace it")
    raise SFTError(f"{folder} already holds a run ({found}); give --overwrite to replace it, or another --output-dir")


def recorded_prediction_files(folder: Path) -> list[str]:
    """The prediction files the run in ``folder`` says it wrote (``run_info.json``)."""
    try:
        info = json.loads((folder / "run_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = info.get("prediction_files") if isinstance(info, dict) else None
    return [n for n in names or [] if isinstance(n, str) and n and Path(n).name == n]


def remove_run(folder: Path, prediction_files=()) -> None:
    """Delete what sft wrote into ``folder`` (its run files and folders, the prediction files of this
    task and of the earlier run, leftovers of interrupted writes); any other file stays."""
    names = [*RUN_FILES, *prediction_files, *recorded_prediction_files(folder)]
    for name in names:
        for path in (folder / name, folder / f".tmp-{name}"):
            if path.is_file() or path.is_symlink():
                path.unlink()
    evaluations = [p.name for p in folder.glob("*-*") if p.is_dir() and p.name.startswith(EVALUATION_PREFIXES)
                   and (p / "evaluated.json").is_file()]  # sft eval's folders per data file, by what it wrote
    for name in (*RUN_FOLDERS, *evaluations, ".tmp-model", ".old-model"):
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
