"""Computing an encoder's last layer only at the positions a task head reads.

A head that reads some positions of the last layer (a sequence classifier the first token, a
token classifier the labelled sub-tokens) does not need that layer's query, attention output and
feed-forward network anywhere else; its keys and values still come from every position. Computing
just the read positions gives the same outputs there, and the same loss and gradients, with fewer
FLOPs: the feed-forward network is two thirds of a layer's work.

The layer's ``forward`` is replaced on the instance, so parameter names, ``state_dict`` and the
saved model are untouched; a model loaded elsewhere computes every position as usual. The
replacement reads the positions from the layer: fixed ones given when it is installed, or per
call through :func:`reading`; with neither it runs the layer's own forward. Its output then has
one row per read position, shape (batch, positions, hidden), instead of one per input position.

Works for BERT-style layers (BERT, RoBERTa, XLM-R, ELECTRA: ``attention.self.query/key/value``,
``attention.output`` and ``feed_forward_chunk``); :func:`install` leaves other models alone.
"""

from __future__ import annotations

import types
from contextlib import contextmanager

import torch

_FIXED = "_sft_fixed_positions"  # installed: an int k means "the first k positions"
_CALL = "_sft_call_positions"  # per call, set by reading(): (batch, k) position indices


def _partial_forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     *args, **kwargs) -> torch.Tensor:
    positions = getattr(self, _CALL, None)
    fixed = getattr(self, _FIXED, None)
    if positions is None and fixed is None:
        return self._sft_full_forward(hidden_states, attention_mask, *args, **kwargs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    attention = self.attention.self
    batch, length, width = hidden_states.shape
    if positions is None:
        rows = hidden_states[:, :fixed]
    else:
        positions = positions.to(hidden_states.device)
        rows = hidden_states.gather(1, positions.unsqueeze(-1).expand(-1, -1, width))
    count = rows.shape[1]
    heads = (-1, attention.attention_head_size)
    query = attention.query(rows).view(batch, count, *heads).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, *heads).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, *heads).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        # one mask row per query: keep the rows of the positions computed
        if positions is None:
            attention_mask = attention_mask[:, :, :count]
        else:
            mask = attention_mask.expand(batch, -1, -1, -1)
            index = positions[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[-1])
            attention_mask = mask.gather(2, index)
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager_attention_forward)
    context, _ = interface(attention, query, key, value, attention_mask,
                           dropout=attention.dropout.p if attention.training else 0.0, scaling=attention.scaling)
    context = context.reshape(batch, count, -1).contiguous()
    attended = self.attention.output(context, rows)
    return self.feed_forward_chunk(attended)


def last_layer(model):
    """The last layer of ``model``'s encoder if it has the BERT-style parts this module needs, else None."""
    if getattr(model.config, "is_decoder", False):
        return None
    encoder = getattr(getattr(model, "base_model", None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not layers:
        return None
    layer = layers[-1]
    attention = getattr(getattr(layer, "attention", None), "self", None)
    needed = ("query", "key", "value", "attention_head_size", "scaling", "dropout", "config")
    if attention is None or not all(hasattr(attention, n) for n in needed) or not hasattr(layer, "feed_forward_chunk"):
        return None
    return layer


def install(model, first: int | None = None) -> bool:
    """Let ``model``'s last layer compute only the positions it is told (``first``: always the first
    ``first`` positions; None: those given by :func:`reading`, all when none are given).
    Returns whether the model has such a layer."""
    layer = last_layer(model)
    if layer is None:
        return False
    if not hasattr(layer, "_sft_full_forward"):
        layer._sft_full_forward = layer.forward
        layer.forward = types.MethodType(_partial_forward, layer)
    setattr(layer, _FIXED, first)
    setattr(layer, _CALL, None)
    return True


def _inner(model):
    """The model inside a distributed wrapper (DDP keeps it as ``.module``) and an adapter wrapper
    (peft's ``get_base_model()``)."""
    from .adapters import is_peft_model

    model = getattr(model, "module", model)
    return model.get_base_model() if is_peft_model(model) else model


@contextmanager
def reading(model, positions: torch.Tensor):
    """Within the block, ``model``'s last layer computes the positions ``positions`` (batch, k) only,
    in that order; the encoder's output, and a token head's logits, then have k rows per example."""
    layer = last_layer(_inner(model))
    if layer is None or not hasattr(layer, "_sft_full_forward"):
        raise RuntimeError("reading(): call install(model) first")
    setattr(layer, _CALL, positions)
    try:
        yield
    finally:
        setattr(layer, _CALL, None)


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """The True positions of each row of ``mask`` (batch, length), in order, as (batch, k) indices,
    k the largest count of a row. A row with fewer is filled up with some of its False positions
    (each position at most once per row), so that what is read there can be told apart and dropped."""
    k = int(mask.sum(1).max()) if mask.numel() else 0
    return torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :k]


def uninstall(model) -> None:
    """Give ``model``'s last layer back its own forward (all positions), e.g. before tracing it for export."""
    layer = last_layer(_inner(model))
    if layer is not None and hasattr(layer, "_sft_full_forward"):
        del layer.forward  # the instance attribute set by install(); the class's forward shows through again
        for name in ("_sft_full_forward", _FIXED, _CALL):
            if hasattr(layer, name):
                delattr(layer, name)
