"""Dynamic micro-batching: concurrent requests queued and run together, each answered with its own result.

Requests are queued with a key (requests with equal keys may share a batch: plain predictions, or
generations with the same settings) and a size (their number of inputs). One worker takes the
oldest request, waits up to ``max_wait_ms`` for more of the same key until ``max_batch_size``
inputs are gathered, and runs them as one call of ``handler(key, payloads)`` on a single inference
thread, so the event loop keeps answering (health checks, new requests) while the model runs.
While a batch runs, new requests queue up, so the batch size follows the load by itself. A batch
whose handler raises fails its own requests only.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable


class QueueFull(Exception):
    """More inputs are waiting than ``max_queue`` allows; the request should be retried later."""

    def __init__(self, retry_after: float):
        super().__init__(f"the queue is full; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass
class _Item:
    key: Any
    payload: Any
    size: int
    future: asyncio.Future
    alone: bool = False
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """See the module docstring. ``on_batch(size, seconds)`` is told about each batch run."""

    def __init__(self, handler: Callable[[Any, list], list], max_batch_size: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 1024, on_batch: Callable[[int, float], None] | None = None):
        self.handler = handler
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._pending: collections.deque[_Item] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sft-inference")
        self._recent_batch_seconds = 0.05
        self.running = 0  # inputs in the batch being run

    @property
    def queued(self) -> int:
        """Inputs waiting to run."""
        return sum(item.size for item in self._pending)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Finish what is queued, then stop (the server's shutdown, after in-flight requests)."""
        while self._pending or self.running:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=True)

    async def submit(self, key, payload, size: int = 1, alone: bool = False):
        """Queue ``payload`` and wait for its result; raises ``QueueFull`` at once when over ``max_queue``."""
        if self.queued + size > self.max_queue:
            batches_ahead = max(1, self.queued // max(1, self.max_batch_size))
            raise QueueFull(retry_after=max(1.0, batches_ahead * self._recent_batch_seconds))
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(key, payload, size, future, alone))
        self._wakeup.set()
        return await future

    def call(self, function: Callable, *args):
        """``function(*args)`` on the inference thread, after the model call running there, ahead of the
        queued batches (work that must not share the tokenizer with a batch, e.g. encoding prompts)."""
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def fail_pending(self, exc: Exception) -> int:
        """Fail every request still waiting with ``exc`` (a server's drain); returns how many."""
        failed = 0
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(exc)
                failed += 1
        return failed

    def run_alone(self, function: Callable[[], Any]):
        """Run ``function`` on the inference thread (e.g. a streamed generation), in turn with the batches."""
        return self.submit(("alone", id(function)), function, size=1, alone=True)

    def _same_key_inputs(self, key) -> int:
        return sum(i.size for i in self._pending if i.key == key and not i.alone)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._pending and self._pending[0].future.done():  # the client went away
                self._pending.popleft()
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            first = self._pending[0]
            if not first.alone:
                deadline = first.queued_at + self.max_wait
                while self._same_key_inputs(first.key) < self.max_batch_size and (left := deadline - time.perf_counter()) > 0:
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), left)
                    except asyncio.TimeoutError:
                        break
            batch = self._take(first)
            self.running = sum(i.size for i in batch)
            started = time.perf_counter()
            try:
                if first.alone:
                    results = [await loop.run_in_executor(self._executor, first.payload)]
                else:
                    results = await loop.run_in_executor(self._executor, self.handler, first.key,
                                                         [i.payload for i in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"the batch handler returned {len(results)} results for {len(batch)} requests")
            except Exception as exc:  # this batch fails, the server goes on
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            else:
                for item, result in zip(batch, results):
                    if not item.future.done():
                        item.future.set_result(result)
            finally:
                seconds = time.perf_counter() - started
                self._recent_batch_seconds = seconds
                if self.on_batch is not None:
                    self.on_batch(self.running, seconds)
                self.running = 0

    def _take(self, first: _Item) -> list[_Item]:
        """The first item and, unless it runs alone, later ones of its key up to ``max_batch_size`` inputs."""
        self._pending.popleft()
        batch, total = [first], first.size
        if first.alone:
            return batch
        kept = collections.deque()
        while self._pending:
            item = self._pending.popleft()
            if item.future.done():
                continue
            if item.key == first.key and not item.alone and total + item.size <= self.max_batch_size:
                batch.append(item)
                total += item.size
            else:
                kept.append(item)
        self._pending = kept
        return batch
