"""The ``tune:`` section of a recipe: the search space and the study's settings, checked in full
before any trial runs. No Optuna here: a bad section fails without it.

    tune:
      trials: 20                    # default budget of `sft tune` (--trials wins)
      timeout_minutes: 60           # start no trial after this (--timeout-minutes wins)
      validation_fraction: 0.2      # trials train on the rest of data.train and are scored on this part
      metric: accuracy              # default: trainer.metric_for_best, else the task's main metric
      seed: 0                       # the sampler's seed and the validation split's
      space:
        trainer.lr: {log_uniform: [1.0e-5, 3.0e-4]}
        trainer.epochs: {choice: [3, 5, 10]}
        trainer.warmup_ratio: {uniform: [0.0, 0.2]}
        trainer.seed: {int_uniform: [0, 99]}
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from ...config import build_config, known_keys
from ...errors import ConfigError, SFTError

DISTRIBUTIONS = ("log_uniform", "uniform", "int_uniform", "choice")
SETTINGS = ("space", "trials", "timeout_minutes", "validation_fraction", "metric", "seed", "pruner",
            "startup_trials", "pruner_startup_trials")
PRUNERS = ("median", "none")


@dataclass(frozen=True)
class Param:
    """One searched key: ``kind`` is one of DISTRIBUTIONS; ``low``/``high`` bound the ranges,
    ``choices`` lists a choice's values."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()

    def describe(self) -> dict:
        return {self.kind: list(self.choices) if self.kind == "choice" else [self.low, self.high]}


