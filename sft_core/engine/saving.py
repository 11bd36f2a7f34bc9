"""What a training run saves, and which model becomes the run's: the saving policy beside the loop.

- **Weights**: a model that holds its weights whole saves its own; a sharded model's (FSDP) are first
  gathered onto the main process, with every process taking part (``weights``).
- **Adapters**: a LoRA run's checkpoints hold the adapters and the head only; with
  ``peft.save=merged`` the run's ``model/`` is a complete model, the adapters merged into the base
  weights and checked on a batch of training inputs.
- **Best model**: a better evaluation goes to ``checkpoints/best`` (model, metrics, predictions) or,
  at the final evaluation, straight to ``model/`` (one write of the weights instead of two).
- **The run's model** (``finish``): the best evaluation's, when there were evaluations; else the last
  weights. Its metrics are the run's results.

Only the main process writes; every folder is written whole or not at all (``files``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..models import sharding
from ..task import prediction_files
from . import files
from .checkpoint import rng_state, rotate_checkpoints, save_checkpoint, write_model_folder
from .evaluation import rows


class Saver:
    """Writes the checkpoints, the best model and the run's model of one run."""

    def __init__(self, run, model, optimizer, sharded: bool):
        self.run, self.model, self.optimizer, self.sharded = run, model, optimizer, sharded
        self.acc = run.accelerator
        self.main = self.acc.is_main_process
        self.checkpoints = run.output_dir / "checkpoints"
        self.best_dir = self.checkpoints / "best"
        self.final_is_best = False  # the final evaluation was the best: model/ is already written
        self.merge = run.config.peft.enabled and run.config.peft.save == "merged"
        self.merge_batch = None
        if self.merge:
            from ..models.adapters import model_inputs

            first = list(range(min(4, len(run.train_features))))
            self.merge_batch = model_inputs(self.unwrapped, run.task.collate(rows(run.train_features, first)))

    @property
    def unwrapped(self):
        return self.acc.unwrap_model(self.model)

    def weights(self) -> dict | None:
        """A sharded model's complete weights on the main process (every process must call this);
        None when the model holds its weights whole."""
        return sharding.full_state_dict(self.model) if self.sharded else None

    def _write_run_model(self, weights: dict | None = None) -> None:
        run = self.run
        write_model_folder(run.output_dir / "model", self.unwrapped, run.tokenizer, run.task, run.config,
                           merge=self.merge, merge_batch=self.merge_batch, state_dict=weights)

    def keep_best(self, metrics: dict, predictions: list, final: bool) -> None:
        """Keep the model of a better evaluation (every process calls this)."""
        run, task = self.run, self.run.task
        self.final_is_best = final
        weights = self.weights()
        if self.main and final:
            self._write_run_model(weights)
            for name in prediction_files(task):
                (run.output_dir / name).unlink(missing_ok=True)
            files.write_predictions(task, run.output_dir, predictions, run.eval_examples)
            shutil.rmtree(self.best_dir, ignore_errors=True)  # superseded
        elif self.main:
            write_model_folder(self.best_dir, self.unwrapped, run.tokenizer, task, run.config, state_dict=weights)
            files.write_json(self.best_dir / "eval_results.json", metrics)
            files.write_predictions(task, self.best_dir, predictions, run.eval_examples)
        self.acc.wait_for_everyone()

    def checkpoint(self, state, scheduler) -> None:
        """Checkpoint ``step-N``: the model, optimizer, scheduler and every process's random state."""
        run = self.run
        rng = [rng_state()]
        if self.acc.num_processes > 1:  # every process's own random stream, so that dropout resumes exactly
            from accelerate.utils import gather_object

            rng = gather_object(rng)
        weights = self.weights()
        optimizer_state = (sharding.full_optimizer_state(self.model, self.optimizer) if self.sharded
                           else self.optimizer.state_dict())
        if self.main:
            path = save_checkpoint(self.checkpoints, state, self.unwrapped, run.tokenizer, run.task, run.config,
                                   optimizer_state, scheduler, rng=rng, state_dict=weights)
            rotate_checkpoints(self.checkpoints, run.config.trainer.keep_checkpoints)
            run.hooks.sft_save_checkpoint(config=run.config, state=state, path=path)
        self.acc.wait_for_everyone()

    def finish(self, best_metrics: dict | None, last_metrics: dict | None) -> dict | None:
        """Write the run's ``model/`` and return the metrics it scored (None without evaluations; on
        the main process only). Every process calls this."""
        keep_best = best_metrics is not None  # the best evaluation's model becomes the run's
        last_weights = None if self.final_is_best or keep_best else self.weights()
        metrics = None
        if self.main:
            if self.final_is_best:
                metrics = best_metrics  # already written by the final evaluation
            elif keep_best and self.best_dir.is_dir():
                self._best_becomes_the_run_model()
                metrics = best_metrics
            else:
                self._write_run_model(last_weights)
                metrics = last_metrics
        self.acc.wait_for_everyone()
        return metrics

    def _best_becomes_the_run_model(self) -> None:
        final = self.run.output_dir / "model"
        if self.merge:  # the best adapters, merged
            from ..models.adapters import load_weights

            load_weights(self.unwrapped, self.best_dir)
            self._write_run_model()
            return
        tmp = self.run.output_dir / ".tmp-model"
        if tmp.exists():
            shutil.rmtree(tmp)
        ignore = shutil.ignore_patterns("eval_results.json", *prediction_files(self.run.task))
        shutil.copytree(self.best_dir, tmp, ignore=ignore)
        files.replace_dir(tmp, Path(final))
