"""What a report is drawn from: the files ``sft run`` writes into a run folder (config.yaml,
run_info.json, metrics.jsonl, eval_results.json, the predictions) and those ``sft tune`` writes
into a study folder. Plain Python: no matplotlib here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ...errors import SFTError

#: evaluation figures that are not metrics (how much was evaluated, how fast)
NOT_METRICS = ("samples", "runtime", "samples_per_second", "step")


@dataclass
class RunData:
    path: Path
    name: str
    config: dict = field(default_factory=dict)
    run_info: dict = field(default_factory=dict)
    eval_results: dict | None = None
    train_results: dict | None = None
    train_log: list[dict] = field(default_factory=list)  # {"step", "loss", "lr", "samples_per_second"}
    evals: list[dict] = field(default_factory=list)  # {"step", "train_seconds", metric: value, ...}
    events: list[dict] = field(default_factory=list)
    predictions: list[dict] | None = None  # the records of predictions.jsonl, when the task writes JSONL
    notes: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return str(self.config.get("task") or "?")

    def metric_names(self) -> list[str]:
        names: list[str] = []
        for record in self.evals:
            names += [k for k in record if k not in ("step", "train_seconds", "epoch", "time") and k not in names]
        if not names and self.eval_results:
            names = [k for k, v in self.eval_results.items() if _is_metric(k) and _is_number(v)]
        return names

    def final_metrics(self) -> dict[str, float]:
        """The run's result: eval_results.json, else its last evaluation."""
        source = self.eval_results if self.eval_results else (self.evals[-1] if self.evals else {})
        return {k: float(v) for k, v in source.items() if _is_metric(k) and _is_number(v)}


def _is_metric(key: str) -> bool:
    name = key[len("eval_"):] if key.startswith("eval_") else key
    return name not in NOT_METRICS and name not in ("train_seconds", "epoch", "time")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SFTError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None


def read_metrics_log(path: Path) -> tuple[list[dict], list[dict], list[dict], list[str]]:
    """(training records, evaluation records, events, notes) of a metrics.jsonl. A cut-off last
    line (a run killed while writing it) is left out with a note; a bad line elsewhere is an error."""
    train, evals, events, notes = [], [], [], []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                notes.append(f"{path}: the last line ({number}) is cut off and was left out")
                continue
            raise SFTError(f"{path} line {number}: not a JSON record ({exc.msg})") from None
        if not isinstance(record, dict):
            raise SFTError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
        if "event" in record:
            events.append(record)
        elif any(k.startswith("eval_") for k in record):
            entry = {"step": record.get("step"), "train_seconds": record.get("train_seconds")}
            for key, value in record.items():
                name = key[len("eval_"):] if key.startswith("eval_") else None
                if name and name not in NOT_METRICS and _is_number(value):
                    entry[name] = float(value)
            evals.append(entry)
        elif "loss" in record and "step" in record:
            train.append(record)
    return train, evals, events, notes


def is_run_folder(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() or (path / "config.yaml").is_file()


def read_run(path: Path, name: str | None = None) -> RunData:
    path = Path(path)
    if not path.is_dir():
        raise SFTError(f"{path}: no such folder (give run folders written by `sft run`, or a study folder of `sft tune`)")
    if not is_run_folder(path):
        raise SFTError(f"{path} is not a run folder of sft (no metrics.jsonl or config.yaml) nor a study folder "
                       "of sft tune (no study.json)")
    run = RunData(path=path, name=name or path.name)
    config_path = path / "config.yaml"
    if config_path.is_file():
        try:
            run.config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise SFTError(f"{config_path}: invalid YAML ({exc})") from None
    run.run_info = _read_json(path / "run_info.json") or {}
    run.eval_results = _read_json(path / "eval_results.json")
    run.train_results = _read_json(path / "train_results.json")
    if (path / "metrics.jsonl").is_file():
        run.train_log, run.evals, run.events, run.notes = read_metrics_log(path / "metrics.jsonl")
    else:
        run.notes.append(f"{path}: no metrics.jsonl: no curves")
    predictions = path / "predictions.jsonl"
    if predictions.is_file():
        records = []
        for line in predictions.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                records = None  # not the task's JSONL records: no confusion matrix from it
                break
        run.predictions = records
    return run


def flat_config(config: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing_settings(runs: list[RunData]) -> list[str]:
    """The config keys whose values are not the same in every run (output_dir aside)."""
    flats = [flat_config(r.config) for r in runs]
    keys = sorted({k for f in flats for k in f} - {"output_dir"})
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]


def unique_names(paths: list[Path]) -> list[str]:
    """Short labels for the runs: folder names, with parents added where two would be the same."""
    names = [p.name or str(p) for p in paths]
    for depth in range(2, 6):
        if len(set(names)) == len(names):
            break
        names = ["/".join(p.parts[-depth:]) for p in paths]
    return names
