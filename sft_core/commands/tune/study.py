"""``sft tune``: a hyperparameter search on Optuna around the one training loop.

Each trial is an ordinary run (``api.train_config``, what ``sft run`` calls) in
``STUDY/trials/trial-NNNN`` with the trial's values layered over the recipe, trained on part of
data.train and scored on the rest (``data.validation_fraction`` set to ``tune.validation_fraction``,
drawn with ``tune.seed``); data.eval is never read by a trial. A hook reports every evaluation to the trial and ends a trial the pruner gives up on,
as early stopping would. The best values are then retrained on the whole of data.train, evaluated
once on data.eval (``STUDY/best``), and written to ``best.yaml``.

The study lives in ``STUDY/study.db`` (SQLite). Started again after a crash or ``kill -9``, the same
study continues: finished trials are kept, the trial that was running is marked failed
(``interrupted``) and run again with the same values. A trial that raises (say, out of memory) is
recorded as failed and the search goes on; an error the user must fix (a missing file, a bad
config) stops it.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any


from ...config import TUNE_KEY, build_config, read_yaml_mapping
from ...engine.files import write_text as write_text_atomic
from ...errors import ConfigError, SFTError, TrainingInterrupted
from ...host.hookspecs import hookimpl
from ..study_folder import BEST_YAML, DB_FILE, FINAL_FILE, IMPORTANCE_FILE, SETTINGS_FILE, STUDY_NAME, TRIALS_CSV
from .space import TuneSettings, check_space, parse_tune, suggest



def _say(text: str) -> None:
    print(f"sft tune: {text}", file=sys.stderr, flush=True)


def _tune_section(config_files: list[str], overrides: list[str]) -> tuple[dict, str]:
    """The merged ``tune`` sections of the config files (later files win key by key) with the
    ``tune.*`` overrides applied, and a name for errors."""
    from ...config import parse_override

    section: dict = {}
    where = "config"
    for path in config_files:
        data = read_yaml_mapping(path).get(TUNE_KEY)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: tune must be a mapping of settings, got {type(data).__name__}")
        space = {**(section.get("space") or {}), **(data.get("space") or {})}
        section = {**section, **data, "space": space}
        where = f"config file {path}"
    for text in overrides:
        key, value = parse_override(text)
        name = key[len(TUNE_KEY) + 1:]
        if name.startswith("space."):
            section.setdefault("space", {})[name[len("space."):]] = value
        else:
            section[name] = value
        where = f"{where} and overrides"
    return section, where


def _optuna():
    try:
        import optuna
    except ImportError:
        raise SFTError("sft tune needs optuna: pip install 'sft-core[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class _TrialReporter:
    """The hook that reports each evaluation of a trial's run to Optuna and asks the run to stop
    when the pruner says so."""

    def __init__(self, trial, metric: str, prune: bool):
        self.trial, self.metric, self.prune = trial, metric, prune
        self.last: dict | None = None
        self.pruned_at: int | None = None

    @hookimpl
    def sft_evaluate_end(self, config, state, metrics):
        if self.metric not in metrics:
            return  # the run itself fails: metric_for_best is this metric
        self.last = dict(metrics)
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            return
        # examples trained on so far: the same point of training for every batch size
        self.trial.report(value, step=int(state.samples_seen))
        if self.prune and self.trial.should_prune():
            self.pruned_at = int(state.samples_seen)
            state.stop_reason = f"trial {self.trial.number} pruned after {state.samples_seen} examples " \
                                f"({self.metric} {value:.4f})"


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def tune(config_files: list[str], trials: int | None = None, timeout_minutes: float | None = None,
         study_dir: str | None = None, overrides: list[str] | tuple = (), host=None) -> dict:
    """Run (or continue) the study of the recipe ``config_files``; returns the summary ``sft tune`` prints."""
    from ...api import _host, check_data_files, run_config

    host = _host(host)
    overrides = list(overrides)
    tune_overrides = [o for o in overrides if o.partition("=")[0].strip().startswith(f"{TUNE_KEY}.")]
    run_overrides = [o for o in overrides if o not in tune_overrides]
    section, where = _tune_section(list(config_files), tune_overrides)
    settings = parse_tune(section, where)
    if trials is not None:
        settings.trials = trials
    if timeout_minutes is not None:
        settings.timeout_minutes = timeout_minutes
    if settings.trials is None:
        raise ConfigError("how many trials? give --trials N or tune.trials in the recipe")
    if settings.trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {settings.trials}")
    base = run_config(config=list(config_files), overrides=run_overrides, host=host, source="sft tune")
    spec = host.get_task(base.task)
    base_dict = base.to_dict()
    check_space(settings, spec, [("recipe", base_dict)])
    if base.data.eval is None:
        raise ConfigError("the recipe has no data.eval: the best settings are evaluated on it once the search ends")
    check_data_files(base)
    from ...task import roles

    task = spec.factory(base)
    metric = settings.metric or base.trainer.metric_for_best or task.main_metric
    declared = roles(task).metric_directions
    if declared and metric not in declared:
        raise ConfigError(f"tune.metric={metric!r} is not a metric of task {base.task!r}; "
                          f"known: {', '.join(sorted(declared))}")
    direction = roles(task).metric_direction(metric)
    folder = Path(study_dir or f"{base.output_dir.rstrip('/')}-tune")
    _check_study_folder(folder, base_dict, settings, metric, direction)

    optuna = _optuna()
    from optuna.trial import TrialState

    folder.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(folder / DB_FILE).resolve()}"
    # a restart reseeds with the number of trials so far, so that it does not draw the first run's values again
    existing = _count_trials(optuna, storage)
    sampler = optuna.samplers.TPESampler(seed=settings.seed + existing, n_startup_trials=settings.startup_trials)
    prune_after = settings.startup_trials if settings.pruner_startup_trials is None else settings.pruner_startup_trials
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=prune_after, n_warmup_steps=0)
              if settings.pruner == "median" else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner,
                                direction="maximize" if direction == "higher" else "minimize", load_if_exists=True)
    _recover_interrupted(study, TrialState)

    def finished() -> int:
        return sum(1 for t in study.get_trials(deepcopy=False)
                   if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                   or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted")))

    done = finished()
    if done:
        _say(f"continuing the study in {folder}: {done} of {settings.trials} trials finished")
    deadline = time.monotonic() + settings.timeout_minutes * 60 if settings.timeout_minutes else None
    while finished() < settings.trials:
        if deadline is not None and time.monotonic() >= deadline:
            _say(f"time limit of {settings.timeout_minutes:g} minutes reached: no new trial started "
                 f"({finished()} of {settings.trials} finished)")
            break
        trial = study.ask()
        try:
            _run_trial(study, trial, TrialState, settings, spec, base, base_dict, metric, folder, host)
        finally:
            write_trials_csv(study, settings, folder / TRIALS_CSV)
    write_trials_csv(study, settings, folder / TRIALS_CSV)  # also when no trial ran (a restart marks interrupted ones)

    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        raise SFTError(f"no trial of the study in {folder} completed (see {folder / TRIALS_CSV}); nothing to retrain")
    best = study.best_trial
    best_config = build_config(spec, [("recipe", base_dict), (f"best trial {best.number}", {
        **best.params, **_length_rule(base, best.params), "trainer.eval_every": 0})])
    header = (f"# Found by `sft tune` (study {folder}): trial {best.number} of {len(study.trials)}, {metric} "
              f"{best.value:.4f} on the validation split (tune.validation_fraction={settings.validation_fraction},"
              f" tune.seed={settings.seed}).\n# Evaluated once, at the end of training (trainer.eval_every: 0).\n")
    write_text_atomic(folder / BEST_YAML, header + best_config.to_yaml())
    _write_importance(optuna, study, folder / IMPORTANCE_FILE)

    final = _retrain(best, best_config, folder, host, metric, settings)
    summary = {"study_dir": str(folder), "trials": len(study.trials), "metric": metric, "direction": direction,
               "states": {s: sum(1 for t in study.trials if t.state.name.lower() == s)
                          for s in ("complete", "pruned", "fail")},
               "best_trial": best.number, "best_validation": best.value, "best_params": best.params,
               "eval": final["eval"], "best_yaml": str(folder / BEST_YAML)}
    host.hook.sft_study_end(study_dir=folder)  # e.g. the report plugin writes report.html
    return summary


def _check_study_folder(folder: Path, base_dict: dict, settings: TuneSettings, metric: str, direction: str) -> None:
    """A study folder is continued only with the recipe and search it was started with."""
    recorded = {"config": {k: v for k, v in base_dict.items() if k != "output_dir"},
                "tune": {k: v for k, v in settings.to_dict().items() if k not in ("trials", "timeout_minutes")}}
    path = folder / SETTINGS_FILE
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        now = json.loads(json.dumps(recorded))  # as JSON reads it back (tuples as lists)
        changed = sorted({*_diff_keys(before.get("config", {}), now["config"], ""),
                          *_diff_keys(before.get("tune", {}), now["tune"], "tune.")})
        if changed:
            raise ConfigError(f"the study in {folder} was started with other settings ({', '.join(changed[:5])} "
                              "differ): give another --study-dir, or remove that folder to start again")
        return
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not a study folder of sft tune (no {SETTINGS_FILE}); "
                          "give another --study-dir")
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({**recorded, "metric": metric, "direction": direction}, indent=2, sort_keys=True))


def _diff_keys(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in {*a, *b}:
            out += _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _count_trials(optuna, storage: str) -> int:
    try:
        return len(optuna.load_study(study_name=STUDY_NAME, storage=storage).trials)
    except KeyError:  # a new study
        return 0


def _recover_interrupted(study, TrialState) -> None:
    """Trials left running by a process that died: failed (interrupted), their values queued again."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study.tell(t.number, state=TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        _say(f"trial {t.number} was interrupted: recorded as failed, its values queued to run again")


