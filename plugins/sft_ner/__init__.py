"""Named-entity recognition (token classification with word-level IOB2 tags), as an sft task plugin.

This module is the entry point: it registers the task and imports no torch; the task itself is
imported when a run builds it.
"""

from sft_core import hookimpl

from .options import NERData, NEROptions


#: The version of the sft plugin contract this plugin is written for.
SFT_CONTRACT = "2.3"


def _factory(config):
    from .task import NERTask

    return NERTask(config)


@hookimpl
def sft_register_tasks(register):
    register(
        "ner",
        _factory,
        config=NEROptions,
        data_config=NERData,
        summary="Named-entity recognition: CoNLL columns or JSONL, IOB1/IOB2/BIOES, seqeval entity F1.",
        # measured with MiniLM (README of this plugin): CoNLL-2003 dev F1 0.908 at lr 1e-4 and batch 32
        # too, but the 150-sentence sample learns nothing in its 15 steps there (F1 0.0); batch 16
        # and lr 3e-4 give the sample 0.69
        defaults={"trainer": {"lr": 3e-4, "batch_size": 16}},
    )


def _instruction_adapter(task):
    from .instruction import InstructionAdapter

    return InstructionAdapter(task)


@hookimpl(optionalhook=True)  # the instruct plugin's extension point, if it is installed
def sft_instruction_adapters(register):
    """The ner task's data as instructions (the instruct task's ``data.source_task: ner``)."""
    register("ner", _instruction_adapter)
