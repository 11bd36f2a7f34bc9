"""Extractive question answering (SQuAD v1.1 / v2.0 style span extraction), as an sft task plugin.

This module is the entry point: it registers the task and imports no torch; the task itself is
imported when a run builds it.
"""

from sft_core import hookimpl

from .options import QAData, QAOptions


#: The version of the sft plugin contract this plugin is written for.
SFT_CONTRACT = "2.3"


def _factory(config):
    from .task import QATask

    return QATask(config)


@hookimpl
def sft_register_tasks(register):
    register(
        "qa",
        _factory,
        config=QAOptions,
        data_config=QAData,
        summary="Extractive question answering (SQuAD v1.1/v2.0 JSON, JSONL); official EM/F1.",
        defaults={"trainer": {"max_length": 384, "lr": 1e-4, "epochs": 2.0, "batch_size": 16}},
    )


def _instruction_adapter(task):
    from .instruction import InstructionAdapter

    return InstructionAdapter(task)


@hookimpl(optionalhook=True)  # the instruct plugin's extension point, if it is installed
def sft_instruction_adapters(register):
    """The qa task's data as instructions (the instruct task's ``data.source_task: qa``)."""
    register("qa", _instruction_adapter)
