"""Sharded data-parallel training (FSDP2, ``torch.distributed.fsdp.fully_shard``) for models that do
not fit one device: each process keeps a slice of every weight, gradient and optimizer state.

Switched on by ``trainer.fsdp=true``, or by an ``accelerate launch`` config with FSDP. sft shards
the model itself, with torch's per-parameter FSDP: each transformer block (the model's
``_no_split_modules``) is one unit, the rest of the model the root unit. accelerate still sets up
the processes (gloo on the CPU, NCCL on GPUs), so the same run works under ``torchrun`` and
``accelerate launch``, on the CPU as on GPUs; accelerate's own FSDP mode is switched off (on the
CPU it silently falls back to DDP, and it would wrap the model a second time).

What changes for the loop: the optimizer is built after sharding; saving gathers the full weights
and optimizer state onto the main process (a collective: every process calls it); evaluation runs
the same number of forward passes on every process, since each forward gathers weights from all.
"""

from __future__ import annotations

import os

from ..errors import ConfigError


_LAUNCHED = "SFT_FSDP_LAUNCH"  # set when an accelerate launch config asked for FSDP


def take_over_fsdp_launch() -> None:
    """Before the Accelerator is made: an ``accelerate launch`` config with FSDP becomes sft's own
    sharding. accelerate's FSDP mode is switched off for this process (its wrapping and its
    loading of weights on the main process only), so a sharded run takes the same path on GPUs as
    on the CPU, where the tests run it."""
    if os.environ.pop("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        os.environ[_LAUNCHED] = "1"


def wanted(config, accelerator) -> bool:
    """Whether this run shards its model: ``trainer.fsdp``, or accelerate was launched with FSDP."""
    if not (config.trainer.fsdp or os.environ.get(_LAUNCHED) == "1"):
        return False
    if config.peft.enabled:
        raise ConfigError("trainer.fsdp with peft.method=lora is not supported: LoRA's trainable state is small, "
                          "train it with plain data parallelism (leave trainer.fsdp off)")
    if accelerator.mixed_precision == "fp16":
        raise ConfigError("trainer.fsdp with fp16 is not supported: use trainer.mixed_precision=bf16")
    return accelerator.num_processes > 1


def _blocks(model) -> list:
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def shard(model, accelerator):
    """Shard ``model`` over the processes in place (each transformer block, then the root); returns it."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model.to(accelerator.device)
    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    for block in _blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state_dict(model) -> dict:
    """The complete weights on the main process (empty elsewhere); every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def full_optimizer_state(model, optimizer) -> dict:
    """The complete optimizer state on the main process, keyed by parameter name; a collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options())


def load_optimizer_state(model, optimizer, state: dict) -> None:
    """Every process takes its slice of a complete optimizer state saved by ``full_optimizer_state``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))
