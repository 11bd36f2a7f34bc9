"""LoRA adapters (through ``peft``) on any task's model: the ``peft:`` config section.

The engine wraps whatever ``task.build_model`` returned, so every task, built-in or third-party,
gets adapters without code of its own. What is adapted and what is trained fully:

- The *backbone* is the model's base model (``model.base_model_prefix``: ``bert``, ``model``,
  ``transformer``); everything else with parameters is the task's *head* (``classifier``,
  ``score``, ``qa_outputs``), trained fully through peft's ``modules_to_save``. A head that shares
  its weights with the backbone (a language model's tied output layer) is left to the adapters.
- Adapters go on the backbone's linear layers of the names ``peft.target_modules`` gives, by
  default those of :data:`FAMILY_TARGETS` for the model family (attention and feed-forward
  projections), else every linear layer of the backbone.

A run's checkpoints hold the adapters and the head only (with their optimizer state); the run's
``model/`` folder is by default a complete model, the adapters merged into the base weights in
fp32 and checked against the adapter model before it is written (``merged_copy``).
"""

from __future__ import annotations

import copy
import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import ConfigError, SFTError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MERGE_TOLERANCE = 1e-4  # largest difference of merged and adapter outputs a merged save accepts, relative to
# the largest output magnitude (at least 1)

_ATTENTION_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_BERT = ["query", "key", "value", "dense"]
#: model_type -> leaf names of the backbone's linear layers adapted by default
FAMILY_TARGETS = {
    **{kind: _ATTENTION_MLP for kind in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2",
                                         "smollm3", "olmo", "olmo2", "granite", "cohere", "starcoder2")},
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    **{kind: _BERT for kind in ("bert", "roberta", "xlm-roberta", "electra", "camembert", "deberta-v2")},
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "marian": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "t5": ["q", "k", "v", "o", "wi", "wo", "wi_0", "wi_1"],
}


def is_peft_model(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _linear_types() -> tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    return torch.nn.Linear, Conv1D


def backbone_name(model) -> str | None:
    """The attribute of ``model`` holding its backbone, or None when ``model`` is a bare backbone."""
    prefix = getattr(model, "base_model_prefix", None)
    if prefix and isinstance(getattr(model, prefix, None), torch.nn.Module):
        return prefix
    return None


def head_modules(model) -> list[str]:
    """The task head: top-level parts of ``model`` outside its backbone that hold parameters of their
    own (not shared with the backbone, as a tied output layer's are)."""
    prefix = backbone_name(model)
    if prefix is None:
        return []
    backbone = {id(p) for p in getattr(model, prefix).parameters()}
    heads = []
    for name, module in model.named_children():
        if name == prefix:
            continue
        params = list(module.parameters())
        if params and not any(id(p) in backbone for p in params):
            heads.append(name)
    return heads


def target_modules(model, leaf_names: list[str] | None) -> list[str]:
    """Full names of the backbone's linear layers to adapt: those with a leaf name in ``leaf_names``
    (None: the family default, else all of them)."""
    prefix = backbone_name(model)
    root = getattr(model, prefix) if prefix else model
    kind = getattr(getattr(model, "config", None), "model_type", None)
    wanted = leaf_names if leaf_names is not None else FAMILY_TARGETS.get(kind)
    linear = _linear_types()
    found = []
    for name, module in root.named_modules():
        if name and isinstance(module, linear) and (wanted is None or name.rsplit(".", 1)[-1] in wanted):
            found.append(f"{prefix}.{name}" if prefix else name)
    if not found:
        if leaf_names is not None:
            leaves = sorted({n.rsplit(".", 1)[-1] for n, m in root.named_modules() if n and isinstance(m, linear)})
            raise ConfigError(f"peft.target_modules={leaf_names}: no linear layer of the backbone has such a name; "
                              f"its linear layers are named {', '.join(leaves) or 'nothing'}")
        raise ConfigError(f"peft: the model ({type(model).__name__}) has no linear layers to put adapters on")
    return found


def _check_method(peft_config) -> None:
    if peft_config.method != "qlora":
        return
    import importlib.util

    if not torch.cuda.is_available():
        raise ConfigError("peft.method=qlora keeps the base model in 4 bits with bitsandbytes, which needs a CUDA "
                          "GPU; on this machine use peft.method=lora")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("peft.method=qlora needs bitsandbytes: pip install bitsandbytes")


def quantize_4bit(model, names: list[str]) -> None:
    """Replace the backbone's linear layers ``names`` by bitsandbytes NF4 layers on the GPU (QLoRA)."""
    import bitsandbytes as bnb

    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, leaf)
        if not isinstance(old, torch.nn.Linear):
            continue  # GPT-2's Conv1D layers stay as they are
        new = bnb.nn.Linear4bit(old.in_features, old.out_features, bias=old.bias is not None,
                                compute_dtype=torch.bfloat16, quant_type="nf4")
        new.weight = bnb.nn.Params4bit(old.weight.data.cpu(), requires_grad=False, quant_type="nf4")
        if old.bias is not None:
            new.bias = torch.nn.Parameter(old.bias.data, requires_grad=False)
        setattr(parent, leaf, new.to("cuda"))  # moving to the GPU quantizes


