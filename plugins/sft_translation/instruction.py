"""The translation task's data as instructions for a causal LM (the ``instruct`` task's
``data.source_task: translation``): the prompt, the answer the model should write, and a generated answer
turned back into a prediction that the task's own metric scores. Registered through the instruct
plugin's hook ``sft_instruction_adapters``."""

from __future__ import annotations

from .modeling import LANGUAGE_NAMES


class InstructionAdapter:
    """Wraps one translation task object (its labels, its options)."""

    def __init__(self, task):
        self.task = task

    prompt = "Translate this {source_lang} sentence into {target_lang}.\n\n{source}"

    def fields(self, example: dict) -> dict[str, str]:
        data = self.task.config.data
        return {"source": example["source"], "source_lang": LANGUAGE_NAMES.get(data.source_lang, data.source_lang),
                "target_lang": LANGUAGE_NAMES.get(data.target_lang, data.target_lang)}

    def answer(self, example: dict) -> str:
        return example["target"] or ""

    def prediction(self, text: str, example: dict) -> str:
        return " ".join(text.split())
