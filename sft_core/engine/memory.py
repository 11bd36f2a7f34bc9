"""Peak memory of this process, as every run reports it beside its speed.

On CPU the peak resident set (``ru_maxrss``: everything the process held at its highest, weights,
activations, the allocator's caches, the libraries); on a GPU also the most memory tensors occupied
(``torch.cuda.max_memory_allocated``) and the most the caching allocator reserved.
"""

from __future__ import annotations

import sys


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KB on Linux


def peak_memory(device=None) -> dict:
    """``{"peak_rss_mb": ...}``, with ``cuda_max_allocated_mb`` and ``cuda_max_reserved_mb`` on a GPU."""
    import torch

    out = {"peak_rss_mb": peak_rss_mb()}
    if device is not None and getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["cuda_max_reserved_mb"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    return out


class LiveTensors:
    """The most bytes of tensor storage alive at once while the context is open, counting only the
    tensors made inside it (parameters and inputs made before do not count): a measurement of what
    a computation holds at its peak, exact and independent of the allocator, on any device.

        with LiveTensors() as live:
            loss = compute_loss(model, batch); loss.backward()
        live.peak_bytes, live.largest_bytes

    Every operator's outputs are recorded through a ``TorchDispatchMode`` (the backward pass too),
    and a storage counts until it is freed. Slow (a Python call per operator): for tests and
    benchmarks on small inputs, not for training.

    ``tag``: a function naming the part of the computation running now (e.g. set by forward hooks);
    ``peak_by_tag`` then says how the bytes alive at the peak divide by where they were made.
    """

    def __init__(self, tag=None):
        self.peak_bytes = 0
        self.largest_bytes = 0  # the largest single storage made
        self.peak_by_tag: dict[str, int] = {}
        self._tag = tag
        self._live: dict[int, tuple] = {}
        self._mode = None

    def __enter__(self):
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                inputs = tree_flatten((args, kwargs))[0]
                tracker._record(tree_flatten(out)[0], StorageWeakRef, inputs)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def _record(self, outputs, weak, inputs) -> None:
        import torch

        # a view or an in-place result shares its input's storage: nothing new (and the input may
        # predate the context, as the weights do)
        aliased = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)
                   and t.device.type != "meta"}

        for key in [k for k, (ref, *_) in self._live.items() if ref.expired()]:
            del self._live[key]
        for t in outputs:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self._live or key in aliased:
                continue
            self._live[key] = (weak(storage), storage.nbytes(), self._tag() if self._tag else "")
            self.largest_bytes = max(self.largest_bytes, storage.nbytes())
        now = sum(n for _, n, _ in self._live.values())
        if now > self.peak_bytes:
            self.peak_bytes = now
            if self._tag:
                by: dict[str, int] = {}
                for _, n, tag in self._live.values():
                    by[tag] = by.get(tag, 0) + n
                self.peak_by_tag = by

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        self._live.clear()
        return False


#: glibc's mallopt parameter for the size from which an allocation gets pages of its own.
_M_MMAP_THRESHOLD = -3
RELEASE_THRESHOLD = 1 << 20


def release_freed_memory(threshold: int = RELEASE_THRESHOLD) -> bool:
    """Have glibc's malloc give every allocation of ``threshold`` bytes or more pages of its own,
    returned to the system when freed (``trainer.release_memory``); False where that is not glibc.

    By default glibc raises this threshold as large blocks are freed (up to 32 MB), so a training
    step's activations come from the heap, which keeps what it once held and fragments: on CPU the
    resident set grows far beyond the tensors alive at once. Fixed at 1 MB, the peak follows the
    tensors; the price is a page fault for each page of each new block (measured in the docs).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False
