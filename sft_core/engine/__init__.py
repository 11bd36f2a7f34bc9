"""The engine: one run from config to saved model, and inference on what it saved.

It owns the run (``run``), the training loop (``loop``), evaluation, batching, checkpoints,
interrupts, logging, run folders, data sources, model loading and the ``Predictor``. It builds on
``sft_core.models`` and the plugin host, never on a command: commands build on the engine.
"""
