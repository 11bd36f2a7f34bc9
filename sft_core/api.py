"""sft from Python, with the command line's semantics: the ``sft`` commands are thin layers over these.

    import sft_core as sft

    result = sft.train(task="classification", model="minilm", train="train.tsv", eval="dev.tsv",
                       output_dir="runs/sst2", config=["configs/sst2.yaml"], overrides={"trainer.lr": 3e-5})
    metrics = sft.evaluate("runs/sst2/model", "dev.tsv")
    predictor = sft.Predictor("runs/sst2/model")        # loads once
    predictor.predict(["a gripping film"])              # what `sft predict` prints, as dicts

Config precedence is the CLI's: the config files in order, then ``overrides`` (dotted keys, like
``KEY=VALUE`` arguments), then the named arguments (like ``--model``, ``--train``). Errors a user can
fix raise ``SFTError`` with the message the CLI prints. Importing this imports no torch; the
functions import it when they run.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .engine import sources
from .config import RunConfig, build_config, load_config_file, parse_override
from .errors import SFTError


def _host(host):
    if host is not None:
        return host
    from .host.manager import PluginHost

    return PluginHost()


Overrides = Mapping[str, Any] | Iterable[str] | None


def config_layers(config: Iterable[str] = (), overrides: Overrides = None) -> list[tuple[str, dict]]:
    """Config layers (source, {key: value}) from config files and overrides, lowest first.

    ``overrides`` is a mapping of dotted keys to values, or ``KEY=VALUE`` strings as the command
    line takes them (the value read as YAML).
    """
    if isinstance(config, str):
        config = [config]
    layers = [(f"config file {path}", load_config_file(path)) for path in config]
    if isinstance(overrides, Mapping):
        layers += [(f"override {key}={value!r}", {key: value}) for key, value in overrides.items()]
    else:
        for text in overrides or ():
            key, value = parse_override(text)
            layers.append((f"override {text!r}", {key: value}))
    return layers


def run_config(task: str | None = None, model: str | None = None, train: str | None = None, eval: str | None = None,
               output_dir: str | None = None, config: Iterable[str] = (), overrides: Overrides = None, host=None,
               source: str = "arguments") -> RunConfig:
    """The resolved config ``sft run`` would train with (``sft run --print-config`` prints it)."""
    host = _host(host)
    layers = config_layers(config, overrides)
    # the task argument wins; otherwise the last config layer that names one
    task = task or next((layer["task"] for _, layer in reversed(layers) if layer.get("task")), None)
    if not task:
        raise SFTError("no task given: use --task NAME or `task:` in a config file; known tasks: "
                       + (", ".join(sorted(host.tasks)) or "none"))
    spec = host.get_task(task)
    stripped = [(where, {k: v for k, v in layer.items() if k != "task"}) for where, layer in layers]
    data = {k: v for k, v in {"train": train, "eval": eval}.items() if v is not None}
    options = {k: v for k, v in {"model": model, "output_dir": output_dir, "data": data}.items() if v}
    return build_config(spec, [*stripped, (source, options)])


def train_config(config: RunConfig, host=None, resume: bool | str = False, overwrite: bool = False) -> dict:
    """Train with a resolved config: {"output_dir", "train": results, "eval": metrics or None, "main_process"}."""
    from pathlib import Path

    from .engine.run_folder import check_output_dir

    host = _host(host)
    check_data_files(config)
    if config.trainer.report:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise SFTError("trainer.report=true needs matplotlib: pip install 'sft-core[report]'")
    check_output_dir(Path(config.output_dir), bool(resume), overwrite)
    from .engine import train

    return {"output_dir": config.output_dir, **train(config, host, resume=resume, overwrite=overwrite)}


def check_data_files(config: RunConfig, keys: tuple[str, ...] = ("train", "eval")) -> None:
    """Fail before the slow imports of torch and transformers when a data file is missing."""
    from .config import train_files

    for key in keys:
        paths = train_files(config.data) if key == "train" else [getattr(config.data, key)]
        if key == "train" and not paths:
            raise SFTError("data.train is an empty list; give a file or a list of files")
        for path in paths:
            if path is not None and not sources.exists(path):
                raise SFTError(f"data file not found: {path} (data.{key})")



def train(task: str | None = None, model: str | None = None, train: str | None = None, eval: str | None = None,
          output_dir: str | None = None, config: Iterable[str] = (), overrides: Overrides = None,
          resume: bool | str = False, overwrite: bool = False, host=None) -> dict:
    """``sft run``: train, evaluate and save; returns {"output_dir", "train": {...}, "eval": {...}}.

    ``train``/``eval`` are data files or ``hf:NAME[:CONFIG]@SPLIT``; ``resume`` True continues from
    the latest checkpoint in the output folder, a path from that checkpoint. An output folder that
    holds an earlier run is an error unless ``resume`` or ``overwrite`` (which first removes the
    files sft wrote there, and nothing else). SIGINT or SIGTERM stop training with a checkpoint
    and raise ``sft_core.errors.TrainingInterrupted``.
    """
    resolved = run_config(task, model, train, eval, output_dir, config, overrides, host, source="arguments of train()")
    return train_config(resolved, host, resume, overwrite)


def evaluate(model_dir: str, data: str | None = None, output_dir: str | None = None, task: str | None = None,
             config: Iterable[str] = (), overrides: Overrides = None, host=None) -> dict:
    """``sft eval``: the metrics of a saved model on ``data`` (default: the run's evaluation data);
    writes eval_results.json and the predictions next to the model (in eval/) or in ``output_dir``.
    ``data`` is scored whole: the training run's data.max_eval_samples (and row selections of its
    own files) do not apply, only what ``config`` and ``overrides`` set.

    With ``task``, ``model_dir`` may be a model that was never fine-tuned (an alias, a folder, a
    hub id): its zero-shot baseline, measured the same way.
    """
    return evaluation(model_dir, data, output_dir, task, config, overrides, host)["metrics"]


def evaluation(model_dir: str, data: str | None = None, output_dir: str | None = None, task: str | None = None,
               config: Iterable[str] = (), overrides: Overrides = None, host=None) -> dict:
    """``evaluate``, returning {"metrics", "output_dir"} (where the results were written)."""
    from pathlib import Path

    from .engine import evaluate_saved
    from .engine.checkpoint import TASK_FILE

    layers = config_layers(config, overrides)
    if task is None and not (Path(model_dir) / TASK_FILE).is_file():  # a recipe names the task of an untrained model
        task = next((layer["task"] for _, layer in reversed(layers) if layer.get("task")), None)
    stripped = [(where, {k: v for k, v in layer.items() if k != "task"}) for where, layer in layers]
    return evaluate_saved(model_dir, data, output_dir, _host(host), stripped, task_name=task)


def predict(model_dir: str, inputs: list, host=None, config: Iterable[str] = (),
            overrides: Overrides = None) -> list[dict]:
    """For each input (a text, or a record of the task's named inputs), what ``sft predict`` prints;
    ``overrides`` as ``sft predict --set KEY=VALUE`` (e.g. {"trainer.eval_batch_size": 8}).
    Loads the model for this call; ``Predictor`` loads it once for many."""
    from .engine import Predictor

    return Predictor(model_dir, _host(host), config_layers(config, overrides)).predict(list(inputs))


def export(model_dir: str, format: str = "onnx", output: str | None = None, quantize: str | None = None,
           data: str | None = None, samples: int | None = None, overwrite: bool = False, host=None,
           echo=None, **options) -> dict:
    """``sft export``: ``model_dir`` as ONNX (``format="onnx"``, encoders; ``quantize="int8"``) or GGUF
    (``format="gguf"``, causal LMs for llama.cpp and Ollama; ``quantize`` f16, bf16, q8_0 or q4_0),
    verified before anything is written into ``output`` (default: beside the model, RUN/onnx or
    RUN/gguf-f16). Returns the report ``sft export`` prints, ``output`` first. ``options``: ONNX's
    ``tolerance`` and ``opset``; GGUF's ``min_agreement`` and ``llama_cpp`` (True: require
    llama.cpp's check; False: skip it). Progress lines go to ``echo`` (default: stderr)."""
    from .engine.export import export as run_export

    extra = {"echo": echo} if echo is not None else {}
    return run_export(model_dir, _host(host), format=format, output=output, quantize=quantize, data=data,
                      samples=samples, overwrite=overwrite, **options, **extra)


def metric_module(task: str, host=None) -> str:
    """Path of the ``evaluate`` module with ``task``'s metrics, shipped in the task's package as
    ``<package>_metric.py``: ``evaluate.load(sft_core.metric_module("ner"))`` scores a script's
    predictions exactly as sft does, offline."""
    import importlib.util
    from pathlib import Path

    spec = _host(host).get_task(task)
    package = spec.factory.__module__.split(".")[0]
    found = importlib.util.find_spec(package)
    folders = list(found.submodule_search_locations or []) if found else []
    path = next((Path(f) / f"{package}_metric.py" for f in folders if (Path(f) / f"{package}_metric.py").is_file()), None)
    if path is None:
        raise SFTError(f"task {task!r} ships no evaluate module ({package}_metric.py in its package {package!r})")
    return str(path)
