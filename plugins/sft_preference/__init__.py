"""Preference tuning of causal language models (DPO, IPO, hinge, ORPO, SimPO) on pairs of a chosen
and a rejected answer, as an sft task plugin.

This module is the entry point: it registers the task and imports no torch; the task itself is
imported when a run builds it.
"""

from sft_core import hookimpl

from .options import PreferenceData, PreferenceOptions

SFT_CONTRACT = "2.3"


def _factory(config):
    from .task import PreferenceTask

    return PreferenceTask(config)


@hookimpl
def sft_register_tasks(register):
    register(
        "preference",
        _factory,
        config=PreferenceOptions,
        data_config=PreferenceData,
        summary="Preference tuning of causal LMs (DPO, IPO, hinge, ORPO, SimPO) on chosen/rejected pairs; "
                "reward accuracy and margins; the reference model by switching LoRA off or precomputed.",
        # LoRA on the offline SmolLM2-135M-Instruct. lr is the full fine-tuning rate (DPO's usual
        # 5e-7..5e-6; TRL's default 1e-6); LoRA trains at it times peft.lr_scale (10)
        defaults={"model": "smollm2",
                  "trainer": {"lr": 5e-6, "epochs": 1, "batch_size": 8, "eval_batch_size": 8, "max_length": 1024,
                              "warmup_ratio": 0.1, "weight_decay": 0.0},
                  "peft": {"method": "lora"}},
    )
