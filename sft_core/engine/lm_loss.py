"""The language-model loss without the full-vocabulary logits.

A causal LM's output layer turns every position's hidden state (a few hundred numbers) into logits
over the vocabulary (49,152 for SmolLM2): at batch 8 x 512 tokens that is 0.8 GB in fp32, and a
plain cross-entropy keeps two or three tensors of that size for the backward pass. Here the output
layer and the cross-entropy run over chunks of label tokens: each chunk's logits are made, reduced
to the loss and to the gradient of the logits at once (softmax minus one-hot), turned into the
gradients of the hidden states and of the output weight, and freed. The backward pass only scales
the stored gradients by the incoming one: nothing is recomputed, so it costs the same matrix
products as the plain computation, and the largest tensor alive is one chunk's logits.

``causal_lm_loss(model, inputs, labels)`` is what a task calls: the model runs with its output
layer bypassed (its forward returns the hidden states), and the loss is taken over the positions
that carry a label. Whether the bypass is exact for a model (no soft-capping or scaling of logits
after the output layer, weights not sharded) is checked once per model on a few tokens of its first
batch; where it is not, the plain computation runs and says so once.
"""

from __future__ import annotations

import contextlib
import sys
import weakref

import torch
import torch.nn.functional as F

IGNORE = -100
#: Logits held at once: chunk rows x vocabulary, about 32 MB in fp32 (170 tokens at 49,152 words).
CHUNK_ELEMENTS = 1 << 23


def chunk_rows(vocab_size: int, chunk_elements: int | None = None) -> int:
    return max(1, (chunk_elements or CHUNK_ELEMENTS) // max(vocab_size, 1))


def _chunk_losses(hidden, weight, bias, targets, ignore_index):
    """Per-token losses, logits in float, of one chunk (the plain path's precision: the matrix product
    in the autocast dtype, the softmax in fp32)."""
    logits = F.linear(hidden, weight, bias)
    logits32 = logits.float()
    lse = torch.logsumexp(logits32, dim=-1)
    valid = targets != ignore_index
    safe = torch.where(valid, targets, torch.zeros_like(targets))
    picked = logits32.gather(1, safe.unsqueeze(1)).squeeze(1)
    losses = torch.where(valid, lse - picked, torch.zeros_like(lse))
    return logits, logits32, lse, valid, safe, losses


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T + bias`` against ``targets``, chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows: int, ignore_index: int):
        need_h, need_w = hidden.requires_grad, weight.requires_grad
        need_b = bias is not None and bias.requires_grad
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start:start + rows], targets[start:start + rows]
            logits, logits32, lse, valid, safe, losses = _chunk_losses(h, weight, bias, t, ignore_index)
            total += losses.sum()
            if not (need_h or need_w or need_b):
                continue
            # d(sum of losses)/d(logits): softmax minus one-hot, zero at ignored positions
            grad = torch.exp(logits32 - lse.unsqueeze(1))
            grad[torch.arange(len(safe), device=grad.device), safe] -= 1.0
            grad *= valid.unsqueeze(1)
            grad = grad.to(logits.dtype)
            del logits, logits32
            if need_h:
                grad_h[start:start + rows] = (grad @ weight.to(grad.dtype)).to(hidden.dtype)
            if need_w:
                grad_w += (grad.t() @ h.to(grad.dtype)).float()
            if need_b:
                grad_b += grad.float().sum(0)
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        ctx.needs = (need_h, need_w, need_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = iter(ctx.saved_tensors)
        out = []
        for need, dtype in zip(ctx.needs, ctx.dtypes):
            out.append((next(saved) * grad_out).to(dtype) if need else None)
        return out[0], out[1], out[2], None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bias=None,
                         reduction: str = "mean", chunk_elements: int | None = None,
                         ignore_index: int = IGNORE) -> torch.Tensor:
    """``F.cross_entropy(F.linear(hidden, weight, bias), targets)`` without holding the logits of more
    than one chunk of rows (``chunk_elements`` logits, default ``CHUNK_ELEMENTS``); the same loss and
    gradients.

    ``hidden``: (N, H); ``weight``: (V, H); ``targets``: (N,), ``ignore_index`` where no loss is taken.
    ``reduction``: "mean" (over the targets not ignored), "sum", or "none" (per row; no gradients).
    """
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be (N, H) and targets (N,), got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    rows = chunk_rows(weight.shape[0], chunk_elements)
    if reduction == "none":
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            raise ValueError("reduction='none' gives no gradients: call it under torch.no_grad()")
        parts = [_chunk_losses(hidden[s:s + rows], weight, bias, targets[s:s + rows], ignore_index)[-1]
                 for s in range(0, hidden.shape[0], rows)]
        return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    total = _LinearCrossEntropy.apply(hidden, weight, bias, targets, rows, ignore_index)
    if reduction == "sum":
        return total
    return total / (targets != ignore_index).sum()  # no label: 0/0, NaN, as F.cross_entropy gives