@dataclass
class TuneSettings:
    space: dict[str, Param] = field(default_factory=dict)
    trials: int | None = None
    timeout_minutes: float | None = None
    validation_fraction: float = 0.2
    metric: str | None = None
    seed: int = 0
    pruner: str = "median"  # median: stop a trial whose score falls below the median of earlier trials at that point
    startup_trials: int = 5  # trials sampled at random before TPE takes over
    pruner_startup_trials: int | None = None  # trials completed before the pruner stops any (None: startup_trials)

    def to_dict(self) -> dict:
        return {"space": {name: p.describe() for name, p in self.space.items()}, "trials": self.trials,
                "timeout_minutes": self.timeout_minutes, "validation_fraction": self.validation_fraction,
                "metric": self.metric, "seed": self.seed, "pruner": self.pruner, "startup_trials": self.startup_trials,
                "pruner_startup_trials": self.pruner_startup_trials}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _to_number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` (no dot) as a string: accept numbers written that way."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_param(name: str, spec: Any, where: str) -> Param:
    """One ``tune.space`` entry, e.g. ``{log_uniform: [1e-5, 3e-4]}``."""
    key = f"{where}: tune.space.{name}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{key}: expected one of {', '.join(DISTRIBUTIONS)} with its values, "
                          f"e.g. {{log_uniform: [1.0e-5, 3.0e-4]}} or {{choice: [16, 32]}}; got {spec!r}")
    (kind, values), = spec.items()
    if kind not in DISTRIBUTIONS:
        close = difflib.get_close_matches(str(kind), DISTRIBUTIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: unknown distribution {kind!r}{hint}; known: {', '.join(DISTRIBUTIONS)}")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{key}.{kind}: expected a list, got {values!r}")
    if kind == "choice":
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{key}.choice: the values repeat: {values!r}")
        if not all(v is None or isinstance(v, (str, int, float, bool)) for v in values):
            raise ConfigError(f"{key}.choice: values must be numbers, strings or booleans, got {values!r}")
        return Param(name, kind, choices=tuple(values))
    values = [_to_number(v) for v in values]
    if len(values) != 2 or not all(_number(v) for v in values):
        raise ConfigError(f"{key}.{kind}: expected [low, high] (two numbers), got {values!r}")
    low, high = values
    if not low < high:
        raise ConfigError(f"{key}.{kind}: low must be below high, got [{low}, {high}]")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{key}.log_uniform: the range must be positive (a log scale), got [{low}, {high}]")
    if kind == "int_uniform":
        if low != int(low) or high != int(high):
            raise ConfigError(f"{key}.int_uniform: expected whole numbers, got [{low}, {high}]")
        low, high = int(low), int(high)
    else:
        low, high = float(low), float(high)
    return Param(name, kind, low, high)


def parse_tune(section: Any, where: str) -> TuneSettings:
    """The ``tune`` mapping of a config file (``where`` names it in errors) as TuneSettings."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: tune must be a mapping of settings, got {type(section).__name__}")
    for key in section:
        if key not in SETTINGS:
            close = difflib.get_close_matches(str(key), SETTINGS, n=1, cutoff=0.6)
            hint = f" (did you mean 'tune.{close[0]}'?)" if close else f"; known: {', '.join('tune.' + s for s in SETTINGS)}"
            raise ConfigError(f"{where}: unknown config key 'tune.{key}'{hint}")
    settings = TuneSettings()
    space = section.get("space") or {}
    if not isinstance(space, dict):
        raise ConfigError(f"{where}: tune.space must map config keys to distributions, got {space!r}")
    settings.space = {str(name): parse_param(str(name), spec, where) for name, spec in space.items()}
    for key, kind in (("trials", int), ("timeout_minutes", float), ("validation_fraction", float), ("seed", int),
                                      ("startup_trials", int), ("pruner_startup_trials", int)):
        if section.get(key) is None:
            continue
        value = _to_number(section[key])
        if not _number(value) or (kind is int and value != int(value)):
            raise ConfigError(f"{where}: tune.{key} must be {'a whole number' if kind is int else 'a number'}, "
                              f"got {section[key]!r}")
        setattr(settings, key, kind(value))
    if settings.trials is not None and settings.trials < 1:
        raise ConfigError(f"{where}: tune.trials must be at least 1, got {settings.trials}")
    if settings.timeout_minutes is not None and settings.timeout_minutes <= 0:
        raise ConfigError(f"{where}: tune.timeout_minutes must be positive, got {settings.timeout_minutes}")
    if not 0 < settings.validation_fraction < 1:
        raise ConfigError(f"{where}: tune.validation_fraction must be between 0 and 1 (the part of data.train "
                          f"held out to score trials), got {settings.validation_fraction}")
    for key in ("startup_trials", "pruner_startup_trials"):
        if (getattr(settings, key) or 0) < 0:
            raise ConfigError(f"{where}: tune.{key} must not be negative, got {getattr(settings, key)}")
    if section.get("metric") is not None:
        settings.metric = str(section["metric"])
    if section.get("pruner") is not None:
        if section["pruner"] not in PRUNERS:
            raise ConfigError(f"{where}: tune.pruner must be one of {', '.join(PRUNERS)}, got {section['pruner']!r}")
        settings.pruner = section["pruner"]
    return settings


def check_space(settings: TuneSettings, spec, layers: list[tuple[str, dict]]) -> None:
    """Every searched key is a config key of the task, and every value the space can take (both
    ends of a range, each choice) gives a valid config: an error names the key before any trial."""
    if not settings.space:
        raise ConfigError("tune.space is empty: give the config keys to search, e.g. "
                          "trainer.lr: {log_uniform: [1.0e-5, 3.0e-4]}")
    keys = known_keys(spec)
    for name, param in settings.space.items():
        if name in ("task", "model", "output_dir") or name.startswith("tune."):
            raise ConfigError(f"tune.space.{name}: {name} cannot be searched")
        if name not in keys:
            close = difflib.get_close_matches(name, keys, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"tune.space.{name}: not a config key of task {spec.name!r}{hint}")
        values = list(param.choices) if param.kind == "choice" else [param.low, param.high]
        for value in values:
            try:
                build_config(spec, [*layers, (f"tune.space.{name}", {name: value})])
            except SFTError as exc:
                raise ConfigError(f"tune.space.{name}: the value {value!r} gives an invalid config: {exc}") from None


def suggest(trial, settings: TuneSettings) -> dict[str, Any]:
    """The values an Optuna trial picks for the space, by config key."""
    values: dict[str, Any] = {}
    for name, p in settings.space.items():
        if p.kind == "log_uniform":
            values[name] = trial.suggest_float(name, p.low, p.high, log=True)
        elif p.kind == "uniform":
            values[name] = trial.suggest_float(name, p.low, p.high)
        elif p.kind == "int_uniform":
            values[name] = trial.suggest_int(name, p.low, p.high)
        else:
            values[name] = trial.suggest_categorical(name, list(p.choices))
    return values
