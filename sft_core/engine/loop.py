"""The training loop: one readable function for every task, on accelerate.

The step is the same for every task: ``model(**task.collate(features)).loss``, or the task's
``compute_loss(model, batch)`` when it defines one. Evaluation,
checkpoints, best-model selection, early stopping and the time limit hang off the loop at step and
epoch boundaries. A checkpoint records the epoch and the number of steps taken in it; batches are a
function of (seed, epoch), so resuming skips straight to the next batch of the interrupted run.
SIGINT and SIGTERM stop the loop at the next step boundary, after a checkpoint (``interrupt``).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .batching import feature_lengths, shard_train_batches, train_batches
from .checkpoint import (TrainState, list_checkpoints, load_training_state, rotate_checkpoints, rng_state,
                         save_checkpoint, set_rng_state, write_model_folder, replace_dir)
from ..models import sharding
from .evaluation import evaluate, rows, to_device
from ..task import metric_direction, prediction_files
from ..errors import ConfigError, TrainingInterrupted
from .interrupt import StopSignals, name as signal_name
from .logger import MetricsLogger, progress_bar


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


def _better(direction: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if direction == "lower" else value > best


def fit(run: Run) -> dict:
    """Train; returns {"train": train results, "eval": metrics of the final or best model or None}.

    Raises ``TrainingInterrupted`` after a SIGINT or SIGTERM, once the checkpoint of the step
    reached is written; the handlers are those of the caller again when this returns or raises.
    """
    with StopSignals() as stops:
        return _fit(run, stops)


def _fit(run: Run, stops: StopSignals) -> dict:
    cfg, acc, task = run.config.trainer, run.accelerator, run.task
    main = acc.is_main_process
    world, rank = acc.num_processes, acc.process_index
    ckpt_dir = run.output_dir / "checkpoints"

    lengths = feature_lengths(run.train_features)
    if not lengths:
        raise ConfigError("the training set is empty")
    micro_per_epoch = math.ceil(math.ceil(len(lengths) / cfg.batch_size) / world)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * total_steps)

    sharded = sharding.wanted(run.config, acc)
    if sharded:  # the optimizer must see the sharded parameters, so it is built after sharding
        if main:
            print(f"note: sharding the model over {world} processes (FSDP)", file=sys.stderr)
        model = sharding.shard(run.model, acc)
        optimizer = _adamw(_param_groups(model, cfg.weight_decay), cfg.lr)
        scheduler = _scheduler(cfg.scheduler, optimizer, warmup, total_steps)
    else:
        run.model.to(acc.device)
        optimizer = _adamw(_param_groups(run.model, cfg.weight_decay), cfg.lr)
        scheduler = _scheduler(cfg.scheduler, optimizer, warmup, total_steps)
        model, optimizer = acc.prepare(run.model, optimizer)

    def gathered_weights() -> dict | None:
        """A sharded model's complete weights on the main process (every process must call this);
        None when the model holds its weights whole."""
        return sharding.full_state_dict(model) if sharded else None

    state = TrainState()
    if run.resume_from is not None:
        saved = run.resume_state if run.resume_state is not None else load_training_state(run.resume_from)
        if sharded:
            sharding.load_optimizer_state(model, optimizer, saved["optimizer"])
        else:
            optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"], rank)
        state = TrainState(**saved["state"])

    metric_name = cfg.metric_for_best or task.main_metric
    direction = metric_direction(task, metric_name)  # declared by the task (contract 1.1)
    best_dir = ckpt_dir / "best"
    best_metrics: dict | None = None
    if state.best_step is not None and (best_dir / "eval_results.json").is_file():
        best_metrics = json.loads((best_dir / "eval_results.json").read_text())
    last_metrics: dict | None = None

    # a LoRA run's model/ folder is a complete model, the adapters merged and checked on a batch
    merge = run.config.peft.enabled and run.config.peft.save == "merged"
    merge_batch = None
    if merge:
        from ..models.adapters import model_inputs

        merge_batch = model_inputs(acc.unwrap_model(model), task.collate(rows(run.train_features, list(range(min(4, len(lengths)))))))

    def write_final(model_to_save, weights: dict | None = None) -> None:
        write_model_folder(run.output_dir / "model", model_to_save, run.tokenizer, task, run.config,
                           merge=merge, merge_batch=merge_batch, state_dict=weights)

    logger = MetricsLogger(run.output_dir, enabled=main, append=run.resume_from is not None)
    bar = progress_bar(total_steps, state.global_step, enabled=main)
    run.hooks.sft_train_start(config=run.config, task=task, model=model, state=state)

    final_is_best = False

    def do_evaluate(final: bool = False) -> bool:
        """Evaluate, keep the best model; returns True when early stopping says stop.

        The final evaluation writes an improved model straight to ``model/`` rather than to
        ``checkpoints/best`` and then copying it: one write of the weights instead of two.
        """
        nonlocal best_metrics, last_metrics, final_is_best
        metrics, predictions = evaluate(acc, task, model, run.eval_features, run.eval_examples, cfg.eval_batch_size)
        metrics["step"] = state.global_step
        last_metrics = metrics
        if metric_name not in metrics:
            raise ConfigError(f"trainer.metric_for_best={metric_name!r} is not a metric of task "
                              f"{run.config.task!r}; available: {', '.join(sorted(metrics))}")
        logger.log({"step": state.global_step, "epoch": state.epoch, "train_seconds": round(state.train_seconds, 1),
                    **{_eval_key(k): v for k, v in metrics.items() if k != "step"}})
        run.hooks.sft_evaluate_end(config=run.config, state=state, metrics=metrics)
        if _better(direction, metrics[metric_name], state.best_metric):  # the same on every process
            state.best_metric, state.best_step = metrics[metric_name], state.global_step
            state.evals_without_improvement = 0
            best_metrics = metrics
            final_is_best = final
            weights = gathered_weights()
            if main and final:
                write_final(acc.unwrap_model(model), weights)
                for name in prediction_files(task):
                    (run.output_dir / name).unlink(missing_ok=True)
                task.write_predictions(run.output_dir / task.predictions_file, predictions, run.eval_examples)
                shutil.rmtree(best_dir, ignore_errors=True)  # superseded
            elif main:
                write_model_folder(best_dir, acc.unwrap_model(model), run.tokenizer, task, run.config,
                                   state_dict=weights)
                (best_dir / "eval_results.json").write_text(_json(metrics))
                task.write_predictions(best_dir / task.predictions_file, predictions, run.eval_examples)
            acc.wait_for_everyone()
        else:
            state.evals_without_improvement += 1
        patience = cfg.early_stopping_patience
        return bool(patience) and state.evals_without_improvement >= patience

    def do_checkpoint() -> None:
        rng = [rng_state()]
        if world > 1:  # every process's own random stream, so that dropout resumes exactly everywhere
            from accelerate.utils import gather_object

            rng = gather_object(rng)
        weights = gathered_weights()
        optimizer_state = sharding.full_optimizer_state(model, optimizer) if sharded else optimizer.state_dict()
        if main:
            path = save_checkpoint(ckpt_dir, state, acc.unwrap_model(model), run.tokenizer, task,
                                   run.config, optimizer_state, scheduler, rng=rng, state_dict=weights)
            rotate_checkpoints(ckpt_dir, cfg.keep_checkpoints)
            run.hooks.sft_save_checkpoint(config=run.config, state=state, path=path)
        acc.wait_for_everyone()

    def stop_requested(agreed: bool | None = None) -> bool:
        """A hook set ``state.stop_reason``: stop as early stopping does. ``agreed``: every process's
        answer, already exchanged at the step boundary; else the processes agree now."""
        if not (agreed if agreed is not None else _agree(acc, state.stop_reason is not None)):
            return False
        logger.log({"step": state.global_step, "event": "stop_requested", "reason": state.stop_reason or ""})
        return True

    has_eval = run.eval_features is not None
    compute_loss = getattr(task, "compute_loss", None)  # optional: a task's own loss (e.g. label smoothing)
    status = "failed"
    stop = False
    ended_early = False  # by early stopping or the time limit: not resumable to the same end
    interrupted = 0  # the signal that stopped training, agreed by every process
    evaluated_at = saved_at = -1
    # the logged samples/s counts training time only, like train_samples_per_second
    window_loss, window_steps, window_samples, window_start = 0.0, 0, 0, state.train_seconds
    try:
        while state.global_step < total_steps and not stop:
            epoch_batches = shard_train_batches(
                train_batches(lengths, cfg.batch_size, cfg.seed, state.epoch, cfg.group_by_length), world)
            first = state.steps_in_epoch * cfg.grad_accum
            micro = [b[rank] for b in epoch_batches[first:]]
            for start in range(0, len(micro), cfg.grad_accum):
                # a step boundary: the last step's work is done; one exchange between the processes
                # says whether a signal arrived or a hook asked to stop (sft_step_end's state.stop_reason)
                interrupted, requested = _step_boundary(acc, stops, state)
                if interrupted:
                    stop = True
                    break
                if requested and stop_requested(agreed=True):
                    stop = ended_early = True
                    break
                step_start = time.perf_counter()
                group = micro[start:start + cfg.grad_accum]
                model.train()
                step_loss = torch.zeros((), device=acc.device)
                for j, indices in enumerate(group):
                    batch = to_device(task.collate(rows(run.train_features, indices)), acc.device)
                    sync = acc.no_sync(model) if j < len(group) - 1 and world > 1 else nullcontext()
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
                state.global_step += 1
                state.steps_in_epoch += 1
                # samples of this step over all processes
                step_samples = sum(len(i) for b in epoch_batches[first + start:first + start + len(group)] for i in b)
                state.samples_seen += step_samples
                window_samples += step_samples
                state.train_seconds += time.perf_counter() - step_start
                loss_value = step_loss.item()
                lr = scheduler.get_last_lr()[0]
                window_loss += loss_value
                window_steps += 1
                bar.update(1)
                run.hooks.sft_step_end(config=run.config, state=state, loss=loss_value, lr=lr)

                if state.global_step % cfg.log_every == 0 or state.global_step == total_steps:
                    elapsed = state.train_seconds - window_start
                    record = {"step": state.global_step, "epoch": state.epoch, "loss": round(window_loss / window_steps, 6),
                              "lr": lr, "samples_per_second": round(window_samples / elapsed, 2) if elapsed else 0.0}
                    logger.log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", samples_s=record["samples_per_second"])
                    window_loss, window_steps, window_samples, window_start = 0.0, 0, 0, state.train_seconds

                if state.global_step >= total_steps:
                    stop = True
                if cfg.max_time_minutes and _agree(acc, state.train_seconds >= cfg.max_time_minutes * 60):
                    stop = ended_early = True
                    logger.log({"step": state.global_step, "event": "max_time_reached", "minutes": cfg.max_time_minutes})
                if has_eval and cfg.eval_every and state.global_step % cfg.eval_every == 0:
                    evaluated_at = state.global_step
                    if do_evaluate():
                        stop = ended_early = True
                        logger.log({"step": state.global_step, "event": "early_stopping"})
                    elif stop_requested():
                        stop = ended_early = True
                if cfg.save_every and state.global_step % cfg.save_every == 0 and not stop:
                    do_checkpoint()
                    saved_at = state.global_step
                if stop:
                    break
            else:  # the epoch ran to its end
                state.epoch += 1
                state.steps_in_epoch = 0
                done = state.global_step >= total_steps
                if has_eval and cfg.eval_every is None and evaluated_at != state.global_step and not done:
                    evaluated_at = state.global_step
                    stop = ended_early = do_evaluate() or stop_requested()
                if cfg.save_every is None and not done and not stop:
                    do_checkpoint()
                    saved_at = state.global_step
        if not interrupted and not ended_early:  # a signal during the last step stops before the final work
            interrupted, _ = _step_boundary(acc, stops, state)
        if interrupted:
            if saved_at != state.global_step:
                do_checkpoint()
            status = "interrupted"
            logger.log({"step": state.global_step, "event": "interrupted", "signal": signal_name(interrupted)})
            logger.close()
            raise TrainingInterrupted(signal_name(interrupted), interrupted, state.global_step,
                                      ckpt_dir / f"step-{state.global_step:08d}", main_process=main)
        if has_eval and evaluated_at != state.global_step:
            do_evaluate(final=True)
        if cfg.save_every != 0 and saved_at != state.global_step:
            do_checkpoint()
        status = "completed" if state.global_step >= total_steps else "stopped"
    finally:
        bar.close()
        run.hooks.sft_train_end(config=run.config, state=state, status=status)

    eval_metrics = None
    keep_best = has_eval and best_metrics is not None  # the best evaluation's model becomes the run's
    # the last weights, gathered, unless the best model saved already becomes the run's model
    last_weights = None if final_is_best or keep_best else gathered_weights()
    if main:
        final_dir = run.output_dir / "model"
        if final_is_best:
            eval_metrics = best_metrics  # already written by the final evaluation
        elif keep_best and best_dir.is_dir() and merge:
            # the best adapters, merged, become the run's model
            from ..models.adapters import load_weights

            load_weights(acc.unwrap_model(model), best_dir)
            write_final(acc.unwrap_model(model))
            eval_metrics = best_metrics
        elif keep_best and best_dir.is_dir():
            # the best model becomes the run's model; its metrics are the run's results
            tmp = run.output_dir / ".tmp-model"
            if tmp.exists():
                shutil.rmtree(tmp)
            shutil.copytree(best_dir, tmp, ignore=shutil.ignore_patterns("eval_results.json", *prediction_files(task)))
            replace_dir(tmp, final_dir)
            eval_metrics = best_metrics
        else:
            write_final(acc.unwrap_model(model), last_weights)
            eval_metrics = last_metrics
    acc.wait_for_everyone()
    train = {
        "train_runtime": round(state.train_seconds, 4),
        "train_samples": state.samples_seen,
        "train_samples_per_second": round(state.samples_seen / state.train_seconds, 3) if state.train_seconds else 0.0,
        "train_steps": state.global_step,
        "epochs_completed": state.epoch + state.steps_in_epoch / max(steps_per_epoch, 1),
        "status": status,
    }
    logger.log({"step": state.global_step, **{k: v for k, v in train.items() if k != "status"}})
    logger.close()
    return {"train": train, "eval": eval_metrics, "best_step": state.best_step, "metric_for_best": metric_name}


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


def _eval_key(name: str) -> str:
    return name if name.startswith("eval_") else f"eval_{name}"


def _json(obj) -> str:
    return json.dumps(obj, indent=2)


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir / "checkpoints")
    return found[-1] if found else None