class _LinearLogProbs(torch.autograd.Function):
    """Per-row log-probability of ``targets`` under ``softmax(hidden @ weight.T + bias)``, chunk by chunk,
    with gradients for any weighting of the rows (a loss on sequence log-probabilities weights each
    token by its sequence's factor). The gradient of a row's log-probability with respect to its
    hidden state is stored at once (one row of H numbers); the output weight's gradient depends on the
    rows' weights, so it is made in the backward pass from each chunk's logits made again."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows: int, ignore_index: int):
        need_h, need_w = hidden.requires_grad, weight.requires_grad
        need_b = bias is not None and bias.requires_grad
        unit_h = torch.empty_like(hidden) if need_h else None
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start:start + rows], targets[start:start + rows]
            logits, logits32, lse, valid, safe, losses = _chunk_losses(h, weight, bias, t, ignore_index)
            out[start:start + rows] = -losses
            if need_h:
                grad = _log_prob_grad(logits32, lse, valid, safe).to(logits.dtype)
                unit_h[start:start + rows] = (grad @ weight.to(grad.dtype)).to(hidden.dtype)
            del logits, logits32
        saved = [unit_h] if need_h else []
        if need_w or need_b:
            saved += [hidden, weight, targets] + ([bias] if bias is not None else [])
        ctx.save_for_backward(*saved)
        ctx.needs, ctx.rows, ctx.ignore, ctx.has_bias = (need_h, need_w, need_b), rows, ignore_index, bias is not None
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        need_h, need_w, need_b = ctx.needs
        saved = list(ctx.saved_tensors)
        grad_h = grad_w = grad_b = None
        if need_h:
            unit_h = saved.pop(0)
            grad_h = (unit_h * grad_out.unsqueeze(1).to(unit_h.dtype)).to(ctx.dtypes[0])
        if need_w or need_b:
            hidden, weight, targets = saved[:3]
            bias = saved[3] if ctx.has_bias else None
            acc_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            acc_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
            for start in range(0, hidden.shape[0], ctx.rows):
                h, t = hidden[start:start + ctx.rows], targets[start:start + ctx.rows]
                logits, logits32, lse, valid, safe, _ = _chunk_losses(h.detach(), weight.detach(),
                                                                      None if bias is None else bias.detach(), t,
                                                                      ctx.ignore)
                grad = _log_prob_grad(logits32, lse, valid, safe) * grad_out[start:start + ctx.rows].unsqueeze(1)
                grad = grad.to(logits.dtype)
                del logits, logits32
                if need_w:
                    acc_w += (grad.t() @ h.detach().to(grad.dtype)).float()
                if need_b:
                    acc_b += grad.float().sum(0)
            grad_w = acc_w.to(ctx.dtypes[1]) if need_w else None
            grad_b = acc_b.to(ctx.dtypes[2]) if need_b else None
        return grad_h, grad_w, grad_b, None, None, None


def _log_prob_grad(logits32, lse, valid, safe):
    """d log p(target) / d logits: one-hot minus softmax, zero at ignored rows."""
    grad = -torch.exp(logits32 - lse.unsqueeze(1))
    grad[torch.arange(len(safe), device=grad.device), safe] += 1.0
    return grad * valid.unsqueeze(1)


def linear_log_probs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bias=None,
                     chunk_elements: int | None = None, ignore_index: int = IGNORE) -> torch.Tensor:
    """``log_softmax(F.linear(hidden, weight, bias)).gather(targets)`` per row (0 where ``targets`` is
    ``ignore_index``), with gradients, holding the logits of one chunk of rows at a time."""
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be (N, H) and targets (N,), got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    return _LinearLogProbs.apply(hidden, weight, bias, targets, chunk_rows(weight.shape[0], chunk_elements),
                                 ignore_index)


# --- on a transformers causal LM --------------------------------------------------------------

def _inner(model):
    """The model under the wrappers of distributed training and compilation."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


@contextlib.contextmanager
def output_layer_bypassed(model):
    """A context in which ``model(...)`` returns its last hidden states as ``.logits`` (the output
    layer is skipped, not run and discarded); yields the output layer."""
    head = _inner(model).get_output_embeddings()
    head.forward = _identity
    try:
        yield _output_linear(head)
    finally:
        del head.forward


def _output_linear(head):
    """The linear layer that computes the logits: the head itself, or under LoRA with an untied
    output layer trained fully, the copy peft's ``ModulesToSaveWrapper`` trains."""
    copies = getattr(head, "modules_to_save", None)
    if copies is not None and not getattr(head, "disable_adapters", False):
        active = [name for name in getattr(head, "active_adapters", []) if name in copies]
        return copies[active[0]] if active else head.original_module
    return getattr(head, "original_module", head)


def _identity(x):
    return x


_EXACT: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def chunking_is_exact(model, inputs: dict) -> bool:
    """Whether the model's logits are its output layer applied to what the bypassed forward returns
    (checked once per model on at most 8 tokens of ``inputs``' first row)."""
    inner = _inner(model)
    known = _EXACT.get(inner)
    if known is not None:
        return known
    exact, why = _probe(model, inputs)
    if not exact:
        print(f"trainer.chunked_loss: the full-vocabulary loss is used for {type(inner).__name__}: {why}",
              file=sys.stderr)
    _EXACT[inner] = exact
    return exact


