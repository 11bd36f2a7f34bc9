"""SIGINT and SIGTERM during training: finish the step, write a checkpoint, then stop.

Preemptible clusters send SIGTERM and wait a little before killing a job; a user presses Ctrl-C.
Either way the run should stop at the next step boundary with a checkpoint that ``--resume``
continues exactly, instead of dying mid-step and losing everything since the last checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """While active (``with StopSignals() as stops:`` around the training loop), SIGINT and SIGTERM
    only record that a stop was asked for (``stops.received``: the first signal's number); the loop
    reads that at step boundaries. Handlers are installed on entry and the previous ones restored on
    exit, so a notebook or a test process keeps its own Ctrl-C behaviour outside training.

    A later signal never raises either: the checkpoint being written when it arrives is finished
    (killing the process outright is still SIGKILL). Outside the main thread, where Python cannot
    install handlers, nothing is installed and ``received`` stays None.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            # None: a handler installed outside Python, which cannot be put back; the default is closest
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        self._previous = {}

    def _handle(self, number: int, frame) -> None:
        if self.received is None:
            self.received = number
        else:  # os.write, not print: a handler may run while the main thread is inside a print
            os.write(2, f"\n{signal.Signals(number).name}: already stopping at the end of this step, "
                        "to write a checkpoint\n".encode())


def name(number: int) -> str:
    return signal.Signals(number).name
