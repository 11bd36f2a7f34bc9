"""Hook specifications. Logic-free: each hook is documented here and implemented by plugins."""

import pluggy

hookspec = pluggy.HookspecMarker("sft")


@hookspec
def sft_register_tasks(register):
    """Register tasks: call ``register(name, factory, *, config=..., data_config=..., summary=...)``."""


@hookspec
def sft_register_commands(cli):
    """Add subcommands to the ``sft`` click group."""


@hookspec
def sft_train_start(config, task, model, state):
    """Called once before the first training step (also after a resume)."""


@hookspec
def sft_step_end(config, state, loss, lr):
    """Called after every optimizer step, with the step's mean loss and learning rate.

    Setting ``state.stop_reason`` (a string) here or in ``sft_evaluate_end`` ends training after
    this step or evaluation, as early stopping does (``sft tune`` prunes trials this way)."""


@hookspec
def sft_evaluate_end(config, state, metrics):
    """Called after each evaluation with the flat metric dict."""


@hookspec
def sft_save_checkpoint(config, state, path):
    """Called after a checkpoint folder was written and renamed into place."""


@hookspec
def sft_train_end(config, state, status):
    """Called once when training ends, always (``status`` is "completed", "stopped" or "failed")."""
