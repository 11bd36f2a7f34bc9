"""sft: supervised fine-tuning of pretrained transformers; one training loop, tasks as plugins.

The public surface, for users and plugin authors (importing it imports no torch):

- sft from Python, with the command line's semantics (``sft_core.api``): ``train(...)`` as
  ``sft run``, ``evaluate(model_dir, data)`` as ``sft eval``, ``Predictor(model_dir).predict(inputs)``
  (loaded once) and ``predict(model_dir, inputs)`` as ``sft predict``, ``export(model_dir, format)`` as
  ``sft export`` (ONNX or GGUF, verified), ``run_config(...)`` for the
  resolved config ``sft run --print-config`` shows, ``metric_module(task)`` for scoring with
  ``evaluate``.
- The plugin contract, version ``CONTRACT_VERSION`` (written out in ``sft_core.task``): ``hookimpl``
  marks hook implementations, ``sft_register_tasks`` receives a ``Register`` callback, a task's
  factory returns a ``Task``, task config sections are dataclasses (``DataConfig`` subclasses for
  ``data.*`` keys). Helpers for plugins: ``sft_core.kit``; the conformance kit: ``sft_core.testing``.
- Errors a user can fix are ``SFTError`` (``DataError``, ``ConfigError``): printed as one line.

The package is grouped by layer: this root (the public surface), ``commands`` (the ``sft``
commands), ``engine`` (the run, the loop, inference), ``models`` and ``host`` (the plugin manager).
"""

from . import compat
from .api import evaluate, export, metric_module, predict, run_config, train
from .config import DataConfig, RunConfig, TrainerConfig
from .errors import ConfigError, DataError, SFTError
from .host.hookspecs import hookimpl
from .task import CONTRACT_VERSION, Register, Task
from .version import __version__

compat.install_module_aliases()


def __getattr__(name: str):
    if name == "Predictor":  # the engine's, imported on first use
        from .engine import Predictor

        return Predictor
    raise AttributeError(f"module 'sft_core' has no attribute {name!r}")


__all__ = ["hookimpl", "Register", "Task", "DataConfig", "TrainerConfig", "RunConfig", "SFTError", "DataError",
           "ConfigError", "CONTRACT_VERSION", "__version__", "train", "evaluate", "predict", "Predictor", "run_config",
           "metric_module", "export"]
