"""A module standing in for a model: every call and attribute goes to the wrapped model unless the
wrapper defines it (the export's recorder, the predictor's steering of ``generate``)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def model_wrapper():
    """The base class (built on first use, so that importing this module imports no torch)."""
    import torch

    class ModelWrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.inner, name)

    return ModelWrapper
