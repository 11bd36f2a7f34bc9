"""The conformance kit (sft_core.testing) on every built-in task.

A task added to sft is one more entry here; a task whose model is not an encoder passes its own
tiny-model builder, e.g. ``Case("translation", tiny_model=build_tiny_marian)``.
"""

from __future__ import annotations

from sft_core.testing import TaskConformance, conformance_cases


@conformance_cases("classification", "ner", "qa")
class TestBuiltinTasks(TaskConformance):
    pass
