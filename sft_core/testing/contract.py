"""The kit's checks by contract version, and how an error message may name its place.

Each check belongs to the contract version whose kit added it. A plugin is held to the checks of the
version it declares; a later check is advice (``KitAdvice``) until the plugin declares that version
or opts in. Imports no torch and no pytest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..compat import parse_version


@dataclass(frozen=True)
class Check:
    """One check of the kit: its name (the test is ``test_<name>``), the contract version whose kit
    added it, and what it asks of a task."""

    name: str
    since: str
    summary: str


#: Every check, with the contract version that added it. A new check comes with the contract version
#: it is added in (a minor version), never into a version already released.
CHECKS: tuple[Check, ...] = (
    Check("entry_point_imports_no_torch", "1.0",
          "loading the plugin alone (import and registration) imports neither torch nor transformers"),
    Check("task_implements_the_protocol", "1.0", "the task object has every member of the Task protocol"),
    Check("config_round_trips_through_yaml", "1.0", "the task's config, written as YAML and read back, is equal"),
    Check("loss_is_a_scalar_with_a_gradient", "1.0",
          "a collated batch gives a finite scalar loss that reaches the parameters (the likely cause named when not)"),
    Check("collate_shapes_agree", "1.0", "every collated tensor has one row per feature; token inputs share a shape"),
    Check("one_prediction_per_example", "1.0",
          "postprocess gives one prediction per example; the main metric is computed; records are JSON"),
    Check("gold_predictions_score_perfectly", "1.0",
          "gold_predictions(examples), when the task has it, score a perfect main metric"),
    Check("saved_model_reloads_and_predicts_the_same", "1.0",
          "a model trained by the engine for a few steps, saved and reloaded as sft eval does, predicts the same"),
    Check("predict_path_gives_json_records", "2.0",
          "sft predict's two ways in (load('predict', file) and read_inputs(texts)) give one JSON record per input"),
    Check("shuffled_features_map_back", "2.0",
          "postprocess places outputs by example_id: shuffled features give the same predictions"),
    Check("malformed_data_is_a_data_error", "2.0",
          "a malformed data file is refused with a DataError naming the file and the line"),
)

CHECKS_BY_NAME = {check.name: check for check in CHECKS}


class KitAdvice(UserWarning):
    """A check of a later contract version than the plugin declares did not pass: advice for the
    day the plugin declares that version, not a failure now."""


def held_to(check: Check, declared: str, opt_in: tuple[str, ...] = ()) -> bool:
    """Whether ``check`` is a requirement for a plugin declaring contract ``declared`` that opted in
    to ``opt_in`` (check names, or "all"); otherwise it is advice."""
    return parse_version(declared) >= parse_version(check.since) or check.name in opt_in or "all" in opt_in


#: How a message names a line: ``file:12:``, ``file(12)``, ``line 12``, ``file, line 12``, ``line: 12``,
#: ``row 12``, ``line #12``, ``line no. 12``.
_LINE_REFERENCE = re.compile(r"\b(?:line|row)s?\s*(?:[:#]\s*|no\.?\s*|number\s*)?(\d+)", re.IGNORECASE)


def names_the_place(message: str, file_name: str, line: int | None = None) -> bool:
    """Whether ``message`` names the file ``file_name`` and a line (``line`` itself, when given), in
    any of the usual ways: ``file:12: ...`` (compilers, linters), ``file line 12``, ``file, line 12``
    (Python), ``file (line 12)``, ``line: 12``, ``row 12``."""
    if file_name not in message:
        return False
    numbers = {int(n) for n in re.findall(rf"{re.escape(file_name)}[:(](\d+)", message)}
    numbers |= {int(n) for n in _LINE_REFERENCE.findall(message)}
    return bool(numbers) if line is None else line in numbers
