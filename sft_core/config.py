"""Run configuration: dataclass defaults < --config files < KEY=VALUE overrides < CLI options.

Every layer is checked against the schema of the chosen task: unknown keys fail with a
"did you mean", values are coerced to the declared field types (YAML reads ``3e-5`` as a string),
and the source of a bad key or value is named in the error.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

TOP_LEVEL = ("task", "model", "output_dir")
#: sft's small-data rule: with trainer.epochs and trainer.max_steps left at their defaults, a run
#: takes at least this many optimizer steps (measured: benchmarks/small_data.py)
SMALL_DATA_STEPS = 60
#: The origin of a value no layer set; values whose origin starts with DEFAULT_ORIGINS are defaults.
SFT_DEFAULT = "sft's default"
DEFAULT_ORIGINS = ("sft's ", "defaults of task")
RECIPE_KEY = "bench"  # a benchmark recipe's metadata (reference, budget, quick block): read by `sft bench` only
TUNE_KEY = "tune"  # a recipe's hyperparameter search (space, trials, validation split): read by `sft tune` only
DATA_DIR_ENV = "SFT_DATA_DIR"  # what "{data_dir}" in a config file stands for
DEFAULT_DATA_DIR = "../shared/data"


def cache_root() -> Path:
    """Where sft caches what it derives from data and models: ``$SFT_CACHE_DIR``, else ``~/.cache/sft``."""
    return Path(os.environ.get("SFT_CACHE_DIR") or Path.home() / ".cache" / "sft")


@dataclass
class DataConfig:
    """Where the data comes from. Tasks subclass it to add their own keys (columns, formats)."""

    # one file, or a list of files read one after the other into one training set (e.g. the two
    # files of a split that its publisher cut in two)
    train: str | list[str] | None = None
    eval: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    # set: this fraction of the training examples (drawn with validation_seed) is held out and
    # evaluated instead of data.eval, and the rest trains (`sft tune` scores its trials so)
    validation_fraction: float | None = None
    validation_seed: int = 0


@dataclass
class TrainerConfig:
    """Optimisation, evaluation and checkpointing; the same keys for every task."""

    epochs: float = 3.0
    max_steps: int | None = None  # when set, overrides epochs
    # the fewest optimizer steps a run takes: a small training set trains more epochs to reach it
    # (evaluating and saving every few epochs, as often as trainer.epochs would); None: sft's
    # small-data rule, SMALL_DATA_STEPS when trainer.epochs and trainer.max_steps are both left at
    # their defaults, else 0 (the epochs you set are trained exactly); ignored with max_steps
    min_steps: int | None = None
    max_time_minutes: float | None = None
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None  # when set, overrides warmup_ratio
    # inverse_sqrt decays with the step count alone, so it suits runs bounded by max_time_minutes
    scheduler: Literal["linear", "cosine", "constant", "inverse_sqrt"] = "linear"
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    max_length: int = 128
    seed: int = 42
    eval_every: int | None = None  # steps; None: at the end of each epoch; 0: only at the end
    save_every: int | None = None  # steps; None: at the end of each epoch; 0: no checkpoints
    keep_checkpoints: int = 2
    early_stopping_patience: int | None = None  # evaluations without improvement
    metric_for_best: str | None = None  # None: the task's main metric
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    # recompute each layer's activations in the backward pass instead of keeping them: the same
    # loss and gradients, less memory, about a third more compute
    gradient_checkpointing: bool = False
    # a language-model loss (instruct) computes the output layer and the cross-entropy over chunks of
    # label tokens, never the whole batch's full-vocabulary logits: the same loss and gradients
    chunked_loss: bool = True
    # on CPU (Linux, glibc): freed blocks of 1 MB and more go back to the system at once instead of
    # staying in the allocator's heap: a far lower peak memory, at a cost in speed
    release_memory: bool = False
    # shard weights, gradients and optimizer state over the processes (FSDP2; sft_core/sharding.py)
    fsdp: bool = False
    log_every: int = 10
    group_by_length: bool = True
    report: bool = False  # write report.html (what `sft report RUN` writes) into the run folder at the end

    def check(self) -> None:
        positive = ("batch_size", "eval_batch_size", "grad_accum", "max_length", "log_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"trainer.lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"trainer.warmup_ratio must be between 0 and 1, got {self.warmup_ratio}")
        if self.epochs <= 0 and not self.max_steps:
            raise ConfigError(f"trainer.epochs must be positive, got {self.epochs}")
        for name in ("max_steps", "min_steps", "warmup_steps", "eval_every", "save_every", "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"trainer.{name} must not be negative, got {value}")


@dataclass
class PeftConfig:
    """Parameter-efficient fine-tuning, for every task: LoRA adapters on a frozen backbone (peft)."""

    method: Literal["none", "lora", "qlora"] = "none"  # qlora: LoRA on a 4-bit base (bitsandbytes, CUDA only)
    r: int = 16  # rank of the adapter matrices
    alpha: float = 32.0  # scaling: the adapter's update is multiplied by alpha / r
    dropout: float = 0.05  # dropout on the adapter's input
    # leaf names of the backbone's linear layers to adapt (e.g. [q_proj, v_proj]); null: a default
    # per model family (sft_core/adapters.py), else every linear layer of the backbone
    target_modules: list[str] | None = None
    # modules trained fully next to the adapters; null: the task's head (the model's parts outside
    # the backbone, e.g. classifier or score), found automatically
    modules_to_save: list[str] | None = None
    dora: bool = False  # weight-decomposed LoRA (DoRA, Liu et al. 2024)
    # with adapters, a trainer.lr left at its default (the full fine-tuning rate of the task or sft)
    # is multiplied by this: LoRA learns best at about 10x the full fine-tuning rate (Schulman et
    # al. 2025, "LoRA Without Regret"); a trainer.lr you set is used as it is
    lr_scale: float = 10.0
    # merged: the run's model/ folder holds the adapters merged into the base weights (plain
    # transformers loads it); adapter: adapters (and head) only, the base model named in sft_task.json
    save: Literal["merged", "adapter"] = "merged"

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def check(self) -> None:
        if self.r < 1:
            raise ConfigError(f"peft.r must be at least 1, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"peft.alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"peft.dropout must be in [0, 1), got {self.dropout}")
        if self.lr_scale <= 0:
            raise ConfigError(f"peft.lr_scale must be positive, got {self.lr_scale}")
        if self.target_modules is not None and not self.target_modules:
            raise ConfigError("peft.target_modules is empty; give layer names or null for the default")


@dataclass
class RunConfig:
    task: str
    model: str = "minilm"
    output_dir: str = ""
    data: Any = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    options: Any = None  # the task's own section (a dataclass), or None
    section: str | None = None  # its key, e.g. "ner"
    # where each key's value came from (dotted key -> the layer that set it last: "defaults of task
    # 'ner'", a config file, "command-line options", ...); a key none set keeps sft's default
    origins: dict = field(default_factory=dict, compare=False, repr=False)

    def origin(self, key: str) -> str:
        """Which layer set ``key`` (e.g. "trainer.lr"), or "sft's default"."""
        return self.origins.get(key, SFT_DEFAULT)

    def origin_label(self, key: str) -> str:
        """Where ``key``'s value came from, as a run says it: "your setting", "the task's default",
        "sft's default", "config file X", "command-line options", or a rule's own words."""
        origin = self.origin(key)
        if origin.startswith("override "):
            return "your setting"
        if origin.startswith("defaults of task"):
            return "the task's default"
        return origin

    def is_default(self, key: str) -> bool:
        """Whether no config file, override or option set ``key``."""
        return self.origin(key).startswith(DEFAULT_ORIGINS)

    def to_dict(self) -> dict:
        out = {"task": self.task, "model": self.model, "output_dir": self.output_dir,
               "data": dataclasses.asdict(self.data), "trainer": dataclasses.asdict(self.trainer),
               "peft": dataclasses.asdict(self.peft)}
        if self.section and self.options is not None:
            out[self.section] = dataclasses.asdict(self.options)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --- reading the layers ---------------------------------------------------------------------

