"""Hook specifications. Logic-free: each hook is documented here and implemented by plugins.

Hooks are called with keyword arguments. ``hookimpl`` (also ``sft_core.hookimpl``) marks an
implementation; a plugin implementing a hook that is specified nowhere is switched off, unless the
implementation is marked ``@hookimpl(optionalhook=True)`` (for another plugin's extension point,
which may not be installed).
"""

import pluggy

hookspec = pluggy.HookspecMarker("sft")
#: Marks a function of a plugin module as the implementation of an ``sft_*`` hook.
hookimpl = pluggy.HookimplMarker("sft")


@hookspec
def sft_register_tasks(register):
    """Register tasks: call ``register(name, factory, *, config=..., data_config=..., summary=...)``."""


@hookspec
def sft_register_commands(cli):
    """Add subcommands to the ``sft`` click group."""


@hookspec
def sft_add_hookspecs(add):
    """Open an extension point of the plugin's own: ``add(module_or_class)`` adds its hook
    specifications (e.g. the instruct task's ``sft_instruction_adapters``). Called once all plugins
    are loaded, before hook names are checked."""


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
    """Called once when training ends, always (``status`` is "completed", "stopped", "interrupted" or "failed")."""


@hookspec
def sft_run_end(config, output_dir, results):
    """Called on the main process once a run folder is complete (model, results, predictions
    written): e.g. the report plugin writes ``report.html`` when ``trainer.report`` is set."""


@hookspec
def sft_study_end(study_dir):
    """Called once an ``sft tune`` study folder is complete (trials, best settings, the retrained best)."""
