"""Instruction tuning of causal language models (conversations, prompt/completion, Alpaca,
ShareGPT, or another task's data), as an sft task plugin.

This module is the entry point: it registers the task and imports no torch; the task itself is
imported when a run builds it.
"""

from sft_core import hookimpl

from .options import InstructData, InstructOptions

SFT_CONTRACT = "2.3"


def _factory(config):
    from .task import InstructTask

    return InstructTask(config)


@hookimpl
def sft_register_tasks(register):
    register(
        "instruct",
        _factory,
        config=InstructOptions,
        data_config=InstructData,
        summary="Instruction tuning of causal LMs: chat template, loss on answers, exact packing, evaluation by "
                "generation; other tasks' data scored by their own metric.",
        # LoRA on the offline SmolLM2-135M-Instruct; answers are short, so 512 tokens hold most
        # examples. lr is the full fine-tuning rate (peft.method=none); LoRA trains at it times
        # peft.lr_scale (10): 5e-4, measured in benchmarks/small_data.py
        defaults={"model": "smollm2",
                  "trainer": {"lr": 5e-5, "epochs": 2, "batch_size": 8, "eval_batch_size": 16, "max_length": 512,
                              "warmup_ratio": 0.05, "weight_decay": 0.0},
                  "peft": {"method": "lora"}},
    )


@hookimpl
def sft_add_hookspecs(add):
    """Opens the extension point ``sft_instruction_adapters`` (tasks offering their data as instructions)."""
    from . import hookspecs

    add(hookspecs)


@hookimpl
def sft_register_commands(cli):
    from .chat import chat_command

    cli.add_command(chat_command)
