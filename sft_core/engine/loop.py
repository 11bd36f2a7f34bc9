"""The training loop: one readable function for every task, on accelerate.

The step is the same for every task: ``model(**task.collate(features)).loss``, or the task's
``compute_loss(model, batch)`` (role ``CustomLoss``). Evaluation, checkpoints, best-model selection,
early stopping and the time limit hang off the loop at step and epoch boundaries. A checkpoint
records the epoch and the number of steps taken in it; batches are a function of (seed, epoch), so
resuming skips straight to the next batch of the interrupted run. SIGINT and SIGTERM stop the loop
at the next step boundary, after a checkpoint (``interrupt``).

Beside the loop: ``prepare`` (the model on its device or sharded, the optimizer and schedule, a
resumed state), ``Evaluations`` (the best model so far and early stopping), ``saving.Saver`` (what
is written, and which model becomes the run's) and the agreement of several processes on when to
stop (``_agree``, ``_step_boundary``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, TrainingInterrupted
from ..models import sharding
from ..task import metric_direction, roles
from .batching import feature_lengths, shard_train_batches, train_batches
from .checkpoint import TrainState, list_checkpoints, load_training_state, set_rng_state
from .evaluation import evaluate, rows, to_device
from .interrupt import StopSignals, name as signal_name
from .logger import MetricsLogger, progress_bar
from .memory import peak_memory
from .saving import Saver


@dataclass
class Run:
    """Everything one training run works with."""

    config: Any
    task: Any
    hooks: Any
    accelerator: Any
    model: Any
    tokenizer: Any
    train_features: Any
    eval_features: Any = None
    eval_examples: list | None = None
    output_dir: Path = Path(".")
    resume_from: Path | None = None
    resume_state: dict | None = None  # training_state.pt of resume_from, when already read


def fit(run: Run) -> dict:
    """Train; returns {"train": train results, "eval": metrics of the final or best model or None,
    "best_step", "metric_for_best"}.

    Raises ``TrainingInterrupted`` after a SIGINT or SIGTERM, once the checkpoint of the step
    reached is written; the handlers are those of the caller again when this returns or raises.
    """
    with StopSignals() as stops:
        return _fit(run, stops)


def _fit(run: Run, stops: StopSignals) -> dict:
    cfg, acc, task = run.config.trainer, run.accelerator, run.task
    world, rank = acc.num_processes, acc.process_index
    lengths = feature_lengths(run.train_features)
    plan = Schedule.of(cfg, len(lengths), world)
    model, optimizer, scheduler, state, sharded = prepare(run, plan)
    saver = Saver(run, model, optimizer, sharded)
    logger = MetricsLogger(run.output_dir, enabled=acc.is_main_process, append=run.resume_from is not None)
    evaluations = Evaluations(run, model, state, saver, logger, plan.steps_per_epoch, scheduler)
    bar = progress_bar(plan.total_steps, state.global_step, enabled=acc.is_main_process)
    window = LogWindow(state.train_seconds)
    compute_loss, train_metrics = roles(task).compute_loss, roles(task).train_metrics
    has_eval = run.eval_features is not None
    run.hooks.sft_train_start(config=run.config, task=task, model=model, state=state)

    status, stop, interrupted = "failed", False, 0
    ended_early = False  # by early stopping, a hook or the time limit: not resumable to the same end
    evaluated_at = saved_at = -1
    try:
        while state.global_step < plan.total_steps and not stop:
            epoch_batches = shard_train_batches(
                train_batches(lengths, cfg.batch_size, cfg.seed, state.epoch, cfg.group_by_length), world)
            first = state.steps_in_epoch * cfg.grad_accum
            micro = [b[rank] for b in epoch_batches[first:]]
            for start in range(0, len(micro), cfg.grad_accum):
                # a step boundary: one exchange between the processes says whether a signal arrived
                # or a hook asked to stop (sft_step_end's state.stop_reason)
                interrupted, requested = _step_boundary(acc, stops, state)
                if interrupted:
                    stop = True
                    break
                if requested and _stop_requested(acc, state, logger, agreed=True):
                    stop = ended_early = True
                    break
                group = micro[start:start + cfg.grad_accum]
                seconds, loss = _train_step(run, model, optimizer, scheduler, group, compute_loss)
                state.global_step += 1
                state.steps_in_epoch += 1
                done_batches = epoch_batches[first + start:first + start + len(group)]
                samples = sum(len(i) for b in done_batches for i in b)
                state.samples_seen += samples
                state.tokens_seen += sum(lengths[k] for b in done_batches for i in b for k in i)
                state.train_seconds += seconds
                lr = scheduler.get_last_lr()[0]
                window.add(loss, samples)
                bar.update(1)
                run.hooks.sft_step_end(config=run.config, state=state, loss=loss, lr=lr)
                if state.global_step % cfg.log_every == 0 or state.global_step == plan.total_steps:
                    window.log(logger, bar, state, lr, plan.steps_per_epoch, train_metrics)

                stop = state.global_step >= plan.total_steps
                if cfg.max_time_minutes and _agree(acc, state.train_seconds >= cfg.max_time_minutes * 60):
                    stop = ended_early = True
                    logger.log({"step": state.global_step, "event": "max_time_reached", "minutes": cfg.max_time_minutes})
                if has_eval and cfg.eval_every and state.global_step % cfg.eval_every == 0:
                    evaluated_at = state.global_step
                    if evaluations.evaluate(state):
                        stop = ended_early = True
                        logger.log({"step": state.global_step, "event": "early_stopping"})
                    elif _stop_requested(acc, state, logger):
                        stop = ended_early = True
                if cfg.save_every and state.global_step % cfg.save_every == 0 and not stop:
                    saver.checkpoint(state, scheduler)
                    saved_at = state.global_step
                if stop:
                    break
            else:  # the epoch ran to its end
                state.epoch += 1
                state.steps_in_epoch = 0
                done = state.global_step >= plan.total_steps
                due = plan.epoch_end_due(state.epoch)
                if has_eval and cfg.eval_every is None and evaluated_at != state.global_step and not done and due:
                    evaluated_at = state.global_step
                    stop = ended_early = evaluations.evaluate(state) or _stop_requested(acc, state, logger)
                if cfg.save_every is None and not done and not stop and due:
                    saver.checkpoint(state, scheduler)
                    saved_at = state.global_step
        if not interrupted and not ended_early:  # a signal during the last step stops before the final work
            interrupted, _ = _step_boundary(acc, stops, state)
        if interrupted:
            if saved_at != state.global_step:
                saver.checkpoint(state, scheduler)
            status = "interrupted"
            _raise_interrupted(run, state, logger, interrupted)
        if has_eval and evaluated_at != state.global_step:
            evaluations.evaluate(state, final=True)
        if cfg.save_every != 0 and saved_at != state.global_step:
            saver.checkpoint(state, scheduler)
        status = "completed" if state.global_step >= plan.total_steps else "stopped"
    finally:
        bar.close()
        run.hooks.sft_train_end(config=run.config, state=state, status=status)

    eval_metrics = saver.finish(evaluations.best_metrics if has_eval else None, evaluations.last_metrics)
    train = _train_results(state, plan, status, acc.device)
    logger.log({"step": state.global_step, **{k: v for k, v in train.items() if k != "status"}})
    logger.close()
    return {"train": train, "eval": eval_metrics, "best_step": state.best_step, "metric_for_best": evaluations.metric}


# --- set-up ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """How long a run trains, in optimizer steps."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    # evaluations and checkpoints at epoch ends (trainer.eval_every / save_every None) come every
    # this many epochs: more than 1 when trainer.min_steps raised the epochs, so that a small set
    # is evaluated as often as trainer.epochs says, not at each of its many short epochs
    epochs_per_eval: int = 1
    raised_from: int | None = None  # the steps trainer.epochs gave, when trainer.min_steps raised them

    @classmethod
    def of(cls, cfg, n_features: int, world: int) -> Schedule:
        if not n_features:
            raise ConfigError("the training set is empty")
        micro_per_epoch = math.ceil(math.ceil(n_features / cfg.batch_size) / world)
        steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
        total = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
        every, raised_from = 1, None
        if not cfg.max_steps and cfg.min_steps and total < cfg.min_steps:
            raised_from, total = total, cfg.min_steps
            every = max(1, math.ceil(total / steps_per_epoch / max(cfg.epochs, 1)))
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * total)
        return cls(steps_per_epoch, total, warmup, every, raised_from)

    def epoch_end_due(self, epochs_done: int) -> bool:
        """Whether the end of epoch ``epochs_done`` (counted from 1) evaluates and saves."""
        return epochs_done % self.epochs_per_eval == 0


