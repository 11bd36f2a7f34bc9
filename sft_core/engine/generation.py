"""Continuous batching for causal language models: generation scheduled per decoding step.

A ``ContinuousBatcher`` keeps the sequences being generated in one batch over the model's KV cache
(transformers' ``DynamicCache``, rows left-padded to a common width). At every step it first drops
the sequences that finished or were cancelled (their cache rows go, and columns that only padding
still uses are trimmed), then admits waiting requests (their prompts prefilled together and their
cache rows padded into the batch), then runs one decoding step for every sequence. Nobody waits for
a whole batch to finish: a request joins at the next step and leaves as soon as it ends.

Each request keeps its own settings inside the shared batch: its length limit, its end tokens and
stop strings, greedy decoding or sampling at its own temperature and top-p from its own random
generator (so a seeded draw is the same whatever else runs beside it). Greedy output equals
``model.generate``'s greedy output for the prompt alone: padding is masked and positions count
only real tokens, as ``generate`` does for a left-padded batch.

Memory is bounded by ``max_batch_tokens``: a request is admitted only while the padded cache
(sequences x width), at its largest before any of the sequences can end, stays within it; the
others wait. ``max_batch_size`` bounds the sequences. Used by ``sft serve`` (a thread that runs
``serve_forever``) and by evaluation and prediction (``generate_all``). Models whose cache is not
plain (sliding-window layers), encoder-decoders, and generation configs with logits processors
(repetition penalty and the like) are not scheduled here: ``unsupported`` says why, and callers
keep ``model.generate``.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

_PROCESSORS = ("repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "suppress_tokens",
               "begin_suppress_tokens", "sequence_bias", "forced_bos_token_id", "forced_eos_token_id",
               "min_new_tokens", "encoder_repetition_penalty", "renormalize_logits")
_DEFAULTS = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
             "renormalize_logits": False}


def _base(model):
    inner = getattr(model, "inner", model)  # sft's model wrappers
    return inner


def unsupported(model) -> str | None:
    """Why ``model`` cannot be scheduled here (None when it can)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    model = _base(model)
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        return "the model is not a PyTorch transformers model"
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return "an encoder-decoder model"
    try:
        layers = DynamicCache(config=config).layers
    except Exception as exc:  # a config the cache cannot read
        return f"its cache cannot be built ({type(exc).__name__})"
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return "its KV cache has layers other than plain ones (a sliding window or a recurrent state)"
    generation = getattr(model, "generation_config", None)
    for name in _PROCESSORS:
        value = getattr(generation, name, None)
        if value not in (None, _DEFAULTS.get(name)) and value != [] and value != 0:
            return f"its generation_config sets {name}"
    return None


@dataclass(eq=False)  # a request is itself: hashable, compared by identity
class Request:
    """One prompt to continue. ``temperature`` None or 0 decodes greedily; ``on_token(request, id, text)``
    is called for each new token with the text it completes (empty while a character is incomplete;
    id None for text held back until the end), ``on_finish(request)`` once at the end; both on the
    batcher's thread."""

    prompt: list[int]
    max_new_tokens: int
    stop_ids: frozenset = frozenset()
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop_texts: tuple = ()
    on_token: Callable | None = None
    on_finish: Callable | None = None
    tokens: list = field(default_factory=list)
    text: str = ""  # the decoded text so far (kept when a tokenizer is given to the batcher)
    finish_reason: str | None = None  # "stop", "length", "cancelled" or "error"
    error: BaseException | None = None
    cancelled: str | None = None  # why it was cancelled ("cancelled", or e.g. "unavailable" for a server's drain)
    arrived: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.prompt = list(self.prompt)
        self.stop_ids = frozenset(self.stop_ids)
        seed = self.seed if self.seed is not None else random.SystemRandom().getrandbits(62)
        self.generator = torch.Generator().manual_seed(seed) if self.temperature else None

    @property
    def reserved(self) -> int:
        """Tokens this request may still add to the cache."""
        return self.max_new_tokens - len(self.tokens)


