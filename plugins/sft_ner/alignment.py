"""Words to sub-token features and back: windows over long sentences, labels on first sub-tokens.

A sentence whose sub-tokens do not fit in ``max_length`` is cut into windows of whole words that
overlap by up to ``stride`` sub-tokens, so every word is seen (no truncation) and most words see
context on both sides. Each feature records, per position, the word whose first sub-token sits
there (``first_of_word``, -1 elsewhere); predictions are read back at those positions and, for a
word in several windows, taken from the window where it is furthest from an edge.
"""

from __future__ import annotations

IGNORE = -100  # label of positions left out of the loss (special tokens, continuation sub-tokens)


def plan_windows(counts: list[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) word ranges covering all words, each holding at most ``budget`` sub-tokens.

    Consecutive windows share the longest run of trailing words of at most ``stride`` sub-tokens.
    A single word longer than ``budget`` gets a window of its own (its tail is truncated, its first
    sub-token, which carries the prediction, is kept).
    """
    n = len(counts)
    windows: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end, used = start, 0
        while end < n and used + counts[end] <= budget:
            used += counts[end]
            end += 1
        end = max(end, start + 1)
        windows.append((start, end))
        if end >= n:
            break
        # the shared words and the next new word must fit in the next window together
        nxt, shared, room = end, 0, min(stride, budget - counts[end])
        while nxt - 1 > start and shared + counts[nxt - 1] <= room:
            shared += counts[nxt - 1]
            nxt -= 1
        start = nxt
    return windows


def word_prefix(tokenizer) -> str:
    """What to put before each word but the first so that words tokenized one by one give the tokens
    of running text: "" for most tokenizers, " " for byte-level BPE ones that keep the space inside
    the token ("Ġrejects", as GPT-2, Llama 3, Qwen and SmolLM2 do) but do not add it to pre-split words.
    Without it such a model would see "re", "ject", "s" where its pretraining saw "Ġrejects"."""
    probe = ["Paris", "rejects", "Germany", "calls"]
    joined = tokenizer(" ".join(probe), add_special_tokens=False)["input_ids"]
    for prefix in ("", " "):
        words = [probe[0], *(prefix + w for w in probe[1:])]
        if tokenizer([words], is_split_into_words=True, add_special_tokens=False)["input_ids"][0] == joined:
            return prefix
    return ""


def encode(tokenizer, tokens: list[list[str]], tags: list[list[str]] | None, label_ids: dict[str, int],
           max_length: int, stride: int, label_all_tokens: bool, prefix: str = "") -> tuple[dict[str, list], list[int]]:
    """Feature columns (input_ids, first_of_word, labels when ``tags`` is given) for a batch of
    sentences, and the index in the batch of the sentence each feature belongs to. ``prefix`` goes
    before every word but a sentence's first (see :func:`word_prefix`)."""
    if prefix:
        tokens = [[w if j == 0 else prefix + w for j, w in enumerate(words)] for words in tokens]
    # words the tokenizer turns into nothing (zero-width spaces, lone accents) would get no
    # prediction: they are fed to the model as the unknown token instead
    counted = tokenizer(tokens, is_split_into_words=True, add_special_tokens=False)
    sentences, counts = [], []
    for i, words in enumerate(tokens):
        per_word = [0] * len(words)
        for w in counted.word_ids(i):
            if w is not None:
                per_word[w] += 1
        if tokenizer.unk_token is not None and 0 in per_word:
            words = [tokenizer.unk_token if c == 0 else word for word, c in zip(words, per_word)]
            per_word = [max(c, 1) for c in per_word]
        sentences.append(words)
        counts.append(per_word)

    budget = max(1, max_length - tokenizer.num_special_tokens_to_add(pair=False))
    stride = min(stride, budget - 1)
    owners, offsets, pieces = [], [], []
    for i, words in enumerate(sentences):
        for start, end in plan_windows(counts[i], budget, stride):
            owners.append(i)
            offsets.append(start)
            pieces.append(words[start:end])
    encoded = tokenizer(pieces, is_split_into_words=True, truncation=True, max_length=max_length) if pieces else None

    out: dict[str, list] = {"input_ids": [], "first_of_word": []}
    if tags is not None:
        out["labels"] = []
    seen = [set() for _ in sentences]
    for j, (i, offset) in enumerate(zip(owners, offsets)):
        word_ids = encoded.word_ids(j)
        first_of_word, labels = [], []
        previous = None
        for w in word_ids:
            if w is None:
                first_of_word.append(-1)
                labels.append(IGNORE)
            elif w != previous:
                first_of_word.append(offset + w)
                seen[i].add(offset + w)
                labels.append(label_ids[tags[i][offset + w]] if tags is not None else IGNORE)
            else:
                first_of_word.append(-1)
                labels.append(label_ids[_inside(tags[i][offset + w])] if tags is not None and label_all_tokens
                              else IGNORE)
            previous = w
        out["input_ids"].append(encoded["input_ids"][j])
        out["first_of_word"].append(first_of_word)
        if tags is not None:
            out["labels"].append(labels)
    for i, words in enumerate(sentences):
        if len(seen[i]) != len(words):  # cannot happen with word-wise tokenizers; never drop a word silently
            missing = sorted(set(range(len(words))) - seen[i])
            raise RuntimeError(f"words {[words[w] for w in missing[:5]]} of sentence {tokens[i][:8]}... got no "
                               "sub-token in any window; please report this with the tokenizer used")
    return out, owners


def _inside(tag: str) -> str:
    """The label of a continuation sub-token: a word tagged B-X continues as I-X."""
    return "I" + tag[1:] if tag.startswith("B-") else tag


def best_positions(first_of_word: list[list[int]], sentence_of: list[int], words_per_sentence: list[int]):
    """For each sentence and word, (feature index, position) of the prediction to read.

    A word in several windows is read where it is furthest from a window edge (most context on
    both sides); on a tie the earlier window wins.
    """
    best = [[None] * n for n in words_per_sentence]
    for f, (positions, s) in enumerate(zip(first_of_word, sentence_of)):
        last = len(positions) - 1
        for p, w in enumerate(positions):
            if w < 0:
                continue
            distance = min(p, last - p)
            current = best[s][w]
            if current is None or distance > current[0]:
                best[s][w] = (distance, f, p)
    return [[None if b is None else (b[1], b[2]) for b in words] for words in best]
