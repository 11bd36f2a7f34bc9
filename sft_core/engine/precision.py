"""The precision a run computes in, and the ``accelerate`` Accelerator that carries it."""

from __future__ import annotations

import sys

from ..config import RunConfig


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(requested: str, cuda: bool, native_bf16: bool) -> tuple[str, str | None]:
    """The precision to run in for ``trainer.mixed_precision=requested`` on a GPU (``cuda``) or the
    CPU whose bf16 support is ``native_bf16``, and a note for the user if it is not what they asked
    for (or may be slow).

    ``auto`` is bf16 on GPUs that have it, fp16 on other GPUs and fp32 on the CPU (the same math as
    any fp32 run). bf16 on the CPU is autocast to bfloat16: fast where the CPU multiplies bf16 in
    hardware, emulated (slower than fp32) elsewhere. fp16 needs a GPU.
    """
    if requested == "auto":
        return ("bf16" if native_bf16 else "fp16") if cuda else "no", None
    if cuda or requested == "no":
        return requested, None
    if requested == "fp16":
        return "no", "note: trainer.mixed_precision=fp16 needs a GPU; training in fp32 on the CPU (bf16 works on the CPU)"
    if not native_bf16:
        return "bf16", ("note: trainer.mixed_precision=bf16 on a CPU without AVX512-BF16 or AMX: bf16 is "
                        "emulated there and usually slower than fp32 (trainer.mixed_precision=no)")
    return "bf16", None


def make_accelerator(config: RunConfig):
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from ..models.sharding import take_over_fsdp_launch

    take_over_fsdp_launch()

    cuda = torch.cuda.is_available()
    native_bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_native_bf16()
    precision, note = resolve_precision(config.trainer.mixed_precision, cuda, native_bf16)
    if note:
        print(note, file=sys.stderr)
    # accelerate keeps its precision in a process-wide state; a process that runs several jobs (a
    # notebook, the tests) may ask for another precision each time. The process group is kept.
    reset = getattr(AcceleratorState, "_reset_state", None)
    if reset is not None and AcceleratorState._shared_state.get("_mixed_precision") not in (None, precision):
        reset(reset_partial_state=False)
    # accelerate only sets up multi-process CPU runs (gloo) when told it is on the CPU
    return Accelerator(mixed_precision=precision, cpu=not cuda)
