"""``python -m sft_core``: the ``sft`` command without its console script (e.g. ``torchrun -m sft_core``)."""

from .commands.cli import main

main()
