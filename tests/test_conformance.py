"""The conformance kit (sft_core.testing) on every built-in task, on a BERT encoder and on a
decoder-only (Llama-architecture) backbone.

A task added to sft is one more entry here; a task whose model is not an encoder passes its own
tiny-model builder, e.g. ``Case("translation", tiny_model=build_tiny_marian)``.
"""

from __future__ import annotations

from sft_core.testing import Case, TaskConformance, conformance_cases, example_texts, tiny_decoder


def tiny_llama(folder, examples):
    return tiny_decoder(folder, example_texts(examples), family="llama")


# qa reads a question and its context per input: `sft predict QUESTION CONTEXT`
QA_TEXTS = ("Where does Boris work?", "Boris works in Berlin for a bank.")
# ner's sample is CoNLL, which the kit does not cut short itself: a row missing its tag column
NER_MALFORMED = ("malformed.conll", "EU NNP B-ORG\nrejects VBZ\n")


def case(task: str, **kwargs) -> Case:
    extra = {"qa": {"predict_texts": QA_TEXTS}, "ner": {"malformed": NER_MALFORMED}}.get(task, {})
    return Case(task, **extra, **kwargs)


@conformance_cases(*(case(task) for task in ("classification", "ner", "qa")))
class TestBuiltinTasks(TaskConformance):
    pass


@conformance_cases(*(case(task, tiny_model=tiny_llama) for task in ("classification", "ner", "qa")))
class TestBuiltinTasksOnADecoder(TaskConformance):
    pass


@conformance_cases(Case("instruct", tiny_model=tiny_llama,
                        overrides={"instruct.chat_template": "chatml", "instruct.max_new_tokens": 8,
                                   "peft.method": "none", "trainer.max_length": 128}))
class TestInstructTask(TaskConformance):
    pass


@conformance_cases(Case("preference", tiny_model=tiny_llama,
                        overrides={"preference.chat_template": "chatml", "preference.max_new_tokens": 8,
                                   "peft.method": "none", "trainer.max_length": 128},
                        predict_texts=("How do I boil an egg?",)))
class TestPreferenceTask(TaskConformance):
    pass
