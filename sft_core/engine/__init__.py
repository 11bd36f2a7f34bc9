"""The engine: one run from config to saved model, and inference on what it saved.

It owns the run (``run``), the training loop (``loop``) and its saving policy (``saving``),
evaluation, batching, checkpoints, interrupts, logging, run folders and atomic files, data sources,
model loading and precision, and the ``Predictor``. It builds on ``sft_core.models`` and the plugin
host, never on a command: commands build on the engine's entry points, named here and imported on
first use (importing this package imports no torch).
"""

from __future__ import annotations

import importlib

#: The engine's entry points: name -> the module that defines it.
ENTRY_POINTS = {
    "train": "run",
    "evaluate_saved": "inference",
    "predict_saved": "inference",
    "load_saved": "loading",
    "load_model": "loading",
    "load_pretrained": "loading",
    "prepare_for_inference": "loading",
    "quiet_libraries": "loading",
    "make_accelerator": "precision",
    "Predictor": "predictor",
    "GenerationSettings": "predictor",
}

__all__ = list(ENTRY_POINTS)


def __getattr__(name: str):
    if name in ENTRY_POINTS:
        return getattr(importlib.import_module(f".{ENTRY_POINTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
