"""Batch helpers shared by tasks: dynamic padding to the longest feature of the batch."""

from __future__ import annotations

import torch

#: Token-aligned inputs and the value that pads each.
TOKEN_INPUTS = (("input_ids", None), ("attention_mask", 0), ("token_type_ids", 0))


def pad_inputs(features: list[dict], pad_token_id: int | None) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` (those present) padded on the right."""
    longest = max(len(f["input_ids"]) for f in features)
    batch = {}
    for key, fill in TOKEN_INPUTS:
        if key in features[0]:
            value = (pad_token_id or 0) if fill is None else fill
            batch[key] = torch.tensor([f[key] + [value] * (longest - len(f[key])) for f in features])
    return batch