def apply(model, peft_config, model_name: str):
    """``model`` wrapped with new LoRA adapters as ``peft_config`` says; the base weights frozen."""
    from peft import LoraConfig, get_peft_model

    _check_method(peft_config)
    targets = target_modules(model, peft_config.target_modules)
    heads = peft_config.modules_to_save if peft_config.modules_to_save is not None else head_modules(model)
    unknown = [h for h in heads if not any(n == h or n.endswith(f".{h}") for n, _ in model.named_modules())]
    if unknown:
        raise ConfigError(f"peft.modules_to_save: the model has no module named {', '.join(unknown)}; "
                          f"its top-level modules are {', '.join(n for n, _ in model.named_children())}")
    if peft_config.method == "qlora":
        from peft import prepare_model_for_kbit_training

        quantize_4bit(model, targets)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=peft_config.r, lora_alpha=peft_config.alpha, lora_dropout=peft_config.dropout,
                      target_modules=targets, modules_to_save=heads or None, use_dora=peft_config.dora,
                      bias="none")
    try:
        with _quiet():
            return get_peft_model(model, lora)
    except (ValueError, TypeError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"peft could not put adapters on {model_name}: {first}") from None


def load(model, folder: str | Path, trainable: bool):
    """``model`` (the base, as ``task.build_model`` built it) with the adapters saved in ``folder``."""
    from peft import PeftModel

    with _quiet():
        return PeftModel.from_pretrained(model, str(folder), is_trainable=trainable)


@contextmanager
def _quiet():
    """peft asks transformers for an attribute transformers 5 deprecates; the warning is not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def is_adapter_folder(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def _outputs(model, batch: dict) -> torch.Tensor:
    """The first floating-point output of ``model`` on ``batch`` (logits, or start logits), in fp32."""
    out = model(**batch)
    values = out.values() if hasattr(out, "values") else out
    for value in values:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() > 0:
            return value.float()
    raise SFTError("the merged-save check found no floating-point output of the model to compare")


def merged_copy(model, batch: dict | None):
    """A plain transformers model: a copy of the PEFT ``model`` with its adapters merged into the base
    weights, in fp32 on the CPU. With ``batch`` (model inputs), the merged model's outputs must equal
    the adapter model's within ``MERGE_TOLERANCE``, else the save fails loudly."""
    copied = copy.deepcopy(model).to("cpu", torch.float32)
    for module in copied.modules():
        # accelerate's mixed-precision wrapper of forward closes over the original model's forward
        if "_original_forward" in module.__dict__:
            module.__dict__.pop("forward", None)
            module.__dict__.pop("_original_forward")
    copied.eval()
    reference = None
    if batch is not None:
        batch = {k: v.to("cpu") if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.no_grad():
            reference = _outputs(copied, batch)
    merged = copied.merge_and_unload()
    if reference is not None:
        with torch.no_grad():
            # relative to the outputs' scale: fp32 rounding grows with the magnitude (a language
            # model's logits reach 30 and more, a classifier's stay near 1)
            scale = max(1.0, reference.abs().max().item())
            difference = (_outputs(merged, batch) - reference).abs().max().item() / scale
        if not difference <= MERGE_TOLERANCE:
            raise SFTError(f"merging the adapters changed the model's outputs by up to {difference:.3g} of their scale "
                           f"(more than {MERGE_TOLERANCE:g}); not saving a wrong merged model. Use peft.save=adapter "
                           "to keep the adapters separate")
    return merged


def adapter_info(config, base_path: str) -> dict:
    """What ``sft_task.json`` records of an adapter-only folder: the base model to load it onto."""
    return {"base_model": config.model, "base_model_path": base_path, "method": config.peft.method}


def base_for(folder: Path, info: dict) -> str:
    """The base model of the adapter-only folder ``folder``: its recorded path if it still exists,
    else its name resolved again."""
    from .aliases import resolve_model

    adapter = info.get("adapter") or {}
    path = adapter.get("base_model_path")
    if path and Path(path).is_dir():
        return path
    name = adapter.get("base_model")
    if not name:
        saved = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        name = saved.get("base_model_name_or_path")
    if not name:
        raise SFTError(f"{folder} holds adapters only, and names no base model to load them onto")
    return resolve_model(name)


def load_weights(model, folder: str | Path) -> None:
    """Load the adapter (and head) weights saved in ``folder`` into the PEFT ``model`` in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(Path(folder) / ADAPTER_WEIGHTS)))


def model_inputs(model, batch: dict) -> dict:
    """The entries of a task's ``batch`` that the model's ``forward`` takes (labels left out). A batch
    whose rows hold several sequences each (a preference pair's two answers: token inputs of shape
    (rows, sequences, length)) is given as one sequence a row."""
    import inspect

    inner = model.get_base_model() if is_peft_model(model) else model
    parameters = inspect.signature(inner.forward).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    skip = {"labels", "start_positions", "end_positions"}
    inputs = {k: v for k, v in batch.items() if k not in skip and (takes_any or k in parameters)}
    ids = inputs.get("input_ids")
    if isinstance(ids, torch.Tensor) and ids.dim() == 3:
        inputs = {k: v.reshape(-1, v.shape[-1]) if isinstance(v, torch.Tensor) and v.shape[:2] == ids.shape[:2] else v
                  for k, v in inputs.items()}
    return inputs
