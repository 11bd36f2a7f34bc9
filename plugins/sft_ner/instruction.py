"""The ner task's data as instructions for a causal LM (the ``instruct`` task's
``data.source_task: ner``): the prompt, the answer the model should write, and a generated answer
turned back into a prediction that the task's own metric scores. Registered through the instruct
plugin's hook ``sft_instruction_adapters``."""

from __future__ import annotations

from .schemes import entity_spans


class InstructionAdapter:
    """Wraps one ner task object (its labels, its options)."""

    def __init__(self, task):
        self.task = task

    prompt = ("List the named entities in this sentence, each as TYPE: words, separated by semicolons; "
              "answer none if there are none.\n\n{text}")

    def fields(self, example: dict) -> dict[str, str]:
        return {"text": " ".join(example["tokens"])}

    def answer(self, example: dict) -> str:
        """Entities as text, in sentence order: ``PER: John Smith; LOC: Paris`` (``none`` without any)."""
        words = example["tokens"]
        spans = [f"{kind}: {' '.join(words[first:end])}" for kind, first, end in entity_spans(example["tags"])]
        return "; ".join(spans) or "none"

    def prediction(self, text: str, example: dict) -> dict:
        """IOB2 tags from ``TYPE: words; ...``: each entity's words are placed at their first
        occurrence after the previous entity (else anywhere still untagged); unparseable parts are ignored."""
        words = example["tokens"]
        tags = ["O"] * len(words)
        cursor = 0
        for part in text.replace("\n", ";").split(";"):
            kind, sep, span = part.partition(":")
            kind, entity = kind.strip(), span.split()
            if not sep or not kind or not entity or " " in kind:
                continue
            n = len(entity)
            starts = [i for i in range(len(words) - n + 1) if words[i:i + n] == entity
                      and all(t == "O" for t in tags[i:i + n])]
            if not starts:
                continue
            start = next((i for i in starts if i >= cursor), starts[0])
            tags[start:start + n] = [f"B-{kind}"] + [f"I-{kind}"] * (n - 1)
            cursor = start + n
        return {"tags": tags, "scores": [1.0] * len(words)}