class ContinuousBatcher:
    """See the module docstring. ``tokenizer``: decodes the text of each request as it grows (for
    stop strings and streaming); ``min_join``: waiting requests join once this many slots are free
    (1 for a server; larger amortises prefill when everything is queued up front)."""

    def __init__(self, model, pad_id: int, max_batch_size: int = 32, max_batch_tokens: int | None = None,
                 tokenizer=None, max_prefill_tokens: int = 4096, min_join: int = 1):
        self.model = model
        self.pad_id = pad_id
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_prefill_tokens = max_prefill_tokens
        self.min_join = max(1, min_join)
        self.tokenizer = tokenizer
        base = _base(model)
        self.device = next(base.parameters()).device
        self.max_positions = getattr(base.config, "max_position_embeddings", None) or 1 << 30
        self._logits_to_keep, self._cache_name = _forward_parameters(base)
        self.waiting: collections.deque[Request] = collections.deque()
        self.running: list[Request] = []
        self._cache = None
        self._mask: torch.Tensor | None = None  # (rows, width): 1 where the cache holds a real token
        self._next: list[int] = []  # per running row: the token to feed at the next step
        self._lock = threading.Condition()
        self._stopping = False
        self._paused = False
        self.steps = 0
        self.peak_rows = 0  # the most sequences in the batch at once so far

    # --- from any thread ------------------------------------------------------------------
    def fits(self, request: Request) -> bool:
        """Whether ``request`` could ever run: alone, within the token budget."""
        return self.max_batch_tokens is None or len(request.prompt) + request.max_new_tokens <= self.max_batch_tokens

    def submit(self, request: Request) -> Request:
        with self._lock:
            self.waiting.append(request)
            self._lock.notify()
        return request

    def cancel(self, request: Request, reason: str = "cancelled") -> None:
        """End ``request`` with ``reason``: at once while it waits, at the next step when it runs (a client
        that went away frees its slot)."""
        request.cancelled = reason
        with self._lock:
            if request in self.waiting:
                self.waiting.remove(request)
                self._finish(request, reason)
            self._lock.notify()

    @property
    def width(self) -> int:
        return 0 if self._mask is None else self._mask.shape[1]

    def pause(self) -> None:
        """Hold ``serve_forever`` before its next step (requests still queue) until ``resume()``."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._lock.notify_all()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()

    def serve_forever(self) -> None:
        """Step while there is work, sleep while there is none, until ``stop()``."""
        while True:
            with self._lock:
                while not (self.running or self.waiting or self._stopping) or (self._paused and not self._stopping):
                    self._lock.wait()
                if self._stopping and not (self.running or self.waiting):
                    return
            self.step()

    # --- the batcher's thread ---------------------------------------------------------------
    def generate_all(self, requests: list[Request]) -> list[Request]:
        """Generate for all ``requests`` (queued at once) on this thread; returns them, finished."""
        for request in requests:
            self.submit(request)
        while self.running or self.waiting:
            self.step()
        return requests

    @torch.inference_mode()
    def step(self) -> None:
        """Drop ended sequences, admit waiting ones, and decode one token for each running sequence."""
        self._drop([r for r in self.running if r.cancelled], cancelled=True)
        joining = self._admit()
        if joining:
            try:
                self._prefill(joining)
            except Exception as exc:  # their requests fail; the others go on
                for request in joining:
                    self._finish(request, "error", exc)
        if not self.running:
            return
        try:
            self._decode()
        except Exception as exc:  # the batch's state is unknown: its requests fail, the batcher goes on
            for request in list(self.running):
                self._finish(request, "error", exc)
            self._reset()
        self.steps += 1

    def _admit(self) -> list[Request]:
        with self._lock:
            while self.waiting and self.waiting[0].cancelled:
                request = self.waiting.popleft()
                self._finish(request, request.cancelled)
            free = self.max_batch_size - len(self.running)
            if not self.waiting or free < min(self.min_join, len(self.waiting)) and self.running:
                return []
            joining: list[Request] = []
            prefill = 0
            while self.waiting and len(joining) < free:
                request = self.waiting[0]
                if request.cancelled:
                    self._finish(self.waiting.popleft(), request.cancelled)
                    continue
                if not self.fits(request):
                    self.waiting.popleft()
                    self._finish(request, "error", ValueError(
                        f"a prompt of {len(request.prompt)} tokens and {request.max_new_tokens} new tokens exceed the "
                        f"batch token budget ({self.max_batch_tokens})"))
                    continue
                if joining and prefill + len(request.prompt) > self.max_prefill_tokens:
                    break
                if not self._within_budget(joining + [request]):
                    break
                joining.append(self.waiting.popleft())
                prefill += len(request.prompt)
            return joining

    def _within_budget(self, joining: list[Request]) -> bool:
        """Whether the padded cache stays within ``max_batch_tokens`` until a sequence can end: every
        step widens it by one column, and no row leaves before its own limit at the latest."""
        if self.max_batch_tokens is None:
            return True
        rows = len(self.running) + len(joining)
        width = max([self.width] + [len(r.prompt) for r in joining])
        growth = max(r.reserved for r in self.running + joining)
        return rows * (width + growth) <= self.max_batch_tokens

    def _forward(self, ids, mask, positions, cache):
        kwargs = {"logits_to_keep": 1} if self._logits_to_keep else {}
        kwargs[self._cache_name] = cache  # "cache" from transformers 5.2x, "past_key_values" before
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
        return out.logits[:, -1, :].float(), getattr(out, self._cache_name)

    def _prefill(self, joining: list[Request]) -> None:
        from transformers.cache_utils import DynamicCache

        width = max(len(r.prompt) for r in joining)
        ids = torch.full((len(joining), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(joining), width), dtype=torch.long)
        for row, request in enumerate(joining):
            n = len(request.prompt)
            ids[row, width - n:] = torch.tensor(request.prompt)
            mask[row, width - n:] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = (t.to(self.device) for t in (ids, mask, positions))
        logits, cache = self._forward(ids, mask, positions, DynamicCache(config=_base(self.model).config))
        self._merge(cache, mask)
        self.running.extend(joining)
        self.peak_rows = max(self.peak_rows, len(self.running))
        for request, token in zip(joining, self._choose(logits, joining)):
            self._next.append(token)
            self._accept(request, token)
        self._drop([r for r in joining if r.finish_reason is not None])

    def _merge(self, cache, mask: torch.Tensor) -> None:
        """Add the rows of a prefilled ``cache`` to the batch's, both left-padded to the wider one."""
        if self._cache is None:
            self._cache, self._mask = cache, mask
            return
        width = max(self.width, mask.shape[1])

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - t.shape[dim]
            if not missing:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for mine, theirs in zip(self._cache.layers, cache.layers):
            mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)])
            mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)])
        self._mask = torch.cat([pad(self._mask, 1), pad(mask, 1)])

    def _decode(self) -> None:
        rows = len(self.running)
        self.peak_rows = max(self.peak_rows, rows)
        ids = torch.tensor(self._next, dtype=torch.long, device=self.device).view(rows, 1)
        positions = self._mask.sum(-1, keepdim=True)
        mask = torch.cat([self._mask, self._mask.new_ones((rows, 1))], dim=1)
        logits, self._cache = self._forward(ids, mask, positions, self._cache)
        self._mask = mask
        for row, (request, token) in enumerate(zip(list(self.running), self._choose(logits, self.running))):
            self._next[row] = token
            self._accept(request, token)
            if request.finish_reason is None and int(positions[row]) + 2 >= self.max_positions:
                self._finish(request, "length")
        self._drop([r for r in self.running if r.finish_reason is not None])

    def _choose(self, logits: torch.Tensor, requests: list[Request]) -> list[int]:
        chosen = logits.argmax(-1).tolist()
        for row, request in enumerate(requests):
            if request.temperature:
                chosen[row] = _sample(logits[row], request)
        return chosen

    def _accept(self, request: Request, token: int) -> None:
        """Record ``token`` for ``request``, tell its listener, and end it when it should end."""
        if request.first_token_at is None:
            request.first_token_at = time.perf_counter()
        if token in request.stop_ids:
            self._flush(request, None)
            self._finish(request, "stop")
            return
        request.tokens.append(token)
        last = len(request.tokens) >= request.max_new_tokens
        self._flush(request, token, whole=last)
        if request.stop_texts and any(s in request.text for s in request.stop_texts):
            self._finish(request, "stop")
        elif last:
            self._finish(request, "length")

    def _flush(self, request: Request, token: int | None, whole: bool = True) -> None:
        """Tell the listener of ``token`` and the text it completes; a character split over tokens waits
        for its last byte unless ``whole`` (the last token). ``token`` None: only text held back until now."""
        piece = ""
        if self.tokenizer is not None:
            text = self.tokenizer.decode(request.tokens, skip_special_tokens=True)
            if whole or not text.endswith("\ufffd"):
                piece, request.text = text[len(request.text):], text
        if request.on_token is not None and (token is not None or piece):
            request.on_token(request, token, piece)

    def _finish(self, request: Request, reason: str, error: BaseException | None = None) -> None:
        if request.finish_reason is not None and request.done.is_set():
            return
        request.finish_reason, request.error = reason, error
        request.finished_at = time.perf_counter()
        if request.on_finish is not None:
            request.on_finish(request)
        request.done.set()

    def _drop(self, ended: list[Request], cancelled: bool = False) -> None:
        """Remove ``ended`` from the batch (finishing them as cancelled when ``cancelled``)."""
        if not ended:
            return
        for request in ended:
            if cancelled:
                self._finish(request, request.cancelled)
        gone = {id(r) for r in ended}
        keep = [row for row, r in enumerate(self.running) if id(r) not in gone]
        self.running = [self.running[row] for row in keep]
        self._next = [self._next[row] for row in keep]
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, device=self._mask.device)
        self._mask = self._mask[index]
        used = self._mask.sum(0).nonzero()
        start = int(used[0]) if len(used) else 0  # columns only padding uses, on the left, go too
        self._mask = self._mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]

    def _reset(self) -> None:
        self.running, self._next, self._cache, self._mask = [], [], None, None


def _sample(logits: torch.Tensor, request: Request) -> int:
    """One draw at the request's temperature, top-k and top-p (as ``generate``'s warpers), from its generator."""
    scores = logits.detach().float().cpu() / request.temperature
    if request.top_k and request.top_k < scores.numel():
        kth = torch.topk(scores, request.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if request.top_p is not None and request.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative - ordered.softmax(-1) >= request.top_p  # keep the smallest set reaching top_p
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return int(torch.multinomial(scores.softmax(-1), 1, generator=request.generator))


def _forward_parameters(model) -> tuple[bool, str]:
    """Whether the model's forward takes ``logits_to_keep``, and the name of its cache argument."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        names = inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False, "past_key_values"
    return "logits_to_keep" in names, "cache" if "cache" in names else "past_key_values"

