"""The server's generation: one ``ContinuousBatcher`` on its own thread, bridged to the event loop.

Every generation request (streamed or not, with its own settings) becomes one sequence of the
running batch (``sft_core.engine.generation``): it joins at the next decoding step and leaves when
it ends, and its tokens reach the request's ``asyncio.Queue`` as they are made. A client that goes
away cancels its sequence (the slot is free at the next step). ``drain`` ends every sequence still
waiting or running with the reason ``"unavailable"`` (the routes answer 503).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import threading
import time


class Generation:
    """See the module docstring. ``metrics``: the server's ``_Metrics`` (time to first token,
    tokens generated, running and waiting sequences)."""

    def __init__(self, predictor, settings, metrics):
        self.predictor = predictor
        self.max_queue = settings.max_queue
        # its own tokenizer: decoding on the batcher's thread must not share Rust state with encoding
        self.batcher = predictor.continuous_batcher(settings.max_batch_size, settings.max_batch_tokens,
                                                    tokenizer=copy.deepcopy(predictor.tokenizer), min_join=1)
        self.metrics = metrics
        self.live: set = set()
        self._recent: collections.deque = collections.deque()  # (time, tokens) of the last seconds
        self._thread = threading.Thread(target=self.batcher.serve_forever, name="sft-generate", daemon=True)
        self._thread.start()
        metrics.running.set_function(lambda: len(self.batcher.running))
        metrics.waiting.set_function(lambda: len(self.batcher.waiting))
        metrics.tokens_per_second.set_function(self.tokens_per_second)

    @property
    def waiting(self) -> int:
        return len(self.batcher.waiting)

    def full(self, more: int = 1) -> bool:
        return len(self.batcher.waiting) + more > self.max_queue

    def submit(self, request) -> asyncio.Queue:
        """Queue ``request`` (a ``generation.Request``); its events arrive on the returned queue:
        ``("token", text)`` per token, then ``("end", request)``."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        metrics = self.metrics

        def on_token(req, token, piece: str) -> None:
            if token is not None:
                if len(req.tokens) == 1:
                    metrics.first_token.observe(req.first_token_at - req.arrived)
                metrics.tokens.inc()
                self._recent.append((time.monotonic(), 1))
            loop.call_soon_threadsafe(events.put_nowait, ("token", piece))

        def on_finish(req) -> None:
            loop.call_soon_threadsafe(self._finished, req, events)

        request.on_token, request.on_finish = on_token, on_finish
        self.live.add(request)
        self.batcher.submit(request)
        return events

    def _finished(self, request, events: asyncio.Queue) -> None:
        self.live.discard(request)
        self.metrics.finished.labels(request.finish_reason).inc()
        events.put_nowait(("end", request))

    def cancel(self, request) -> None:
        if request.finish_reason is None:
            self.batcher.cancel(request)

    def drain(self) -> int:
        """End every live sequence as ``"unavailable"``; returns how many there were."""
        live = list(self.live)
        for request in live:
            self.batcher.cancel(request, "unavailable")
        return len(live)

    def tokens_per_second(self, window: float = 10.0) -> float:
        """Tokens generated per second over the last ``window`` seconds."""
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - window:
            self._recent.popleft()
        return len(self._recent) / window

    def close(self) -> None:
        self.drain()
        self.batcher.stop()


async def wait_all(queues: list, on_disconnect, disconnected) -> list | None:
    """The finished requests of ``queues`` (from ``submit``), in order; None after ``on_disconnect()``
    when the awaitable ``disconnected`` (the client went away) completes first."""
    async def finished(events: asyncio.Queue):
        while True:
            kind, value = await events.get()
            if kind == "end":
                return value

    done_task = asyncio.ensure_future(asyncio.gather(*(finished(q) for q in queues)))
    gone_task = asyncio.ensure_future(disconnected)
    try:
        await asyncio.wait({done_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
        if done_task.done():
            return done_task.result()
        on_disconnect()
        return None
    finally:
        gone_task.cancel()
        done_task.cancel()
