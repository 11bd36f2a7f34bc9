"""sft: supervised fine-tuning of pretrained transformers; one training loop, tasks as plugins.

The public plugin API, contract version ``CONTRACT_VERSION`` (CONTRIBUTING.md, "The plugin
contract", documents it): ``hookimpl`` marks hook implementations, ``sft_register_tasks`` receives
a ``Register`` callback, a task's factory returns a ``Task``, task config sections are dataclasses
(``DataConfig`` subclasses for ``data.*`` keys) and the factory receives the resolved ``RunConfig``.
Errors a user can fix are ``SFTError``s (``DataError``, ``ConfigError``): printed as one line.
The conformance kit for plugin test suites is ``sft_core.testing``. Importing this imports no torch.

sft from Python (``sft_core.api``; the CLI's semantics): ``train(...)`` as ``sft run``,
``evaluate(model_dir, data)`` as ``sft eval``, ``Predictor(model_dir).predict(inputs)`` (loaded
once) and ``predict(model_dir, inputs)`` as ``sft predict``, ``run_config(...)`` for the resolved
config ``sft run --print-config`` shows.
"""

import pluggy

from .config import DataConfig, RunConfig, TrainerConfig
from .errors import ConfigError, DataError, SFTError
from .task import CONTRACT_VERSION, Register, Task

__version__ = "0.1.0"

#: Marks a function of a plugin module as the implementation of an ``sft_*`` hook.
hookimpl = pluggy.HookimplMarker("sft")

from .api import evaluate, metric_module, predict, run_config, train  # noqa: E402  (after __version__: they import the plugin host)
from .engine.predictor import Predictor  # noqa: E402

__all__ = ["hookimpl", "Register", "Task", "DataConfig", "TrainerConfig", "RunConfig", "SFTError", "DataError",
           "ConfigError", "CONTRACT_VERSION", "__version__", "train", "evaluate", "predict", "Predictor", "run_config",
           "metric_module"]