def load_config_file(path: str | Path, data_dir: str | None = None) -> dict:
    """One config layer from a YAML file: without its ``bench`` section, ``{data_dir}`` replaced.

    ``{data_dir}`` becomes ``data_dir``, else $SFT_DATA_DIR, else ``../shared/data``.
    """
    data = read_yaml_mapping(path)
    data.pop(RECIPE_KEY, None)
    data.pop(TUNE_KEY, None)
    return expand_data_dir(data, data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def train_files(data) -> list[str | None]:
    """The files of ``data.train`` as a list (``[None]``: the task's built-in sample)."""
    train = data.train
    return list(train) if isinstance(train, list) else [train]


def check_validation_split(config: RunConfig) -> None:
    """data.validation_fraction takes the evaluation examples from data.train: not with data.eval."""
    fraction = config.data.validation_fraction
    if fraction is None:
        return
    if not 0 < fraction < 1:
        raise ConfigError(f"data.validation_fraction must be between 0 and 1 (the part of data.train held out "
                          f"to evaluate), got {fraction}")
    if config.data.eval is not None:
        raise ConfigError(f"data.validation_fraction={fraction} evaluates on part of data.train, and data.eval is "
                          f"{config.data.eval}: give one of the two (data.eval=null to use the held-out part)")


def expand_data_dir(value: Any, data_dir: str) -> Any:
    """``value`` with every ``{data_dir}`` in its strings (at any depth) replaced by ``data_dir``."""
    if isinstance(value, str):
        return value.replace("{data_dir}", str(data_dir).rstrip("/") or "/")
    if isinstance(value, dict):
        return {k: expand_data_dir(v, data_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_data_dir(v, data_dir) for v in value]
    return value


def read_yaml_mapping(path: str | Path) -> dict:
    """The YAML file at ``path`` as a dict (empty for an empty file), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. trainer.lr=3e-5)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
        if "#" in value and _yaml_drops_text(value):
            parsed = value  # YAML reads "#" as a comment: a value typed on the command line is kept whole
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _yaml_drops_text(value: str) -> bool:
    """Whether YAML reads part of ``value`` as a comment (``#1 String`` -> null, ``a #b`` -> "a")."""
    tokens = [t for t in yaml.scan(value) if not isinstance(t, (yaml.StreamStartToken, yaml.StreamEndToken))]
    return max((t.end_mark.index for t in tokens), default=0) < len(value.rstrip())


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in TOP_LEVEL:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# --- schema and coercion --------------------------------------------------------------------

def _schema(spec) -> dict[str, type]:
    """Section name -> dataclass for the given task spec."""
    sections = {"data": spec.data_config or DataConfig, "trainer": TrainerConfig, "peft": PeftConfig}
    if spec.config is not None:
        sections[spec.section] = spec.config
    return sections


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise a ConfigError naming ``key`` and ``source``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail():
        raise ConfigError(f"{source}: invalid value for {key}: {value!r} (expected {_type_name(tp)})")

    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            if type(None) in args:
                return None
            fail()
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, source)
            except ConfigError:
                continue
        fail()
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        if isinstance(value, bool):  # YAML 1.1 reads a bare no/off/yes/on as a bool: map it back
            words = ("yes", "on", "true") if value else ("no", "off", "false")
            spelled = [a for a in args if isinstance(a, str) and a.lower() in words]
            if len(spelled) == 1:
                return spelled[0]
        fail()
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            fail()
        inner = args[0] if args else Any
        return [coerce(v, inner, key, source) for v in value] if inner is not Any else list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            fail()
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.strip().lower() in ("true", "yes", "1", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        fail()
    if tp is int:
        if isinstance(value, bool):
            fail()
        if isinstance(value, int):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            fail()
        if number != int(number):
            fail()
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            fail()
        try:
            return float(value)
        except (TypeError, ValueError):
            fail()
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            fail()
        return str(value)
    return value


def known_keys(spec) -> list[str]:
    keys = list(TOP_LEVEL)
    for section, cls in _schema(spec).items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def _apply(values: dict, flat: dict[str, Any], spec, source: str, origins: dict | None = None) -> None:
    """Check and coerce one layer of flat dotted keys into ``values`` (section -> field -> value);
    ``origins`` records ``source`` for each key set."""
    sections = _schema(spec)
    keys = known_keys(spec)
    for key, value in flat.items():
        if origins is not None:
            origins[key] = source
        if key in TOP_LEVEL:
            if value is not None and not isinstance(value, (str, int, float)):
                raise ConfigError(f"{source}: invalid value for {key}: {value!r} (expected a string)")
            values[key] = None if value is None else str(value)
            continue
        section, _, name = key.partition(".")
        cls = sections.get(section)
        field_name, dot, inner = name.partition(".")
        if dot and cls is not None and _field_types(cls).get(field_name) in (dict, typing.Any):
            # a mapping-valued key (e.g. data.verbalizer) was flattened: nest it back
            target = values.setdefault(section, {}).setdefault(field_name, {})
            *parents, last = inner.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[last] = value
            continue
        if cls is None or name not in {f.name for f in dataclasses.fields(cls)}:
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
            if not close:  # try the field name alone, e.g. "lr" -> "trainer.lr"
                close = [k for k in keys if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:1]
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known sections: {', '.join(['task', 'model', 'output_dir', *sections])}"
            raise ConfigError(f"{source}: unknown config key {key!r}{hint}")
        values.setdefault(section, {})[name] = coerce(value, _field_types(cls)[name], key, source)


def build_config(spec, layers: list[tuple[str, dict]]) -> RunConfig:
    """Resolve the config of task ``spec`` from ``layers`` of (source name, nested or flat dict)."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    _apply(values, flatten(spec.defaults), spec, f"defaults of task {spec.name!r}", origins)
    for source, layer in layers:
        _apply(values, flatten(layer), spec, source, origins)
    sections = {name: cls(**values.get(name, {})) for name, cls in _schema(spec).items()}
    config = RunConfig(
        task=spec.name,
        model=values.get("model") or "minilm",
        output_dir=values.get("output_dir") or f"runs/{spec.name}",
        data=sections["data"],
        trainer=sections["trainer"],
        peft=sections["peft"],
        options=sections.get(spec.section),
        section=spec.section if spec.config is not None else None,
        origins=origins,
    )
    for part in (config.data, config.trainer, config.peft, config.options):
        if hasattr(part, "check"):
            part.check()
    _resolve_rules(config)
    check_validation_split(config)  # here, not in DataConfig.check: tasks override that without calling it
    return config


def _resolve_rules(config: RunConfig) -> None:
    """The defaults that depend on other settings, resolved into plain values (so that the saved
    config.yaml trains the same run again, and a resume continues it exactly):

    - trainer.min_steps None: SMALL_DATA_STEPS when trainer.epochs and trainer.max_steps are both
      defaults, else 0;
    - with adapters, a default trainer.lr times peft.lr_scale.
    """
    trainer, origins = config.trainer, config.origins
    if trainer.min_steps is None:
        if config.is_default("trainer.epochs") and config.is_default("trainer.max_steps"):
            trainer.min_steps, origins["trainer.min_steps"] = SMALL_DATA_STEPS, "sft's small-data rule"
        else:
            trainer.min_steps, origins["trainer.min_steps"] = 0, "sft's small-data rule, off: you set the length of training"
    if config.peft.enabled and config.is_default("trainer.lr") and config.peft.lr_scale != 1:
        full = trainer.lr
        trainer.lr = float(f"{full * config.peft.lr_scale:.6g}")
        origins["trainer.lr"] = (f"{config.origin_label('trainer.lr')} {full:g} x "
                                 f"peft.lr_scale {config.peft.lr_scale:g} for adapters")


def config_from_dict(spec, data: dict, source: str = "saved config") -> RunConfig:
    return build_config(spec, [(source, data)])
