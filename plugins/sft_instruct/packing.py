"""Exact packing: short examples share one sequence without seeing each other.

Examples are placed into sequences of at most ``max_length`` tokens by first-fit decreasing (a
deterministic function of the lengths). Each packed sequence carries ``position_ids`` that restart
at 0 for every example; the batch then has no attention mask, and transformers confines attention
to each example from the restarts alone (a block-diagonal causal mask for SDPA and eager attention,
variable-length kernels for flash attention) when the forward keeps no KV cache (``use_cache=False``:
with a cache, the restarts are silently ignored). The first token of every example carries no label,
so no example is trained to predict its neighbour. ``check_isolation`` proves on the actual model
that an example's logits do not change when another is packed before it.
"""

from __future__ import annotations

from sft_core.errors import ConfigError

IGNORE = -100


def pack_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """Indices of the examples of each packed sequence (first-fit decreasing, ties by index)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        for b, free in enumerate(room):
            if free >= n:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(max_length - n)
    return bins


def pack(features, max_length: int):
    """A datasets.Dataset of training features packed into sequences (columns input_ids, labels,
    position_ids, length, example_id, examples)."""
    import datasets

    ids, labels = features["input_ids"], features["labels"]
    example_ids = features["example_id"]
    out = {"input_ids": [], "labels": [], "position_ids": [], "length": [], "example_id": [], "examples": []}
    for members in pack_rows([len(x) for x in ids], max_length):
        row_ids, row_labels, positions = [], [], []
        for i in members:
            row_ids += ids[i]
            row_labels += [IGNORE] + list(labels[i][1:])
            positions += range(len(ids[i]))
        out["input_ids"].append(row_ids)
        out["labels"].append(row_labels)
        out["position_ids"].append(positions)
        out["length"].append(len(row_ids))
        out["example_id"].append(example_ids[members[0]])
        out["examples"].append([example_ids[i] for i in members])
    return datasets.Dataset.from_dict(out)


def check_isolation(model, vocab_size: int) -> None:
    """Fail when the model's attention ignores position-id restarts (packing would then leak)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, vocab_size, (1, 5), generator=generator)
    second = torch.randint(0, vocab_size, (1, 6), generator=generator)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        alone = model(input_ids=second, use_cache=False).logits[0]
        packed = model(input_ids=torch.cat([first, second], 1), use_cache=False,
                       position_ids=torch.tensor([list(range(5)) + list(range(6))])).logits[0, 5:]
    model.train(was_training)
    if not torch.allclose(alone.float(), packed.float(), atol=1e-3, rtol=1e-3):
        raise ConfigError(f"instruct.packing: this model ({type(model).__name__}, attention "
                          f"{getattr(model.config, '_attn_implementation', '?')}) lets packed examples attend to "
                          "each other (its attention ignores position-id restarts); set instruct.packing: false")