def prepare(run: Run, plan: Schedule):
    """(model, optimizer, scheduler, state, sharded): the model on its device (or sharded over the
    processes), AdamW and the learning-rate schedule, and the state of a resumed run restored."""
    cfg, acc = run.config.trainer, run.accelerator
    sharded = sharding.wanted(run.config, acc)
    if sharded:  # the optimizer must see the sharded parameters, so it is built after sharding
        if acc.is_main_process:
            print(f"note: sharding the model over {acc.num_processes} processes (FSDP)", file=sys.stderr)
        model = sharding.shard(run.model, acc)
        optimizer = _adamw(_param_groups(model, cfg.weight_decay), cfg.lr)
        scheduler = _scheduler(cfg.scheduler, optimizer, plan.warmup_steps, plan.total_steps)
    else:
        run.model.to(acc.device)
        optimizer = _adamw(_param_groups(run.model, cfg.weight_decay), cfg.lr)
        scheduler = _scheduler(cfg.scheduler, optimizer, plan.warmup_steps, plan.total_steps)
        model, optimizer = acc.prepare(run.model, optimizer)
    state = TrainState()
    if run.resume_from is not None:
        saved = run.resume_state if run.resume_state is not None else load_training_state(run.resume_from)
        if sharded:
            sharding.load_optimizer_state(model, optimizer, saved["optimizer"])
        else:
            optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"], acc.process_index)
        state = TrainState(**saved["state"])
    return model, optimizer, scheduler, state, sharded