def _length_rule(base, values: dict) -> dict:
    """A trial that sets trainer.epochs or trainer.max_steps trains that long, as `sft run` would:
    the recipe's small-data rule (trainer.min_steps from sft's default) is off for it."""
    sets_length = "trainer.epochs" in values or "trainer.max_steps" in values
    return {"trainer.min_steps": 0} if sets_length and base.is_default("trainer.min_steps") else {}


def _run_trial(study, trial, TrialState, settings: TuneSettings, spec, base, base_dict: dict, metric: str,
               folder: Path, host) -> None:
    from ...api import train_config

    values = suggest(trial, settings)
    # a trial evaluates at least at the end of every epoch, so that the pruner sees it progress
    eval_every = base_dict["trainer"].get("eval_every") or None
    trial_dir = folder / "trials" / f"trial-{trial.number:04d}"
    described = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    start = time.monotonic()
    try:
        config = build_config(spec, [("recipe", base_dict), (f"trial {trial.number}", {
            **values, **_length_rule(base, values), "output_dir": str(trial_dir), "data.eval": None, "data.validation_fraction":
            settings.validation_fraction, "data.validation_seed": settings.seed, "trainer.save_every": 0,
            "trainer.eval_every": eval_every,
            "trainer.report": False, "trainer.metric_for_best": metric})])
    except ConfigError as exc:  # this combination of values is invalid: the others may not be
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        _say(f"trial {trial.number}: {described}: invalid config, recorded as failed: {exc}")
        return
    _say(f"trial {trial.number}: {described}")
    reporter = _TrialReporter(trial, metric, settings.pruner != "none")
    name = f"sft-tune-trial-{trial.number}"
    host.pm.register(reporter, name=name)
    try:
        result = train_config(config, host, overwrite=True)
    except (TrainingInterrupted, KeyboardInterrupt):
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        raise
    except SFTError as exc:  # the same for every trial (a data file, a config key): stop the search
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:  # e.g. out of memory for these values: recorded, the search goes on
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
        trial.set_user_attr("seconds", round(time.monotonic() - start, 1))
        study.tell(trial, state=TrialState.FAIL)
        _say(f"trial {trial.number} failed ({type(exc).__name__}: {str(exc)[:200]}); recorded, the study goes on")
        _free_memory()
        return
    finally:
        host.pm.unregister(name=name)
    trial.set_user_attr("seconds", round(time.monotonic() - start, 1))
    trial.set_user_attr("folder", str(trial_dir))
    trial.set_user_attr("train_samples_per_second", result["train"].get("train_samples_per_second"))
    for sub in ("model", "checkpoints"):  # a trial's weights are not kept: its logs and results are
        shutil.rmtree(trial_dir / sub, ignore_errors=True)
    if reporter.last is None:
        trial.set_user_attr("error", "the trial's run never evaluated")
        study.tell(trial, state=TrialState.FAIL)
        _say(f"trial {trial.number}: no evaluation; recorded as failed")
        return
    trial.set_user_attr("metrics", {k: v for k, v in reporter.last.items() if isinstance(v, (int, float))})
    value = float(reporter.last[metric])
    # pruned at its last evaluation, a trial has run its whole schedule: it counts as complete
    if reporter.pruned_at is not None and result["train"].get("status") != "completed":
        trial.set_user_attr("pruned_at", reporter.pruned_at)
        study.tell(trial, state=TrialState.PRUNED)
        _say(f"trial {trial.number}: pruned after {reporter.pruned_at} examples ({metric} {value:.4f})")
        return
    if not math.isfinite(value):
        trial.set_user_attr("error", f"{metric} is {value}")
        study.tell(trial, state=TrialState.FAIL)
        return
    # the trial's score is its last evaluation: the model its whole schedule gives, as the retrain's is
    study.tell(trial, value)
    _say(f"trial {trial.number}: {metric} {value:.4f} on the validation split "
         f"({trial.user_attrs['seconds']:.0f} s; best so far {study.best_value:.4f}, trial {study.best_trial.number})")


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _retrain(best, best_config, folder: Path, host, metric: str, settings: TuneSettings) -> dict:
    """The best values trained on all of data.train, evaluated once on data.eval (``STUDY/best``)."""
    from ...api import train_config

    final_path = folder / FINAL_FILE
    if final_path.is_file():
        final = json.loads(final_path.read_text(encoding="utf-8"))
        if final.get("best_trial") == best.number and final.get("params") == best.params:
            _say(f"the best settings (trial {best.number}) were retrained already: {folder / 'best'}")
            return final
    best_config.output_dir = str(folder / "best")
    _say(f"retraining trial {best.number}'s settings on all of data.train, evaluating once on {best_config.data.eval}")
    result = train_config(best_config, host, overwrite=True)
    final = {"best_trial": best.number, "params": best.params, "validation": {metric: best.value},
             "eval": result["eval"], "train": result["train"], "run_dir": str(folder / "best")}
    write_text_atomic(final_path, json.dumps(final, indent=2))
    return final


