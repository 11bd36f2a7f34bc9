"""Texts longer than ``trainer.max_length`` sub-words: truncate, head and tail, or windows.

``encode`` tokenizes a batch of texts (or text pairs) and says, for every feature it returns, which
text it came from, and for every text whether it was longer than the model's length:

- ``truncate``: the end is cut off (for pairs, the longer text loses tokens first);
- ``head_tail``: the first ``head_tokens`` sub-words and the last ones are kept, the middle goes
  (Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?": head 128 + tail 382 was their
  best on IMDB at 512);
- ``windows``: the text is read in overlapping windows of ``max_length`` (``window_stride``
  sub-words shared by neighbours, a quarter of a window by default; for pairs the second text is windowed), one feature each; the
  task pools the windows' logits per text.
"""

from __future__ import annotations

from sft_core.errors import ConfigError, DataError

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def special_layout(tokenizer) -> tuple[int, int]:
    """How many special tokens a single text gets before and after it ([CLS] .. [SEP]: 1, 1)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for before in range(len(full) - len(bare) + 1):
        if full[before:before + len(bare)] == bare:
            return before, len(full) - len(bare) - before
    return 0, 0


def encode(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, options):
    """(columns of features, the text index of each feature, whether each text exceeded max_length)."""
    mode = options.long_text
    if mode == "windows":
        stride = options.window_stride if options.window_stride is not None else max_length // 4
        return _windows(tokenizer, texts, pairs, max_length, stride)
    full = tokenizer(texts, pairs, truncation=False, verbose=False)
    columns = {key: list(full[key]) for key in INPUT_KEYS if key in full}
    over = [len(ids) > max_length for ids in columns["input_ids"]]
    long = [i for i, flag in enumerate(over) if flag]
    if long and mode == "head_tail":
        if pairs is not None:
            raise DataError("classification.long_text=head_tail keeps the start and end of single texts; this data "
                            "has text pairs: use long_text=truncate or windows")
        _head_tail(tokenizer, columns, long, max_length, options.head_tokens)
    elif long:
        cut = tokenizer([texts[i] for i in long], [pairs[i] for i in long] if pairs is not None else None,
                        truncation=True, max_length=max_length)
        for key in columns:
            for j, i in enumerate(long):
                columns[key][i] = cut[key][j]
    return columns, list(range(len(texts))), over


def _head_tail(tokenizer, columns: dict, long: list[int], max_length: int, head_tokens: int) -> None:
    before, after = special_layout(tokenizer)
    budget = max_length - before - after
    if budget <= 0:
        raise ConfigError(f"trainer.max_length={max_length} leaves no room for text next to the special tokens")
    head = min(head_tokens, budget)
    tail = budget - head
    for key in columns:
        for i in long:
            seq = columns[key][i]
            end = len(seq) - after  # the text's sub-words are seq[before:end]
            columns[key][i] = seq[:before + head] + seq[end - tail:end] + seq[end:]


def _windows(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, stride: int):
    before, after = special_layout(tokenizer)
    if pairs is None and stride >= max_length - before - after:
        raise ConfigError(f"classification.window_stride={stride} must be below the sub-words a window holds "
                          f"({max_length - before - after} at trainer.max_length={max_length})")
    try:
        enc = tokenizer(texts, pairs, truncation="only_second" if pairs is not None else True, max_length=max_length,
                        stride=stride, return_overflowing_tokens=True)
    except Exception as exc:  # e.g. a first text of a pair already longer than max_length, a slow tokenizer
        raise DataError(f"classification.long_text=windows cannot window these texts: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    text_of = list(enc["overflow_to_sample_mapping"])
    windows = [0] * len(texts)
    for i in text_of:
        windows[i] += 1
    columns = {key: list(enc[key]) for key in INPUT_KEYS if key in enc}
    return columns, text_of, [n > 1 for n in windows]
