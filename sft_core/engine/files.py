"""Every file a run writes is written whole or not at all: into a temporary name beside it, flushed to
disk, then renamed into place. An interrupted or crashed write leaves the previous version (or
nothing), never half a file; a power loss after the rename cannot leave an empty one.

Folders (model folders, checkpoints) are built under a temporary name and renamed the same way
(``replace_dir``). ``metrics.jsonl`` is the one exception: an append-only log, flushed line by line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (names created, renamed) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders: their entries are as durable as they get
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and every folder in it to disk (one pass)."""
    for root, _, names in os.walk(folder):
        for name in names:
            fsync_file(Path(root) / name)
        fsync_dir(Path(root))


def publish(tmp: Path, path: Path) -> None:
    """Rename the written file ``tmp`` to ``path``, both flushed to disk."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    """Write ``path`` (UTF-8) whole or not at all."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        tmp.write_text(text, encoding="utf-8")
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON, written whole or not at all."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_predictions(task, folder: Path, predictions: list, examples: list[dict]) -> None:
    """``task.write_predictions`` into ``folder``, each file it writes (its predictions file and any
    extras) published whole: the task writes into a temporary folder, then every file is renamed."""
    folder = Path(folder)
    tmp = folder / ".tmp-predictions"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        task.write_predictions(tmp / task.predictions_file, predictions, examples)
        for written in sorted(p for p in tmp.iterdir() if p.is_file()):
            fsync_file(written)
            os.replace(written, folder / written.name)
        fsync_dir(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the folder ``tmp`` to ``final``, flushed to disk first; an existing ``final`` is removed
    only once the new one is complete."""
    fsync_tree(tmp)
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


@contextlib.contextmanager
def staged_dir(final: Path):
    """A new folder beside ``final`` to write into; it replaces ``final`` (``replace_dir``) when the block
    ends normally and is removed when it raises: ``final`` is the complete new folder or what it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield work
        replace_dir(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
