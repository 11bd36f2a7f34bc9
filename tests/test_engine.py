"""The training loop: hook order, exact resume, best model, early stopping, checkpoints."""

from __future__ import annotations

import json
import re

import pytest
import torch

from sft_core import hookimpl

from helpers import SAMPLE, load_weights, train_tiny


class Recorder:
    """Records every lifecycle hook call in order."""

    def __init__(self, fail_at_step=None, exc=RuntimeError):
        self.calls: list[str] = []
        self.fail_at_step, self.exc = fail_at_step, exc

    @hookimpl
    def sft_train_start(self, config, task, model, state):
        self.calls.append(f"train_start:{state.global_step}")

    @hookimpl
    def sft_step_end(self, config, state, loss, lr):
        assert isinstance(loss, float) and isinstance(lr, float)
        self.calls.append(f"step_end:{state.global_step}")
        if state.global_step == self.fail_at_step:
            raise self.exc(f"stopped at step {state.global_step}")

    @hookimpl
    def sft_evaluate_end(self, config, state, metrics):
        assert "accuracy" in metrics
        self.calls.append(f"evaluate_end:{state.global_step}")

    @hookimpl
    def sft_save_checkpoint(self, config, state, path):
        assert path.is_dir() and (path / "training_state.pt").is_file()
        self.calls.append(f"save_checkpoint:{state.global_step}")

    @hookimpl
    def sft_train_end(self, config, state, status):
        self.calls.append(f"train_end:{status}")


def test_hook_order(tmp_path, tiny_model):
    recorder = Recorder()
    train_tiny(tmp_path, tiny_model, [recorder], **{"trainer.max_steps": 4, "trainer.eval_every": 2,
                                                      "trainer.save_every": 2})
    assert recorder.calls == [
        "train_start:0",
        "step_end:1", "step_end:2", "evaluate_end:2", "save_checkpoint:2",
        "step_end:3", "step_end:4", "evaluate_end:4", "save_checkpoint:4",
        "train_end:completed",
    ]


def test_train_end_runs_when_training_fails(tmp_path, tiny_model):
    recorder = Recorder(fail_at_step=2)
    with pytest.raises(RuntimeError, match="stopped at step 2"):
        train_tiny(tmp_path, tiny_model, [recorder], **{"trainer.max_steps": 4})
    assert recorder.calls == ["train_start:0", "step_end:1", "step_end:2", "train_end:failed"]


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_continues_exactly(tmp_path, tiny_model, grad_accum):
    # 40 examples in micro-batches of 8: 5 micro-batches an epoch, so the run crosses epoch
    # boundaries (and, with accumulation, a short last step); dropout makes RNG state matter.
    values = {"data.train": str(SAMPLE / "train.jsonl"), "data.max_train_samples": 40, "trainer.batch_size": 8,
              "trainer.grad_accum": grad_accum, "trainer.max_steps": 8, "trainer.save_every": 3,
              "trainer.keep_checkpoints": 5}
    train_tiny(tmp_path / "straight", tiny_model, **values)

    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train_tiny(interrupted, tiny_model, [Recorder(fail_at_step=5, exc=KeyboardInterrupt)], **values)
    assert [p.name for p in (interrupted / "checkpoints").iterdir() if p.name.startswith("step-")] == ["step-00000003"]
    assert not list((interrupted / "checkpoints").glob(".tmp*")), "a temporary checkpoint folder was left behind"
    recorder = Recorder()
    result = train_tiny(interrupted, tiny_model, [recorder], resume=True, **values)
    assert recorder.calls[0] == "train_start:3" and recorder.calls[1] == "step_end:4"
    assert result["train"]["train_steps"] == 8

    straight = load_weights(tmp_path / "straight" / "model")
    resumed = load_weights(interrupted / "model")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    # the log of the resumed run continues the interrupted one
    steps = [json.loads(line).get("step") for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)


def test_best_model_and_early_stopping(tmp_path, tiny_model):
    result = train_tiny(tmp_path, tiny_model, **{"trainer.max_steps": 200, "trainer.eval_every": 1,
                                                 "trainer.early_stopping_patience": 2, "trainer.lr": 1e-9,
                                                 "trainer.save_every": 0})
    # with a negligible learning rate no evaluation improves on the first, so training stops after 3
    assert result["train"]["status"] == "stopped"
    assert result["train"]["train_steps"] == 3
    assert result["best_step"] == 1
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert saved["step"] == 1 and saved["eval_samples"] == 60
    assert (tmp_path / "model" / "config.json").is_file()
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 60


def test_checkpoints_rotate_and_stay_complete(tmp_path, tiny_model):
    train_tiny(tmp_path, tiny_model, **{"trainer.max_steps": 5, "trainer.save_every": 1, "trainer.keep_checkpoints": 2,
                                        "trainer.eval_every": 0})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert names == ["step-00000004", "step-00000005"]
    for name in names:
        folder = tmp_path / "checkpoints" / name
        assert (folder / "model" / "model.safetensors").is_file()
        assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == int(name[5:])


def test_max_time_stops_training(tmp_path, tiny_model):
    result = train_tiny(tmp_path, tiny_model, **{"trainer.epochs": 1000, "trainer.max_time_minutes": 0.0001,
                                                 "trainer.eval_every": 0, "trainer.save_every": 0})
    assert result["train"]["status"] == "stopped"
    assert result["train"]["train_steps"] < 100
    assert (tmp_path / "eval_results.json").is_file()