def write_trials_csv(study, settings: TuneSettings, path: Path) -> None:
    names = list(settings.space)
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": "" if t.value is None else t.value,
                     **{n: t.params.get(n, "") for n in names},
                     "seconds": t.user_attrs.get("seconds", ""), "pruned_at": t.user_attrs.get("pruned_at", ""),
                     "retry_of": t.user_attrs.get("retry_of", ""),
                     "interrupted": "yes" if t.user_attrs.get("interrupted") else "",
                     "error": t.user_attrs.get("error", "")})
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=["number", "state", "value", *names, "seconds", "pruned_at",
                                              "retry_of", "interrupted", "error"])
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def _write_importance(optuna, study, path: Path) -> None:
    """How much each parameter explains the completed trials' scores (fANOVA, Optuna's default;
    PED-ANOVA when scikit-learn is missing). Needs two completed trials and a varied parameter."""
    import importlib.util

    from optuna.trial import TrialState

    if sum(t.state == TrialState.COMPLETE for t in study.trials) < 2:
        return
    if importlib.util.find_spec("sklearn") is not None:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    else:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        importance = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as exc:  # e.g. every completed trial drew the same values
        _say(f"parameter importance not computed: {exc}")
        return
    write_text_atomic(path, json.dumps({"method": type(evaluator).__name__, "importance": importance}, indent=2))
