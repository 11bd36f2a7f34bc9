"""The instruct plugin's extension point: tasks that offer their data as instructions.

Another task plugin implements ``sft_instruction_adapters`` (marked ``@hookimpl(optionalhook=True)``,
since the instruct plugin may not be installed) and registers, per task, a factory of an adapter::

    @hookimpl(optionalhook=True)
    def sft_instruction_adapters(register):
        register("multiple-choice", lambda task: MultipleChoiceInstructions(task))

The adapter wraps that task's object for one run and offers:

- ``prompt``: the default user message, a format string over the fields below;
- ``fields(example) -> {name: text}``: the named texts of one example (as ``load`` returned it);
- ``answer(example) -> str``: the answer the model should write;
- ``prediction(text, example)``: a generated answer as one prediction in the form the task's
  ``postprocess`` returns, so that its ``compute_metrics`` scores generations as it scores its own.

Then ``sft run --task instruct data.source_task=multiple-choice ...`` trains a causal LM on that
task's data and scores it with that task's metric.
"""

import pluggy

hookspec = pluggy.HookspecMarker("sft")


@hookspec
def sft_instruction_adapters(register):
    """Register instruction adapters: ``register(task_name, factory)``, ``factory(task) -> adapter``."""