def test_every_metrics_row_counts_epochs_the_same_way(tmp_path, tiny_model):
    """One convention (the Trainer's): "epoch" is the epochs completed at that step, a fraction. The
    evaluations of a 20-step run with 5 steps per epoch were labelled 1, 2, 3, 3 while training rows
    counted from 0."""
    train_tiny(tmp_path, tiny_model, **{"data.max_train_samples": 20, "trainer.batch_size": 4, "trainer.max_steps": 20,
                                        "trainer.log_every": 1, "trainer.save_every": 0})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    training = [(r["step"], r["epoch"]) for r in rows if "loss" in r]
    evaluations = [(r["step"], r["epoch"]) for r in rows if "eval_accuracy" in r]
    assert training == [(step, step / 5) for step in range(1, 21)]
    assert evaluations == [(5, 1.0), (10, 2.0), (15, 3.0), (20, 4.0)]
    assert json.loads((tmp_path / "train_results.json").read_text())["epochs_completed"] == 4.0


class FailingEvaluation:
    """A plugin whose task fails at its second evaluation (as a conversation without an answer
    once failed in collate, after all the training before it)."""

    @hookimpl
    def sft_register_tasks(self, register):
        from sft_classification.options import ClassificationData, ClassificationOptions
        from sft_classification.task import ClassificationTask

        class Task(ClassificationTask):
            calls = 0

            def compute_metrics(self, predictions, examples):
                Task.calls += 1
                if Task.calls == 2:
                    raise TypeError("object of type 'NoneType' has no len()")
                return super().compute_metrics(predictions, examples)

        register("failing-eval", Task, config=ClassificationOptions, data_config=ClassificationData)


def test_a_failed_evaluation_keeps_the_training_done(tmp_path, tiny_model, capsys):
    values = {"task": "failing-eval", "trainer.max_steps": 6, "trainer.eval_every": 2, "trainer.save_every": 0}
    with pytest.raises(TypeError, match="has no len"):
        train_tiny(tmp_path, tiny_model, [FailingEvaluation()], **values)
    kept = tmp_path / "checkpoints" / "step-00000004"
    assert kept.is_dir() and sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best", "step-00000004"]
    assert f"evaluation at step 4 failed; the training so far is kept in {kept}" in capsys.readouterr().err
    result = train_tiny(tmp_path, tiny_model, [FailingEvaluation()], resume=True, **values)  # the cause gone
    assert result["train"]["train_steps"] == 6



def test_the_run_says_its_budget_and_where_its_settings_came_from(tmp_path, tiny_model, capsys):
    """A newcomer's 10 steps learnt nothing, and nothing said how few they were or where lr came from."""
    train_tiny(tmp_path, tiny_model, **{"data.max_train_samples": 20, "trainer.batch_size": 4, "trainer.epochs": 2,
                                        "trainer.save_every": 0})
    err = capsys.readouterr().err
    assert re.search(r"^training: 20 examples \([\d,]+ tokens\); 2 epochs of 5 steps = 10 optimizer steps of 4$",
                     err, flags=re.M), err
    # train_tiny sets lr and batch size in its own layer ("test"); the rest are defaults
    assert ("settings: trainer.lr 0.001 (test); trainer.epochs 2 (test); trainer.batch_size 4 (test); "
            "peft.method none (sft's default)") in err


def test_a_small_training_set_trains_min_steps_and_evaluates_as_trainer_epochs_says(tmp_path, tiny_model, capsys):
    """40 conversations at batch 8 trained 10 steps and learnt nothing. With the length left at its
    default (3 epochs), a small set trains trainer.min_steps steps, evaluating every few epochs."""
    result = train_tiny(tmp_path, tiny_model, **{"data.max_train_samples": 20, "trainer.batch_size": 4,
                                                 "trainer.min_steps": 24})
    assert result["train"]["train_steps"] == 24  # 3 epochs of 5 steps would be 15
    err = capsys.readouterr().err
    assert ("small training set: trainer.epochs 3 gives 15 steps, raised to trainer.min_steps 24 (test); "
            "evaluated and saved every 2 epochs") in err, err
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r["step"] for r in rows if any(k.startswith("eval_") for k in r)]
    assert evaluated == [10, 20, 24], rows  # epochs 2 and 4 of 5 steps, and the end
    assert "warning:" not in err


def test_a_budget_too_small_to_move_the_model_is_warned(tmp_path, tiny_model, capsys):
    train_tiny(tmp_path, tiny_model, **{"data.max_train_samples": 20, "trainer.batch_size": 4, "trainer.epochs": 2,
                                        "trainer.save_every": 0, "data.max_eval_samples": 4})
    err = capsys.readouterr().err
    assert ("warning: 10 optimizer steps are few to move a pretrained model (with trainer.epochs left at its "
            "default, sft trains at least 60)") in err, err


@pytest.mark.parametrize("settings, expected", [
    ({"epochs": 2, "min_steps": 60}, (5, 60, 6, 10)),  # 40 examples at batch 8: 10 steps raised to 60
    ({"epochs": 2, "min_steps": 0}, (5, 10, 1, None)),  # the rule off: exactly the epochs
    ({"epochs": 2, "min_steps": 60, "max_steps": 7}, (5, 7, 1, None)),  # max_steps wins
    ({"epochs": 20, "min_steps": 60}, (5, 100, 1, None)),  # enough steps already
    ({"epochs": 0.5, "min_steps": 12}, (5, 12, 3, 3)),  # fractional epochs: every 3 epochs, as 1 would
])
def test_the_schedule_of_a_small_set(settings, expected):
    from types import SimpleNamespace

    from sft_core.engine.loop import Schedule

    cfg = SimpleNamespace(**{"batch_size": 8, "grad_accum": 1, "max_steps": None, "warmup_steps": None,
                             "warmup_ratio": 0.0, **settings})
    plan = Schedule.of(cfg, 40, 1)
    assert (plan.steps_per_epoch, plan.total_steps, plan.epochs_per_eval, plan.raised_from) == expected