def _param_groups(model, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation weights, as is customary for transformers."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _adamw(groups: list[dict], lr: float):
    """AdamW, fused into one kernel where torch supports it (the same update, fewer passes)."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)


def _scheduler(name: str, optimizer, warmup: int, total: int):
    from transformers import get_scheduler

    kind = "constant_with_warmup" if name == "constant" else name
    return get_scheduler(kind, optimizer, num_warmup_steps=warmup, num_training_steps=total)


# --- one step, and what is logged ----------------------------------------------------------------

def _train_step(run: Run, model, optimizer, scheduler, group: list[list[int]], compute_loss) -> tuple[float, float]:
    """One optimizer step over the micro-batches ``group`` (gradient accumulation); (seconds, mean loss)."""
    cfg, acc, task = run.config.trainer, run.accelerator, run.task
    start = time.perf_counter()
    model.train()
    step_loss = torch.zeros((), device=acc.device)
    for j, indices in enumerate(group):
        batch = to_device(task.collate(rows(run.train_features, indices)), acc.device)
        sync = acc.no_sync(model) if j < len(group) - 1 and acc.num_processes > 1 else nullcontext()
        with sync:
            with acc.autocast():  # the forward only: backward runs in the forward's precisions
                loss = compute_loss(model, batch) if compute_loss else model(**batch).loss
            acc.backward(loss / len(group))
        step_loss += loss.detach() / len(group)
    if cfg.max_grad_norm:
        acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, step_loss.item()


class LogWindow:
    """The steps since the last logged record: their mean loss and samples per second of training time."""

    def __init__(self, train_seconds: float):
        self.loss, self.steps, self.samples, self.start = 0.0, 0, 0, train_seconds

    def add(self, loss: float, samples: int) -> None:
        self.loss += loss
        self.steps += 1
        self.samples += samples

    def log(self, logger: MetricsLogger, bar, state: TrainState, lr: float, steps_per_epoch: int,
            train_metrics=None) -> None:
        elapsed = state.train_seconds - self.start
        record = {"step": state.global_step, "epoch": state.epochs_done(steps_per_epoch), "loss": round(self.loss / self.steps, 6), "lr": lr,
                  "samples_per_second": round(self.samples / elapsed, 2) if elapsed else 0.0}
        if train_metrics is not None:  # the task's own figures of these steps' batches (role TrainMetrics)
            record.update({k: round(float(v), 6) for k, v in train_metrics().items() if k not in record})
        logger.log(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", samples_s=record["samples_per_second"])
        self.__init__(state.train_seconds)


def _train_results(state: TrainState, plan: Schedule, status: str, device=None) -> dict:
    """What ``train_results.json`` and the final line say: time, samples and tokens per second of
    training time, steps, epochs, and this process's peak memory (``memory.peak_memory``)."""
    seconds = state.train_seconds
    return {
        "train_runtime": round(seconds, 4),
        "train_samples": state.samples_seen,
        "train_samples_per_second": round(state.samples_seen / seconds, 3) if seconds else 0.0,
        "train_tokens": state.tokens_seen,
        "train_tokens_per_second": round(state.tokens_seen / seconds, 1) if seconds else 0.0,
        **peak_memory(device),
        "train_steps": state.global_step,
        "epochs_completed": state.epochs_done(plan.steps_per_epoch),
        "status": status,
    }


def _say_metrics(step: int, epoch: float, metrics: dict) -> None:
    """One line per evaluation on stderr (above the progress bar): its step, epoch and figures."""
    from tqdm.auto import tqdm

    shown = [f"{k} {v:.4g}" for k, v in metrics.items()
             if isinstance(v, float) and k not in ("step", "eval_samples", "eval_runtime", "eval_samples_per_second")]
    tqdm.write(f"evaluation at step {step} (epoch {epoch:g}): {', '.join(shown)}", file=sys.stderr)


# --- evaluations: the best model and early stopping -----------------------------------------------

class Evaluations:
    """Evaluates during training, keeps the best model (through the ``Saver``), counts evaluations
    without improvement for early stopping."""

    def __init__(self, run: Run, model, state: TrainState, saver: Saver, logger: MetricsLogger, steps_per_epoch: int,
                 scheduler):
        self.run, self.model, self.saver, self.logger = run, model, saver, logger
        self.steps_per_epoch, self.scheduler = steps_per_epoch, scheduler
        cfg = run.config.trainer
        self.metric = cfg.metric_for_best or run.task.main_metric
        self.direction = metric_direction(run.task, self.metric)  # declared by the task
        self.best_metrics: dict | None = None
        self.last_metrics: dict | None = None
        best_results = saver.best_dir / "eval_results.json"
        if state.best_step is not None and best_results.is_file():  # a resumed run's best so far
            self.best_metrics = json.loads(best_results.read_text(encoding="utf-8"))

    def _keep_training(self, state: TrainState) -> None:
        """An evaluation failed: checkpoint the training done so far (whatever trainer.save_every
        says) before the error ends the run, and say where it is."""
        self.saver.checkpoint(state, self.scheduler)
        self.logger.log({"step": state.global_step, "event": "evaluation_failed"})
        if self.run.accelerator.is_main_process:
            print(f"evaluation at step {state.global_step} failed; the training so far is kept in "
                  f"{self.saver.checkpoints / f'step-{state.global_step:08d}'}; fix the cause, then run the same "
                  "command with --resume to go on from there", file=sys.stderr)

    def evaluate(self, state: TrainState, final: bool = False) -> bool:
        """Evaluate and keep the model if it is the best so far; True when early stopping says stop.
        The final evaluation writes an improved model straight to ``model/``."""
        run, cfg = self.run, self.run.config.trainer
        try:
            metrics, predictions = evaluate(run.accelerator, run.task, self.model, run.eval_features, run.eval_examples,
                                            cfg.eval_batch_size)
        except Exception:
            self._keep_training(state)
            raise
        metrics["step"] = state.global_step
        self.last_metrics = metrics
        if self.metric not in metrics:
            raise ConfigError(f"trainer.metric_for_best={self.metric!r} is not a metric of task "
                              f"{run.config.task!r}; available: {', '.join(sorted(metrics))}")
        self.logger.log({"step": state.global_step, "epoch": state.epochs_done(self.steps_per_epoch), "train_seconds": round(state.train_seconds, 1),
                         **{_eval_key(k): v for k, v in metrics.items() if k != "step"}})
        if run.accelerator.is_main_process:
            _say_metrics(state.global_step, state.epochs_done(self.steps_per_epoch), metrics)
        run.hooks.sft_evaluate_end(config=run.config, state=state, metrics=metrics)
        if _better(self.direction, metrics[self.metric], state.best_metric):  # the same on every process
            state.best_metric, state.best_step = metrics[self.metric], state.global_step
            state.evals_without_improvement = 0
            self.best_metrics = metrics
            self.saver.keep_best(metrics, predictions, final)
        else:
            state.evals_without_improvement += 1
        patience = cfg.early_stopping_patience
        return bool(patience) and state.evals_without_improvement >= patience


def _better(direction: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if direction == "lower" else value > best


def _eval_key(name: str) -> str:
    return name if name.startswith("eval_") else f"eval_{name}"


# --- stopping: signals, hooks, and several processes agreeing -----------------------------------

def _stop_requested(acc, state: TrainState, logger: MetricsLogger, agreed: bool | None = None) -> bool:
    """A hook set ``state.stop_reason``: stop as early stopping does. ``agreed``: every process's
    answer, already exchanged at the step boundary; else the processes agree now."""
    if not (agreed if agreed is not None else _agree(acc, state.stop_reason is not None)):
        return False
    logger.log({"step": state.global_step, "event": "stop_requested", "reason": state.stop_reason or ""})
    return True


def _raise_interrupted(run: Run, state: TrainState, logger: MetricsLogger, signal_number: int):
    """Log the interruption and raise ``TrainingInterrupted`` (the checkpoint is written)."""
    logger.log({"step": state.global_step, "event": "interrupted", "signal": signal_name(signal_number)})
    logger.close()
    checkpoint = run.output_dir / "checkpoints" / f"step-{state.global_step:08d}"
    raise TrainingInterrupted(signal_name(signal_number), signal_number, state.global_step, checkpoint,
                              main_process=run.accelerator.is_main_process)


def _agree(acc, flag: bool) -> bool:
    """The main process's decision, shared so that every process stops at the same step."""
    if acc.num_processes == 1:
        return flag
    from accelerate.utils import broadcast_object_list

    box = [flag]
    broadcast_object_list(box, from_process=0)
    return bool(box[0])


def _step_boundary(acc, stops: StopSignals, state) -> tuple[int, bool]:
    """(the signal number that stops training at this step boundary, 0 for none; whether a hook set
    ``state.stop_reason``): any process's, so that every process stops at the same step even when
    only one of them was signalled or asked to stop. One gather for both."""
    mine = stops.received or 0
    wanted = state.stop_reason is not None
    if acc.num_processes == 1:
        return mine, wanted
    gathered = acc.gather(torch.tensor([[mine, int(wanted)]], device=acc.device))
    return int(gathered[:, 0].max()), bool(gathered[:, 1].max())


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir / "checkpoints")
    return found[-1] if found else None
