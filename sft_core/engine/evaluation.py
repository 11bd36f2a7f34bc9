"""The evaluation loop: length-sorted batches, outputs reduced on the device per batch.

Only what ``task.predict_step`` returns (argmax, n-best, generated ids) leaves the device, never
the full logits of the evaluation set. Under several processes each feature is evaluated by exactly
one of them and the outputs are gathered by feature index, so nothing is duplicated or missing.
"""

from __future__ import annotations

import time

import torch

from .batching import eval_batches, feature_lengths


def rows(features, indices: list[int]) -> list[dict]:
    """Feature rows ``indices`` of a datasets.Dataset as a list of dicts."""
    columns = features[indices]
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*(columns[n] for n in names))]


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _split_outputs(out, n: int) -> list:
    """A predict_step result (dict of per-row tensors/lists, or a list) as ``n`` per-feature items."""
    if isinstance(out, dict):
        cols = {k: (v.detach().float().cpu().tolist() if v.is_floating_point() else v.detach().cpu().tolist())
                if isinstance(v, torch.Tensor) else list(v) for k, v in out.items()}
        for k, v in cols.items():
            if len(v) != n:
                raise RuntimeError(f"predict_step returned {len(v)} rows for {k!r}, expected {n} (one per feature)")
        return [{k: cols[k][j] for k in cols} for j in range(n)]
    out = list(out)
    if len(out) != n:
        raise RuntimeError(f"predict_step returned {len(out)} items, expected {n} (one per feature)")
    return out


def _sharded(model) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)


def generation_plan(task, model, features):
    """The task's ``GenerationPlan`` for ``features`` when the engine can schedule it (contract 2.3):
    a task with the role, a model continuous batching runs (``generation.unsupported``), not sharded."""
    from ..task import roles
    from .generation import unsupported

    plan_of = roles(task).generation_plan
    if plan_of is None or _sharded(model) or unsupported(model) is not None:
        return None
    return plan_of(features)


def predict_features(accelerator, task, model, features, batch_size: int, progress: str | None = None,
                     generated: dict | None = None) -> list:
    """Run ``task.predict_step`` over all features; returns one output per feature, in feature order.
    ``progress``: a progress bar with this description (on the main process, on stderr).

    A task that plans its generation (``PlansGeneration``) has this process's features generated
    first, with continuous batching (at most ``batch_size`` sequences at a time), and each batch
    carries its rows' ids in ``batch["generated"]``; ``generated`` ({feature index: ids}) gives
    them instead (the server generates them itself); ``generated={}`` leaves generation to ``predict_step``."""
    lengths = feature_lengths(features)
    world = accelerator.num_processes
    batches = eval_batches(lengths, batch_size, accelerator.process_index, world)
    model = accelerator.unwrap_model(model)
    # a sharded model's forward gathers weights from every process: all must run as many batches
    # (the shorter shards repeat a batch, whose outputs are dropped)
    rounds = len(batches)
    if world > 1 and _sharded(model):
        rounds = max(len(eval_batches(lengths, batch_size, r, world)) for r in range(world))
    was_training = model.training
    model.eval()
    if generated is None:
        plan = generation_plan(task, model, features)
        if plan is not None:
            generated = _generate(accelerator, model, plan, [i for b in batches for i in b], batch_size, progress)
    collected: list[tuple[int, object]] = []
    bar = _bar(progress, rounds, accelerator.is_main_process)
    with torch.inference_mode(), accelerator.autocast(), bar:
        for step in range(rounds):
            indices = batches[step] if step < len(batches) else (batches or [[0]])[-1]
            batch = to_device(task.collate(rows(features, indices)), accelerator.device)
            if generated:
                batch["generated"] = [generated[i] for i in indices]
            outputs = _split_outputs(task.predict_step(model, batch), len(indices))
            if step < len(batches):
                collected.extend(zip(indices, outputs))
            bar.update(1)
    if was_training:
        model.train()
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        collected = gather_object(collected)
    ordered: list = [None] * len(lengths)
    for index, output in collected:
        ordered[index] = output
    return ordered


def _generate(accelerator, model, plan, indices: list[int], batch_size: int, progress: str | None) -> dict:
    """{feature index: generated ids} for ``indices``, continuously batched, with a progress bar."""
    from .generation import ContinuousBatcher, Request

    prompts = {i: plan.prompts[i] for i in indices}
    longest = max((len(p) for p in prompts.values()), default=1)
    # never more memory than a static batch of batch_size at the longest prompt and the whole limit
    batcher = ContinuousBatcher(model, plan.pad_id, max_batch_size=batch_size,
                                max_batch_tokens=batch_size * (longest + plan.max_new_tokens),
                                min_join=max(1, batch_size // 4))
    bar = _bar(progress and progress.replace("evaluating", "generating for"), len(indices), accelerator.is_main_process)
    stops = frozenset(plan.stop_ids)
    # longest prompts first: the batch starts as wide as it gets, later joiners fit in its padding
    order = sorted(indices, key=lambda i: -len(prompts[i]))
    requests = {i: Request(prompts[i], plan.max_new_tokens, stops, on_finish=lambda _: bar.update(1)) for i in order}
    with torch.inference_mode(), accelerator.autocast(), bar:
        batcher.generate_all([requests[i] for i in order])
    failed = next((r for r in requests.values() if r.finish_reason == "error"), None)
    if failed is not None:
        raise failed.error
    return {i: r.tokens for i, r in requests.items()}


def _bar(description: str | None, total: int, main: bool):
    """A progress bar of ``total`` batches (tqdm; TQDM_DISABLE=1 turns it off), or one that shows nothing."""
    from tqdm.auto import tqdm

    options = {} if description and main else {"disable": True}
    return tqdm(total=total, desc=description, unit="batch", leave=False, dynamic_ncols=True, **options)


def evaluate(accelerator, task, model, features, examples, batch_size: int) -> tuple[dict, list]:
    """Predict and score an evaluation set, with a progress bar; returns (metrics with timing, predictions)."""
    start = time.perf_counter()
    outputs = predict_features(accelerator, task, model, features, batch_size,
                               progress=f"evaluating {len(examples):,} examples")
    predictions = task.postprocess(outputs, features, examples)
    # numbers become floats; text (e.g. a metric's signature) is kept as it is
    metrics = {k: v if isinstance(v, str) else float(v) for k, v in task.compute_metrics(predictions, examples).items()}
    seconds = time.perf_counter() - start
    metrics.update(eval_samples=len(examples), eval_runtime=round(seconds, 4),
                   eval_samples_per_second=round(len(examples) / seconds, 3) if seconds else 0.0)
    return metrics, predictions
