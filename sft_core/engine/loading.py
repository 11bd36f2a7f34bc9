"""Loading models and saved runs: the tokenizer and model of a task, a model folder written by
``sft run`` (or ``sft export``) rebuilt with its task for inference, a pretrained model as an
untrained task's starting point. Errors name the folder and what is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import build_config
from ..errors import SFTError
from ..models.aliases import resolve_model
from ..models.onnx_runtime import is_onnx_folder
from ..task import roles
from .checkpoint import TASK_FILE


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # weight loading/writing bars
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()


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
    if any(folder.glob("*.gguf")) and not (folder / "config.json").is_file():
        raise SFTError(f"{folder} is a GGUF export, run by llama.cpp or Ollama (see its Modelfile); sft runs the "
                       "model folder it was exported from (RUN/model)")
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


def load_pretrained(model: str, host, task_name: str, layers: list[tuple[str, dict]]):
    """(config, task, model path) for a model that was not written by sft (an alias, a folder, a hub id)."""
    spec = host.get_task(task_name)
    config = build_config(spec, [*layers, ("--model", {"model": model})])
    task = spec.factory(config)
    return config, task, (roles(task).resolve_model or resolve_model)(config.model)


def is_sft_folder(model: str) -> bool:
    return (Path(model) / TASK_FILE).is_file()


def prepare_for_inference(model: str, host, task_name: str, layers=()):
    """(task, tokenizer, model in eval mode) for a model folder written by sft, or, when ``model`` is
    not one, for ``model`` as the pretrained backbone of task ``task_name``."""
    quiet_libraries()
    if is_sft_folder(model):
        _, config, task = load_saved(model, host, list(layers))
        path = model
    else:
        config, task, path = load_pretrained(model, host, task_name, list(layers))
    tokenizer, loaded = load_model(task, path)
    loaded.eval()
    return task, tokenizer, loaded
