"""The plugin contract: the Task protocol, its optional roles, the registration callback and the version.

This module is the contract's one written form; the documentation site renders it.

A task plugin is an importable module named by an entry point of group ``sft``. Its module imports
no torch or transformers (every ``sft`` call loads it), may declare the contract version it was
written for (``SFT_CONTRACT = "2.0"``) and implements the hook ``sft_register_tasks(register)``,
calling ``register`` once per task (see ``Register``). The factory given to ``register`` receives
the run's resolved ``RunConfig`` (``config.data``, ``config.trainer``, ``config.options`` for the
task's own section) and returns one object per run: a ``Task``.

The engine trains every task the same way: ``model(**task.collate(features)).loss``, or the task's
``compute_loss`` (role ``CustomLoss``). Tasks differ in how data is read and turned into
features, which model is built, and how raw outputs become predictions and metrics: the members
of ``Task``. Optional abilities are small roles (``CustomLoss``, ``FinishesFeatures``,
``NamedInputs``, ``GeneratesText``, ...): a task takes a role by having its members, and the engine
finds them in one place, ``roles(task)``, which also supplies the defaults of a task without them.

What the engine does to every task's tokenizer and model, so that a task need not:

- **Pad token**: a tokenizer without a pad token gets its EOS token (or the run stops with a one-line
  error), and the model's config the same id. Pad with ``tokenizer.pad_token_id`` (on the right),
  never with a literal 0: decoder-only tokenizers use 0 for a real token.
- **Adapters** (``peft:``): the engine wraps the model ``build_model`` returns, finds the backbone
  through transformers' ``base_model_prefix`` and trains everything outside it (the head) fully; a
  model of another layout needs ``peft.modules_to_save`` (and ``peft.target_modules``). A
  ``compute_loss`` or ``predict_step`` calling ``model(...)`` works unchanged on the adapter model.
- **Gradient checkpointing and sharding** (``trainer.gradient_checkpointing``, ``trainer.fsdp``) for
  transformers models that support them.

Helpers a plugin may build on are in ``sft_core.kit`` (reading JSON lines with errors that name the
file and line, padding, a head for any transformers family, the last-layer shortcut); the
conformance kit for a plugin's own test suite is ``sft_core.testing``. Errors a user can fix are
``sft_core.DataError`` / ``ConfigError`` with one line naming the file, the line (or the config key)
and what was expected: the command line prints them without a traceback.

Versions: ``CONTRACT_VERSION`` is "MAJOR.MINOR"; minor versions only add. A plugin loads when it
declares a version this sft provides (same major, minor not newer) or an older major that
``sft_core.compat`` still adapts (1.0 and 1.1 plugins load and pass the kit unchanged).
Changelog:

- 1.0: the Task members; the lifecycle hooks; ``sft_core.testing``.
- 1.1: ``finish_features``; ``metric_directions``; ``long_inputs``, ``prediction_text``,
  ``read_messages`` (serving); a task's ``<package>_metric.py`` evaluate module; instruction data as
  four members on the Task (``instruction_prompt``, ``instruction_fields``, ``instruction_answer``,
  ``instruction_prediction``).
- 2.0: optional abilities are the roles below, found by ``roles(task)``; instruction data leaves the
  Task: a plugin registers an instruction adapter through the ``instruct`` plugin's hook
  ``sft_instruction_adapters(register)`` (1.1 tasks with the four members still work, through
  ``sft_core.compat``); the hook ``sft_add_hookspecs(add)`` lets a plugin open an extension point of
  its own; ``sft_run_end`` and ``sft_study_end`` tell plugins that a run or a study folder is
  complete; the conformance kit holds a plugin to the checks of its declared version
  (``sft_core.testing.CHECKS``), later ones are advice; the checks of the predict path, feature
  order and malformed data are 2.0 checks.
- 2.1: the kit's ``causal_lm_loss`` and ``linear_cross_entropy`` (a language-model loss without the
  full-vocabulary logits, following ``trainer.chunked_loss``); ``trainer.chunked_loss``. No new
  obligation: 2.0 plugins load unchanged.
- 2.2: the kit's ``chat_template``, ``causal_lm_logps`` and row ranges; the role ``TrainMetrics``.
- 2.3: the role ``PlansGeneration``: a task that generates with a causal LM hands the engine its
  prompts (``GenerationPlan``), and the engine generates them with continuous batching (evaluation,
  ``sft predict``, ``sft serve``), putting each row's tokens in ``batch["generated"]`` for
  ``predict_step``. No new obligation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

CONTRACT_VERSION = "2.3"


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
    """What a task plugin's factory returns: one object per run, for everything that varies by task.

    **Examples** are the dicts ``load`` returns, all with the same keys and value types (they are
    stored in an Arrow table: strings, numbers, booleans, lists and dicts of those; ``None`` where
    a value is missing). Before ``preprocess`` the engine numbers them: each gets ``example_id``,
    its index in the list ``load`` returned. Examples of ``load("predict", path)`` and of
    ``read_inputs`` may carry no gold annotation.

    **Features** are what ``preprocess`` makes of examples, any number per example, each keeping
    the ``example_id`` of its example. They are cached on disk (``$SFT_CACHE_DIR``, default
    ``~/.cache/sft/features``), keyed on the sft version, the task's name and class, the split, the
    tokenizer (class, name or path, vocabulary size), ``trainer.max_length``, the ``data.*`` keys
    other than the paths, the task's own config section, its ``state_dict()`` and the examples'
    content. The key does not see the code of ``preprocess``: while you change it, delete the folder
    (or point ``SFT_CACHE_DIR`` elsewhere). ``sft predict`` and ``sft serve`` never use the cache.

    **``data.*`` keys every task has**: ``data.train``, ``data.eval``, ``data.max_train_samples``,
    ``data.max_eval_samples``, ``data.validation_fraction``, ``data.validation_seed``; the others come
    from the task's ``data_config``.
    """

    #: The metric that picks the best model (unless ``trainer.metric_for_best`` says otherwise).
    main_metric: str
    #: The file ``write_predictions`` writes next to ``eval_results.json``, e.g. "predictions.jsonl".
    predictions_file: str

    def load(self, split: str, path: str | None) -> list[dict]:
        """Examples of ``split`` ("train", "eval" or "predict") read from ``path``; ``None``: the
        task's built-in sample. A malformed file raises ``DataError`` naming the file and line."""

    def setup(self, train_examples: list[dict]) -> None:
        """Learn what the training data defines (e.g. the label set) before the model is built.
        ``sft run`` calls it (or ``load_state_dict`` on resume) before it reads the evaluation data,
        so ``load("eval", path)`` can reject a label training never showed."""

    def state_dict(self) -> dict:
        """That knowledge as JSON, saved with the model (``sft_task.json``)."""

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned, when ``sft eval``, ``sft predict`` or ``sft serve``
        reload a saved model."""

    def load_tokenizer(self, name_or_path: str) -> Any:
        """Load (or build) the tokenizer; keep it for ``preprocess`` (the engine does not pass it
        again); it is saved next to the model."""

    def build_model(self, name_or_path: str) -> Any:
        """Build the model: a ``torch.nn.Module`` whose ``forward(**batch)`` returns ``.loss``.
        ``sft_core.kit.with_head(AutoModelForX, path, "x")`` loads a head for any family that has
        one, or raises a one-line error naming the families that do."""

    def preprocess(self, examples: dict[str, list]) -> dict[str, list]:
        """Batched: up to 1,000 examples as columns (``{"text": [...], "example_id": [...]}``) in,
        columns of features out, each feature with the ``example_id`` of its example.

        Tokenize with the tokenizer ``load_tokenizer`` returned and truncate to
        ``config.trainer.max_length``. A ``length`` column, if present, is what length-grouped
        batching sorts by; else the length of ``input_ids``.
        """

    def collate(self, features: list[dict]) -> dict[str, Any]:
        """A list of feature rows (dicts of Python values) to a batch of tensors for
        ``model(**batch)``, padded to the longest feature of the batch. With ``compute_loss`` the batch
        may also carry keys of the task's own."""

    def predict_step(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        """Forward (or generate) and reduce on the device (argmax, top-k, token ids): tensors or lists
        with one row per feature. Never return the full logits of a batch.

        A ``predict_step`` that calls ``model.generate`` gets the request's length limit, sampling
        settings and streamer through the model it is given; one that calls ``model(**inputs)``
        runs unchanged on a model exported by ``sft export`` (outputs by name, e.g. ``.logits``)."""

    def postprocess(self, outputs: list[Any], features: Any, examples: list[dict]) -> list[Any]:
        """Exactly one prediction per example, in example order.

        ``outputs`` holds one item per feature in the order of ``features`` (the engine runs batches
        sorted by length and puts the outputs back), each what ``predict_step`` returned for that row
        with tensors turned into Python numbers and lists; ``features`` is a ``datasets.Dataset``
        (``features["example_id"]`` maps each output to its example); ``examples`` is the list
        ``load`` returned."""

    def compute_metrics(self, predictions: list[Any], examples: list[dict]) -> dict[str, float]:
        """A flat dict of figures, ``main_metric`` among them, scoring ``predictions`` against the
        gold annotations of ``examples``. Values are numbers, except text such as a metric's
        signature, which is kept as it is."""

    def write_predictions(self, path: Path, predictions: list[Any], examples: list[dict]) -> None:
        """Write the predictions file (``predictions_file``) of an evaluation set to ``path``."""

    def format_prediction(self, prediction: Any, example: dict) -> dict:
        """One JSON-serialisable record: what ``sft predict`` prints and ``sft serve`` answers."""

    def read_inputs(self, texts: list[str]) -> list[dict]:
        """Examples from texts given on the command line (``sft predict TEXT...``) or to the server."""


# --- roles: optional abilities, each taken by having its members -----------------------------------

@runtime_checkable
class CustomLoss(Protocol):
    """The training loss, when ``model(**batch).loss`` is not the one wanted (e.g. label smoothing,
    or a batch carrying keys the model does not take)."""

    def compute_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """A scalar tensor with a gradient."""


@runtime_checkable
class FinishesFeatures(Protocol):
    """Work on a whole split's tokenized features before batching: pack training sequences, count
    truncation. A task attribute ``report`` (a dict) is then written to ``run_info.json`` as ``data``."""

    def finish_features(self, features: Any, split: str) -> Any:
        """Called on a split's features (also when they come from the cache); returns the features."""


@runtime_checkable
class NamedInputs(Protocol):
    """Inputs of several named texts: ``sft predict --question Q --context C``, ``{"question": ...,
    "context": ...}`` records for ``sft serve``."""

    input_fields: tuple[str, ...]

    def read_fields(self, records: list[dict[str, str]]) -> list[dict]:
        """Examples from one ``{name: text}`` record per input."""


@runtime_checkable
class GeneratesText(Protocol):
    """Predictions that are generated text: the OpenAI-style ``/v1/completions`` and
    ``/v1/chat/completions`` routes of ``sft serve`` (the prompt goes to ``read_inputs``)."""

    def prediction_text(self, prediction: Any) -> str:
        """The generated text of one prediction."""

    def read_messages(self, conversations: list[list[dict]]) -> list[dict]:
        """Examples from chat conversations (``{"role", "content"}`` messages ending with the user's)."""


@dataclass
class GenerationPlan:
    """What a causal LM generates for a set of features (contract 2.3): the prompt ids of each
    feature (in feature order), the length limit, the ids that end an answer (left out of it) and the
    padding id. ``truncated[i]``: feature ``i``'s prompt lost tokens to ``trainer.max_length``."""

    prompts: list[list[int]]
    max_new_tokens: int
    stop_ids: tuple[int, ...]
    pad_id: int
    truncated: list[bool] = field(default_factory=list)


@runtime_checkable
class PlansGeneration(Protocol):
    """Greedy (or sampled) generation from a causal LM that the engine schedules itself, with
    continuous batching: sequences join and leave the running batch at every decoding step."""

    def generation_plan(self, features) -> GenerationPlan | None:
        """The plan for ``features``, or None when the task's decoding cannot be scheduled so (beam
        search): ``predict_step`` then generates as before. With a plan, every batch given to
        ``predict_step`` carries ``batch["generated"]``: per row, the generated ids (end token excluded)."""


@runtime_checkable
class ResolvesModels(Protocol):
    """Names of ``model:`` of the task's own (e.g. a model built from a configuration)."""

    def resolve_model(self, name: str) -> str:
        """A path or hub id for ``name``, before ``load_tokenizer`` and ``build_model``."""


@runtime_checkable
class TrainMetrics(Protocol):
    """Figures of the training batches beside the loss (e.g. preference tuning's reward accuracy):
    each logged training record of ``metrics.jsonl`` carries them (contract 2.2)."""

    def train_metrics(self) -> dict[str, float]:
        """The task's figures over the training batches since the last call (means), then forgotten;
        ``compute_loss`` gathers them. Called on every process at each logged step; the main one logs."""


@runtime_checkable
class GoldPredictions(Protocol):
    """Each example's gold annotation in the form ``postprocess`` returns: the conformance kit checks
    that it scores perfectly, and mixtures of the instruct task put sources on one scale with it."""

    def gold_predictions(self, examples: list[dict]) -> list[Any]:
        """One prediction per example."""


#: Attributes a task may declare, with the value a task without them gets.
#:
#: - ``metric_directions``: ``{metric: "higher" | "lower"}``, for best-model selection and early
#:   stopping; an unlisted metric is higher-is-better (a 1.0 task without the attribute keeps the
#:   1.0 rule: names containing "loss" are lower-is-better).
#: - ``long_inputs``: ``"windows"`` when inputs longer than ``trainer.max_length`` are read in windows
#:   and nothing is truncated (the server never flags them); default ``"truncate"``.
#: - ``extra_prediction_files``: more files ``write_predictions`` writes next to ``predictions_file``
#:   (e.g. n-best lists); they travel with it.
DECLARED_DEFAULTS = {"metric_directions": None, "long_inputs": "truncate", "extra_prediction_files": ()}


@dataclass(frozen=True)
class Roles:
    """What one task can do beyond the ``Task`` members, with defaults filled in: ``roles(task)``."""

    compute_loss: Callable | None = None
    finish_features: Callable | None = None
    input_fields: tuple[str, ...] = ()
    read_fields: Callable | None = None
    prediction_text: Callable | None = None
    read_messages: Callable | None = None
    resolve_model: Callable | None = None
    gold_predictions: Callable | None = None
    train_metrics: Callable | None = None
    generation_plan: Callable | None = None
    metric_directions: Mapping[str, str] | None = None
    long_inputs: str = "truncate"
    prediction_files: tuple[str, ...] = field(default_factory=tuple)

    @property
    def generative(self) -> bool:
        return self.prediction_text is not None

    def metric_direction(self, name: str) -> str:
        """"higher" or "lower": which way metric ``name`` is better."""
        if self.metric_directions is None:  # a task written for contract 1.0
            return "lower" if "loss" in name else "higher"
        direction = self.metric_directions.get(name, "higher")
        if direction not in ("higher", "lower"):
            raise ValueError(f"metric_directions[{name!r}] is {direction!r}, expected 'higher' or 'lower'")
        return direction


def _method(task: Any, name: str) -> Callable | None:
    value = getattr(task, name, None)
    return value if callable(value) else None


def roles(task: Any) -> Roles:
    """The roles ``task`` takes and the values it declares: the one place the engine, the server, the
    exporter and the kit look for optional abilities."""
    declared = {name: getattr(task, name, default) for name, default in DECLARED_DEFAULTS.items()}
    read_fields = _method(task, "read_fields")
    return Roles(
        compute_loss=_method(task, "compute_loss"),
        finish_features=_method(task, "finish_features"),
        input_fields=tuple(getattr(task, "input_fields", ()) or ()),
        read_fields=read_fields,
        prediction_text=_method(task, "prediction_text"),
        read_messages=_method(task, "read_messages"),
        resolve_model=_method(task, "resolve_model"),
        gold_predictions=_method(task, "gold_predictions"),
        train_metrics=_method(task, "train_metrics"),
        generation_plan=_method(task, "generation_plan"),
        metric_directions=declared["metric_directions"],
        long_inputs=declared["long_inputs"] or "truncate",
        prediction_files=tuple(name for name in (getattr(task, "predictions_file", None),
                                                 *(declared["extra_prediction_files"] or ())) if name),
    )


def metric_direction(task: Any, name: str) -> str:
    """Whether a higher or a lower value of metric ``name`` is better for ``task``: "higher" or "lower"."""
    try:
        return roles(task).metric_direction(name)
    except ValueError as exc:
        raise ValueError(f"task {type(task).__name__}: {exc}") from None


def feature_report(task: Any) -> dict | None:
    """What ``finish_features`` reported about the data (role ``FinishesFeatures``: the task's
    ``report`` dict, e.g. truncation counts), for ``run_info.json``; None when there is none."""
    return getattr(task, "report", None) or None


def prediction_files(task: Any) -> tuple[str, ...]:
    """Names of the files ``task.write_predictions`` writes: its predictions file and any extras."""
    return roles(task).prediction_files
