"""The plugin contract: the Task protocol, the registration callback and the contract version.

The engine trains every task the same way (``model(**batch).loss``); tasks differ in how data is
read and turned into features, which model head is built, and how raw outputs become predictions
and metrics. A task object lives for one run and is built by the factory given to ``register``.
CONTRIBUTING.md ("The plugin contract") describes all of it in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

#: Version of the plugin contract this sft provides, "MAJOR.MINOR". A plugin declares the version it
#: targets with a module attribute ``SFT_CONTRACT = "1.0"`` in its entry-point module; it loads when
#: the major versions are equal and its minor version is not newer than this one.
CONTRACT_VERSION = "1.1"


class Register(Protocol):
    """The callback ``sft_register_tasks(register)`` receives; one call registers one task."""

    def __call__(
        self,
        name: str,
        factory: Callable[[Any], Task],
        *,
        config: type | None = None,
        data_config: type | None = None,
        summary: str = "",
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        """Register task ``name``.

        ``factory(run_config)`` builds the Task for one run (import torch inside it, not at module
        level); ``config`` is a dataclass for the task's own section (``name`` with ``-`` as ``_``),
        ``data_config`` a ``DataConfig`` subclass adding ``data.*`` keys, ``defaults`` a nested dict
        of default values (e.g. ``{"trainer": {"lr": 1e-4}}``), ``summary`` one line for ``sft tasks``.
        A name registered twice is an error naming both plugins.
        """


@runtime_checkable
class Task(Protocol):
    """What a task plugin's factory returns: one object per run, for everything that varies by task."""

    #: Metric used for best-model selection unless ``trainer.metric_for_best`` says otherwise.
    main_metric: str
    #: File written next to ``eval_results.json`` by ``write_predictions``.
    predictions_file: str
    # Optional: ``extra_prediction_files`` (tuple of names), more files ``write_predictions`` writes
    # next to ``predictions_file`` (e.g. n-best lists); they travel with it (see ``prediction_files``).
    # Optional: ``input_fields`` (tuple of names) and ``read_fields(records)``, for named inputs of
    # ``sft predict --NAME VALUE`` (e.g. ``--question ... --context ...``).
    # Optional: ``compute_loss(model, batch)``, the training loss when ``model(**batch).loss`` is not
    # the one wanted (e.g. label smoothing, or a batch that also carries keys the model does not
    # take); ``resolve_model(name)``, a path for ``model:`` values of
    # the task's own (e.g. a model built from a configuration) before ``load_tokenizer``/``build_model``.

    def load(self, split: str, path: str | None) -> list[dict]:
        """Read examples of ``split`` ("train", "eval" or "predict") from ``path`` (None: built-in sample)."""

    def setup(self, train_examples: list[dict]) -> None:
        """Learn what training data defines (e.g. the label map) before the model is built."""

    def state_dict(self) -> dict:
        """JSON-serialisable state saved with the model (label map, ...)."""

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned, when a saved model is reloaded."""

    def load_tokenizer(self, name_or_path: str) -> Any:
        """Load (or build) the tokenizer; it is saved next to the model."""

    def build_model(self, name_or_path: str) -> Any:
        """Build the model (a ``torch.nn.Module`` whose ``forward(**batch)`` returns ``.loss``)."""

    def preprocess(self, examples: dict[str, list]) -> dict[str, list]:
        """Batched: columns of examples (with ``example_id``) in, columns of features out.

        One example may give several features; each keeps its ``example_id``.
        """

    def collate(self, features: list[dict]) -> dict[str, Any]:
        """Pad a list of features into a batch of tensors for ``model(**batch)`` (with ``compute_loss``,
        the batch may also carry keys of the task's own)."""

    def predict_step(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        """Forward (or generate) and reduce on the device: tensors with one row per feature."""

    def postprocess(self, outputs: list[dict], features: Any, examples: list[dict]) -> list[Any]:
        """Per-feature outputs (in feature order) to one prediction per example (in example order)."""

    def compute_metrics(self, predictions: list[Any], examples: list[dict]) -> dict[str, float]:
        """Score predictions against the gold annotations of ``examples``."""

    def write_predictions(self, path: Path, predictions: list[Any], examples: list[dict]) -> None:
        """Write the task's predictions file (``predictions_file``) for an evaluation set."""

    def format_prediction(self, prediction: Any, example: dict) -> dict:
        """One JSON-serialisable record for ``sft predict``."""

    def read_inputs(self, texts: list[str]) -> list[dict]:
        """Examples for ``sft predict`` from command-line texts."""

    # optional: def read_fields(self, records: list[dict[str, str]]) -> list[dict]
    #     Examples for ``sft predict`` from named inputs, one record per input ({name: value}).
    # optional: def gold_predictions(self, examples: list[dict]) -> list[Any]
    #     One prediction per example from its gold annotation, in the form ``postprocess`` returns;
    #     the conformance kit (``sft_core.testing``) checks that they score perfectly.
    #
    # Added in contract 1.1 (all optional; 1.0 plugins load unchanged):
    # def finish_features(self, features, split: str) -> features
    #     Called on the tokenized features of a split (also when they come from the cache), before
    #     batching: e.g. to pack training sequences or to count truncation. Returns the features.
    # instruction_prompt: str
    # def instruction_fields(self, example: dict) -> dict[str, str]
    # def instruction_answer(self, example: dict) -> str
    # def instruction_prediction(self, text: str, example: dict) -> Any
    #     The task's data as instructions for a causal LM (the instruct task's ``data.source_task``):
    #     the default user message (a format string over the fields), the named texts of an
    #     example, the answer the model should write, and a generated answer turned into the form
    #     ``postprocess`` returns, so that ``compute_metrics`` scores generations as it scores the
    #     task's own predictions.
    # metric_directions: dict[str, str]
    #     {metric: "higher" | "lower"}: which way is better, for best-model selection and early
    #     stopping (``metric_direction``); unlisted metrics are higher-is-better.
    # long_inputs: str
    #     "windows" when inputs longer than trainer.max_length are read in windows (nothing is
    #     truncated; sft serve then never flags them); default "truncate".
    # def prediction_text(self, prediction) -> str
    # def read_messages(self, conversations: list[list[dict]]) -> list[dict]
    #     Generated text of a prediction, and examples for chat conversations ({"role", "content"}
    #     messages ending with the user's): the OpenAI-style routes of ``sft serve``.


def metric_direction(task, name: str) -> str:
    """Whether a higher or a lower value of metric ``name`` is better for ``task``: "higher" or "lower".

    Contract 1.1: a task declares ``metric_directions`` ({name: "higher" | "lower"}), and a metric
    it does not list is higher-is-better. A task that declares none (written for contract 1.0)
    keeps the 1.0 rule: names containing "loss" are lower-is-better.
    """
    declared = getattr(task, "metric_directions", None)
    if declared is None:
        return "lower" if "loss" in name else "higher"
    direction = declared.get(name, "higher")
    if direction not in ("higher", "lower"):
        raise ValueError(f"task {type(task).__name__}: metric_directions[{name!r}] is {direction!r}, "
                         "expected 'higher' or 'lower'")
    return direction


def prediction_files(task) -> tuple[str, ...]:
    """Names of the files ``task.write_predictions`` writes: its predictions file and any extras."""
    return (task.predictions_file, *getattr(task, "extra_prediction_files", ()))
