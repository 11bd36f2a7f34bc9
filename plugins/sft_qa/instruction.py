"""The qa task's data as instructions for a causal LM (the ``instruct`` task's
``data.source_task: qa``): the prompt, the answer the model should write, and a generated answer
turned back into a prediction that the task's own metric scores. Registered through the instruct
plugin's hook ``sft_instruction_adapters``."""

from __future__ import annotations


class InstructionAdapter:
    """Wraps one qa task object (its labels, its options)."""

    def __init__(self, task):
        self.task = task

    prompt = ("Answer the question with a short span copied from the context.\n\n"
              "Context: {context}\n\nQuestion: {question}")

    def fields(self, example: dict) -> dict[str, str]:
        return {"question": example["question"], "context": example["context"], "title": example.get("title") or ""}

    def answer(self, example: dict) -> str:
        """The first gold answer ("" for an unanswerable question)."""
        texts = example["answers"]["text"]
        return texts[0] if texts else ""

    def prediction(self, text: str, example: dict) -> dict:
        return {"id": example["id"], "text": text.strip(), "start": None, "end": None, "score": None,
                "probability": None, "null_score_diff": None}
