"""``sft tune``: the search space is checked before any trial; trials never read the evaluation
set; pruning stops a trial through the evaluation hook; a failed trial is recorded and the study
goes on; a study killed with SIGKILL continues without running a finished trial again."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import yaml

from sft_core import hookimpl
from sft_core.errors import ConfigError, DataError, SFTError
from sft_core.host.manager import PluginHost
from sft_core.engine.run import split_holdout
from sft_core.commands.tune import tune
from sft_core.commands.tune.space import parse_tune

from conftest import plugins_env
from helpers import install_distribution, sft, train_tiny, write_cue_classification

pytest.importorskip("optuna")

TRAIN, EVAL = 160, 40


def recipe(tmp_path: Path, model: str, space: dict, n_train: int = TRAIN, **tune_settings) -> Path:
    """A classification recipe on the cue data with a ``tune:`` section: a trial trains 4 epochs of
    15 steps on 120 examples (the tiny model needs about 60 steps at 3e-3 to learn the cue)."""
    train, evaluation = write_cue_classification(tmp_path / "data", n_train=n_train, n_eval=EVAL)
    config = {"task": "classification", "model": model, "output_dir": str(tmp_path / "run"),
              "data": {"train": str(train), "eval": str(evaluation)},
              "trainer": {"epochs": 4, "batch_size": 8, "eval_batch_size": 32, "max_length": 32, "lr": 3e-3},
              "tune": {"seed": 0, "validation_fraction": 0.25, **tune_settings, "space": space}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def trials_csv(study: Path) -> list[dict]:
    with (study / "trials.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- the search space -------------------------------------------------------------------------

@pytest.mark.parametrize("section, message", [
    ({"trails": 3}, "unknown config key 'tune.trails' (did you mean 'tune.trials'?)"),
    ({"space": {"trainer.lr": {"log_normal": [1e-5, 1e-3]}}}, "unknown distribution 'log_normal' (did you mean 'log_uniform'?)"),
    ({"space": {"trainer.lr": {"log_uniform": [0, 1e-3]}}}, "the range must be positive"),
    ({"space": {"trainer.lr": {"uniform": [1e-3, 1e-5]}}}, "low must be below high"),
    ({"space": {"trainer.lr": {"uniform": [1e-5]}}}, "expected [low, high]"),
    ({"space": {"trainer.epochs": {"choice": []}}}, "expected a list"),
    ({"space": {"trainer.epochs": {"choice": [3, 3]}}}, "the values repeat"),
    ({"space": {"trainer.epochs": {"int_uniform": [1, 2.5]}}}, "expected whole numbers"),
    ({"space": {"trainer.lr": [1e-5, 1e-3]}}, "expected one of log_uniform, uniform, int_uniform, choice"),
    ({"validation_fraction": 1.2}, "tune.validation_fraction must be between 0 and 1"),
    ({"trials": 0}, "tune.trials must be at least 1"),
    ({"pruner": "hyperband"}, "tune.pruner must be one of median, none"),
])
def test_a_bad_tune_section_is_one_line_naming_the_key(section, message):
    with pytest.raises(ConfigError) as caught:
        parse_tune(section, "config file r.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("config file r.yaml: ")


def test_the_space_parses_numbers_yaml_reads_as_strings():
    settings = parse_tune({"space": {"trainer.lr": {"log_uniform": ["1e-5", "3e-4"]},
                                     "trainer.batch_size": {"choice": [16, 32]}}, "seed": 3}, "x")
    lr = settings.space["trainer.lr"]
    assert (lr.kind, lr.low, lr.high) == ("log_uniform", 1e-5, 3e-4)
    assert settings.space["trainer.batch_size"].choices == (16, 32)
    assert settings.seed == 3 and settings.validation_fraction == 0.2


@pytest.mark.parametrize("space, message", [
    ({"trainer.lrr": {"log_uniform": [1e-5, 1e-3]}}, "tune.space.trainer.lrr: not a config key of task 'classification' "
                                                      "(did you mean 'trainer.lr'?)"),
    ({"trainer.warmup_ratio": {"uniform": [0.0, 1.5]}}, "tune.space.trainer.warmup_ratio: the value 1.5 gives an invalid "
                                                        "config: trainer.warmup_ratio must be between 0 and 1"),
    ({"trainer.scheduler": {"choice": ["linear", "cosine_warm"]}}, "the value 'cosine_warm' gives an invalid config"),
    ({"model": {"choice": ["a", "b"]}}, "tune.space.model: model cannot be searched"),
])
def test_the_space_is_checked_against_the_task_before_any_trial(tmp_path, tiny_model, space, message):
    path = recipe(tmp_path, tiny_model, space, trials=2)
    result = sft("tune", "--config", path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "trial 0" not in result.stderr
    assert not (tmp_path / "run-tune").exists()  # nothing was started


def test_sft_run_evaluates_on_a_held_out_part_of_the_training_data(tmp_path, tiny_model):
    train, evaluation = write_cue_classification(tmp_path / "data", n_train=TRAIN, n_eval=EVAL)
    common = ["run", "--task", "classification", "--model", tiny_model, "--train", train, "trainer.epochs=1",
              "trainer.max_length=32", "data.validation_fraction=0.25", "data.validation_seed=3"]
    done = sft(*common, "--output-dir", tmp_path / "run", timeout=120)
    assert done.returncode == 0, done.stderr
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["validation"] == {"fraction": 0.25, "seed": 3, "train_examples": 120, "validation_examples": 40}
    assert json.loads((tmp_path / "run" / "eval_results.json").read_text())["eval_samples"] == 40
    both = sft(*common, "--eval", evaluation, "--output-dir", tmp_path / "run2", timeout=120)
    assert both.returncode == 2 and "give one of the two (data.eval=null to use the held-out part)" in both.stderr
    assert not (tmp_path / "run2").exists()


def test_the_holdout_is_seeded_disjoint_and_covers_every_example():
    examples = [{"i": i} for i in range(100)]
    train, held = split_holdout(examples, 0.2, seed=7)
    assert len(held) == 20 and len(train) == 80
    assert {e["i"] for e in train}.isdisjoint({e["i"] for e in held})
    assert sorted(e["i"] for e in train + held) == list(range(100))
    assert split_holdout(examples, 0.2, seed=7) == (train, held)
    assert split_holdout(examples, 0.2, seed=8)[1] != held
    assert [e["i"] for e in held] == sorted(e["i"] for e in held)  # the file's order is kept
    with pytest.raises(SFTError, match="too few"):
        split_holdout(examples[:1], 0.2, seed=0)


# --- studies ----------------------------------------------------------------------------------

def test_a_three_trial_study_scores_on_the_validation_split_and_retrains_the_best(tmp_path, tiny_model):
    space = {"trainer.lr": {"log_uniform": [1e-3, 1e-2]}, "trainer.batch_size": {"choice": [8, 16]}}
    path = recipe(tmp_path, tiny_model, space, trials=3, pruner="none")
    summary = tune(str(path), host=PluginHost())
    study = tmp_path / "run-tune"
    assert summary["study_dir"] == str(study) and summary["states"] == {"complete": 3, "pruned": 0, "fail": 0}
    rows = trials_csv(study)
    assert [r["state"] for r in rows] == ["complete"] * 3
    values = [float(r["value"]) for r in rows]
    assert summary["best_validation"] == max(values)
    assert len({r["trainer.lr"] for r in rows}) == 3  # the sampler drew new values for each trial
    for row in rows:  # every trial trained on 75% of data.train and was scored on the other 25%, never on data.eval
        folder = study / "trials" / f"trial-{int(row['number']):04d}"
        info = json.loads((folder / "run_info.json").read_text())
        assert info["validation"] == {"fraction": 0.25, "seed": 0, "train_examples": 120, "validation_examples": 40}
        data = yaml.safe_load((folder / "config.yaml").read_text())["data"]
        assert data["eval"] is None and (data["validation_fraction"], data["validation_seed"]) == (0.25, 0)
        evals = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if "eval_accuracy" in x]
        assert len(evals) == 4  # an evaluation at each epoch's end, for the pruner
        assert float(row["value"]) == evals[-1]["eval_accuracy"]  # the score is the last evaluation's
        assert not (folder / "model").exists()  # a trial's weights are not kept
    # the best values retrained on all of data.train and evaluated once on data.eval
    best = study / "best"
    best_info = json.loads((best / "run_info.json").read_text())
    assert "validation" not in best_info
    evals = [json.loads(x) for x in (best / "metrics.jsonl").read_text().splitlines() if "eval_accuracy" in x]
    assert len(evals) == 1 and evals[0]["eval_samples"] == EVAL
    assert summary["eval"]["accuracy"] == json.loads((best / "eval_results.json").read_text())["accuracy"]
    best_row = rows[summary["best_trial"]]
    # best.yaml is a config `sft run --config` takes as it is: the best trial's values, the recipe's output folder
    shown = sft("run", "--config", study / "best.yaml", "--print-config", timeout=120)
    assert shown.returncode == 0, shown.stderr
    config = yaml.safe_load(shown.stdout)
    assert config["trainer"]["lr"] == pytest.approx(float(best_row["trainer.lr"]))
    assert config["trainer"]["batch_size"] == int(best_row["trainer.batch_size"])
    assert config["trainer"]["eval_every"] == 0 and config["output_dir"] == str(tmp_path / "run")
    assert (study / "report.html").is_file()
    assert (study / "importance.json").is_file() == (len(set(values)) > 1)  # nothing to explain when all scores tie
    # started again with the same budget: nothing left to do, nothing run again
    again = tune(str(path), host=PluginHost())
    assert again["best_trial"] == summary["best_trial"] and again["eval"] == summary["eval"]
    assert len(trials_csv(study)) == 3


def test_a_restart_with_another_space_is_refused(tmp_path, tiny_model):
    path = recipe(tmp_path, tiny_model, {"trainer.lr": {"log_uniform": [1e-4, 1e-2]}}, trials=1, pruner="none")
    tune(str(path), host=PluginHost())
    with pytest.raises(ConfigError, match="was started with other settings .*tune.space.trainer.lr"):
        tune(str(path), host=PluginHost(), overrides=["tune.space.trainer.lr={log_uniform: [1.0e-5, 1.0e-2]}"])
    with pytest.raises(ConfigError, match="trainer.epochs"):
        tune(str(path), host=PluginHost(), overrides=["trainer.epochs=3"])


def test_pruning_stops_a_poor_trial_through_the_evaluation_hook(tmp_path, tiny_model):
    # a learning rate that learns the cue within the first epoch (60 steps on 480 examples), and one
    # that learns nothing
    space = {"trainer.lr": {"choice": [5e-3, 1e-9]}}
    path = recipe(tmp_path, tiny_model, space, n_train=640, trials=5, startup_trials=5, pruner_startup_trials=1,
                  pruner="median", seed=6)  # with this seed the sampler draws good, good, poor, good, poor
    summary = tune(str(path), host=PluginHost(), overrides=["trainer.epochs=2"])
    rows = trials_csv(tmp_path / "run-tune")
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert pruned and summary["states"]["pruned"] == len(pruned)
    assert all(float(r["trainer.lr"]) == 1e-9 for r in pruned)
    assert len(pruned) == 2
    for row in pruned:  # stopped at the end of its first epoch of two, with the reason logged
        folder = tmp_path / "run-tune" / "trials" / f"trial-{int(row['number']):04d}"
        records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r for r in records if r.get("event") == "stop_requested"]
        assert json.loads((folder / "train_results.json").read_text())["status"] == "stopped"
        assert int(row["pruned_at"]) == 480  # examples seen: one epoch of the 480 training examples
        assert len([r for r in records if "eval_accuracy" in r]) == 1
    assert float(rows[summary["best_trial"]]["trainer.lr"]) == 5e-3


class FailsAtBatch8:
    """Raises what an out-of-memory error looks like when a trial trains with batches of 8."""

    @hookimpl
    def sft_train_start(self, config, task, model, state):
        if config.trainer.batch_size == 8:
            raise RuntimeError("CUDA out of memory (simulated)")


def test_a_failed_trial_is_recorded_and_the_study_goes_on(tmp_path, tiny_model):
    space = {"trainer.batch_size": {"choice": [8, 16]}, "trainer.lr": {"log_uniform": [1e-3, 1e-2]}}
    path = recipe(tmp_path, tiny_model, space, trials=4, pruner="none")
    summary = tune(str(path), host=PluginHost(extra_plugins=(FailsAtBatch8(),)))
    rows = trials_csv(tmp_path / "run-tune")
    assert len(rows) == 4
    failed = [r for r in rows if r["state"] == "fail"]
    assert failed and all(r["trainer.batch_size"] == "8" for r in failed)
    assert all("RuntimeError: CUDA out of memory (simulated)" in r["error"] for r in failed)
    assert all(r["state"] == "complete" for r in rows if r["trainer.batch_size"] == "16")
    assert rows[summary["best_trial"]]["trainer.batch_size"] == "16"


class DataFileGone:
    @hookimpl
    def sft_train_start(self, config, task, model, state):
        raise DataError("train.jsonl line 3: empty or missing text in column 'sentence'")


def test_an_unknown_metric_fails_before_any_trial_and_a_user_error_in_a_trial_stops_the_study(tmp_path, tiny_model):
    path = recipe(tmp_path, tiny_model, {"trainer.lr": {"log_uniform": [1e-3, 1e-2]}}, trials=3, pruner="none")
    with pytest.raises(ConfigError, match="tune.metric='bleu' is not a metric of task 'classification'; known: accuracy"):
        tune(str(path), host=PluginHost(), overrides=["tune.metric=bleu"])
    assert not (tmp_path / "run-tune").exists()
    with pytest.raises(DataError, match="line 3"):  # the same for every trial: no point in going on
        tune(str(path), host=PluginHost(extra_plugins=(DataFileGone(),)))
    rows = trials_csv(tmp_path / "run-tune")
    assert [r["state"] for r in rows] == ["fail"] and "line 3" in rows[0]["error"]


KILLER = '''
import os, signal
from sft_core import hookimpl

@hookimpl
def sft_step_end(config, state, loss, lr):
    if config.output_dir.endswith("trial-0001") and state.global_step == 3:
        os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_study_killed_mid_trial_continues_without_repeating_finished_trials(tmp_path, tiny_model, monkeypatch):
    (tmp_path / "site").mkdir()
    install_distribution(monkeypatch, tmp_path / "site", "sft-killer", "killer", KILLER)
    space = {"trainer.lr": {"log_uniform": [1e-4, 1e-2]}}
    path = recipe(tmp_path, tiny_model, space, trials=3, pruner="none")
    command = ["tune", "--config", path]
    env = {"TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
    first = sft(*command, timeout=300, env=plugins_env("killer", **env))
    assert first.returncode == -9, first.stderr  # killed by SIGKILL in trial 1, at step 3
    study = tmp_path / "run-tune"
    before = trials_csv(study)
    assert [r["state"] for r in before] == ["complete"]  # trial 1 was running: not in the file yet
    trial0 = (study / "trials" / "trial-0000" / "metrics.jsonl").read_text()

    second = sft(*command, timeout=300, env=plugins_env(**env))
    assert second.returncode == 0, second.stderr
    assert "continuing the study" in second.stderr and "1 of 3 trials finished" in second.stderr
    assert "trial 1 was interrupted" in second.stderr
    assert "sft tune: trial 0:" not in second.stderr  # the finished trial was not run again
    assert (study / "trials" / "trial-0000" / "metrics.jsonl").read_text() == trial0
    rows = trials_csv(study)
    assert [(r["number"], r["state"]) for r in rows] == [("0", "complete"), ("1", "fail"), ("2", "complete"),
                                                         ("3", "complete")]
    assert rows[1]["interrupted"] == "yes"
    assert rows[2]["retry_of"] == "1" and rows[2]["trainer.lr"] == rows[1]["trainer.lr"]  # the same values again
    assert rows[0]["value"] == before[0]["value"]
    assert len({r["trainer.lr"] for r in rows if r["state"] == "complete"}) == 3
    summary = json.loads(second.stdout)
    assert summary["states"] == {"complete": 3, "pruned": 0, "fail": 1}
    assert (study / "best.yaml").is_file() and (study / "best" / "eval_results.json").is_file()


def test_trainer_report_writes_the_page_at_the_end_of_a_run(tmp_path, tiny_model):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    train_tiny(out, tiny_model, **{"trainer.epochs": 1, "trainer.report": True, "trainer.max_length": 32})
    page = (out / "report.html").read_text()
    assert "training loss against step" in page and "confusion matrix of run" in page


class StopAtStep:
    @hookimpl
    def sft_step_end(self, config, state, loss, lr):
        if state.global_step == 3:
            state.stop_reason = "enough"


def test_a_hook_that_sets_stop_reason_ends_training_at_that_step(tmp_path, tiny_model):
    out = tmp_path / "run"
    result = train_tiny(out, tiny_model, extra_plugins=(StopAtStep(),), **{"trainer.epochs": 2, "trainer.max_length": 32})
    assert result["train"]["train_steps"] == 3 and result["train"]["status"] == "stopped"
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["reason"]) for r in records if r.get("event") == "stop_requested"] == [(3, "enough")]
    assert (out / "eval_results.json").is_file()  # the run still evaluates and saves its model
    assert "stop_reason" not in json.loads((out / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())


def test_without_optuna_or_matplotlib_the_commands_say_what_to_install(tmp_path, tiny_model, monkeypatch):
    path = recipe(tmp_path, tiny_model, {"trainer.lr": {"log_uniform": [1e-3, 1e-2]}}, trials=1)
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(SFTError, match=r"sft tune needs optuna: pip install 'sft-core\[tune\]'"):
        tune(str(path), host=PluginHost())
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    from sft_core.commands.report import write_report

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    with pytest.raises(SFTError, match=r"sft report needs matplotlib: pip install 'sft-core\[report\]'"):
        write_report([str(tmp_path / "run")])


def test_a_trial_that_sets_the_length_trains_exactly_that():
    """A searched trainer.epochs must not be raised by the small-data rule, as in `sft run`."""
    from sft_core.api import run_config
    from sft_core.commands.tune.study import _length_rule

    base = run_config("classification")
    assert base.trainer.min_steps == 60
    assert _length_rule(base, {"trainer.epochs": 3}) == {"trainer.min_steps": 0}
    assert _length_rule(base, {"trainer.max_steps": 30}) == {"trainer.min_steps": 0}
    assert _length_rule(base, {"trainer.lr": 1e-4}) == {}  # the recipe's length, and its rule, stand
    chosen = run_config("classification", overrides=["trainer.min_steps=100"])
    assert _length_rule(chosen, {"trainer.epochs": 3}) == {}  # a min_steps you set holds for every trial