def _probe(model, inputs: dict) -> tuple[bool, str]:
    inner = _inner(model)
    if any("FullyShard" in type(m).__name__ or "FSDP" in type(m).__name__ for m in (model, inner)):
        return False, "the output weight is sharded (FSDP)"
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    head = _output_linear(head) if head is not None else None
    if not isinstance(head, torch.nn.Linear):
        return False, f"its output layer is {type(head).__name__}, not a linear layer"
    small = {k: v[:1, :8] for k, v in inputs.items() if torch.is_tensor(v) and v.dim() == 2}
    small.update({k: v for k, v in inputs.items() if not (torch.is_tensor(v) and v.dim() == 2)})
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            plain = model(**small).logits.float()
            with output_layer_bypassed(model):
                hidden = model(**small).logits
            rebuilt = F.linear(hidden.to(head.weight.dtype), head.weight, head.bias).float()
    except Exception as exc:  # noqa: BLE001 -- any failure means: use the plain loss
        return False, f"the check failed ({type(exc).__name__}: {exc})"
    finally:
        model.train(training)
    if plain.shape != rebuilt.shape:
        return False, f"its forward changes the logits' shape ({tuple(plain.shape)} vs {tuple(rebuilt.shape)})"
    diff = (plain - rebuilt).abs().max().item()
    if diff > 1e-3 * max(1.0, plain.abs().max().item()):
        return False, f"its logits are not its output layer's (soft-capping or scaling; difference {diff:.3g})"
    return True, ""


def causal_lm_loss(model, inputs: dict, labels: torch.Tensor, chunked: bool = True, reduction: str = "mean",
                   chunk_elements: int | None = None) -> torch.Tensor:
    """The next-token cross-entropy of a causal LM over the positions ``labels`` marks (IGNORE = -100
    elsewhere), as ``model(**inputs, labels=labels).loss`` computes it for ``reduction="mean"``.

    ``reduction="none"`` (evaluation, no gradients): a (batch, length - 1) tensor of per-token losses,
    0 where no label. ``chunked``: the output layer and the loss over chunks of label tokens, never
    the whole batch's logits (see the module); False, or a model where that is not exact: the plain
    computation on the logits of the positions that carry a label in some row.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE
    if chunked and chunking_is_exact(model, inputs):
        with output_layer_bypassed(model) as head:
            hidden = model(**inputs).logits[:, :-1]
        picked = linear_cross_entropy(hidden[mask], head.weight, targets[mask], head.bias,
                                      reduction="none" if reduction == "none" else "sum",
                                      chunk_elements=chunk_elements)
        if reduction == "none":
            return torch.zeros(targets.shape, dtype=picked.dtype, device=picked.device).masked_scatter(mask, picked)
        return picked if reduction == "sum" else picked / mask.sum()
    keep = mask.any(0).nonzero().squeeze(1)
    logits = model(**inputs, logits_to_keep=keep).logits.float()
    kept = targets[:, keep]
    if reduction == "none":
        losses = F.cross_entropy(logits.transpose(1, 2), kept, ignore_index=IGNORE, reduction="none")
        return torch.zeros(targets.shape, dtype=losses.dtype, device=losses.device).index_copy(1, keep, losses)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), kept.reshape(-1), ignore_index=IGNORE,
                           reduction=reduction)


def causal_lm_logps(model, inputs: dict, labels: torch.Tensor, chunked: bool = True,
                    chunk_elements: int | None = None) -> torch.Tensor:
    """The log-probability a causal LM gives each labelled token (``labels`` as for ``causal_lm_loss``),
    with gradients: a (batch, length - 1) float tensor, 0 where no label. Summed over a row it is the
    log-probability of that row's labelled tokens, the quantity preference losses compare.

    ``chunked``: the output layer over chunks of label tokens, never the whole batch's logits (see the
    module); False, or a model where that is not exact: a log-softmax over the logits of the positions
    that carry a label in some row."""
    targets = labels[:, 1:]
    mask = targets != IGNORE
    if chunked and chunking_is_exact(model, inputs):
        with output_layer_bypassed(model) as head:
            hidden = model(**inputs).logits[:, :-1]
        picked = linear_log_probs(hidden[mask], head.weight, targets[mask], head.bias, chunk_elements=chunk_elements)
        return torch.zeros(targets.shape, dtype=picked.dtype, device=picked.device).masked_scatter(mask, picked)
    keep = mask.any(0).nonzero().squeeze(1)
    logits = model(**inputs, logits_to_keep=keep).logits.float()
    kept = targets[:, keep]
    picked = torch.log_softmax(logits, dim=-1).gather(2, kept.clamp(min=0).unsqueeze(2)).squeeze(2)
    picked = picked * (kept != IGNORE)
    return torch.zeros(targets.shape, dtype=picked.dtype, device=picked.device).index_copy(1, keep, picked)
