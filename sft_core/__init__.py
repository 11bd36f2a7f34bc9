"""sft: supervised fine-tuning of pretrained transformers; one training loop, tasks as plugins.

The public plugin API. Importing it imports no torch.
"""

import pluggy

from .config import DataConfig, RunConfig, TrainerConfig
from .errors import SFTError
from .task import Task

__version__ = "0.1.0"

#: Marks a function of a plugin module as the implementation of an ``sft_*`` hook.
hookimpl = pluggy.HookimplMarker("sft")

__all__ = ["hookimpl", "Task", "DataConfig", "TrainerConfig", "RunConfig", "SFTError", "__version__"]
